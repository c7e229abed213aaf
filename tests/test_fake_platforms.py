"""The fake Printify and Shopify services accept the documented flows and
reject what the real APIs reject (see tests/fakes/printify.py, shopify.py).

Driven with plain ``requests``; each test starts its own fake subprocess.
"""

import base64
import io
import json
import time

import pytest
import requests
from PIL import Image

PFY_TOKEN = 'test-printify-token'
AGENT = 'pod-engine-tests/1.0'
SHOP = 1001
TOKEN = 'shpat_test_token_not_real'
ONLINE_STORE = 'gid://shopify/Publication/1'


def png(width=60, height=72, color='red'):
    buffer = io.BytesIO()
    Image.new('RGB', (width, height), color).save(buffer, 'PNG')
    return buffer.getvalue()


# Printify helpers ##########################################################

class Pfy:
    """Requests to the Printify fake, with valid credentials unless overridden."""

    def __init__(self, fake):
        self.url = fake.url
        self.headers = {'Authorization': f'Bearer {PFY_TOKEN}', 'User-Agent': AGENT}

    def call(self, method, path, body=None, headers=None):
        return requests.request(method, self.url + path, json=body, timeout=10,
                                headers={**self.headers, **(headers or {})})

    def get(self, path, **kwargs):
        return self.call('GET', path, **kwargs)

    def post(self, path, body, **kwargs):
        return self.call('POST', path, body, **kwargs)

    def put(self, path, body):
        return self.call('PUT', path, body)

    def ok(self, method, path, body=None):
        response = self.call(method, path, body)
        assert response.status_code == 200, response.text
        return response.json()

    def blueprint(self, brand, model):
        """Resolve a blueprint id by brand + model, as the engine must."""
        found = [b for b in self.ok('GET', '/v1/catalog/blueprints.json')
                 if b['brand'] == brand and b['model'] == model]
        assert len(found) == 1, found
        return found[0]['id']

    def variants(self, bp, pp):
        path = f'/v1/catalog/blueprints/{bp}/print_providers/{pp}/variants.json'
        return self.ok('GET', path)['variants']

    def upload(self, data, name='art.png'):
        return self.ok('POST', '/v1/uploads/images.json',
                       {'file_name': name, 'contents': base64.b64encode(data).decode()})

    def product_body(self, bp=12, pp=29, picks=(('Black', 'M'), ('Black', 'L')), price=2499):
        """A correct create body: real variant ids (read via options), integer prices."""
        by_options = {(v['options']['color'], v['options']['size']): v['id']
                      for v in self.variants(bp, pp)}
        ids = [by_options[pick] for pick in picks]
        image = self.upload(png())
        return {'title': 'Retro Sunset', 'description': 'Sunset over the sea.', 'tags': ['sun'],
                'blueprint_id': bp, 'print_provider_id': pp,
                'variants': [{'id': vid, 'price': price, 'is_enabled': True} for vid in ids],
                'print_areas': [{'variant_ids': ids, 'placeholders': [{
                    'position': 'front',
                    'images': [{'id': image['id'], 'x': 0.5, 'y': 0.5, 'scale': 1,
                                'angle': 0}]}]}]}

    def create(self, body):
        return self.ok('POST', f'/v1/shops/{SHOP}/products.json', body)


def rejected(response, status, code, *words):
    """Assert a Printify error answer and return its reason."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body['status'] == 'error' and body['code'] == code, body
    reason = body['errors']['reason']
    for word in words:
        assert word in reason, reason
    return reason


def wait_for(check, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError('condition never became true')


# Printify: the flow that works #############################################

def test_printify_accepts_the_documented_flow(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    shops = pfy.ok('GET', '/v1/shops.json')
    assert shops == [{'id': SHOP, 'title': 'Test Shop', 'sales_channel': 'custom_integration'}]

    tee = pfy.blueprint('Bella+Canvas', '3001')
    hoodie = pfy.blueprint('Gildan', '18500')
    assert (tee, hoodie, pfy.blueprint('Gildan', '5000')) == (12, 77, 6)
    providers = pfy.ok('GET', f'/v1/catalog/blueprints/{tee}/print_providers.json')
    assert {p['id']: p['title'] for p in providers} == {29: 'Monster Digital',
                                                       99: 'Printify Choice'}

    tee_variants, hoodie_variants = pfy.variants(tee, 29), pfy.variants(hoodie, 29)
    ids = [v['id'] for v in tee_variants]
    assert ids != list(range(ids[0], ids[0] + len(ids))) and all(10000 <= i < 100000 for i in ids)
    assert not {v['id'] for v in hoodie_variants} & set(ids)
    titles = [v['title'] for v in pfy.variants(6, 29)]
    assert 'L / Black' in titles and 'Black / L' in [v['title'] for v in tee_variants]

    def front(variants):
        return next(p for p in variants[0]['placeholders'] if p['position'] == 'front')
    assert (front(tee_variants)['width'], front(tee_variants)['height']) == (4500, 5400)
    assert (front(hoodie_variants)['width'], front(hoodie_variants)['height']) != (4500, 5400)

    data = png(60, 72)
    upload = pfy.upload(data)
    assert len(upload['id']) == 24 and int(upload['id'], 16) >= 0
    assert (upload['width'], upload['height'], upload['mime_type']) == (60, 72, 'image/png')
    assert pfy.upload(data, 'again.png')['id'] == upload['id']

    body = pfy.product_body(tee, 29)
    response = pfy.post(f'/v1/shops/{SHOP}/products.json', body)
    assert response.status_code == 200, response.text
    product = response.json()
    assert len(product['variants']) == len(tee_variants) > len(body['variants'])
    sent = {v['id'] for v in body['variants']}
    for variant in product['variants']:
        assert isinstance(variant['cost'], int) and 1000 <= variant['cost'] <= 1300
        assert variant['is_enabled'] == (variant['id'] in sent)
        if variant['id'] in sent:
            assert variant['price'] == 2499
    assert product['is_locked'] is False and 'external' not in product
    assert set(ids) == set(product['print_areas'][0]['variant_ids'])
    assert 'sun' in product['tags'] and len(product['tags']) > 1
    path = f'/v1/shops/{SHOP}/products/{product["id"]}.json'
    assert pfy.ok('GET', path)['id'] == product['id']

    listing = pfy.ok('GET', f'/v1/shops/{SHOP}/products.json?limit=5&page=1')
    assert (listing['current_page'], listing['last_page'], listing['total']) == (1, 1, 1)
    assert listing['data'][0]['id'] == product['id']

    flags = dict.fromkeys(('title', 'description', 'images', 'variants', 'tags'), True)
    publish = pfy.post(f'/v1/shops/{SHOP}/products/{product["id"]}/publish.json', flags)
    assert (publish.status_code, publish.json()) == (200, {})
    assert pfy.ok('GET', path)['is_locked'] is True  # an API shop: until we answer
    time.sleep(0.5)
    assert pfy.ok('GET', path)['is_locked'] is True
    external = {'id': '8100000000001', 'handle': 'https://shop.example/products/sun'}
    done = pfy.post(f'/v1/shops/{SHOP}/products/{product["id"]}/publishing_succeeded.json',
                    {'external': external})
    assert (done.status_code, done.json()) == (200, {'product_id': product['id']})
    published = pfy.ok('GET', path)
    assert published['is_locked'] is False and published['external'] == external

    state = requests.get(fake.url + '/_fake/state', timeout=5).json()
    assert state['publishes'] == 1 and len(state['products']) == 1
    assert state['requests_by_group']['catalog'] >= 5 and state['errors'] == 0
    recorded = fake.requests('/v1/')
    assert recorded[0]['headers']['User-Agent'] == AGENT
    assert recorded[0]['headers']['Authorization'] == f'Bearer {PFY_TOKEN}'
    assert any(r['json'] == body for r in recorded)


def test_printify_renders_mockups_after_the_create(fakes):
    fake = fakes.start('printify', mockup_seconds=0.5)
    pfy = Pfy(fake)
    body = pfy.product_body(picks=(('Black', 'M'), ('White', 'M'), ('Navy', 'L')))
    product = pfy.create(body)
    first = product['images']
    assert [(i['position'], i['is_default']) for i in first] == [('front', True),
                                                                 ('back', False)]
    assert first[0]['src'].startswith(fake.url + '/mockup/' + product['id'] + '/')
    path = f'/v1/shops/{SHOP}/products/{product["id"]}.json'
    wait_for(lambda: len(pfy.ok('GET', path)['images']) == 6)  # front + back, 3 colours
    final = pfy.ok('GET', path)['images']
    assert final[:2] == first and sum(i['is_default'] for i in final) == 1
    assert {tuple(i['variant_ids']) for i in final} == {(v['id'],) for v in body['variants']}

    picture = requests.get(first[0]['src'], timeout=5)  # a public CDN: no token
    assert picture.status_code == 200 and picture.headers['Content-Type'] == 'image/jpeg'
    assert Image.open(io.BytesIO(picture.content)).size == (400, 480)
    unknown = first[0]['src'].replace(f'/{first[0]["variant_ids"][0]}/', '/1/')
    assert requests.get(unknown, timeout=5).status_code == 404
    requests.post(fake.url + '/_fake/config', json={'mockups_unreachable': True}, timeout=5)
    assert requests.get(first[0]['src'], timeout=5).status_code == 503
    assert not fake.requests('/mockup/')  # not an API request


def test_printify_url_uploads_and_shopify_channel(fakes):
    fake = fakes.start('printify', shops=[{'id': SHOP, 'title': 'S', 'sales_channel': 'shopify'}],
                       sync_seconds=0.3)
    pfy = Pfy(fake)
    first = pfy.upload(png(30, 40, 'blue'))
    by_url = pfy.ok('POST', '/v1/uploads/images.json',
                    {'file_name': 'u.png', 'url': first['preview_url']})
    assert by_url['id'] == first['id'] and (by_url['width'], by_url['height']) == (30, 40)
    rejected(pfy.post('/v1/uploads/images.json', {'file_name': 'x.png',
                                                  'url': 'file:///tmp/x.png'}), 400, 8150)
    rejected(pfy.post('/v1/uploads/images.json', {'file_name': 'x.png',
                                                  'url': fake.url + '/_fake/uploads/nope'}),
             400, 8150, 'downloaded')
    rejected(pfy.post('/v1/uploads/images.json', {'file_name': 'x.png'}), 400, 8150, 'contents')
    rejected(pfy.post('/v1/uploads/images.json', {'file_name': 'x.png',
                                                  'contents': 'bm90IGFuIGltYWdl'}), 400, 8150)

    product = pfy.create(pfy.product_body())
    flags = dict.fromkeys(('title', 'description', 'images', 'variants', 'tags'), False)
    pfy.ok('POST', f'/v1/shops/{SHOP}/products/{product["id"]}/publish.json', flags)
    path = f'/v1/shops/{SHOP}/products/{product["id"]}.json'
    external = wait_for(lambda: pfy.ok('GET', path).get('external'))
    assert external['handle'] == 'https://test-shop.myshopify.com/products/retro-sunset'
    assert external['id'].isdigit()


# Printify: what it rejects #################################################

def test_printify_rejects_the_original_engine_payload(fakes):
    pfy = Pfy(fakes.start('printify'))
    original = {'title': 'Custom Design', 'description': 'Unique AI-generated design',
                'blueprintId': 3, 'providerId': 99,
                'variants': [{'id': n, 'price': 1999, 'isEnabled': True} for n in range(1, 25)],
                'images': [{'src': 'file:///data/designs/img_1.png', 'position': 'front',
                            'x': 0.5, 'y': 0.5, 'scale': 1, 'angle': 0}],
                'tags': ['custom', 'ai-art']}
    create = f'/v1/shops/{SHOP}/products.json'
    rejected(pfy.post(create, original), 400, 8150, 'blueprint_id')
    snake = {**original, 'blueprint_id': 3, 'print_provider_id': 99}
    rejected(pfy.post(create, snake), 400, 8150, 'print_areas')
    image = pfy.upload(png())
    with_areas = {**snake, 'print_areas': [{'variant_ids': list(range(1, 25)), 'placeholders': [
        {'position': 'front', 'images': [{'id': image['id'], 'x': 0.5, 'y': 0.5, 'scale': 1,
                                          'angle': 0}]}]}]}
    rejected(pfy.post(create, with_areas), 400, 8251)
    assert requests.get(pfy.url + '/_fake/state', timeout=5).json()['products'] == []


def test_printify_rejects_bad_prices_and_shapes(fakes):
    pfy = Pfy(fakes.start('printify'))
    create = f'/v1/shops/{SHOP}/products.json'
    good = pfy.product_body()

    def variant(n, **change):
        body = json.loads(json.dumps(good))
        body['variants'][n].update(change)
        return body
    rejected(pfy.post(create, variant(0, price=24.99)), 400, 8150, 'variants.0.price', 'integer')
    rejected(pfy.post(create, variant(1, price='2499')), 400, 8150, 'variants.1.price')
    extra = json.loads(json.dumps(good))
    extra['variants'] += [{'id': v['id'], 'price': 2499} for v in pfy.variants(12, 29)[:2]]
    del extra['variants'][3]['price']
    rejected(pfy.post(create, extra), 400, 8150, 'variants.3.price')
    rejected(pfy.post(create, {k: v for k, v in good.items() if k != 'print_areas'}),
             400, 8150, 'print_areas')
    rejected(pfy.post(create, {**good, 'title': ''}), 400, 8150, 'title')

    areas = json.loads(json.dumps(good))
    areas['print_areas'][0]['placeholders'][0]['images'][0]['id'] = 'f' * 24
    rejected(pfy.post(create, areas), 400, 8150, 'images.0.id')
    areas['print_areas'][0]['placeholders'][0] = {'position': 'sleeve', 'images': []}
    rejected(pfy.post(create, areas), 400, 8150)
    uncovered = json.loads(json.dumps(good))
    uncovered['print_areas'][0]['variant_ids'] = uncovered['print_areas'][0]['variant_ids'][:1]
    rejected(pfy.post(create, uncovered), 400, 8251, 'print area')
    made_up = json.loads(json.dumps(good))
    made_up['variants'].append({'id': 1, 'price': 1999, 'is_enabled': False})
    rejected(pfy.post(create, made_up), 400, 8251, '[1]')
    hoodie_ids = [v['id'] for v in pfy.variants(77, 29)[:2]]
    wrong = {**good, 'variants': [{'id': i, 'price': 4000} for i in hoodie_ids]}
    rejected(pfy.post(create, wrong), 400, 8251)

    text = requests.post(pfy.url + create, data=json.dumps(good), timeout=5,
                         headers={**pfy.headers, 'Content-Type': 'text/plain'})
    assert text.status_code == 400
    assert pfy.post('/v1/shops/999/products.json', good).status_code == 404
    assert pfy.get(f'/v1/shops/{SHOP}/products/{"0" * 24}.json').status_code == 404


def test_printify_publish_refusals_and_lock(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    flags = dict.fromkeys(('title', 'description', 'images', 'variants', 'tags'), True)
    cheap = pfy.create(pfy.product_body(price=999))
    base = f'/v1/shops/{SHOP}/products/{cheap["id"]}'
    rejected(pfy.post(base + '/publish.json', flags), 400, 8251, 'below', 'cost')
    rejected(pfy.post(base + '/publish.json', {'title': True}), 400, 8150, 'description')
    assert pfy.ok('GET', base + '.json')['is_locked'] is False

    fake.configure(shops=[{'id': SHOP, 'title': 'S', 'sales_channel': None}])
    product = pfy.create(pfy.product_body(price=2499))
    path = f'/v1/shops/{SHOP}/products/{product["id"]}'
    rejected(pfy.post(path + '/publish.json', flags), 400, 8254)
    fake.configure(shops=[{'id': SHOP, 'title': 'S', 'sales_channel': 'etsy'}])
    assert pfy.post(path + '/publish.json', flags).status_code == 200
    rejected(pfy.put(path + '.json', {'title': 'New'}), 400, 8252)
    rejected(pfy.call('DELETE', path + '.json'), 400, 8252)
    rejected(pfy.post(path + '/publish.json', flags), 400, 8252)


def test_printify_update_and_delete(fakes):
    pfy = Pfy(fakes.start('printify'))
    product = pfy.create(pfy.product_body())
    path = f'/v1/shops/{SHOP}/products/{product["id"]}.json'
    first = product['variants'][0]['id']
    enabled = [v['id'] for v in product['variants'] if v['is_enabled']]
    updated = pfy.ok('PUT', path, {'title': 'Renamed', 'blueprint_id': 6,
                                   'variants': [{'id': enabled[0], 'price': 2599,
                                                 'is_enabled': False}]})
    assert updated['title'] == 'Renamed' and updated['blueprint_id'] == 12
    changed = next(v for v in updated['variants'] if v['id'] == enabled[0])
    assert (changed['price'], changed['is_enabled']) == (2599, False)
    rejected(pfy.put(path, {'variants': [{'id': first, 'is_enabled': False}]}), 400, 8150,
             'variants.0.price')
    partial = {'print_areas': [{'variant_ids': enabled, 'placeholders': product['print_areas'][0]
                                ['placeholders']}]}
    rejected(pfy.put(path, partial), 400, 8251, 'cover')
    assert pfy.ok('DELETE', path) == {}
    assert pfy.get(path).status_code == 404


def test_printify_auth_and_user_agent(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    wrong = pfy.get('/v1/shops.json', headers={'Authorization': 'Bearer nope'})
    assert wrong.status_code == 401 and wrong.json()['message'] == 'Unauthenticated.'
    bare = requests.get(pfy.url + '/v1/shops.json', headers={'User-Agent': AGENT}, timeout=5)
    assert bare.status_code == 401
    library = requests.get(pfy.url + '/v1/shops.json', timeout=5,
                           headers={'Authorization': f'Bearer {PFY_TOKEN}'})
    assert library.status_code == 400 and 'User-Agent' in library.json()['message']
    empty = pfy.get('/v1/shops.json', headers={'User-Agent': ''})
    assert empty.status_code == 400
    recorded = fake.requests('/v1/')
    assert [r['status'] for r in recorded] == [401, 401, 400, 400]
    assert recorded[2]['headers']['User-Agent'].startswith('python-requests/')
    assert requests.get(fake.url + '/_fake/state', timeout=5).json()['errors'] == 4


def test_printify_rate_limits(fakes):
    fake = fakes.start('printify', rate_catalog_per_min=3)
    pfy = Pfy(fake)
    answers = [pfy.get('/v1/catalog/blueprints.json') for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert all(a.headers['X-RateLimit-Limit'] == '3' for a in answers)
    assert 1 <= int(answers[-1].headers['Retry-After']) <= 60
    other = pfy.get('/v1/shops.json')
    assert other.status_code == 200 and other.headers['X-RateLimit-Limit'] == '600'

    fake.configure(rate_global_per_min=4, retry_after_header=False)
    assert pfy.get('/v1/shops.json').status_code == 429
    assert 'Retry-After' not in pfy.get('/v1/shops.json').headers
    state = requests.get(fake.url + '/_fake/state', timeout=5).json()
    assert state['rate_limited'] == 3 and state['requests_by_group']['catalog'] == 4


def test_printify_failure_injection(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    body = pfy.product_body()
    fake.configure(fail_next=[{'path_contains': '/products.json', 'status': 500, 'times': 1}])
    assert pfy.post(f'/v1/shops/{SHOP}/products.json', body).status_code == 500
    fake.configure(crash_after_create=True)
    with pytest.raises(requests.ConnectionError):
        pfy.post(f'/v1/shops/{SHOP}/products.json', body)
    assert pfy.ok('GET', f'/v1/shops/{SHOP}/products.json')['total'] == 1
    creates = [r for r in fake.requests(f'/v1/shops/{SHOP}/products.json')
               if r['method'] == 'POST']
    assert [(r['status'], r['dropped']) for r in creates] == [(500, False), (200, True)]
    pfy.create(body)
    assert pfy.ok('GET', f'/v1/shops/{SHOP}/products.json')['total'] == 2

    fake.configure(slow={'path_contains': '/shops.json', 'seconds': 0.4})
    started = time.monotonic()
    assert pfy.get('/v1/shops.json').status_code == 200
    assert time.monotonic() - started >= 0.4
    fake.reset()
    assert requests.get(fake.url + '/_fake/state', timeout=5).json()['products'] == []


# Shopify helpers ###########################################################

def gql(fake, query, variables=None, version='2025-04', token=TOKEN):
    response = requests.post(f'{fake.url}/admin/api/{version}/graphql.json', timeout=10,
                             headers={'X-Shopify-Access-Token': token},
                             json={'query': query, 'variables': variables or {}})
    return response


def data(response):
    assert response.status_code == 200, response.text
    body = response.json()
    assert 'errors' not in body, body
    assert set(body['extensions']['cost']['throttleStatus']) == {
        'maximumAvailable', 'currentlyAvailable', 'restoreRate'}
    return body['data']


def errors(response):
    assert response.status_code == 200, response.text
    body = response.json()
    assert 'data' not in body and body['errors'], body
    assert 'cost' in body['extensions']
    problems = [p['explanation'] for e in body['errors']
                for p in e.get('extensions', {}).get('problems', [])]
    return ' | '.join([e['message'] for e in body['errors']] + problems)


PRODUCT_SET = '''
mutation Sync($input: ProductSetInput!, $identifier: ProductSetIdentifiers) {
  productSet(input: $input, identifier: $identifier, synchronous: true) {
    product {
      id handle title status onlineStoreUrl
      variants(first: 50) { nodes { id title price sku selectedOptions { name value } } }
      media(first: 10) {
        nodes { status mediaErrors { code message } ... on MediaImage { image { width height } } }
      }
    }
    userErrors { field message code }
  }
}'''

PUBLISH = '''
mutation Publish($id: ID!, $input: [PublicationInput!]!) {
  publishablePublish(id: $id, input: $input) {
    publishable { ... on Product { id onlineStoreUrl } }
    userErrors { field message }
  }
}'''

STAGE = '''
mutation Stage($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}'''


def product_input(sizes=('S', 'M', 'L'), price='24.99', **extra):
    return {'title': 'Retro Sunset Tee', 'descriptionHtml': '<p>Sunset.</p>', 'vendor': 'POD',
            'productType': 'T-Shirt', 'tags': ['sun'], 'status': 'ACTIVE',
            'productOptions': [{'name': 'Size', 'values': [{'name': s} for s in sizes]},
                               {'name': 'Color', 'values': [{'name': 'Black'}]}],
            'variants': [{'optionValues': [{'optionName': 'Size', 'name': s},
                                           {'optionName': 'Color', 'name': 'Black'}],
                          'price': price, 'sku': f'TEE-{s}'} for s in sizes], **extra}


def stage(fake, upload=True, data=None):
    """Create a staged target and (optionally) POST the file to it."""
    targets = data_of(gql(fake, STAGE, {'input': [{
        'filename': 'art.png', 'mimeType': 'image/png', 'httpMethod': 'POST',
        'resource': 'IMAGE'}]}))['stagedUploadsCreate']['stagedTargets']
    target = targets[0]
    if upload:
        form = [(p['name'], (None, p['value'])) for p in target['parameters']]
        answer = requests.post(target['url'], timeout=10,
                               files=form + [('file', ('art.png', data or png(), 'image/png'))])
        assert answer.status_code == 201, answer.text
    return target


def data_of(response):
    return data(response)


def user_errors(response, mutation='productSet'):
    result = data(response)[mutation]
    return {tuple(e['field'] or ()): e for e in result['userErrors']}


# Shopify: the flow that works ##############################################

def test_shopify_accepts_the_documented_flow(fakes):
    fake = fakes.start('shopify')
    assert data(gql(fake, '{ shop { name } }')) == {'shop': {'name': 'Test Shop'}}
    publications = data(gql(fake, '{ publications(first: 10) { edges { node { id name '
                                  'catalog { title } } } } }'))['publications']['edges']
    online = [e['node']['id'] for e in publications if e['node']['name'] == 'Online Store']
    assert online == [ONLINE_STORE] and len(publications) > 1

    target = stage(fake)
    assert target['url'].startswith(fake.url + '/_fake_upload/')
    files = [{'originalSource': target['resourceUrl'], 'contentType': 'IMAGE', 'alt': 'Art',
              'filename': 'art.png'}]
    response = gql(fake, PRODUCT_SET, {'input': product_input(files=files),
                                       'identifier': {'handle': 'retro-sunset-tee'}})
    result = data(response)['productSet']
    assert result['userErrors'] == []
    product = result['product']
    assert product['handle'] == 'retro-sunset-tee' and product['onlineStoreUrl'] is None
    variants = product['variants']['nodes']
    assert [v['price'] for v in variants] == ['24.99'] * 3
    assert variants[0]['selectedOptions'] == [{'name': 'Size', 'value': 'S'},
                                              {'name': 'Color', 'value': 'Black'}]
    media = product['media']['nodes'][0]
    assert media['status'] == 'READY' and media['image'] == {'width': 60, 'height': 72}
    assert set(product) == {'id', 'handle', 'title', 'status', 'onlineStoreUrl', 'variants',
                            'media'}
    cost = response.json()['extensions']['cost']
    assert cost['requestedQueryCost'] == cost['actualQueryCost'] == 10

    published = data(gql(fake, PUBLISH, {'id': product['id'],
                                         'input': [{'publicationId': ONLINE_STORE}]}))
    assert published['publishablePublish']['userErrors'] == []
    url = 'https://test-shop.myshopify.com/products/retro-sunset-tee'
    assert published['publishablePublish']['publishable']['onlineStoreUrl'] == url
    query = 'query One($id: ID!) { product(id: $id) { title onlineStoreUrl } }'
    assert data(gql(fake, query, {'id': product['id']}))['product']['onlineStoreUrl'] == url

    again = data(gql(fake, PRODUCT_SET, {'input': product_input(sizes=('M', 'XL'),
                                                                price='26.00'),
                                         'identifier': {'handle': 'retro-sunset-tee'}}))
    assert again['productSet']['product']['id'] == product['id']
    assert [v['title'] for v in again['productSet']['product']['variants']['nodes']] == [
        'M / Black', 'XL / Black']

    state = requests.get(fake.url + '/_fake/state', timeout=5).json()
    assert len(state['products']) == 1 and state['staged_uploads'] == 1
    assert state['products'][0]['onlineStoreUrl'] == url and state['throttled'] == 0
    recorded = fake.requests('/admin/api/')
    assert recorded[0]['headers']['X-Shopify-Access-Token'] == TOKEN
    assert recorded[0]['json']['query'] == '{ shop { name } }'


def test_shopify_downloads_external_images_itself(fakes):
    fake, printify = fakes.start('shopify'), fakes.start('printify')
    upload = Pfy(printify).upload(png(80, 96))
    readable = f'{printify.url}/_fake/uploads/{upload["id"]}'
    sources = [readable, f'{printify.url}/_fake/uploads/missing',
               f'{printify.url}/_fake/state', 'https://images.example/a.jpg']
    files = [{'originalSource': s, 'contentType': 'IMAGE'} for s in sources]
    result = data(gql(fake, PRODUCT_SET, {'input': product_input(files=files),
                                          'identifier': {'handle': 'external-images'}}))
    assert result['productSet']['userErrors'] == []
    state = requests.get(fake.url + '/_fake/state', timeout=5).json()
    media = state['products'][0]['media']
    assert [m['status'] for m in media] == ['READY', 'FAILED', 'FAILED', 'READY']
    assert (media[0]['width'], media[0]['height']) == (80, 96)
    assert media[1]['errors'][0]['code'] == 'IMAGE_DOWNLOAD_FAILURE'
    assert media[2]['errors'][0]['code'] == 'IMAGE_PROCESSING_FAILURE'  # not an image
    assert state['external_downloads'] == 3  # out of the sandbox's reach: not fetched


def test_shopify_product_create_then_bulk_variants(fakes):
    fake = fakes.start('shopify')
    create = '''mutation($product: ProductCreateInput!) { productCreate(product: $product) {
      product { id variants(first: 10) { nodes { title price } } }
      userErrors { field message } } }'''
    options = [{'name': 'Size', 'values': [{'name': 'S'}, {'name': 'M'}]}]
    made = data(gql(fake, create, {'product': {'title': 'Tee', 'productOptions': options}},
                    version='2025-01'))['productCreate']['product']
    assert made['variants']['nodes'] == [{'title': 'S', 'price': '0.00'}]

    bulk = '''mutation($id: ID!, $variants: [ProductVariantsBulkInput!]!,
                       $strategy: ProductVariantsBulkCreateStrategy) {
      productVariantsBulkCreate(productId: $id, variants: $variants, strategy: $strategy) {
        product { variants(first: 10) { nodes { title price } } }
        userErrors { field message code } } }'''
    variants = [{'optionValues': [{'optionName': 'Size', 'name': s}], 'price': '20.00'}
                for s in ('S', 'M')]
    clash = user_errors(gql(fake, bulk, {'id': made['id'], 'variants': variants}),
                        'productVariantsBulkCreate')
    assert clash[('variants', '0')]['code'] == 'VARIANT_ALREADY_EXISTS'
    done = data(gql(fake, bulk, {'id': made['id'], 'variants': variants,
                                 'strategy': 'REMOVE_STANDALONE_VARIANT'}))
    nodes = done['productVariantsBulkCreate']['product']['variants']['nodes']
    assert nodes == [{'title': 'S', 'price': '20.00'}, {'title': 'M', 'price': '20.00'}]

    old = errors(gql(fake, create, {'product': {'title': 'Tee'}}, version='2024-07'))
    assert "doesn't accept argument 'product'" in old


# Shopify: what it rejects ##################################################

def test_shopify_user_errors_on_bad_input(fakes):
    fake = fakes.start('shopify')
    no_title = user_errors(gql(fake, PRODUCT_SET, {'input': product_input(title='  ')}))
    assert no_title[('input', 'title')]['message'] == "Title can't be blank"
    float_price = json.loads(json.dumps(product_input()))
    float_price['variants'][0]['price'] = 19.99
    assert ('input', 'variants', '0', 'price') in user_errors(
        gql(fake, PRODUCT_SET, {'input': float_price}))
    assert ('input', 'variants', '1', 'price') in user_errors(
        gql(fake, PRODUCT_SET, {'input': product_input(price='19,99')}))
    mismatch = product_input()
    mismatch['variants'][2]['optionValues'][0]['name'] = '3XL'
    found = user_errors(gql(fake, PRODUCT_SET, {'input': mismatch}))
    assert found[('input', 'variants', '2', 'optionValues', '0')]['code'] == \
        'OPTION_VALUE_DOES_NOT_EXIST'
    alone = {k: v for k, v in product_input().items() if k != 'variants'}
    assert user_errors(gql(fake, PRODUCT_SET, {'input': alone}))[('input', 'variants')][
        'code'] == 'VARIANTS_INPUT_MISSING'

    sizes = [f'S{n}' for n in range(50)]
    colors = [f'C{n}' for n in range(41)]
    huge = {'title': 'Huge', 'productOptions': [
        {'name': 'Size', 'values': [{'name': s} for s in sizes]},
        {'name': 'Color', 'values': [{'name': c} for c in colors]}],
        'variants': [{'optionValues': [{'optionName': 'Size', 'name': s},
                                       {'optionName': 'Color', 'name': c}], 'price': '1.00'}
                     for s in sizes for c in colors][:2049]}
    assert user_errors(gql(fake, PRODUCT_SET, {'input': huge}))[('input', 'variants')][
        'code'] == 'VARIANTS_OVER_LIMIT'
    local = product_input(files=[{'originalSource': 'file:///data/designs/img.png',
                                  'contentType': 'IMAGE'}])
    assert ('input', 'files', '0', 'originalSource') in user_errors(
        gql(fake, PRODUCT_SET, {'input': local}))
    assert requests.get(fake.url + '/_fake/state', timeout=5).json()['products'] == []

    draft = data(gql(fake, PRODUCT_SET, {'input': product_input(status='DRAFT',
                                                                handle='taken')}))
    product_id = draft['productSet']['product']['id']
    refused = user_errors(gql(fake, PUBLISH, {'id': product_id, 'input': [
        {'publicationId': ONLINE_STORE}]}), 'publishablePublish')
    assert ('id',) in refused
    fake.configure(publications=[{'id': 'gid://shopify/Publication/9', 'name': 'Shop'}])
    unknown = user_errors(gql(fake, PUBLISH, {'id': product_id, 'input': [
        {'publicationId': ONLINE_STORE}]}), 'publishablePublish')
    assert ('input', '0', 'publicationId') in unknown
    taken = user_errors(gql(fake, PRODUCT_SET, {'input': product_input(handle='taken')}))
    assert taken[('input', 'handle')]['code'] == 'HANDLE_NOT_UNIQUE'

    never = stage(fake, upload=False)
    wrong_url = stage(fake)
    files = [{'originalSource': never['resourceUrl'], 'contentType': 'IMAGE'},
             {'originalSource': wrong_url['url'], 'contentType': 'IMAGE'}]
    result = data(gql(fake, PRODUCT_SET, {'input': product_input(files=files)}))
    statuses = [m['status'] for m in result['productSet']['product']['media']['nodes']]
    assert statuses == ['FAILED', 'FAILED']


def test_shopify_rejects_bad_graphql_and_transport(fakes):
    fake = fakes.start('shopify')
    rest = requests.post(f'{fake.url}/admin/api/2024-01/products.json', timeout=5,
                         headers={'X-Shopify-Access-Token': TOKEN},
                         json={'product': {'title': 'x', 'bodyHtml': 'y'}})
    assert rest.status_code == 404
    assert gql(fake, '{ shop { name } }', version='2024-02').status_code == 404
    bad_token = gql(fake, '{ shop { name } }', token='shpat_wrong')
    assert bad_token.status_code == 401
    assert bad_token.json() == {'errors': '[API] Invalid API key or access token '
                                          '(unrecognized login or wrong password)'}

    rest_shape = {'title': 'x', 'bodyHtml': 'y', 'images': [{'src': 'file:///a.png'}]}
    message = errors(gql(fake, PRODUCT_SET, {'input': rest_shape}))
    assert 'bodyHtml' in message
    inline = 'mutation { productSet(input: {title: "x", bodyHtml: "y"}) { product { id } } }'
    assert 'invalid value' in errors(gql(fake, inline))
    assert "doesn't exist on type 'Shop'" in errors(gql(fake, '{ shop { name nope } }'))
    assert 'first or last' in errors(gql(fake, '{ products { nodes { id } } }'))
    assert 'maximum page size' in errors(gql(fake, '{ products(first: 251) { nodes { id } } }'))
    assert 'must have selections' in errors(gql(fake, '{ shop }'))
    assert "doesn't exist on type 'Mutation'" in errors(
        gql(fake, PRODUCT_SET, {'input': product_input()}, version='2024-01'))
    assert "doesn't accept argument 'identifier'" in errors(
        gql(fake, PRODUCT_SET, {'input': product_input()}, version='2024-10'))
    mismatch = 'mutation($input: ProductInput!) { productSet(input: $input) { product { id } } }'
    assert 'Type mismatch' in errors(gql(fake, mismatch, {'input': {'title': 'x'}}))
    unused = 'query($id: ID!) { shop { name } }'
    assert 'not used' in errors(gql(fake, unused, {'id': '1'}))
    interface = ('mutation($id: ID!) { publishablePublish(id: $id, input: []) { '
                 'publishable { id } } }')
    assert "'id' doesn't exist on type 'Publishable'" in errors(gql(fake, interface,
                                                                    {'id': 'x'}))
    status = 'mutation($i: ProductSetInput!) { productSet(input: $i) { product { id } } }'
    assert 'PUBLISHED' in errors(gql(fake, status, {'i': {'title': 'x', 'status': 'PUBLISHED'}}))
    parse = gql(fake, '{ shop { name }')
    assert 'Parse error' in errors(parse)


def test_shopify_throttling(fakes):
    fake = fakes.start('shopify', bucket_max=25, restore_rate=0.01)
    first = gql(fake, PRODUCT_SET, {'input': product_input()})
    assert data(first)['productSet']['userErrors'] == []
    assert first.json()['extensions']['cost']['throttleStatus']['currentlyAvailable'] == 15
    data(gql(fake, PRODUCT_SET, {'input': product_input(title='Second')}))
    throttled = gql(fake, PRODUCT_SET, {'input': product_input(title='Third')})
    assert throttled.status_code == 200
    body = throttled.json()
    assert body['errors'][0]['message'] == 'Throttled'
    assert body['errors'][0]['extensions']['code'] == 'THROTTLED' and 'data' not in body
    assert body['extensions']['cost']['actualQueryCost'] is None
    assert body['extensions']['cost']['requestedQueryCost'] == 10

    fake.configure(throttle_status_code=429)
    limited = gql(fake, '{ publications(first: 10) { nodes { id } } }')
    assert limited.status_code == 429 and limited.json()['errors'][0]['message'] == 'Throttled'
    state = requests.get(fake.url + '/_fake/state', timeout=5).json()
    assert state['throttled'] == 2 and len(state['products']) == 2
    fake.configure(bucket_max=1000, bucket_available=1000)
    assert gql(fake, '{ shop { name } }').status_code == 200


def test_shopify_failure_injection_and_uploads(fakes):
    fake = fakes.start('shopify')
    fake.configure(fail_next=[{'operation': 'productSet', 'status': 500}])
    failed = gql(fake, PRODUCT_SET, {'input': product_input()})
    assert failed.status_code == 500
    error = failed.json()['errors'][0]
    assert error['extensions']['code'] == 'INTERNAL_SERVER_ERROR' and error['extensions'][
        'requestId']
    fake.configure(user_error_next={'mutation': 'productSet', 'field': ['input', 'title'],
                                    'message': 'Injected'})
    result = data(gql(fake, PRODUCT_SET, {'input': product_input()}))['productSet']
    assert result['product'] is None
    assert result['userErrors'] == [{'field': ['input', 'title'], 'message': 'Injected',
                                     'code': 'INVALID_INPUT'}]
    assert data(gql(fake, PRODUCT_SET, {'input': product_input()}))['productSet']['product']
    fake.configure(fail_next=[{'path_contains': 'graphql', 'status': 0}])
    with pytest.raises(requests.ConnectionError):
        gql(fake, '{ shop { name } }')

    target = stage(fake, upload=False)
    params = [(p['name'], (None, p['value'])) for p in target['parameters']]
    missing = requests.post(target['url'], files=params[1:] + [('file', ('a.png', png()))],
                            timeout=5)
    assert missing.status_code == 400 and 'InvalidPolicyDocument' in missing.text
    file_first = requests.post(target['url'], files=[('file', ('a.png', png()))] + params,
                               timeout=5)
    assert file_first.status_code == 400
    assert requests.post(fake.url + '/_fake_upload/unknown', files=params,
                         timeout=5).status_code == 403
    big = stage(fake, data=png(4600, 4600))
    files = [{'originalSource': big['resourceUrl'], 'contentType': 'IMAGE'}]
    media = data(gql(fake, PRODUCT_SET, {'input': product_input(title='Big', files=files)}))
    node = media['productSet']['product']['media']['nodes'][0]
    assert node['status'] == 'FAILED' and '4472' in node['mediaErrors'][0]['message']
