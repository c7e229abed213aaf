"""The publish lifecycle as the platforms really run it (tests/fakes/printify.py,
shopify.py): an API shop's publish lock answered with the storefront product,
a connected shop's slow sync followed after the job ends, Shopify variants
that can be bought, and creates that happen at most once."""

import time

import requests
from test_platforms import SHOPIFY_TOKEN, by_platform, generate, platform_engine, state

VARIANTS = '''query Variants($id: ID!) { product(id: $id) { id status
  variants(first: 40) { nodes { sku price availableForSale inventoryPolicy
    inventoryItem { tracked } } } } }'''


def shopify_product(shopify, gid):
    for _ in range(20):  # the cost bucket may need a moment to refill
        answer = requests.post(f'{shopify.url}/admin/api/2026-10/graphql.json', timeout=5,
                               headers={'X-Shopify-Access-Token': SHOPIFY_TOKEN},
                               json={'query': VARIANTS, 'variables': {'id': gid}}).json()
        if 'data' in answer:
            return answer['data']['product']
        time.sleep(1)
    raise AssertionError(answer)


def mutations(shopify, name):
    return [r for r in shopify.requests('/admin/')
            if f'{name}(' in ((r.get('json') or {}).get('query') or '')]


def connected(printify_fake, shopify=None, **scenario):
    """A Printify fake whose shop is connected to Shopify (synced by the fake)."""
    extra = {'shopify_fake_url': shopify.url} if shopify else {}
    return printify_fake.start('printify', shops=[{'id': 7, 'title': 'test-shop',
                                                   'sales_channel': 'shopify'}],
                               **extra, **scenario)


def wait_products(engine, job_id, status, timeout=30):
    return engine.wait_for(job_id, 'completed', timeout=timeout, where=lambda job: all(
        p['status'] == status for p in by_platform(job, 'printify')))


# An API shop: the engine makes the Shopify product and answers Printify ------------

def test_an_api_shop_product_is_linked_to_a_purchasable_shopify_product(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify)
    job = engine.wait_for(generate(engine, ('tshirt', 'hoodie')), 'completed', timeout=60)
    made, listed = state(printify)['products'], state(shopify)['products']
    assert len(made) == 2 and len(listed) == 2
    assert not [p for p in made if p['is_locked']]
    assert state(printify)['publishing_succeeded'] == 2
    for entry in by_platform(job, 'printify'):
        assert entry['status'] == 'published' and entry['shopifyProductId']
        [upstream] = [p for p in made if p['id'] == entry['productId']]
        numeric = entry['shopifyProductId'].rsplit('/', 1)[-1]
        assert upstream['external']['id'] == numeric
        assert upstream['external']['handle'] == entry['storeUrl']
        listing = shopify_product(shopify, entry['shopifyProductId'])
        enabled = {v['sku']: v['price'] for v in upstream['variants'] if v['is_enabled']}
        sold = {v['sku']: round(float(v['price']) * 100) for v in listing['variants']['nodes']}
        assert sold == enabled  # same SKUs, each at Printify's own price
        assert len(set(sold.values())) > 1  # 2XL costs more than M
        assert all(v['availableForSale'] and v['inventoryPolicy'] == 'CONTINUE' and
                   not v['inventoryItem']['tracked'] for v in listing['variants']['nodes'])
    for entry in by_platform(job, 'shopify'):
        assert entry['status'] == 'published' and entry['printifyProductId']
    info = engine.get('/api/info').json()['config']['shops']['printify']
    assert info['salesChannel'] == 'custom_integration' and info['shopKind'] == 'api'


def test_a_failed_storefront_listing_leaves_no_printify_product_locked(engines, fakes):
    printify = fakes.start('printify')
    shopify = fakes.start('shopify', user_error_next={
        'mutation': 'productSet', 'field': ['input', 'title'], 'message': 'Title is rude'})
    engine = platform_engine(engines, printify, shopify)
    job = engine.wait_for(generate(engine, maxRetries=0), 'failed', timeout=60)
    assert 'Title is rude' in job['error']
    assert [p['is_locked'] for p in state(printify)['products']] == [False]
    [entry] = by_platform(job, 'printify')
    assert entry['status'] == 'publish_failed' and 'Title is rude' in entry['error']


def test_an_api_shop_without_a_storefront_makes_unlocked_drafts(engines, fakes):
    printify = fakes.start('printify')
    engine = platform_engine(engines, printify)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert state(printify)['publishes'] == 0
    assert [p['is_locked'] for p in state(printify)['products']] == [False]
    assert by_platform(job, 'printify')[0]['status'] == 'draft'
    assert 'no storefront configured' in engine.log()


def test_shopify_alone_warns_that_no_one_prints_and_still_sells(engines, fakes):
    shopify = fakes.start('shopify')
    engine = platform_engine(engines, shopify=shopify)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert 'WARNING' in engine.log() and 'no print provider' in engine.log()
    [entry] = by_platform(job, 'shopify')
    listing = shopify_product(shopify, entry['productId'])
    assert all(v['availableForSale'] and v['sku'] for v in listing['variants']['nodes'])


# A connected shop: Printify's sync makes the Shopify product, later ----------------

def test_a_connected_shop_sync_that_outlasts_the_old_wait(engines, fakes):
    shopify = fakes.start('shopify')
    # 90 s, the far end of what the sync takes, scaled to 2.7 s.
    printify = connected(fakes, shopify, sync_seconds=90, time_scale=0.03)
    engine = platform_engine(engines, printify, shopify, PRINTIFY_SYNC_POLL_MS=200)
    job_id = generate(engine, ('tshirt', 'hoodie'))
    job = engine.wait_for(job_id, 'completed', timeout=60)
    assert [p['status'] for p in by_platform(job, 'printify')] == ['publishing'] * 2
    assert state(printify)['locked'] == 2 and state(shopify)['products'] == []
    job = wait_products(engine, job_id, 'published')
    listed = state(shopify)['products']
    assert len(listed) == 2 and {p['createdBy'] for p in listed} == {'channel'}
    assert not mutations(shopify, 'productSet')  # the engine made no second product
    for entry in by_platform(job, 'printify'):
        assert entry['storeUrl'].startswith('https://test-shop.myshopify.com/products/')
        assert entry['shopifyProductId'] in {p['id'] for p in listed}
    assert any('is published at' in line['message'] for line in job['logs'])


def test_a_connected_shop_of_another_store_is_warned_about(engines, fakes):
    printify = fakes.start('printify', shops=[{'id': 7, 'title': 'Another Store',
                                               'sales_channel': 'shopify'}])
    engine = platform_engine(engines, printify, fakes.start('shopify'))
    assert 'WARNING' in engine.log() and 'may not be' in engine.log()
    shop = engine.get('/api/info').json()['config']['shops']['printify']
    assert (shop['salesChannel'], shop['shopKind']) == ('shopify', 'connected')


def test_a_sync_that_fails_is_marked_and_a_retry_publishes_again(engines, fakes):
    printify = connected(fakes, sync_seconds=1, sync_outcome='failed')
    engine = platform_engine(engines, printify, PRINTIFY_SYNC_POLL_MS=200)
    job_id = generate(engine)
    job = wait_products(engine, job_id, 'publish_failed')
    [entry] = by_platform(job, 'printify')
    assert 'without a store link' in entry['error']
    printify.configure(sync_outcome='succeeded')
    assert engine.post(f'/api/jobs/{job_id}/retry').status_code == 200
    job = wait_products(engine, job_id, 'published')
    assert state(printify)['publishes'] == 2 and len(state(printify)['products']) == 1


def test_a_sync_past_the_deadline_is_publish_failed(engines, fakes):
    printify = connected(fakes, sync_outcome='never')
    engine = platform_engine(engines, printify, PRINTIFY_SYNC_POLL_MS=200,
                             PRINTIFY_SYNC_WAIT_MS=1500)
    job = wait_products(engine, generate(engine), 'publish_failed')
    assert 'did not finish within' in by_platform(job, 'printify')[0]['error']


def test_a_restart_while_publishing_resumes_following(engines, fakes, tmp_path):
    printify = connected(fakes, sync_seconds=4)
    data = tmp_path / 'data'
    first = platform_engine(engines, printify, data_dir=data, PRINTIFY_SYNC_POLL_MS=200)
    job_id = generate(first)
    first.wait_for(job_id, 'completed', timeout=60)
    first.kill9()
    second = platform_engine(engines, printify, data_dir=data, PRINTIFY_SYNC_POLL_MS=200)
    job = wait_products(second, job_id, 'published')
    assert by_platform(job, 'printify')[0]['storeUrl']
    assert len(state(printify)['products']) == 1 and state(printify)['publishes'] == 1


# At most once ------------------------------------------------------------------------

def test_a_5xx_after_a_saved_create_makes_one_product(engines, fakes):
    printify = fakes.start('printify', fail_next=[{
        'path_contains': '/products.json', 'method': 'POST', 'status': 500,
        'after_save': True, 'times': 1}])
    shopify = fakes.start('shopify', fail_next=[{
        'path_contains': 'graphql', 'operation': 'productSet', 'status': 502,
        'after_save': True, 'times': 1}])
    engine = platform_engine(engines, printify, shopify)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert len(state(printify)['products']) == 1 and len(state(shopify)['products']) == 1
    assert job['retryCount'] == 0
    assert any('not creating it again' in line['message'] for line in job['logs'])


# The whole batch, with a crash after a create and 10 % 5xx -----------------------

def crash_after_a_create(engine, printify):
    """kill -9 the engine while a create it sent is being saved upstream."""
    printify.configure(slow={'path_contains': '/products.json', 'seconds': 1.5})
    deadline = time.monotonic() + 60
    while not [r for r in printify.requests('/v1/shops/')
               if r['method'] == 'POST' and r['path'].endswith('/products.json')]:
        assert time.monotonic() < deadline, 'no create was sent'
        time.sleep(0.05)
    engine.kill9()
    time.sleep(2)  # the fake saves the product the engine never hears about
    printify.configure(slow=None)


def batch_through_a_crash(engines, tmp_path, printify, shopify, **env):
    data = tmp_path / 'data'
    printify.configure(error_rate=0.1)
    shopify.configure(error_rate=0.1)
    first = platform_engine(engines, printify, shopify, data_dir=data, **env)
    job_id = generate(first, ('tshirt', 'hoodie'), count=10, maxRetries=5)
    crash_after_a_create(first, printify)
    second = platform_engine(engines, printify, shopify, data_dir=data, **env)
    job = second.wait_for(job_id, 'completed', timeout=150)  # under pytest's 180 s
    printify.configure(error_rate=0)  # what follows reads the outcome
    shopify.configure(error_rate=0)
    return second, job


def purchasable(shopify, gid):
    return all(v['availableForSale'] for v in shopify_product(shopify, gid)['variants']['nodes'])


def report(capsys, kind, printify, shopify):
    with capsys.disabled():
        pfy, shp = state(printify), state(shopify)
        print(f'\n{kind} shop, 10 designs x [tshirt, hoodie], crash after a create, 10 % 5xx: '
              f'{len(pfy["products"])} Printify products ({pfy["total_requests"]} requests, '
              f'{pfy["errors"]} errors), {len(shp["products"])} Shopify products '
              f'({shp["total_requests"]} requests)')


def test_a_batch_on_an_api_shop_links_every_product_once(engines, fakes, tmp_path, capsys):
    # A Shopify Plus bucket: this test reads back every variant of 20 products.
    printify, shopify = fakes.start('printify'), fakes.start('shopify', restore_rate=1000)
    engine, job = batch_through_a_crash(engines, tmp_path, printify, shopify)
    made, listed = state(printify)['products'], state(shopify)['products']
    assert len(made) == 20 and len(listed) == 20
    assert not [p for p in made if p['is_locked']]
    linked = {p['external']['id'] for p in made if p.get('external')}
    assert linked == {p['id'].rsplit('/', 1)[-1] for p in listed}
    for product in made:
        skus = {v['sku'] for v in product['variants'] if v['is_enabled']}
        gid = f'gid://shopify/Product/{product["external"]["id"]}'
        assert {v['sku'] for v in shopify_product(shopify, gid)['variants']['nodes']} == skus
        assert purchasable(shopify, gid)
    assert len(by_platform(job, 'printify')) == 20 and len(by_platform(job, 'shopify')) == 20
    report(capsys, 'API', printify, shopify)


def test_a_batch_on_a_connected_shop_is_synced_once(engines, fakes, tmp_path, capsys):
    shopify = fakes.start('shopify', restore_rate=1000)
    printify = connected(fakes, shopify, sync_seconds=90, time_scale=0.05)
    engine, job = batch_through_a_crash(engines, tmp_path, printify, shopify,
                                        PRINTIFY_SYNC_POLL_MS=300)
    assert state(printify)['locked'] >= 1  # completed before the sync finished
    job = wait_products(engine, job['id'], 'published', timeout=60)
    made, listed = state(printify)['products'], state(shopify)['products']
    assert len(made) == 20 and len(listed) == 20
    assert {p['createdBy'] for p in listed} == {'channel'}
    assert not mutations(shopify, 'productSet')
    assert all(purchasable(shopify, p['id']) for p in listed)
    report(capsys, 'connected', printify, shopify)
