"""Forwarded orders followed to the customer's door: production, shipments
(Shopify fulfilments with tracking), delivery and cancellation; and the
reconciler that takes an order no webhook brought. Against the fakes."""

import hashlib
import hmac
import json
import time

import requests
import socketio
from playwright.sync_api import expect

from test_dashboard import browser, dashboards  # noqa: F401 (fixtures)
from test_orders import (SECRET, assert_no_personal_data, order_jobs, personal_data, sell,
                         shop_with_products, skus, wait_order)
from test_platforms import PRINTIFY_TOKEN, platform_engine, state

PRINTIFY_SECRET = 'printify-webhook-secret'
FAST = {'ORDER_POLL_INTERVAL_MS': 400, 'PRINTIFY_WEBHOOK_SECRET': PRINTIFY_SECRET}


def subscribe_printify(printify, engine, topics=('order:shipment:created',
                                                 'order:shipment:delivered')):
    for topic in topics:
        answer = requests.post(
            f'{printify.url}/v1/shops/1001/webhooks.json', timeout=5,
            headers={'Authorization': f'Bearer {PRINTIFY_TOKEN}', 'User-Agent': 'pod-tests'},
            json={'topic': topic, 'url': f'{engine.url}/webhooks/printify',
                  'secret': PRINTIFY_SECRET})
        assert answer.status_code in (200, 201), answer.text


def ship(printify, order_id, **body):
    answer = requests.post(f'{printify.url}/_fake/orders/{order_id}/ship', json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()['shipments'][-1]


def wait_result(engine, job_id, check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = engine.job(job_id)
        if check(job['result'] or {}):
            return job
        time.sleep(0.05)
    print('\n'.join(l for l in engine.log().splitlines() if 'apscheduler' not in l)[-8000:])
    raise AssertionError(f'{job_id} never got there: {engine.job(job_id)["result"]}')


def status_is(*wanted):
    return lambda result: result.get('orderStatus') in wanted


def fulfilled(shopify, fulfilment):
    """(sku, quantity) of each line of a fake Shopify fulfilment."""
    sku_of = {line['id']: line['sku'] for order in state(shopify)['orders']
              for line in order['lineItems']}
    return [(sku_of[line['lineItemId']], line['quantity']) for line in fulfilment['lineItems']]


def forwarded_order(engine, printify):
    [order_job] = wait_order(engine)
    assert order_job['status'] == 'completed', order_job['error']
    return order_job, order_job['result']['printifyOrderId']


def test_each_shipment_becomes_a_shopify_fulfilment_with_its_tracking(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes,
                                                        types=('tshirt', 'hoodie'), **FAST)
    subscribe_printify(printify, engine)
    tee, hoodie = skus(shopify, job).values()
    updates = []
    client = socketio.Client(reconnection=False)
    client.on('job:update', lambda data: updates.append(data))
    client.connect(engine.url, wait_timeout=5)
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}, {'sku': hoodie, 'quantity': 2}])
    order_job, printify_order = forwarded_order(engine, printify)
    wait_result(engine, order_job['id'], status_is('in_production'))

    first = ship(printify, printify_order, skus=[hoodie], carrier='ups', number='1Z999AA1')
    after_one = wait_result(engine, order_job['id'], lambda r: len(r.get('shipments', [])) == 1)
    [made] = state(shopify)['fulfillments']
    assert made['trackingInfo'] == [{'company': 'UPS', 'number': '1Z999AA1',
                                     'url': first['url']}]
    assert made['notifyCustomer'] is True
    assert fulfilled(shopify, made) == [(hoodie, 2)]
    shipment = after_one['result']['shipments'][0]
    assert (shipment['trackingNumber'], shipment['skus']) == ('1Z999AA1', [hoodie])
    assert after_one['result']['orderStatus'] == 'shipped'

    ship(printify, printify_order)  # the rest: the tee, by USPS
    wait_result(engine, order_job['id'], lambda r: len(r.get('shipments', [])) == 2)
    second = state(shopify)['fulfillments'][1]
    assert fulfilled(shopify, second) == [(tee, 1)]
    assert second['trackingInfo'][0]['company'] == 'USPS'
    [shopify_order] = [o for o in state(shopify)['orders'] if o['id'] == sold['gid']]
    assert shopify_order['displayFulfillmentStatus'] == 'FULFILLED'

    requests.post(f'{printify.url}/_fake/orders/{printify_order}/deliver', timeout=5)
    done = wait_result(engine, order_job['id'], status_is('delivered'))
    assert all(s['deliveredAt'] for s in done['result']['shipments'])
    time.sleep(0.5)  # further polls: the order is no longer followed, nothing repeats
    assert len(state(shopify)['fulfillments']) == 2
    seen = [u['result'].get('orderStatus') for u in updates
            if u['id'] == order_job['id'] and u.get('result')]
    assert [s for s in dict.fromkeys(seen)] == ['forwarded', 'in_production', 'shipped',
                                               'delivered']
    client.disconnect()
    assert_no_personal_data(engine, json.dumps(updates))


def test_a_poll_alone_finds_the_shipment_and_a_lost_answer_makes_no_second(engines, fakes,
                                                                           dashboards):
    engine, printify, shopify, job = shop_with_products(engines, fakes, **FAST)
    tee = next(iter(skus(shopify, job).values()))
    sell(shopify, [{'sku': tee, 'quantity': 2}])
    order_job, printify_order = forwarded_order(engine, printify)
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={'fail_next': [
        {'path_contains': 'graphql', 'operation': 'fulfillmentCreate', 'status': 500,
         'after_save': True}]})
    shipped = ship(printify, printify_order, carrier='fedex')  # no webhook: polls find it
    done = wait_result(engine, order_job['id'], status_is('shipped'))
    [made] = state(shopify)['fulfillments']
    assert made['trackingInfo'][0]['number'] == shipped['number']
    assert done['result']['shipments'][0]['shopifyFulfillmentId'] == made['id']
    sent = [r for r in shopify.requests('/admin/') if 'fulfillmentCreate' in
            ((r['json'] or {}).get('query') or '')]
    assert len(sent) == 1  # after the lost answer, the read found it: not sent again
    assert 'following Printify order' in engine.log() and 'answered 500' in engine.log()
    dashboard = dashboards(engine)
    page = dashboard.open()
    page.locator('[data-filter="order"]').click()
    rows = page.locator('tr.job-row')  # the filter shows on the next frame: wait for it
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute('data-id', order_job['id'])
    expect(rows.first.locator('.job-title')).to_have_text(
        f'Order #1001 · shipped (FedEx {shipped["number"]})')
    dashboard.close()


def test_a_cancel_before_production_cancels_the_printify_order(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes, ORDER_HOLD='true',
                                                        **FAST)
    tee = next(iter(skus(shopify, job).values()))
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}])
    order_job, printify_order = forwarded_order(engine, printify)
    requests.post(f'{shopify.url}/_fake/orders/{sold["id"]}/cancel', timeout=5,
                  json={'wait': True})
    done = wait_result(engine, order_job['id'], status_is('cancelled'))
    [made] = state(printify)['orders']
    assert made['status'] == 'canceled' and state(printify)['orders_canceled'] == 1
    assert done['result']['shopifyCancelled'] is True
    assert any('cancelled too' in line['message'] for line in done['logs'])


def test_a_cancel_after_production_says_it_is_too_late(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes, **FAST)
    tee = next(iter(skus(shopify, job).values()))
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}])
    order_job, printify_order = forwarded_order(engine, printify)
    requests.post(f'{shopify.url}/_fake/orders/{sold["id"]}/cancel', timeout=5,
                  json={'wait': True})
    done = wait_result(engine, order_job['id'], lambda r: r.get('cancelRefused'))
    assert 'already in production' in done['result']['cancelRefused']
    assert done['result']['orderStatus'] in ('forwarded', 'in_production')
    [made] = state(printify)['orders']
    assert made['status'] != 'canceled' and state(printify)['orders_canceled'] == 0
    [line] = [entry for entry in done['logs'] if 'can no longer be cancelled' in entry['message']]
    assert line['type'] == 'ERROR'
    time.sleep(0.5)  # the reconciler sees the cancelled order again: no second try
    assert [e['message'] for e in engine.job(order_job['id'])['logs']].count(
        line['message']) == 1


def test_the_reconciler_takes_an_order_no_webhook_brought(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes, **FAST)
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={'webhook_urls': []})
    tee = next(iter(skus(shopify, job).values()))
    sold = sell(shopify, [{'sku': tee, 'quantity': 1}])
    sell(shopify, [{'sku': 'NOT-OURS', 'quantity': 1}])
    [order_job] = wait_order(engine)
    assert order_job['request']['shopifyOrderId'] == sold['gid']
    assert 'no webhook brought' in engine.log()
    # The webhook comes late after all (Shopify retries for hours): the same job.
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={
        'webhook_urls': [f'{engine.url}/webhooks/shopify']})
    requests.post(f'{shopify.url}/_fake/orders/{sold["id"]}/update', timeout=5, json={
        'shipping_address': {'address2': 'Flat 2'}, 'deliver': True, 'wait': True})
    time.sleep(0.5)
    assert len(order_jobs(engine)) == 1 and len(state(printify)['orders']) == 1


def test_orders_sold_before_the_engine_took_orders_are_left_alone(engines, fakes, tmp_path):
    data = tmp_path / 'data'
    engine, printify, shopify, job = shop_with_products(engines, fakes, data_dir=data, **FAST)
    requests.post(f'{shopify.url}/_fake/config', timeout=5, json={'webhook_urls': []})
    tee = next(iter(skus(shopify, job).values()))
    (data / 'orders.json').write_text(json.dumps({'orders': {},
                                                  'intakeSince': time.time() + 3600}))
    engine.stop()
    again = platform_engine(engines, printify, shopify, data_dir=data,
                            SHOPIFY_WEBHOOK_SECRET=SECRET, **FAST)
    sell(shopify, [{'sku': tee, 'quantity': 1}])
    time.sleep(0.8)
    assert order_jobs(again) == [] and state(printify)['orders'] == []


def test_a_printify_webhook_must_be_signed(engines, fakes):
    engine, printify, shopify, job = shop_with_products(engines, fakes, **FAST)
    body = json.dumps({'type': 'order:shipment:created', 'resource': {'id': 'x'}}).encode()
    url = f'{engine.url}/webhooks/printify'
    for signature in (None, 'sha256=00', 'sha256=' + hmac.new(b'other', body,
                                                              hashlib.sha256).hexdigest()):
        headers = {'X-Pfy-Signature': signature} if signature else {}
        answer = requests.post(url, data=body, headers=headers, timeout=5)
        assert answer.status_code == 401 and 'X-Pfy-Signature' in answer.json()['error']
    good = 'sha256=' + hmac.new(PRINTIFY_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(url, data=body, headers={'X-Pfy-Signature': good}, timeout=5)
    assert answer.status_code == 200 and answer.json() == {'received': True, 'followed': False}
    assert personal_data(engine.log()) == 0


def test_twenty_orders_through_5xx_and_a_crash_reach_the_printer_and_come_back_tracked(
        engines, fakes, tmp_path):
    """The closing figure of the orders loop: 20 sales with 10 % of Printify and
    Shopify API calls answered 500 and a kill -9 halfway make exactly 20
    Printify orders and 20 Shopify fulfilments with tracking, and no name or
    address in any log."""
    started = time.monotonic()
    data = tmp_path / 'data'
    env = {**FAST, 'RETRY_DELAY_MS': 200, 'UPSTREAM_RETRY_DELAY_MS': 20}
    engine, printify, shopify, job = shop_with_products(engines, fakes, data_dir=data,
                                                        types=('tshirt', 'hoodie'), **FAST,
                                                        RETRY_DELAY_MS=200)
    subscribe_printify(printify, engine)
    tee, hoodie = skus(shopify, job).values()
    printify.configure(error_rate=0.1)
    # Shopify's bucket refills 10 times as fast: a scaled clock (the fake charges
    # each query's requested cost, as Shopify does before it refunds the unused part).
    shopify.configure(error_rate=0.1, restore_rate=500)
    sold = []
    for n in range(20):
        if n == 8:  # some order jobs are running: the engine dies
            engine.kill9()
        sold.append(sell(shopify, [{'sku': tee, 'quantity': 1},
                                   {'sku': hoodie, 'quantity': 1 + n % 2}], wait=False))
    first, engine = engine, platform_engine(engines, printify, shopify, data_dir=data,
                                            SHOPIFY_WEBHOOK_SECRET=SECRET, **env)
    deadline = time.monotonic() + 120
    while len([j for j in order_jobs(engine) if j['status'] == 'completed']) < 20:
        failed = [engine.job(j['id']) for j in order_jobs(engine) if j['status'] == 'failed']
        assert not failed, [(j['error'], [l['message'] for l in j['logs']]) for j in failed]
        assert time.monotonic() < deadline, [j['status'] for j in order_jobs(engine)]
        time.sleep(0.2)
    jobs = [engine.job(j['id']) for j in order_jobs(engine)]
    for order_job in jobs:
        wait_result(engine, order_job['id'], status_is('in_production'), timeout=30)
        ship(printify, order_job['result']['printifyOrderId'])
    for order_job in jobs:
        wait_result(engine, order_job['id'], status_is('shipped'), timeout=60)

    made, fulfilments = state(printify)['orders'], state(shopify)['fulfillments']
    assert sorted(o['external_id'] for o in made) == sorted(str(s['id']) for s in sold)
    assert len(fulfilments) == 20 and all(f['trackingInfo'][0]['number'] for f in fulfilments)
    assert {o['displayFulfillmentStatus'] for o in state(shopify)['orders']} == {'FULFILLED'}
    tracked = {o['external_id']: o['shipments'][0]['number'] for o in made}
    for order_job in (engine.job(j['id']) for j in order_jobs(engine)):
        shopify_id = order_job['request']['shopifyOrderId'].rsplit('/', 1)[1]
        assert order_job['result']['shipments'][0]['trackingNumber'] == tracked[shopify_id]
    personal = personal_data(first.log() + engine.log())
    assert_no_personal_data(engine)
    assert personal == 0
    print(f'\n20 orders, 10 % 5xx, a kill -9 after 8: {len(made)} Printify orders, '
          f'{len(fulfilments)} Shopify fulfilments with tracking, '
          f'{state(printify).get("errors")} Printify and {state(shopify).get("errors")} '
          f'Shopify 500s, {personal} personal data in logs, '
          f'{time.monotonic() - started:.1f} s')


def test_with_public_url_the_engine_subscribes_its_webhooks_once(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    public = 'http://127.0.0.1:9'  # where users would reach the engine
    env = dict(PUBLIC_URL=public, SHOPIFY_WEBHOOK_SECRET=SECRET,
               PRINTIFY_WEBHOOK_SECRET=PRINTIFY_SECRET)
    for _ in range(2):  # a restart subscribes nothing twice
        engine = platform_engine(engines, printify, shopify, **env)
        deadline = time.monotonic() + 10
        while 'order webhooks:' not in engine.log():
            assert time.monotonic() < deadline, engine.log()
            time.sleep(0.05)
        engine.stop()
    subscribed = state(shopify)['webhook_subscriptions']
    assert sorted((s['topic'], s['callbackUrl']) for s in subscribed) == [
        ('ORDERS_CANCELLED', f'{public}/webhooks/shopify'),
        ('ORDERS_CREATE', f'{public}/webhooks/shopify')]
    hooks = state(printify)['webhooks']
    assert sorted((h['topic'], h['url'], h['secret']) for h in hooks) == [
        (topic, f'{public}/webhooks/printify', PRINTIFY_SECRET) for topic in
        ('order:shipment:created', 'order:shipment:delivered', 'order:updated')]
    assert PRINTIFY_SECRET not in engine.log() and SECRET not in engine.log()
