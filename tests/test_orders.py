"""Orders: a Shopify sale of engine products becomes one Printify order
(POST /webhooks/shopify, the ``order`` job), against the fakes."""

import base64
import hashlib
import hmac
import json
import re
import time

import requests
from playwright.sync_api import expect

from test_dashboard import browser, dashboards  # noqa: F401 (fixtures)
from test_platforms import by_platform, generate, platform_engine, state

SECRET = 'shpss_test_webhook_secret'  # the fake Shopify's default app secret
PERSONAL = ('Ada', 'Lovelace', 'Analytical', 'N1 9GU', 'ada@example.com', '7946 0000')


def personal_data(text):
    """How often the fake customer's name, address, e-mail or phone occurs in ``text``
    (whole words: 'Ada' in 'Adapter' is not hers)."""
    return sum(len(re.findall(rf'\b{re.escape(word)}\b', text)) for word in PERSONAL)


def shop_with_products(engines, fakes, data_dir=None, printify_knobs=None,
                       types=('tshirt',), **env):
    printify = fakes.start('printify', **(printify_knobs or {}))
    shopify = fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify, data_dir=data_dir,
                             SHOPIFY_WEBHOOK_SECRET=SECRET, UPSTREAM_RETRY_DELAY_MS=20, **env)
    job = engine.wait_for(generate(engine, types), 'completed', timeout=60)
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={
        'webhook_urls': [f'{engine.url}/webhooks/shopify']})
    return engine, printify, shopify, job


def skus(shopify, job):
    """One SKU of each Shopify product the job made, by product gid."""
    listed = {p['id']: p for p in state(shopify)['products']}
    return {entry['productId']: listed[entry['productId']]['variants'][0]['sku']
            for entry in by_platform(job, 'shopify')}


def sell(shopify, line_items, **extra):
    answer = requests.post(f'{shopify.url}/_fake/orders', timeout=30,
                           json={'line_items': line_items, 'wait': True, **extra})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def order_jobs(engine):
    return engine.get('/api/jobs?type=order').json()


def wait_order(engine, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = order_jobs(engine)
        if jobs and all(j['status'] in ('completed', 'failed') for j in jobs):
            return [engine.job(j['id']) for j in jobs]
        time.sleep(0.05)
    raise AssertionError(f'order jobs never finished: {order_jobs(engine)}')


def assert_no_personal_data(engine, *texts):
    shown = [engine.log(), engine.get('/api/jobs').text, *texts]
    for job in order_jobs(engine):
        shown.append(engine.get(f'/api/jobs/{job["id"]}').text)
    assert [personal_data(text) for text in shown] == [0] * len(shown)


def test_a_sale_of_two_engine_products_becomes_one_printify_order(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes,
                                                        types=('tshirt', 'hoodie'))
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={'webhook_repeat': 2})
    tee, hoodie = skus(shopify, job).values()
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}, {'sku': hoodie, 'quantity': 2},
                          {'sku': 'SOMETHING-ELSE', 'quantity': 1}])
    [order_job] = wait_order(engine)
    assert order_job['type'] == 'order' and order_job['priority'] == 'high'
    assert order_job['status'] == 'completed', order_job['error']

    [made] = state(printify)['orders']
    assert made['external_id'] == str(sold['id'])
    assert made['metadata']['shop_order_label'] == sold['name']
    linked = {p['productId']: p for p in by_platform(job, 'printify')}
    items = {(i['product_id'], i['quantity']) for i in made['line_items']}
    assert items == {(p, q) for p, q in zip(linked, (1, 2))} or \
        items == {(p, q) for p, q in zip(linked, (2, 1))}
    for item in made['line_items']:
        assert item['metadata']['sku'] in (tee, hoodie)
    address = made['address_to']
    assert (address['first_name'], address['last_name'], address['country']) == (
        'Ada', 'Lovelace', 'GB')
    assert made['status'] in ('sending-to-production', 'in-production')
    assert state(printify)['orders_sent_to_production'] == 1

    result = order_job['result']
    assert result['orderStatus'] == 'forwarded' and result['printifyOrderId'] == made['id']
    assert result['sentToProduction'] is True
    assert result['ignoredLineItems'] == [{'sku': 'SOMETHING-ELSE', 'quantity': 1}]
    deliveries = [d for d in state(shopify)['webhook_deliveries'] if d['topic'] == 'orders/create']
    assert len(deliveries) == 2 and {d['status'] for d in deliveries} == {200}
    assert_no_personal_data(engine)


def test_a_bad_signature_gets_401_and_makes_no_job(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes)
    tee = next(iter(skus(shopify, job).values()))
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}], deliver=False)
    body = json.dumps(sold).encode()
    url = f'{engine.url}/webhooks/shopify'
    headers = {'Content-Type': 'application/json', 'X-Shopify-Topic': 'orders/create'}
    for signature in (None, 'bm90IGEgc2lnbmF0dXJl', base64.b64encode(hmac.new(
            b'another secret', body, hashlib.sha256).digest()).decode()):
        sent = dict(headers, **({'X-Shopify-Hmac-Sha256': signature} if signature else {}))
        answer = requests.post(url, data=body, headers=sent, timeout=5)
        assert answer.status_code == 401 and 'error' in answer.json()
    assert order_jobs(engine) == []
    good = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    answer = requests.post(url, data=body, timeout=5,
                           headers=dict(headers, **{'X-Shopify-Hmac-Sha256': good}))
    assert answer.status_code == 200 and answer.json()['jobId']
    again = requests.post(url, data=body, timeout=5,
                          headers=dict(headers, **{'X-Shopify-Hmac-Sha256': good}))
    assert again.json()['jobId'] == answer.json()['jobId']
    assert len(wait_order(engine)) == 1 and len(state(printify)['orders']) == 1


def test_a_lost_create_answer_makes_no_second_order(engines, fakes):
    engine, printify, shopify, job = shop_with_products(
        engines, fakes, printify_knobs={'crash_after_order_create': True})
    tee = next(iter(skus(shopify, job).values()))
    sell(shopify, [{'sku': tee, 'quantity': 3}])
    [order_job] = wait_order(engine)
    assert order_job['status'] == 'completed', order_job['error']
    [made] = state(printify)['orders']
    assert order_job['result']['printifyOrderId'] == made['id']
    assert any('already exists' in line['message'] for line in order_job['logs'])


def test_order_hold_leaves_the_order_for_the_seller(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes, ORDER_HOLD='true')
    tee = next(iter(skus(shopify, job).values()))
    sell(shopify, [{'sku': tee, 'quantity': 1}])
    [order_job] = wait_order(engine)
    [made] = state(printify)['orders']
    assert made['status'] == 'on-hold' and state(printify)['orders_sent_to_production'] == 0
    assert order_job['result']['sentToProduction'] is False


def test_a_sale_of_other_products_makes_no_job(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes)
    sell(shopify, [{'sku': 'NOT-OURS', 'quantity': 1}])
    assert order_jobs(engine) == [] and state(printify)['orders'] == []
    answer = engine.get('/api/jobs?type=nonsense')
    assert answer.status_code == 400 and 'type must be one of' in answer.json()['error']


def test_kill_9_after_the_printify_create_then_restart_makes_one_order(engines, fakes,
                                                                        tmp_path):
    data = tmp_path / 'data'
    engine, printify, shopify, job = shop_with_products(engines, fakes, data_dir=data)
    printify.configure(slow={'path_contains': '/orders.json', 'seconds': 1})
    tee = next(iter(skus(shopify, job).values()))
    sell(shopify, [{'sku': tee, 'quantity': 1}])
    deadline = time.monotonic() + 30
    while not [r for r in printify.requests('/v1/shops/')
               if r['method'] == 'POST' and r['path'].endswith('/orders.json')]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    engine.kill9()
    time.sleep(1.5)  # the fake finishes the create the engine never heard about
    assert len(state(printify)['orders']) == 1
    printify.configure(slow=None)
    second = platform_engine(engines, printify, shopify, data_dir=data,
                             SHOPIFY_WEBHOOK_SECRET=SECRET)
    [order_job] = wait_order(second)
    assert order_job['status'] == 'completed', order_job['error']
    [made] = state(printify)['orders']
    assert order_job['result']['printifyOrderId'] == made['id']
    assert_no_personal_data(second)


def test_the_dashboard_lists_orders_under_their_own_filter(engines, fakes, dashboards):
    engine, printify, shopify, job = shop_with_products(engines, fakes)
    tee = next(iter(skus(shopify, job).values()))
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}])
    [order_job] = wait_order(engine)
    dashboard = dashboards(engine)
    page = dashboard.open()
    expect(page.locator('tr.job-row')).to_have_count(2)
    page.locator('[data-filter="order"]').click()
    rows = page.locator('tr.job-row')
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute('data-id', order_job['id'])
    expect(rows.first.locator('.job-title')).to_have_text(f'Order {sold["name"]} · forwarded')
    assert personal_data(page.content()) == 0
    dashboard.close()
