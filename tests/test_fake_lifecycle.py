"""The fakes' publish lifecycle against the platforms' documented behaviour:
an API shop's lock until the integration answers, a connected shop's sync on
its own clock (making the Shopify product through the fake Shopify),
Shopify's sold-out inventory defaults, and failures after a saved create."""

import time

import requests
from test_fake_platforms import SHOP, TOKEN, Pfy

FLAGS = dict.fromkeys(('title', 'description', 'images', 'variants', 'tags'), True)
VARIANTS = '''query V($id: ID!) { product(id: $id) { tracksInventory
  variants(first: 5) { nodes { sku availableForSale inventoryPolicy inventoryQuantity
    inventoryItem { tracked measurement { weight { value unit } } } } } } }'''


def state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def graphql(fake, query, **variables):
    response = requests.post(f'{fake.url}/admin/api/2026-10/graphql.json', timeout=5,
                             headers={'X-Shopify-Access-Token': TOKEN},
                             json={'query': query, 'variables': variables})
    return response.status_code, response.json()


def published(pfy):
    product = pfy.create(pfy.product_body(price=2499))
    path = f'/v1/shops/{SHOP}/products/{product["id"]}'
    assert pfy.post(path + '/publish.json', FLAGS).status_code == 200
    return path


# Printify ----------------------------------------------------------------------

def test_an_api_shop_stays_locked_until_the_integration_answers(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    path = published(pfy)
    time.sleep(0.5)
    assert pfy.ok('GET', path + '.json')['is_locked'] is True
    assert pfy.put(path + '.json', {'title': 'New'}).status_code == 400  # 8252
    assert pfy.post(path + '/publishing_succeeded.json', {'external': {'id': 5}}).status_code \
        == 400
    external = {'id': '81', 'handle': 'https://shop.example/products/x'}
    pfy.ok('POST', path + '/publishing_succeeded.json', {'external': external})
    product = pfy.ok('GET', path + '.json')
    assert product['is_locked'] is False and product['external'] == external
    assert pfy.put(path + '.json', {'title': 'New'}).status_code == 200

    other = published(pfy)
    pfy.ok('POST', other + '/publishing_failed.json', {'reason': 'Shopify said no'})
    failed = pfy.ok('GET', other + '.json')
    assert failed['is_locked'] is False and 'external' not in failed
    assert failed['publish_failure'] == 'Shopify said no'
    counts = state(fake)
    assert (counts['publishing_succeeded'], counts['publishing_failed'], counts['locked']) == \
        (1, 1, 0)


def test_a_connected_shop_syncs_on_its_own_clock(fakes):
    fake = fakes.start('printify', shops=[{'id': SHOP, 'title': 'E', 'sales_channel': 'etsy'}],
                       sync_seconds=90, time_scale=0.02)
    pfy = Pfy(fake)
    path = published(pfy)
    time.sleep(1)
    assert state(fake)['locked'] == 1
    time.sleep(1.5)  # no read in between: the sync ends on its own
    assert (state(fake)['syncs'], state(fake)['locked']) == (1, 0)
    assert pfy.ok('GET', path + '.json')['external']['handle'].startswith(
        'https://www.etsy.com/listing/')

    fake.configure(sync_outcome='failed', sync_seconds=0.2, time_scale=1)
    failed = published(pfy)
    time.sleep(0.6)
    product = pfy.ok('GET', failed + '.json')
    assert not product['is_locked'] and 'external' not in product and product['publish_failure']


def test_a_shopify_shop_sync_makes_the_shopify_product(fakes):
    shopify = fakes.start('shopify')
    fake = fakes.start('printify', shops=[{'id': SHOP, 'title': 'S', 'sales_channel': 'shopify'}],
                       sync_seconds=0.3, shopify_fake_url=shopify.url)
    pfy = Pfy(fake)
    path = published(pfy)
    time.sleep(1)
    external = pfy.ok('GET', path + '.json')['external']
    [made] = state(shopify)['products']
    assert made['createdBy'] == 'channel' and str(made['num']) == external['id']
    assert external['handle'] == f'https://test-shop.myshopify.com/products/{made["handle"]}'
    skus = {v['sku'] for v in pfy.ok('GET', path + '.json')['variants'] if v['is_enabled']}
    _, answer = graphql(shopify, VARIANTS, id=made['id'])
    nodes = answer['data']['product']['variants']['nodes']
    assert {v['sku'] for v in nodes} <= skus and all(v['availableForSale'] for v in nodes)
    assert state(shopify)['created_by_channel'] == 1


def test_a_create_can_fail_after_it_was_saved(fakes):
    fake = fakes.start('printify', fail_next=[{'path_contains': '/products.json',
                                               'method': 'POST', 'status': 500,
                                               'after_save': True}])
    pfy = Pfy(fake)
    response = pfy.post(f'/v1/shops/{SHOP}/products.json', pfy.product_body())
    assert response.status_code == 500 and len(state(fake)['products']) == 1


# Shopify -----------------------------------------------------------------------

SET = '''mutation S($identifier: ProductSetIdentifiers, $input: ProductSetInput!) {
  productSet(identifier: $identifier, input: $input) { product { id } userErrors { message } } }'''
UPDATE = '''mutation U($product: ProductUpdateInput!) { productUpdate(product: $product) {
  product { id title } userErrors { message } } }'''


def variant_input(**extra):
    return {'title': 'Tee', 'productOptions': [{'name': 'Size', 'values': [{'name': 'M'}]}],
            'variants': [{'optionValues': [{'optionName': 'Size', 'name': 'M'}],
                          'price': '19.99', 'sku': 'SKU-M', **extra}]}


def test_shopify_variants_default_to_sold_out(fakes):
    shopify = fakes.start('shopify')
    cases = {'plain': {}, 'continue': {'inventoryPolicy': 'CONTINUE'},
             'untracked': {'inventoryItem': {'tracked': False, 'measurement': {
                 'weight': {'value': 180.0, 'unit': 'GRAMS'}}}}}
    seen = {}
    for name, extra in cases.items():
        _, answer = graphql(shopify, SET, identifier={'handle': f'tee-{name}'},
                            input=variant_input(**extra))
        gid = answer['data']['productSet']['product']['id']
        _, answer = graphql(shopify, VARIANTS, id=gid)
        seen[name] = answer['data']['product']['variants']['nodes'][0]
    assert seen['plain']['availableForSale'] is False
    assert seen['plain']['inventoryPolicy'] == 'DENY' and seen['plain']['inventoryItem']['tracked']
    assert seen['plain']['inventoryQuantity'] == 0
    assert seen['continue']['availableForSale'] and seen['untracked']['availableForSale']
    assert seen['untracked']['inventoryItem']['measurement']['weight'] == {
        'value': 180.0, 'unit': 'GRAMS'}
    assert seen['plain']['sku'] == 'SKU-M'


def test_shopify_product_update_never_creates(fakes):
    shopify = fakes.start('shopify')
    _, answer = graphql(shopify, UPDATE, product={'id': 'gid://shopify/Product/1', 'title': 'X'})
    assert answer['data']['productUpdate']['userErrors'][0]['message'] == \
        'Product does not exist'
    _, answer = graphql(shopify, SET, identifier={'handle': 'tee'}, input=variant_input())
    gid = answer['data']['productSet']['product']['id']
    _, answer = graphql(shopify, UPDATE, product={'id': gid, 'title': 'Renamed'})
    assert answer['data']['productUpdate']['product']['title'] == 'Renamed'
    assert len(state(shopify)['products']) == 1


def test_shopify_product_set_can_fail_after_it_was_saved(fakes):
    shopify = fakes.start('shopify', fail_next=[{'operation': 'productSet', 'status': 500,
                                                 'after_save': True}])
    status, answer = graphql(shopify, SET, identifier={'handle': 'tee'}, input=variant_input())
    assert status == 500 and answer['errors'][0]['extensions']['code'] == 'INTERNAL_SERVER_ERROR'
    assert len(state(shopify)['products']) == 1
    status, _ = graphql(shopify, SET, identifier={'handle': 'tee'}, input=variant_input())
    assert status == 200 and len(state(shopify)['products']) == 1  # the handle upserts
