"""The fake Shopify's inventory, productUpdate, after-save failures and
channel products, against the Admin API's documented behaviour: a new variant
is tracked with 0 in stock and DENY (so "Sold out"), productUpdate never
creates, a 5xx can come after the product was saved, and a product made by a
sales channel (Printify's sync) is buyable and published."""

import pytest
import requests
from test_fake_platforms import ONLINE_STORE, data, errors, gql

SET = '''
mutation Sync($input: ProductSetInput!, $identifier: ProductSetIdentifiers) {
  productSet(input: $input, identifier: $identifier) {
    product { id handle } userErrors { field message code } } }'''

BULK = '''
mutation Bulk($id: ID!, $variants: [ProductVariantsBulkInput!]!) {
  productVariantsBulkCreate(productId: $id, variants: $variants,
                            strategy: REMOVE_STANDALONE_VARIANT) {
    productVariants { sku } userErrors { field message } } }'''

CREATE = '''
mutation Create($product: ProductCreateInput!) {
  productCreate(product: $product) { product { id } userErrors { field message } } }'''

UPDATE = '''
mutation Update($product: ProductUpdateInput) {
  productUpdate(product: $product) {
    product { id title handle vendor tags status } userErrors { field message } } }'''

LISTING = '''
fragment Listing on Product {
  id title handle status tracksInventory totalInventory onlineStoreUrl
  publishedOnPublication(publicationId: "%s")
  variants(first: 10) { nodes { sku price availableForSale inventoryPolicy inventoryQuantity
    selectedOptions { name value }
    inventoryItem { tracked sku requiresShipping measurement { weight { value unit } } } } }
  media(first: 5) { nodes { status ... on MediaImage { mediaErrors { message } } } }
}
query ById($id: ID!) { product(id: $id) { ...Listing } }
query ByHandle($handle: String!) { productByHandle(handle: $handle) { ...Listing } }
query Search($query: String) { products(first: 5, query: $query) { nodes { ...Listing } } }
''' % ONLINE_STORE

CHANNEL_BODY = {
    'title': 'Retro Sunset Tee', 'descriptionHtml': '<p>Sunset.</p>', 'tags': ['sun'],
    'vendor': 'Printify Shop', 'image_url': 'https://images.printify.com/mockup/1.png',
    'variants': [{'sku': f'PFY-{size}-{color}', 'price': price, 'grams': 180,
                  'options': {'Size': size, 'Color': color}}
                 for size, color, price in (('M', 'Black', '24.99'), ('L', 'Black', '26.99'),
                                            ('M', 'White', '24.99'))]}


@pytest.fixture
def shopify(fakes):
    return fakes.start('shopify')


def post(fake, document, operation, **variables):
    """Run one named operation of ``document`` (LISTING's share one)."""
    response = requests.post(f'{fake.url}/admin/api/2025-04/graphql.json', timeout=10,
                             headers={'X-Shopify-Access-Token': 'shpat_test_token_not_real'},
                             json={'query': document, 'operationName': operation,
                                   'variables': variables})
    return response


def state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def tee(status='ACTIVE', **variant):
    """A one-variant ProductSetInput; ``variant`` adds inventory fields."""
    return {'title': 'Tee', 'status': status,
            'productOptions': [{'name': 'Size', 'values': [{'name': 'M'}]}],
            'variants': [{'optionValues': [{'optionName': 'Size', 'name': 'M'}],
                          'price': '19.99', **variant}]}


def product_set(fake, handle, product_input):
    answer = data(gql(fake, SET, {'identifier': {'handle': handle}, 'input': product_input}))
    assert answer['productSet']['userErrors'] == []
    return answer['productSet']['product']['id']


def listing(fake, gid):
    return data(post(fake, LISTING, 'ById', id=gid))['product']


def only_variant(fake, gid):
    [variant] = listing(fake, gid)['variants']['nodes']
    return variant


# Inventory defaults ##########################################################

def test_a_new_variant_is_tracked_with_none_in_stock_and_sold_out(shopify):
    product = listing(shopify, product_set(shopify, 'plain', tee(sku='TEE-M')))
    [variant] = product['variants']['nodes']
    assert (variant['inventoryPolicy'], variant['inventoryQuantity']) == ('DENY', 0)
    assert variant['inventoryItem'] == {'tracked': True, 'sku': 'TEE-M',
                                        'requiresShipping': True,
                                        'measurement': {'weight': None}}
    assert variant['availableForSale'] is False
    assert (product['tracksInventory'], product['totalInventory']) == (True, 0)


def test_continue_or_untracked_makes_a_variant_buyable(shopify):
    keep_selling = only_variant(shopify, product_set(
        shopify, 'continue', tee(inventoryPolicy='CONTINUE')))
    assert keep_selling['availableForSale'] and keep_selling['inventoryItem']['tracked']
    gid = product_set(shopify, 'untracked', tee(inventoryItem={
        'tracked': False, 'sku': 'TEE-M-ITEM', 'requiresShipping': False,
        'measurement': {'weight': {'value': 180, 'unit': 'GRAMS'}}}))
    untracked = only_variant(shopify, gid)
    assert untracked['availableForSale'] and untracked['inventoryPolicy'] == 'DENY'
    assert untracked['sku'] == untracked['inventoryItem']['sku'] == 'TEE-M-ITEM'
    assert untracked['inventoryItem']['requiresShipping'] is False
    assert untracked['inventoryItem']['measurement']['weight'] == {'value': 180.0,
                                                                   'unit': 'GRAMS'}
    assert listing(shopify, gid)['tracksInventory'] is False


def test_only_an_active_product_sells(shopify):
    gid = product_set(shopify, 'draft', tee(status='DRAFT', inventoryPolicy='CONTINUE'))
    assert only_variant(shopify, gid)['availableForSale'] is False


def test_an_existing_variant_keeps_what_an_update_omits(shopify):
    gid = product_set(shopify, 'kept', tee(sku='TEE-M', inventoryPolicy='CONTINUE',
                                           inventoryItem={'tracked': False}))
    variant_id = listing_ids(shopify, gid)[0]
    product_set(shopify, 'kept', tee(id=variant_id, price='21.00'))
    variant = only_variant(shopify, gid)
    assert (variant['price'], variant['sku'], variant['inventoryPolicy']) == (
        '21.00', 'TEE-M', 'CONTINUE')
    assert variant['inventoryItem']['tracked'] is False
    product_set(shopify, 'kept', tee())  # no id: a new variant, with the defaults
    assert only_variant(shopify, gid)['inventoryPolicy'] == 'DENY'


def listing_ids(fake, gid):
    query = 'query V($id: ID!) { product(id: $id) { variants(first: 5) { nodes { id } } } }'
    return [v['id'] for v in data(gql(fake, query, {'id': gid}))['product']['variants']['nodes']]


def test_bulk_created_variants_take_the_inventory_item(shopify):
    gid = data(gql(shopify, CREATE, {'product': {'title': 'Mug', 'productOptions': [
        {'name': 'Size', 'values': [{'name': '11oz'}]}]}}))['productCreate']['product']['id']
    variants = [{'optionValues': [{'optionName': 'Size', 'name': '11oz'}], 'price': '12.00',
                 'inventoryItem': {'sku': 'MUG-11', 'tracked': False, 'measurement': {
                     'weight': {'value': 0.8, 'unit': 'POUNDS'}}}},
                {'optionValues': [{'optionName': 'Size', 'name': '15oz'}], 'price': '14.00',
                 'inventoryItem': {'sku': 'MUG-15'}}]
    answer = data(gql(shopify, BULK, {'id': gid, 'variants': variants}))
    assert answer['productVariantsBulkCreate']['userErrors'] == []
    small, large = listing(shopify, gid)['variants']['nodes']
    assert (small['sku'], small['availableForSale']) == ('MUG-11', True)
    assert small['inventoryItem']['measurement']['weight'] == {'value': 0.8, 'unit': 'POUNDS'}
    assert (large['sku'], large['availableForSale'], large['inventoryPolicy']) == (
        'MUG-15', False, 'DENY')


def test_weights_are_checked_against_the_schema(shopify):
    bad_unit = tee(inventoryItem={'measurement': {'weight': {'value': 1, 'unit': 'STONES'}}})
    assert 'STONES' in errors(gql(shopify, SET, {'input': bad_unit}))
    no_value = tee(inventoryItem={'measurement': {'weight': {'unit': 'GRAMS'}}})
    assert 'value' in errors(gql(shopify, SET, {'input': no_value}))
    assert state(shopify)['products'] == []


# productUpdate ###############################################################

def test_product_update_changes_only_the_given_fields(shopify):
    gid = product_set(shopify, 'tee', {**tee(), 'vendor': 'POD', 'tags': ['sun']})
    answer = data(gql(shopify, UPDATE, {'product': {'id': gid, 'title': 'Renamed',
                                                    'status': 'DRAFT'}}))
    assert answer['productUpdate']['userErrors'] == []
    assert answer['productUpdate']['product'] == {'id': gid, 'title': 'Renamed',
                                                  'handle': 'tee', 'vendor': 'POD',
                                                  'tags': ['sun'], 'status': 'DRAFT'}
    assert listing(shopify, gid)['variants']['nodes'][0]['price'] == '19.99'


def test_product_update_never_creates(shopify):
    unknown = {'id': 'gid://shopify/Product/1', 'title': 'X'}
    for variables in ({'product': unknown}, {'product': {'title': 'X'}}, {}):
        answer = data(gql(shopify, UPDATE, variables))['productUpdate']
        assert answer['product'] is None
        assert [e['message'] for e in answer['userErrors']] == ['Product does not exist']
    assert 'inventoryQuantity' in errors(gql(shopify, UPDATE, {'product': {
        'id': 'gid://shopify/Product/1', 'inventoryQuantity': 5}}))
    assert "doesn't accept argument 'product'" in errors(gql(
        shopify, UPDATE, {'product': unknown}, version='2024-07'))
    assert state(shopify)['products'] == []


# Failures after the save #####################################################

def test_a_500_after_save_leaves_one_product_and_a_retry_upserts(shopify):
    shopify.configure(fail_next=[{'operation': 'productSet', 'after_save': True}])
    first = gql(shopify, SET, {'identifier': {'handle': 'tee'}, 'input': tee()})
    assert first.status_code == 500
    assert first.json()['errors'][0]['extensions']['code'] == 'INTERNAL_SERVER_ERROR'
    assert 'data' not in first.json()
    assert len(state(shopify)['products']) == 1
    gid = product_set(shopify, 'tee', tee())
    assert [p['id'] for p in state(shopify)['products']] == [gid]


def test_after_save_status_and_dropped_connection(shopify):
    shopify.configure(fail_next=[{'operation': 'productSet', 'after_save': True,
                                  'status': 503},
                                 {'operation': 'productSet', 'after_save': True,
                                  'status': 0}])
    assert gql(shopify, SET, {'input': tee()}).status_code == 503
    with pytest.raises(requests.ConnectionError):
        gql(shopify, SET, {'input': tee()})
    # Without a handle every call creates: both saves happened.
    assert len(state(shopify)['products']) == 2
    assert gql(shopify, SET, {'input': tee()}).status_code == 200


def test_a_throttled_request_does_not_use_up_an_after_save_rule(shopify):
    shopify.configure(restore_rate=0.001, bucket_available=0,
                      fail_next=[{'operation': 'productSet', 'after_save': True}])
    throttled = gql(shopify, SET, {'identifier': {'handle': 'tee'}, 'input': tee()})
    assert throttled.json()['errors'][0]['extensions']['code'] == 'THROTTLED'
    assert state(shopify)['products'] == []
    shopify.configure(bucket_available=1000)
    assert gql(shopify, SET, {'identifier': {'handle': 'tee'}, 'input': tee()}).status_code \
        == 500
    assert len(state(shopify)['products']) == 1


def test_a_rule_without_after_save_fails_before_saving(shopify):
    shopify.configure(fail_next=[{'operation': 'productSet', 'status': 502}])
    assert gql(shopify, SET, {'input': tee()}).status_code == 502
    assert state(shopify)['products'] == []


# Channel products (Printify's sync) ##########################################

def make_channel_product(fake, body=None):
    return requests.post(f'{fake.url}/_fake/channel_products', json=body or CHANNEL_BODY,
                         timeout=5)


def test_a_channel_product_is_published_and_buyable(shopify):
    made = make_channel_product(shopify).json()
    assert set(made) == {'id', 'legacyResourceId', 'handle', 'onlineStoreUrl'}
    assert made['handle'] == 'retro-sunset-tee'
    assert made['id'] == f'gid://shopify/Product/{made["legacyResourceId"]}'
    assert made['onlineStoreUrl'] == 'https://test-shop.myshopify.com/products/retro-sunset-tee'
    product = data(post(shopify, LISTING, 'ByHandle', handle=made['handle']))['productByHandle']
    assert (product['status'], product['publishedOnPublication']) == ('ACTIVE', True)
    assert product['onlineStoreUrl'] == made['onlineStoreUrl']
    variants = product['variants']['nodes']
    assert [v['sku'] for v in variants] == ['PFY-M-Black', 'PFY-L-Black', 'PFY-M-White']
    assert [v['price'] for v in variants] == ['24.99', '26.99', '24.99']
    assert all(v['availableForSale'] and v['inventoryPolicy'] == 'DENY'
               and not v['inventoryItem']['tracked'] for v in variants)
    assert variants[0]['inventoryItem']['measurement']['weight'] == {'value': 180.0,
                                                                     'unit': 'GRAMS'}
    assert variants[2]['selectedOptions'] == [{'name': 'Size', 'value': 'M'},
                                              {'name': 'Color', 'value': 'White'}]
    assert product['media']['nodes'] == [{'status': 'READY', 'mediaErrors': []}]


def test_channel_products_are_counted_apart_from_the_api(shopify):
    make_channel_product(shopify)
    second = make_channel_product(shopify).json()
    assert second['handle'] == 'retro-sunset-tee-1'  # unique, like Shopify's
    product_set(shopify, 'tee', tee())
    counts = state(shopify)
    assert [p['createdBy'] for p in counts['products']] == ['channel', 'channel', 'api']
    assert (counts['created_by_channel'], counts['created_by_api']) == (2, 1)
    assert counts['total_requests'] == 1  # the control route is not an API request
    found = data(post(shopify, LISTING, 'Search', query='handle:retro-sunset-tee-1'))
    assert [p['id'] for p in found['products']['nodes']] == [second['id']]


def test_a_channel_product_with_one_option_and_no_image(shopify):
    body = {'title': 'Poster', 'image_url': '', 'variants': [
        {'sku': 'P-A3', 'price': '15.00', 'options': {'Size': 'A3'}}]}
    made = make_channel_product(shopify, body).json()
    product = listing(shopify, made['id'])
    assert product['media']['nodes'] == []
    assert [v['selectedOptions'] for v in product['variants']['nodes']] == [
        [{'name': 'Size', 'value': 'A3'}]]


@pytest.mark.parametrize('change', [
    {'title': ''}, {'variants': []}, {'image_url': 'file:///tmp/a.png'},
    {'variants': [{'sku': 'X', 'price': 24.99, 'options': {'Size': 'M'}}]},
    {'variants': [{'price': '24.99', 'options': {'Size': 'M'}}]},
    {'variants': [{'sku': 'X', 'price': '1.00', 'options': {'Size': 'M'}},
                  {'sku': 'Y', 'price': '1.00', 'options': {'Size': 'M'}}]},
    {'variants': [{'sku': 'X', 'price': '1.00', 'options': {'Size': 'M'}},
                  {'sku': 'Y', 'price': '1.00', 'options': {'Color': 'Red'}}]}])
def test_a_malformed_channel_product_is_refused(shopify, change):
    response = make_channel_product(shopify, {**CHANNEL_BODY, **change})
    assert response.status_code == 400 and 'bad channel product' in response.json()['error']
    assert state(shopify)['products'] == []
