"""Printify and Shopify publishing against the strict fakes in tests/fakes/."""

import json
import time

import requests

PRINTIFY_TOKEN = 'test-printify-token'
SHOPIFY_TOKEN = 'shpat_test_token_not_real'
ETSY_SHOP = [{'id': 1001, 'title': 'Etsy shop', 'sales_channel': 'etsy'}]


def state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def platform_engine(engines, printify=None, shopify=None, data_dir=None, **env):
    settings = {'CUSTOM_HANDLERS': 'testkit', 'IMAGE_BACKEND': 'tiny', 'MIN_SOURCE_PX': 1000,
                **env}
    if printify:
        settings.update(PRINTIFY_API_URL=printify.url, PRINTIFY_API_TOKEN=PRINTIFY_TOKEN)
    if shopify:
        settings.update(SHOPIFY_STORE_URL=shopify.url, SHOPIFY_ACCESS_TOKEN=SHOPIFY_TOKEN)
    return engines.start(data_dir, **settings)


def generate(engine, types=('tshirt',), **extra):
    return engine.submit({'prompt': 'Retro sunset surf club', 'productTypes': list(types),
                          **extra}, path='/api/generate')


def by_platform(job, platform):
    return [p for p in job['result']['products'] if p['platform'] == platform]


# The whole flow ------------------------------------------------------------------

def test_a_design_on_printify_and_shopify(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify)
    info = engine.get('/api/info').json()['config']
    assert info['platforms'] == ['printify', 'shopify']
    job = engine.wait_for(generate(engine, ('tshirt', 'hoodie')), 'completed', timeout=60)

    made = state(printify)['products']
    assert len(made) == 2 and state(printify)['publishes'] == 2
    for product in by_platform(job, 'printify'):
        assert product['status'] == 'published' and product['storeUrl'].startswith('https://')
        assert product['url'].endswith(str(product['productId']))
    assert {p['blueprint_id'] for p in made} == {12, 77}  # found by brand and model
    for request in printify.requests('/v1/'):
        assert request['headers']['Authorization'] == f'Bearer {PRINTIFY_TOKEN}'
        assert request['headers']['User-Agent'].startswith('pod-engine/')
    sizes = {(f['width'], f['height'])
             for f in job['result']['generatedImages'][0]['printFiles']}
    assert (3852, 4398) in sizes and (4500, 5400) in sizes  # each blueprint's front

    shop_products = state(shopify)['products']
    assert len(shop_products) == 2
    for product in by_platform(job, 'shopify'):
        assert product['productId'].startswith('gid://shopify/Product/')
        assert product['url'].startswith('https://admin.shopify.com/store/')
        assert product['storeUrl'].startswith('https://test-shop.myshopify.com/products/')


def test_dry_run_sends_no_write(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify, DRY_RUN='true')
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert {p['method'] for p in printify.requests('/v1/')} == {'GET'}
    assert not [r for r in shopify.requests() if 'mutation' in (r['json'] or {}).get('query', '')]
    assert state(printify)['products'] == [] and state(shopify)['products'] == []
    [rehearsal] = by_platform(job, 'printify')
    assert rehearsal['dryRun'] is True
    create = rehearsal['requests'][1]['json']
    assert create['blueprint_id'] == 12 and all(isinstance(v['price'], int)
                                                for v in create['variants'])
    assert by_platform(job, 'shopify')[0]['requests'][-1]['query'].startswith('mutation Publish')


def test_prices_below_the_margin_floor_are_raised_before_publishing(engines, fakes, tmp_path):
    types = tmp_path / 'types.json'
    types.write_text(json.dumps({'tshirt': {'price': 9.99}}))
    printify = fakes.start('printify', shops=ETSY_SHOP, sync_seconds=0)
    engine = platform_engine(engines, printify, PRODUCT_TYPES_FILE=types)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    [product] = state(printify)['products']
    enabled = [v for v in product['variants'] if v['is_enabled']]
    assert all(v['price'] >= v['cost'] * 1.3 and v['price'] % 100 == 99 for v in enabled)
    assert any('to keep 30% over cost' in line['message'] for line in job['logs'])
    assert state(printify)['publishes'] == 1


# Errors -----------------------------------------------------------------------------

def test_a_validation_error_fails_at_once_with_the_upstream_reason(engines, fakes):
    printify = fakes.start('printify', fail_next=[{
        'path_contains': '/products.json', 'method': 'POST', 'status': 400, 'times': 1,
        'message': 'The title may not be greater than 100 characters.'}])
    engine = platform_engine(engines, printify)
    job = engine.wait_for(generate(engine), 'failed', timeout=60)
    assert job['retryCount'] == 0
    assert 'The title may not be greater than 100 characters.' in job['error']


def test_429_and_5xx_are_waited_out_without_spending_retries(engines, fakes):
    printify = fakes.start('printify', shops=ETSY_SHOP, sync_seconds=0, fail_next=[
        {'path_contains': '/uploads/images.json', 'status': 429, 'times': 1, 'retry_after': 1},
        {'path_contains': '/publish.json', 'status': 500, 'times': 1}])
    engine = platform_engine(engines, printify)
    started = time.monotonic()
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert job['retryCount'] == 0 and time.monotonic() - started >= 1
    assert state(printify)['publishes'] == 1 and len(state(printify)['products']) == 1


def test_shopify_user_errors_fail_the_job_with_their_message(engines, fakes):
    shopify = fakes.start('shopify', user_error_next={
        'mutation': 'productSet', 'field': ['input', 'title'], 'message': 'Title is rude'})
    engine = platform_engine(engines, shopify=shopify)
    job = engine.wait_for(generate(engine), 'failed', timeout=60)
    assert job['retryCount'] == 0 and 'Title is rude' in job['error']


def test_shopify_cost_bucket_is_respected(engines, fakes):
    shopify = fakes.start('shopify', bucket_max=40, restore_rate=25)
    engine = platform_engine(engines, shopify=shopify)
    job = engine.wait_for(generate(engine, count=5), 'completed', timeout=60)
    assert len(by_platform(job, 'shopify')) == 5
    assert state(shopify)['throttled'] == 0


def test_health_reports_each_platform(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify, HEALTH_CHECK_INTERVAL_MS=200)
    body = engine.get('/health').json()
    assert body['status'] == 'healthy'
    assert body['services']['printify'] is True and body['services']['shopify'] is True
    printify.configure(token='another-token')
    deadline = time.monotonic() + 5
    while (body := engine.get('/health').json())['status'] != 'degraded':
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert body['services']['printify'] is False


# No duplicates, within the limits ------------------------------------------------

def test_a_lost_create_answer_is_found_upstream_not_created_again(engines, fakes):
    printify = fakes.start('printify', crash_after_create=True)
    engine = platform_engine(engines, printify)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    assert job['retryCount'] == 0  # looked up and adopted in place
    assert len(state(printify)['products']) == 1
    assert any('not creating it again' in line['message'] for line in job['logs'])


def test_kill_9_mid_publish_then_restart_makes_each_product_once(engines, fakes, tmp_path):
    printify = fakes.start('printify', slow={'path_contains': '/products.json', 'seconds': 2})
    data = tmp_path / 'data'
    first = platform_engine(engines, printify, data_dir=data)
    job_id = generate(first, ('tshirt', 'hoodie'), count=2)
    deadline = time.monotonic() + 30
    while not [r for r in printify.requests('/v1/shops/') if r['method'] == 'POST']:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.kill9()
    time.sleep(2.5)  # the fake finishes the creates the engine never heard about
    in_flight = [r for r in printify.requests('/v1/shops/') if r['method'] == 'POST']
    assert len(state(printify)['products']) == len(in_flight) >= 1
    printify.configure(slow=None)
    second = platform_engine(engines, printify, data_dir=data)
    job = second.wait_for(job_id, 'completed', timeout=90)
    made = state(printify)['products']
    assert len(made) == 4 and len({p['id'] for p in made}) == 4
    assert sorted(p['productId'] for p in by_platform(job, 'printify')) == \
        sorted(p['id'] for p in made)


def test_a_50_design_batch_stays_inside_the_rate_limit(engines, fakes, capsys):
    # Printify's 600/min, scaled to 40 per 3 s on both sides so the test is quick.
    printify = fakes.start('printify', rate_global_per_min=40, rate_window_scale=0.05,
                           front_size=[1200, 1440])
    engine = platform_engine(engines, printify, PRINTIFY_RATE_LIMIT='40/3')
    started = time.monotonic()
    job = engine.wait_for(generate(engine, count=50), 'completed', timeout=300)
    elapsed = time.monotonic() - started
    upstream = state(printify)
    assert len(by_platform(job, 'printify')) == 50 and len(upstream['products']) == 50
    assert upstream['rate_limited'] == 0
    assert upstream['errors'] / upstream['total_requests'] < 0.05
    assert elapsed >= (upstream['total_requests'] - 40) / 40 * 3 * 0.9  # it was paced
    with capsys.disabled():
        print(f'\n50-design batch: {upstream["total_requests"]} Printify requests, '
              f'{upstream["rate_limited"]} answered 429, {elapsed:.1f}s at 40 per 3 s')


def test_tokens_never_leave_the_engine(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify)
    ok = engine.wait_for(generate(engine), 'completed', timeout=60)
    printify.configure(token='rotated')
    bad = engine.wait_for(generate(engine, maxRetries=0), 'failed', timeout=60)
    seen = [engine.log(), json.dumps(ok), json.dumps(bad),
            engine.get('/api/info').text, engine.get('/health').text,
            engine.get('/api/jobs').text, (engine.data_dir / 'journal.jsonl').read_text()]
    for text in seen:
        assert PRINTIFY_TOKEN not in text and SHOPIFY_TOKEN not in text
    assert '401' in bad['error'] or 'Unauthenticated' in bad['error']


def test_with_a_public_url_printify_fetches_the_design_itself(engines, fakes):
    import socket
    with socket.socket() as probe:  # a free port, so PUBLIC_URL can name it up front
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    printify = fakes.start('printify')
    engine = platform_engine(engines, printify, PORT=port,
                             PUBLIC_URL=f'http://127.0.0.1:{port}')
    job = engine.wait_for(generate(engine, autoPublish=False), 'completed', timeout=60)
    [upload] = [r['json'] for r in printify.requests('/v1/uploads/images.json')]
    assert upload['url'].startswith(f'http://127.0.0.1:{port}/files/designs/')
    assert 'contents' not in upload
    assert state(printify)['publishes'] == 0
    [product] = by_platform(job, 'printify')
    assert product['published'] is False and 'storeUrl' not in product


def test_a_platform_outage_parks_jobs_in_retry_and_they_recover(engines, fakes):
    printify = fakes.start('printify')
    engine = platform_engine(engines, printify, RETRY_DELAY_MS=300, UPSTREAM_RETRY_DELAY_MS=20,
                             HEALTH_CHECK_INTERVAL_MS=200)
    printify.configure(fail_next=[{'path_contains': '/v1/', 'status': 503, 'times': 10_000}])
    job_id = generate(engine, maxRetries=10)
    engine.wait_for(job_id, 'pending', where=lambda j: j['retryCount'] >= 1, timeout=60)
    health = engine.get('/health').json()
    assert health['status'] == 'degraded' and health['services']['printify'] is False
    printify.configure(fail_next=[])
    job = engine.wait_for(job_id, 'completed', timeout=60)
    assert job['retryCount'] >= 1 and len(state(printify)['products']) == 1
    deadline = time.monotonic() + 5
    while engine.get('/health').json()['status'] != 'healthy':
        assert time.monotonic() < deadline
        time.sleep(0.1)
