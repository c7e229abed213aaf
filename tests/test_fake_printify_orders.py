"""The fake Printify's orders, order control routes and webhooks (see
tests/fakes/printify.py): the documented flow works, and what the real API
refuses is refused.

Driven with plain ``requests``; each test starts its own fake subprocess.
"""

import hashlib
import hmac
import json

import pytest
import requests
from test_fake_platforms import SHOP, Pfy, rejected, wait_for
from webhook_receiver import Receiver

ORDERS = f'/v1/shops/{SHOP}/orders.json'
WEBHOOKS = f'/v1/shops/{SHOP}/webhooks.json'
ADDRESS = {'first_name': 'Ada', 'last_name': 'Lovelace', 'email': 'ada@example.com',
           'phone': '+1 555 0100', 'country': 'US', 'region': 'NY',
           'address1': '1 Analytical Way', 'address2': 'Apt 2', 'city': 'New York',
           'zip': '10001'}


def order_path(oid, action=''):
    return f'/v1/shops/{SHOP}/orders/{oid}' + (f'/{action}.json' if action else '.json')


def order_body(line_items, external_id='shopify-1001', **extra):
    return {'external_id': external_id, 'label': 'Order #1001', 'line_items': line_items,
            'shipping_method': 1, 'send_shipping_notification': False,
            'address_to': dict(ADDRESS), **extra}


def made_product(pfy):
    """A product with Black/M and Black/L enabled; returns it and those two variants."""
    product = pfy.create(pfy.product_body())
    enabled = [v for v in product['variants'] if v['is_enabled']]
    assert len(enabled) == 2
    return product, enabled


def control(fake, oid, action, body=None):
    return requests.post(f'{fake.url}/_fake/orders/{oid}/{action}', json=body, timeout=5)


def state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def status_of(pfy, oid):
    return pfy.ok('GET', order_path(oid))['status']


@pytest.fixture
def receiver():
    server = Receiver(path='/hooks/printify')
    yield server
    server.close()


def signed_by(secret, delivery):
    expected = 'sha256=' + hmac.new(secret.encode(), delivery['body'], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, delivery['headers'].get('X-Pfy-Signature') or '')


# The documented flow #######################################################

def test_order_flow_create_read_list_produce_ship_deliver(fakes):
    fake = fakes.start('printify', time_scale=0.1)   # production_seconds 1 -> 0.1 s
    pfy = Pfy(fake)
    product, (medium, large) = made_product(pfy)
    items = [{'product_id': product['id'], 'variant_id': medium['id'], 'quantity': 2},
             {'product_id': product['id'], 'variant_id': large['id'], 'quantity': 1}]
    created = pfy.ok('POST', ORDERS, order_body(items))
    assert list(created) == ['id'] and len(created['id']) == 24
    int(created['id'], 16)
    oid = created['id']

    order = pfy.ok('GET', order_path(oid))
    assert order['status'] == 'on-hold' and order['external_id'] == 'shopify-1001'
    assert order['metadata'] == {'order_type': 'external', 'shop_order_id': order['metadata'][
        'shop_order_id'], 'shop_order_label': 'Order #1001', 'shop_fulfilled_at': None}
    assert order['address_to'] == ADDRESS and order['shipments'] == []
    first, second = order['line_items']
    assert (first['variant_id'], first['quantity'], first['cost']) == (medium['id'], 2,
                                                                         medium['cost'])
    assert first['metadata']['sku'] == medium['sku']
    assert first['metadata']['variant_label'] == medium['title'] == 'Black / M'
    assert first['metadata']['title'] == 'Retro Sunset' and first['metadata']['price'] == 2499
    assert first['print_provider_id'] == 29 and first['status'] == 'on-hold'
    assert (first['shipping_cost'], second['shipping_cost']) == (475 + 240, 240)   # US profile
    assert order['total_price'] == 2 * medium['cost'] + large['cost']
    assert order['total_shipping'] == 955 and order['total_tax'] == 0
    assert all(isinstance(order[k], int) for k in ('total_price', 'total_shipping'))

    listing = pfy.ok('GET', ORDERS + '?limit=10&page=1')
    assert listing['total'] == 1 and listing['data'][0]['id'] == oid
    assert listing['current_page'] == 1 and listing['last_page'] == 1
    assert listing['per_page'] == 10

    assert control(fake, oid, 'ship').status_code == 409   # never sent to production
    sent = pfy.ok('POST', order_path(oid, 'send_to_production'))
    assert sent['status'] == 'sending-to-production' and sent['sent_to_production_at']
    assert {i['status'] for i in sent['line_items']} == {'sending-to-production'}
    rejected(pfy.post(order_path(oid, 'send_to_production'), {}), 400, 8253, 'on-hold')
    wait_for(lambda: status_of(pfy, oid) == 'in-production', timeout=2)

    shipped = control(fake, oid, 'ship', {'number': '9400111'})
    assert shipped.status_code == 200, shipped.text
    order = pfy.ok('GET', order_path(oid))
    assert order['status'] == 'fulfilled' and order['fulfilled_at']
    assert order['shipments'] == [{'carrier': 'usps', 'number': '9400111', 'delivered_at': None,
                                   'url': 'https://tools.usps.com/go/TrackConfirmAction'
                                          '?tLabels=9400111'}]
    assert {i['status'] for i in order['line_items']} == {'fulfilled'}
    assert control(fake, oid, 'ship').status_code == 409   # nothing left to ship

    assert control(fake, oid, 'deliver').status_code == 200
    assert pfy.ok('GET', order_path(oid))['shipments'][0]['delivered_at']
    assert control(fake, oid, 'deliver').status_code == 409
    counts = state(fake)
    assert counts['orders_sent_to_production'] == 1 and len(counts['orders']) == 1
    assert counts['requests_by_group']['global'] == counts['total_requests']
    fake.reset()
    assert state(fake)['orders'] == []


def test_sku_line_items_filters_and_partial_shipment(fakes):
    fake = fakes.start('printify', production_seconds=0)
    pfy = Pfy(fake)
    product, (medium, large) = made_product(pfy)
    by_sku = pfy.ok('POST', ORDERS, order_body([{'sku': medium['sku'], 'quantity': 1},
                                                {'sku': large['sku'], 'quantity': 3}]))['id']
    other = pfy.ok('POST', ORDERS, order_body([{'sku': large['sku'], 'quantity': 1}],
                                              external_id='shopify-1002'))['id']
    items = pfy.ok('GET', order_path(by_sku))['line_items']
    assert [(i['product_id'], i['variant_id'], i['quantity']) for i in items] == [
        (product['id'], medium['id'], 1), (product['id'], large['id'], 3)]

    assert [o['id'] for o in pfy.ok('GET', ORDERS)['data']] == [other, by_sku]  # newest first
    assert [o['id'] for o in pfy.ok('GET', ORDERS + f'?sku={medium["sku"]}')['data']] == [by_sku]
    assert pfy.ok('GET', ORDERS + '?limit=1&page=2')['data'][0]['id'] == by_sku
    rejected(pfy.get(ORDERS + '?limit=11'), 400, 8150, 'limit', '10')
    rejected(pfy.get(ORDERS + '?status=lost'), 400, 8150, 'status')

    pfy.ok('POST', order_path(by_sku, 'send_to_production'))
    assert pfy.ok('GET', ORDERS + '?status=in-production')['total'] == 1
    part = control(fake, by_sku, 'ship', {'skus': [large['sku']], 'carrier': 'ups',
                                          'number': '1Z999'}).json()
    assert part['status'] == 'partially-fulfilled' and part['fulfilled_at'] is None
    assert [i['status'] for i in part['line_items']] == ['in-production', 'fulfilled']
    assert part['shipments'][0]['url'] == 'https://www.ups.com/track?tracknum=1Z999'
    assert control(fake, by_sku, 'ship', {'skus': ['nope']}).status_code == 400
    rest = control(fake, by_sku, 'ship').json()
    assert rest['status'] == 'fulfilled' and len(rest['shipments']) == 2


def test_order_validation_refusals(fakes):
    pfy = Pfy(fakes.start('printify'))
    product, (medium, _) = made_product(pfy)
    disabled = next(v for v in product['variants'] if not v['is_enabled'])
    good = {'product_id': product['id'], 'variant_id': medium['id'], 'quantity': 1}

    def refused(body, *words):
        return rejected(pfy.post(ORDERS, body), 400, 8150, *words)

    refused(order_body([{**good, 'product_id': '0123456789abcdef01234567'}]),
            'line_items.0.product_id', 'invalid')
    refused(order_body([good, {**good, 'variant_id': disabled['id']}]),
            'line_items.1.variant_id', 'not enabled')
    refused(order_body([{'sku': 'NO-SUCH-SKU', 'quantity': 1}]), 'line_items.0.sku')
    refused(order_body([{'sku': disabled['sku'], 'quantity': 1}]), 'line_items.0.sku')
    refused(order_body([{'quantity': 1}]), 'line_items.0.product_id', 'required')
    for quantity in (0, -1, 1.5, '2', True):
        refused(order_body([{**good, 'quantity': quantity}]), 'line_items.0.quantity')
    for key in ('first_name', 'last_name', 'country', 'address1', 'city', 'zip'):
        body = order_body([good])
        del body['address_to'][key]
        refused(body, f'address_to.{key}', 'required')
    refused(order_body([good], address_to={**ADDRESS, 'country': 'USA'}), 'country')
    refused(order_body([good], shipping_method=9), 'shipping_method')
    refused(order_body([good], shipping_method='1'), 'shipping_method')
    refused({k: v for k, v in order_body([good]).items() if k != 'external_id'}, 'external_id')
    refused(order_body([]), 'line_items')
    rejected(pfy.post(ORDERS, order_body([good], is_printify_express=True)), 400, 8251,
             'Printify Express')
    assert pfy.get(f'/v1/shops/{SHOP}/orders/0123456789abcdef01234567.json').status_code == 404
    assert pfy.post('/v1/shops/999/orders.json', order_body([good])).status_code == 404
    assert pfy.ok('GET', ORDERS)['total'] == 0


def test_the_same_external_id_makes_two_orders(fakes):
    pfy = Pfy(fakes.start('printify'))
    product, (medium, _) = made_product(pfy)
    body = order_body([{'product_id': product['id'], 'variant_id': medium['id'],
                        'quantity': 1}], external_id='shopify-7')
    first, second = (pfy.ok('POST', ORDERS, body)['id'] for _ in range(2))
    assert first != second
    listed = pfy.ok('GET', ORDERS)['data']
    assert [o['external_id'] for o in listed] == ['shopify-7', 'shopify-7']


def test_cancel_before_and_after_production(fakes):
    fake = fakes.start('printify', production_seconds=0)
    pfy = Pfy(fake)
    product, (medium, _) = made_product(pfy)
    body = order_body([{'product_id': product['id'], 'variant_id': medium['id'],
                        'quantity': 1}])
    early, late = (pfy.ok('POST', ORDERS, body)['id'] for _ in range(2))

    canceled = pfy.ok('POST', order_path(early, 'cancel'))
    assert canceled['status'] == 'canceled'
    assert canceled['line_items'][0]['status'] == 'canceled'
    rejected(pfy.post(order_path(early, 'cancel'), {}), 400, 8253, 'already canceled')
    rejected(pfy.post(order_path(early, 'send_to_production'), {}), 400, 8253, 'canceled')
    assert control(fake, early, 'ship').status_code == 409

    pfy.ok('POST', order_path(late, 'send_to_production'))
    reason = rejected(pfy.post(order_path(late, 'cancel'), {}), 400, 8253)
    assert reason == "Order can't be canceled: it is already in production."
    assert status_of(pfy, late) == 'in-production'
    counts = state(fake)
    assert (counts['orders_canceled'], counts['orders_sent_to_production']) == (1, 1)


def test_crash_after_order_create_and_injected_failures(fakes):
    fake = fakes.start('printify', crash_after_order_create=True)
    pfy = Pfy(fake)
    product, (medium, _) = made_product(pfy)
    body = order_body([{'product_id': product['id'], 'variant_id': medium['id'],
                        'quantity': 1}])
    with pytest.raises(requests.ConnectionError):
        pfy.post(ORDERS, body)
    assert [o['external_id'] for o in state(fake)['orders']] == ['shopify-1001']
    assert pfy.ok('GET', ORDERS + '?sku=' + medium['sku'])['total'] == 1

    fake.configure(fail_next=[{'path_contains': '/orders.json', 'method': 'POST',
                               'status': 500, 'after_save': True},
                              {'path_contains': '/send_to_production.json', 'status': 503}])
    assert pfy.post(ORDERS, body).status_code == 500
    assert len(state(fake)['orders']) == 2   # saved, then answered 500
    oid = state(fake)['orders'][0]['id']
    assert pfy.post(order_path(oid, 'send_to_production'), {}).status_code == 503
    assert status_of(pfy, oid) == 'on-hold'
    creates = [r for r in fake.requests(ORDERS) if r['method'] == 'POST']
    assert [(r['status'], r['dropped']) for r in creates] == [(200, True), (500, False)]


# Webhooks ##################################################################

def test_webhook_subscriptions(fakes):
    fake = fakes.start('printify')
    pfy = Pfy(fake)
    rejected(pfy.post(WEBHOOKS, {'topic': 'order:exploded', 'url': 'https://x.test/h'}),
             400, 8150, 'topic')
    rejected(pfy.post(WEBHOOKS, {'topic': 'order:created', 'url': 'not a url'}),
             400, 8150, 'url')
    hook = pfy.ok('POST', WEBHOOKS, {'topic': 'order:created', 'url': 'https://x.test/h',
                                     'secret': 's3cret'})
    assert set(hook) == {'id', 'topic', 'url', 'shop_id'} and hook['shop_id'] == SHOP
    assert pfy.ok('GET', WEBHOOKS) == [hook]
    moved = pfy.ok('PUT', f'/v1/shops/{SHOP}/webhooks/{hook["id"]}.json',
                   {'url': 'https://y.test/h'})
    assert moved == {**hook, 'url': 'https://y.test/h'}
    assert state(fake)['webhooks'][0]['secret'] == 's3cret'
    assert pfy.ok('DELETE', f'/v1/shops/{SHOP}/webhooks/{hook["id"]}.json') == {
        'id': hook['id']}
    assert pfy.ok('GET', WEBHOOKS) == []
    assert pfy.call('DELETE', f'/v1/shops/{SHOP}/webhooks/{hook["id"]}.json').status_code == 404


def test_signed_webhook_deliveries_and_a_retry(fakes, receiver):
    fake = fakes.start('printify', production_seconds=0, webhook_retry_seconds=0.05)
    pfy = Pfy(fake)
    secret = 'whsec-test'
    for topic in ('order:shipment:created', 'order:shipment:delivered',
                  'order:sent-to-production'):
        pfy.ok('POST', WEBHOOKS, {'topic': topic, 'url': receiver.url, 'secret': secret})
    product, (medium, _) = made_product(pfy)
    oid = pfy.ok('POST', ORDERS, order_body([{'sku': medium['sku'], 'quantity': 1}]))['id']
    pfy.ok('POST', order_path(oid, 'send_to_production'))
    event = json.loads(wait_for(lambda: receiver.got, timeout=2)[0]['body'])
    assert event['type'] == 'order:sent-to-production'
    assert event['resource']['data'] == {'shop_id': SHOP, 'status': 'in-production'}

    receiver.answers = [500]
    assert control(fake, oid, 'ship', {'number': 'TRACK1'}).status_code == 200
    wait_for(lambda: len(receiver.got) >= 3, timeout=2)
    failed, retried = receiver.got[1:3]
    assert failed['body'] == retried['body'] and signed_by(secret, retried)
    assert not signed_by('wrong-secret', retried)
    shipment = json.loads(retried['body'])
    assert shipment['type'] == 'order:shipment:created' and shipment['id']
    assert shipment['resource']['id'] == oid and shipment['resource']['type'] == 'order'
    data = shipment['resource']['data']
    assert data['carrier'] == {'code': 'usps', 'tracking_number': 'TRACK1',
                               'tracking_url': 'https://tools.usps.com/go/TrackConfirmAction'
                                               '?tLabels=TRACK1'}
    assert data['skus'] == [medium['sku']] and data['shipped_at'] and data['shop_id'] == SHOP
    attempts = [(d['topic'], d['status_code'], d['attempt'])
                for d in state(fake)['webhook_deliveries']]
    assert attempts == [('order:sent-to-production', 200, 1),
                        ('order:shipment:created', 500, 1), ('order:shipment:created', 200, 2)]

    control(fake, oid, 'deliver')
    delivered = json.loads(wait_for(lambda: receiver.got[3:], timeout=2)[0]['body'])
    assert delivered['type'] == 'order:shipment:delivered'
    assert delivered['resource']['data']['delivered_at']
    assert all(signed_by(secret, d) for d in receiver.got)
