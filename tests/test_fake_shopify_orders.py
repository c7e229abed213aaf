"""The fake Shopify's orders, fulfilment and webhooks, against the Admin
API's documented behaviour: a storefront sale (control route) is readable
through ``orders``/``order`` with its fulfillment order, ``fulfillmentCreate``
enforces what may be fulfilled (a repeat is a userError), and order webhooks
are signed, repeated and retried the way Shopify sends them."""

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests
from test_fake_platforms import PRODUCT_SET, data, errors, gql, product_input, wait_for
from webhook_receiver import Receiver

SECRET = 'shpss_test_webhook_secret'

ORDER_FIELDS = '''
fragment OrderFields on Order {
  id legacyResourceId name createdAt updatedAt cancelledAt cancelReason email
  displayFinancialStatus displayFulfillmentStatus
  shippingAddress { firstName lastName name address1 city zip countryCodeV2 phone }
  shippingLine { code title }
  lineItems(first: 5) { nodes { id sku quantity name title variant { id sku } product { id } } }
  fulfillmentOrders(first: 2) { nodes { id status
    lineItems(first: 5) { nodes { id remainingQuantity totalQuantity lineItem { id sku } } } } }
  fulfillments(first: 5) { id status trackingInfo { company number url } }
}'''

ORDERS = ORDER_FIELDS + '''
query Recent($query: String) {
  orders(first: 3, query: $query, sortKey: CREATED_AT) {
    nodes { ...OrderFields } pageInfo { hasNextPage endCursor } } }'''

ORDER = ORDER_FIELDS + '''
query One($id: ID!) { order(id: $id) { ...OrderFields } }'''

FULFIL = '''
mutation Fulfil($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status trackingInfo { company number url }
      fulfillmentLineItems(first: 5) { nodes { lineItem { id sku } quantity } } }
    userErrors { field message } } }'''

SUBSCRIBE = '''
mutation Subscribe($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
    webhookSubscription { id topic
      endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } } }
    userErrors { field message } } }'''


# Helpers ###################################################################

@pytest.fixture
def shop(fakes):
    """A fake shop with the Retro Sunset Tee (TEE-S, TEE-M, TEE-L)."""
    fake = fakes.start('shopify')
    data(gql(fake, PRODUCT_SET, {'input': product_input()}))
    return fake


def control(fake, path, body=None, status=200):
    response = requests.post(f'{fake.url}/_fake/{path}', json=body or {}, timeout=10)
    assert response.status_code == status, response.text
    return response.json()


def sell(fake, *items, **extra):
    lines = [{'sku': sku, 'quantity': quantity} for sku, quantity in items]
    return control(fake, 'orders', {'line_items': lines, 'wait': True, **extra})


def state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def read_order(fake, gid):
    return data(gql(fake, ORDER, {'id': gid}))['order']


def fulfil(fake, fo_id, lines=None, tracking=None):
    entry = {'fulfillmentOrderId': fo_id}
    if lines is not None:
        entry['fulfillmentOrderLineItems'] = lines
    body = {'lineItemsByFulfillmentOrder': [entry], 'notifyCustomer': True}
    if tracking:
        body['trackingInfo'] = tracking
    return data(gql(fake, FULFIL, {'fulfillment': body}))['fulfillmentCreate']


def topics(endpoint):
    return [got['headers']['X-Shopify-Topic'] for got in endpoint.got]


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(answers))
        return made[-1]
    yield make
    for item in made:
        item.close()


# Orders ####################################################################

def test_a_sale_is_readable_through_orders_and_order(shop):
    before = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() - 1))
    sold = sell(shop, ('TEE-M', 2), ('MUG-1', 1))
    assert sold['name'] == '#1001' and sold['financial_status'] == 'paid'
    assert sold['fulfillment_status'] is None and sold['currency'] == 'USD'
    assert [(li['sku'], li['quantity'], li['price']) for li in sold['line_items']] == [
        ('TEE-M', 2, '24.99'), ('MUG-1', 1, '10.00')]
    assert sold['line_items'][1]['variant_id'] is None
    assert sold['shipping_address']['name'] == 'Ada Lovelace'
    assert sold['total_price'] == '59.98'

    found = data(gql(shop, ORDERS, {'query': f'created_at:>={before}'}))['orders']
    assert [o['id'] for o in found['nodes']] == [sold['gid']]
    assert found['pageInfo']['hasNextPage'] is False
    future = data(gql(shop, ORDERS, {'query': 'created_at:>=2999-01-01T00:00:00Z'}))
    assert future['orders']['nodes'] == []

    order = read_order(shop, sold['gid'])
    assert order['legacyResourceId'] == str(sold['id']) and order['email'] == 'ada@example.com'
    assert (order['displayFinancialStatus'], order['displayFulfillmentStatus']) == (
        'PAID', 'UNFULFILLED')
    assert order['shippingAddress'] == {
        'firstName': 'Ada', 'lastName': 'Lovelace', 'name': 'Ada Lovelace',
        'address1': '12 Analytical Way', 'city': 'London', 'zip': 'N1 9GU',
        'countryCodeV2': 'GB', 'phone': '+44 20 7946 0000'}
    assert order['shippingLine'] == {'code': 'Standard', 'title': 'Standard'}
    tee, mug = order['lineItems']['nodes']
    assert tee['variant']['sku'] == 'TEE-M' and tee['product']['id'].startswith(
        'gid://shopify/Product/')
    assert tee['name'] == 'Retro Sunset Tee - M / Black'
    assert (mug['sku'], mug['variant'], mug['product']) == ('MUG-1', None, None)
    (fo,) = order['fulfillmentOrders']['nodes']
    assert fo['status'] == 'OPEN'
    assert [(n['lineItem']['sku'], n['remainingQuantity'], n['totalQuantity'])
            for n in fo['lineItems']['nodes']] == [('TEE-M', 2, 2)]
    assert order['fulfillments'] == []


def test_orders_page_by_cursor_and_filter_by_updated_at(shop):
    first = sell(shop, ('TEE-S', 1), deliver=False)
    second = sell(shop, ('TEE-L', 1), deliver=False)
    query = ('query Page($after: String) { orders(first: 1, after: $after, reverse: true) { '
             'nodes { name } pageInfo { hasNextPage endCursor } } }')
    page = data(gql(shop, query))['orders']
    assert [n['name'] for n in page['nodes']] == [second['name']] and page['pageInfo'][
        'hasNextPage']
    rest = data(gql(shop, query, {'after': page['pageInfo']['endCursor']}))['orders']
    assert [n['name'] for n in rest['nodes']] == [first['name']]
    assert not rest['pageInfo']['hasNextPage']
    by_name = data(gql(shop, '{ orders(first: 5, query: "name:#1002 colour:blue") '
                             '{ nodes { id } } }'))
    assert by_name['orders']['nodes'] == [{'id': second['gid']}]
    updated = data(gql(shop, '{ orders(first: 5, query: "updated_at:>=2000-01-01") '
                             '{ nodes { name } } }'))
    assert len(updated['orders']['nodes']) == 2


def test_an_unknown_order_field_is_a_top_level_error(shop):
    sold = sell(shop, ('TEE-S', 1))
    message = errors(gql(shop, 'query ($id: ID!) { order(id: $id) { id financialStatus } }',
                         {'id': sold['gid']}))
    assert "Field 'financialStatus' doesn't exist on type 'Order'" in message
    message = errors(gql(shop, '{ orders(first: 1) { nodes { lineItems { nodes { id } } } } }'))
    assert 'you must provide one of first or last (on lineItems)' in message


# Fulfilment ################################################################

def test_fulfilment_with_tracking_closes_the_order_and_a_repeat_is_refused(shop):
    sold = sell(shop, ('TEE-M', 2), ('TEE-L', 1))
    fo = read_order(shop, sold['gid'])['fulfillmentOrders']['nodes'][0]
    tracking = {'company': 'UPS', 'number': '1Z999AA10123456784'}
    done = fulfil(shop, fo['id'], tracking=tracking)
    assert done['userErrors'] == []
    assert done['fulfillment']['status'] == 'SUCCESS'
    assert done['fulfillment']['trackingInfo'] == [{
        'company': 'UPS', 'number': '1Z999AA10123456784',
        'url': 'https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums='
               '1Z999AA10123456784'}]
    assert sorted((n['lineItem']['sku'], n['quantity']) for n in
                  done['fulfillment']['fulfillmentLineItems']['nodes']) == [
        ('TEE-L', 1), ('TEE-M', 2)]

    order = read_order(shop, sold['gid'])
    assert order['displayFulfillmentStatus'] == 'FULFILLED'
    assert order['fulfillmentOrders']['nodes'][0]['status'] == 'CLOSED'
    assert order['fulfillments'][0]['trackingInfo'][0]['number'] == '1Z999AA10123456784'

    again = fulfil(shop, fo['id'], tracking=tracking)
    assert again['fulfillment'] is None
    assert again['userErrors'][0]['message'] == (
        f'Fulfillment order {fo["id"]} has an unfulfillable status= closed.')
    recorded = state(shop)
    assert recorded['fulfillments_created'] == 1
    assert recorded['fulfillments'][0]['notifyCustomer'] is True


def test_partial_fulfilment_and_quantity_checks(shop):
    sold = sell(shop, ('TEE-M', 3))
    fo = read_order(shop, sold['gid'])['fulfillmentOrders']['nodes'][0]
    line = fo['lineItems']['nodes'][0]['id']
    too_many = fulfil(shop, fo['id'], [{'id': line, 'quantity': 4}])
    assert too_many['userErrors'][0]['message'] == (
        'Invalid fulfillment order line item quantity requested.')
    stranger = fulfil(shop, fo['id'], [{'id': 'gid://shopify/FulfillmentOrderLineItem/1',
                                        'quantity': 1}])
    assert 'does not exist' in stranger['userErrors'][0]['message']
    unknown = fulfil(shop, 'gid://shopify/FulfillmentOrder/1')
    assert unknown['userErrors'][0]['message'] == 'Fulfillment order does not exist.'

    assert fulfil(shop, fo['id'], [{'id': line, 'quantity': 1}])['userErrors'] == []
    order = read_order(shop, sold['gid'])
    fo_now = order['fulfillmentOrders']['nodes'][0]
    assert order['displayFulfillmentStatus'] == 'PARTIALLY_FULFILLED'
    assert fo_now['status'] == 'IN_PROGRESS'
    assert fo_now['lineItems']['nodes'][0]['remainingQuantity'] == 2
    assert fulfil(shop, fo['id'])['userErrors'] == []   # the remaining 2
    assert read_order(shop, sold['gid'])['displayFulfillmentStatus'] == 'FULFILLED'


def test_a_cancelled_orders_fulfillment_order_refuses_fulfilment(shop):
    sold = sell(shop, ('TEE-S', 1))
    control(shop, f'orders/{sold["id"]}/cancel', {'wait': True})
    order = read_order(shop, sold['gid'])
    assert order['cancelReason'] == 'CUSTOMER' and order['cancelledAt']
    fo = order['fulfillmentOrders']['nodes'][0]
    assert fo['status'] == 'CLOSED'
    refused = fulfil(shop, fo['id'])
    assert refused['fulfillment'] is None
    assert 'unfulfillable status= closed' in refused['userErrors'][0]['message']
    assert control(shop, f'orders/{sold["id"]}/cancel', status=400)['error']
    assert control(shop, 'orders/1/cancel', status=404)


# Webhooks ##################################################################

def test_webhook_subscriptions_create_list_refuse_duplicates_and_delete(shop):
    url = 'https://pod-engine.example.com/webhooks/shopify'
    made = data(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_CREATE',
                                      'sub': {'callbackUrl': url, 'format': 'JSON'}}))
    sub = made['webhookSubscriptionCreate']
    assert sub['userErrors'] == []
    assert sub['webhookSubscription']['endpoint'] == {'__typename': 'WebhookHttpEndpoint',
                                                      'callbackUrl': url}
    twice = data(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_CREATE', 'sub': {'callbackUrl': url}}))
    assert twice['webhookSubscriptionCreate']['userErrors'][0]['message'] == (
        'Address for this topic has already been taken')
    other = data(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_CANCELLED', 'sub': {'callbackUrl': url}}))
    assert other['webhookSubscriptionCreate']['userErrors'] == []
    listing = '''query ($topics: [WebhookSubscriptionTopic!]) {
      webhookSubscriptions(first: 10, topics: $topics) { nodes { id topic } } }'''
    assert [n['topic'] for n in data(gql(shop, listing, {'topics': ['ORDERS_CREATE']}))[
        'webhookSubscriptions']['nodes']] == ['ORDERS_CREATE']
    assert 'ORDERS_EXPLODED' in errors(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_EXPLODED',
                                                             'sub': {'callbackUrl': url}}))
    gone = data(gql(shop, 'mutation ($id: ID!) { webhookSubscriptionDelete(id: $id) { '
                          'deletedWebhookSubscriptionId userErrors { message } } }',
                    {'id': sub['webhookSubscription']['id']}))['webhookSubscriptionDelete']
    assert gone['deletedWebhookSubscriptionId'] == sub['webhookSubscription']['id']
    assert len(state(shop)['webhook_subscriptions']) == 1


def test_a_signed_delivery_reaches_a_subscribed_receiver(shop, receiver):
    endpoint = receiver()
    data(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_CREATE', 'sub': {'callbackUrl': endpoint.url}}))
    sold = sell(shop, ('TEE-M', 1))
    (got,) = endpoint.got
    headers = got['headers']
    expected = base64.b64encode(hmac.new(SECRET.encode(), got['body'],
                                         hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers['X-Shopify-Hmac-Sha256'], expected)
    assert headers['X-Shopify-Topic'] == 'orders/create'
    assert headers['X-Shopify-Shop-Domain'] == 'test-shop.myshopify.com'
    assert headers['Content-Type'] == 'application/json'
    for name in ('X-Shopify-Webhook-Id', 'X-Shopify-Event-Id', 'X-Shopify-API-Version',
                 'X-Shopify-Triggered-At'):
        assert headers[name]
    body = json.loads(got['body'])
    assert body['id'] == sold['id'] and body['admin_graphql_api_id'] == sold['gid']
    assert body['line_items'][0]['sku'] == 'TEE-M'
    (attempt,) = state(shop)['webhook_deliveries']
    assert (attempt['topic'], attempt['status'], attempt['webhook_id']) == (
        'orders/create', 200, headers['X-Shopify-Webhook-Id'])


def test_repeat_redelivery_and_retry_keep_the_webhook_id(fakes, receiver):
    flaky = receiver(500)
    shop = fakes.start('shopify', webhook_urls=[flaky.url], webhook_repeat=2, time_scale=0.01)
    sell(shop, ('ANY-SKU', 1))
    assert [g['headers']['X-Shopify-Webhook-Id'] for g in flaky.got] == [
        flaky.got[0]['headers']['X-Shopify-Webhook-Id']] * 3   # 500, retry, repeat
    attempts = state(shop)['webhook_deliveries']
    assert [a['status'] for a in attempts] == [500, 200, 200]
    control(shop, 'webhooks/redeliver', {'webhook_id': attempts[0]['webhook_id'], 'wait': True})
    assert len({g['headers']['X-Shopify-Webhook-Id'] for g in flaky.got}) == 1
    assert len({g['headers']['X-Shopify-Hmac-Sha256'] for g in flaky.got}) == 1
    assert len(flaky.got) == 4
    control(shop, 'webhooks/redeliver', {'webhook_id': 'nope'}, status=404)


def test_a_slow_receiver_is_retried_and_cancel_delivers_orders_cancelled(fakes, receiver):
    endpoint = receiver(0.4)      # the first request stalls past the timeout
    shop = fakes.start('shopify', webhook_urls=[endpoint.url], time_scale=0.01,
                       webhook_timeout_seconds=0.2)
    sold = sell(shop, ('X-1', 1), deliver=False)
    assert endpoint.got == []
    control(shop, f'orders/{sold["id"]}/cancel')          # answered before delivery
    wait_for(lambda: len(endpoint.got) == 2)
    assert topics(endpoint) == ['orders/cancelled'] * 2
    attempts = state(shop)['webhook_deliveries']
    assert [a['status'] for a in attempts] == ['error', 200]
    assert attempts[0]['error'] == 'ReadTimeout' and attempts[0]['seconds'] >= 0.2
    body = json.loads(endpoint.got[0]['body'])
    assert body['cancel_reason'] == 'customer' and body['cancelled_at']
    control(shop, f'orders/{sold["id"]}/update',
            {'shipping_address': {'city': 'Cambridge'}, 'wait': True})
    assert topics(endpoint)[-1] == 'orders/updated'
    assert json.loads(endpoint.got[-1]['body'])['shipping_address']['city'] == 'Cambridge'

    shop.configure(webhook_urls=['http://127.0.0.1:9/closed'], webhook_retries=2)
    sell(shop, ('X-2', 1))
    tried = [a for a in state(shop)['webhook_deliveries'] if a['url'].endswith('/closed')]
    assert [a['status'] for a in tried] == ['error'] * 3


def test_fulfilment_delivers_orders_fulfilled_and_reset_clears(fakes, receiver):
    endpoint = receiver()
    shop = fakes.start('shopify')
    data(gql(shop, PRODUCT_SET, {'input': product_input()}))
    data(gql(shop, SUBSCRIBE, {'topic': 'ORDERS_FULFILLED',
                               'sub': {'callbackUrl': endpoint.url}}))
    sold = sell(shop, ('TEE-L', 1))
    fo = read_order(shop, sold['gid'])['fulfillmentOrders']['nodes'][0]
    assert fulfil(shop, fo['id'], tracking={'number': 'RM123', 'company': 'Royal Mail'})[
        'userErrors'] == []
    wait_for(lambda: endpoint.got)
    body = json.loads(endpoint.got[0]['body'])
    assert topics(endpoint) == ['orders/fulfilled'] and body['fulfillment_status'] == 'fulfilled'
    assert body['fulfillments'][0]['tracking_numbers'] == ['RM123']
    shop.reset()
    cleared = state(shop)
    assert (cleared['orders'], cleared['fulfillments'], cleared['webhook_subscriptions'],
            cleared['webhook_deliveries'], cleared['fulfillments_created']) == ([], [], [], [], 0)
