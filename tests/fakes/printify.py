"""Fake Printify REST API v1: a strict stand-in, since Printify has no sandbox.

It enforces the contract in ``/work/shared/research/external-apis.md`` (a) and
rejects what the real API rejects (the original engine's camelCase payload,
float prices, missing ``print_areas``, made-up variant ids, ``file://`` images,
below-cost publishing). Everything is answered as JSON.

Every ``/v1/`` request must carry ``Authorization: Bearer <scenario token>``
(else 401) and a ``User-Agent`` that names the application, not a library
default such as ``python-requests/2.32`` (else 400). POST/PUT bodies must be
``application/json`` objects (else 400), except that ``send_to_production.json``
and ``cancel.json`` may have no body at all. Validation errors look like
``{"status": "error", "code": 8150, "message": "Validation failed.",
"errors": {"reason": "The print_areas field is required.", "code": 8150}}``:
8150 a field is missing or malformed, 8251 variants/print areas don't match the
blueprint and provider (and the below-cost publish refusal, and Printify
Express for ineligible items), 8252 the product is locked while publishing,
8253 the order's status refuses the step (send to production, cancel), 8254
the shop has no sales channel.

Publishing follows the shop's kind (its ``sales_channel``). A
``custom_integration`` (or ``api``) shop locks a published product until the
integration calls ``publishing_succeeded.json`` (``{external: {id, handle}}``:
unlocked, external set) or ``publishing_failed.json`` (``{reason}``: unlocked,
``publish_failure`` set); both are accepted on an unlocked product too, as
Printify uses them to clear stale locks. A shop connected to a channel
(``shopify``, ``etsy``, ``ebay``, ...) syncs it by itself on a timer, read or
not, after ``sync_seconds * time_scale``; a ``shopify`` shop with
``shopify_fake_url`` makes the product in the fake Shopify then.

Orders (``/v1/shops/{shop}/orders.json``): a create ``{external_id, label?,
line_items: [{product_id, variant_id, quantity} | {sku, quantity}],
shipping_method (1 standard, 2 priority, 3 express, 4 economy),
is_printify_express?, send_shipping_notification?, address_to: {first_name,
last_name, country (ISO 2), address1, city, zip, email?, phone?, region?,
address2?}}`` answers ``{"id": "<24 hex>"}``; 8150 for an unknown product of
the shop, a variant not enabled on it, a SKU no enabled variant has (SKUs
repeat across the fake's products of one blueprint and provider: the newest
product wins), a quantity that is not an integer >= 1, a missing address field
or an unknown shipping_method. ``external_id`` is not unique (as on Printify):
two creates make two orders. An order starts ``on-hold``; ``GET orders.json``
is a Laravel paginator (newest first, ``limit`` <= 10 else 400, ``status`` and
``sku`` filters); ``GET orders/{id}.json`` the order (money in cents: item
cost, shipping from the provider's profile, ``total_price``,
``total_shipping``, ``total_tax`` 0). ``send_to_production.json`` (only
``on-hold``, else 8253) answers the order as ``sending-to-production``; after
``production_seconds * time_scale`` it is ``in-production``.
``cancel.json`` only while ``on-hold`` or ``payment-not-received`` (else
8253: "Order can't be canceled: it is already in production"). Order routes
count in the global rate-limit group only.

Webhooks: ``GET|POST /v1/shops/{shop}/webhooks.json`` (``{topic, url,
secret?}`` -> ``{id, topic, url, shop_id}``; unknown topic 8150),
``PUT|DELETE .../webhooks/{id}.json`` (PUT ``{url?, secret?}``; DELETE ->
``{id}``). Events are POSTed in the background to loopback URLs only (others
are recorded as not delivered), as ``{id (uuid), type (topic), created_at,
resource: {id (order id), type: "order", data: {shop_id, ...}}}`` with
``X-Pfy-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` when the
subscription has a secret. ``order:created``, ``order:updated`` (each status
change) and ``order:sent-to-production`` (in production) carry
``data.status``; ``order:shipment:created`` carries ``shipped_at, carrier:
{code, tracking_number, tracking_url}, skus``, ``order:shipment:delivered``
the same with ``delivered_at``. A non-2xx answer or an error is retried
``webhook_retries`` times, ``webhook_retry_seconds`` apart.

Scenario knobs (``POST /_fake/config`` merges them; ``/_fake/reset`` restores):

    token                    "test-printify-token"
    shops                    [{"id": 1001, "title": "Test Shop",
                               "sales_channel": "custom_integration"}]
                             (sales_channel None or "" = no channel: 8254)
    rate_global_per_min      600   every /v1/ request, 60 s sliding window
    rate_catalog_per_min     100   /v1/catalog/*, 60 s window
    rate_publish_per_30min   200   .../publish.json, 1800 s window
    rate_window_scale        1.0   multiplies every window (0.05: 600 per 3 s)
    front_size               None  [w, h] for every front placeholder
    retry_after_header       True  send Retry-After (seconds) with 429s
    sync_seconds             90    a connected shop's sync: how long a published
                             product stays locked before the channel has it
    time_scale               1.0   multiplies sync_seconds (0.02: 90 s in 1.8 s)
    sync_outcome             "succeeded" (external set) | "failed" (lock
                             clears, no external, publish_failure set) |
                             "never" (stays locked)
    shopify_domain           "test-shop.myshopify.com" (external.handle for
                             shops whose sales_channel is "shopify")
    shopify_fake_url         None  the fake Shopify's base URL: a "shopify"
                             shop's sync then makes the product there
                             (POST /_fake/channel_products), as Printify does
    error_rate               0     share of /v1/ requests answered 500 (seeded
                             by error_seed, 7); half of such creates are
                             saved first
    fail_next                []  [{"path_contains": "/products.json",
                             "method": "POST", "status": 500, "times": 1,
                             "retry_after": 2}]; status 0 drops the connection;
                             "after_save": true answers so after the request
                             took effect (a create that was saved)
    slow                     None  {"path_contains": "...", "seconds": 3}
                             (or a list of them) delays matching requests
    crash_after_create       False  True (next create) or n (next n creates):
                             the product IS created, then the connection is
                             closed without any response
    mockup_seconds           1     how long after the create Printify is still
                             rendering mockups (really ~60 s; times
                             time_scale): until then the product's
                             ``images`` hold only the default colour's
                             (front and back), as in the create answer;
                             afterwards a read (GET, list, PUT) shows a
                             front and a back mockup per enabled colour
    mockups_unreachable      False  True: the mockup CDN answers 503 (Shopify
                             cannot fetch a mockup)
    production_seconds       1     how long a sent order stays
                             ``sending-to-production`` (times time_scale)
    crash_after_order_create False  like crash_after_create, for order creates
                             (the order IS created, the connection dropped)
    webhook_retries          3     re-deliveries after a failed attempt
    webhook_retry_seconds    0.1   pause between attempts
    webhook_timeout_seconds  2     per delivery attempt

Mockups: each ``images[].src`` is
``<fake base URL>/mockup/<product id>/<variant id>/<camera id>/<position>.jpg?camera_label=<position>``,
the path of Printify's ``https://images-api.printify.com/mockup/...`` URLs on
the fake's own loopback address, so the engine, a fake Shopify and a browser
in the tests can load it. ``GET /mockup/...`` needs no token (it is a public
CDN, not the API), is not recorded as an API request, and answers a small
JPEG (the design on the variant's colour, or the plain colour from the back);
404 for a product or variant it does not have. Mockups are read-only.

Control routes: ``POST /_fake/config``, ``GET /_fake/requests``,
``POST /_fake/reset`` (forgets orders and webhooks too), ``GET /_fake/state``
(products, uploads, publishes, publishing_succeeded, publishing_failed, syncs,
locked, rate_limited, requests_by_group, errors, total_requests, orders,
orders_sent_to_production, orders_canceled, webhooks (with their secrets),
webhook_deliveries: one ``{event_id, webhook_id, topic, url, attempt,
status_code, error, time}`` per attempt) and ``GET /_fake/uploads/<id>`` (the
uploaded bytes, for ``url`` uploads). The state's ``mockup_downloads`` counts
mockup images served. ``POST /_fake/orders/<id>/ship`` ``{carrier?, number?,
url?, skus?}`` adds a shipment (default carrier ``usps``, a generated number,
the carrier's tracking URL) of the named SKUs (default: every unshipped line
item): those items ``fulfilled``, the order ``fulfilled`` or
``partially-fulfilled``, ``order:shipment:created`` sent; 409 for an order
never sent to production, canceled or fully shipped (one still
``sending-to-production`` goes ``in-production`` first).
``POST /_fake/orders/<id>/deliver`` sets ``delivered_at`` on its undelivered
shipments and sends ``order:shipment:delivered`` (409 if there are none).
"""

import base64
import binascii
import collections
import copy
import hashlib
import hmac
import io
import json
import math
import random
import re
import secrets
import sys
import time
import traceback
import uuid
from urllib.parse import urlsplit

import bottle
import gevent
import gevent.pool
import requests
from PIL import Image, ImageDraw
from fakes.control import ApiError, droppable, reply
from fakes.control import control_routes as shared_control_routes

DEFAULT_SCENARIO = {
    'token': 'test-printify-token',
    'shops': [{'id': 1001, 'title': 'Test Shop', 'sales_channel': 'custom_integration'}],
    'rate_global_per_min': 600,
    'rate_catalog_per_min': 100,
    'rate_publish_per_30min': 200,
    'rate_window_scale': 1.0,
    'front_size': None,
    'retry_after_header': True,
    'sync_seconds': 90,
    'time_scale': 1.0,
    'sync_outcome': 'succeeded',
    'shopify_domain': 'test-shop.myshopify.com',
    'shopify_fake_url': None,
    'error_rate': 0,
    'error_seed': 7,
    'fail_next': [],
    'slow': None,
    'crash_after_create': False,
    'mockup_seconds': 1,
    'mockups_unreachable': False,
    'production_seconds': 1,
    'crash_after_order_create': False,
    'webhook_retries': 3,
    'webhook_retry_seconds': 0.1,
    'webhook_timeout_seconds': 2,
}

# User-Agent prefixes that only name an HTTP library, not the application.
LIBRARY_AGENTS = ('python-requests/', 'python-urllib/', 'python-httpx/', 'aiohttp/',
                  'go-http-client/', 'axios/', 'node-fetch', 'undici', 'okhttp/',
                  'java/', 'libwww-perl/', 'wget/', 'curl/')
PUBLISH_FLAGS = ('title', 'description', 'images', 'variants', 'tags')
OPTIONAL_PUBLISH_FLAGS = ('keyFeatures', 'shipping_template')
BODYLESS = ('/send_to_production.json', '/cancel.json')  # actions sent without a body
LOOPBACK = ('127.0.0.1', 'localhost', '::1')
API_CHANNELS = ('custom_integration', 'api')  # the integration answers each publish itself
CAMERAS = (('front', 98424), ('back', 98425))  # mockup camera positions and their ids
MOCKUP_PX = (400, 480)
SHIPPING_METHODS = {1: 'standard', 2: 'priority', 3: 'express', 4: 'economy'}
SHIPPING_SURCHARGE = {1: 0, 2: 400, 3: 800, 4: -100}  # cents, on an order's first item
ADDRESS_REQUIRED = ('first_name', 'last_name', 'country', 'address1', 'city', 'zip')
ADDRESS_OPTIONAL = ('email', 'phone', 'region', 'address2', 'company')
ORDER_STATUSES = ('pending', 'on-hold', 'payment-not-received', 'sending-to-production',
                  'in-production', 'partially-fulfilled', 'fulfilled', 'canceled', 'has-issues')
CANCELABLE = ('on-hold', 'payment-not-received')
NOT_SENT = ('pending', 'on-hold', 'payment-not-received')
COUNTRY_NAMES = {'US': 'United States'}
TRACKING_URLS = {'usps': 'https://tools.usps.com/go/TrackConfirmAction?tLabels={number}',
                 'ups': 'https://www.ups.com/track?tracknum={number}',
                 'fedex': 'https://www.fedex.com/fedextrack/?trknbr={number}',
                 'dhl': 'https://www.dhl.com/en/express/tracking.html?AWB={number}'}
WEBHOOK_TOPICS = ('order:created', 'order:updated', 'order:sent-to-production',
                  'order:shipment:created', 'order:shipment:delivered', 'product:deleted',
                  'product:publish:started', 'shop:disconnected')
# A flat t-shirt, as fractions of the mockup's width and height.
SHIRT_OUTLINE = ((0.36, 0.12), (0.44, 0.16), (0.56, 0.16), (0.64, 0.12), (0.86, 0.22),
                 (0.80, 0.36), (0.72, 0.32), (0.72, 0.90), (0.28, 0.90), (0.28, 0.32),
                 (0.20, 0.36), (0.14, 0.22))


# Catalog ###################################################################

PROVIDERS = {
    29: {'id': 29, 'title': 'Monster Digital',
         'location': {'address1': '1 Industrial Way', 'city': 'Chatsworth',
                      'country': 'US', 'region': 'CA', 'zip': '91311'}},
    99: {'id': 99, 'title': 'Printify Choice',
         'location': {'address1': '108 Wild Basin Rd', 'city': 'Austin',
                      'country': 'US', 'region': 'TX', 'zip': '78746'}},
}

SIZES = ('S', 'M', 'L', 'XL', '2XL', '3XL')
TEE_COLORS = ('White', 'Black', 'Navy', 'Heather Grey')
HOODIE_COLORS = ('Black', 'Navy', 'Sport Grey', 'White', 'Maroon')
TEE_COST = {'S': 1050, 'M': 1050, 'L': 1050, 'XL': 1090, '2XL': 1240, '3XL': 1290}
HOODIE_COST = {'S': 2100, 'M': 2100, 'L': 2100, 'XL': 2150, '2XL': 2400, '3XL': 2600}
COLOR_IDS = {'White': 521, 'Black': 418, 'Navy': 511, 'Heather Grey': 423,
             'Sport Grey': 358, 'Maroon': 388}
COLOR_HEX = {'White': '#ffffff', 'Black': '#000000', 'Navy': '#1f2a44',
             'Heather Grey': '#b5b5b5', 'Sport Grey': '#a9a9a9', 'Maroon': '#5b1a26'}
SIZE_IDS = {'S': 14, 'M': 15, 'L': 16, 'XL': 17, '2XL': 18, '3XL': 19}
TEE_TAGS = ['T-shirts', "Men's Clothing", "Women's Clothing", 'Cotton', 'Crew neck',
            'DTG', 'Regular fit']
HOODIE_TAGS = ['Hoodies', "Men's Clothing", "Women's Clothing", 'DTG', 'Unisex',
               'Winter Picks']

# id, title, brand, model, colours, costs, front (w, h), title order, tags
BLUEPRINTS = (
    (12, 'Unisex Jersey Short Sleeve Tee', 'Bella+Canvas', '3001',
     TEE_COLORS, TEE_COST, (4500, 5400), 'color/size', TEE_TAGS),
    (6, 'Unisex Heavy Cotton Tee', 'Gildan', '5000',
     TEE_COLORS, TEE_COST, (4500, 5400), 'size/color', TEE_TAGS),
    (77, 'Unisex Heavy Blend™ Hooded Sweatshirt', 'Gildan', '18500',
     HOODIE_COLORS, HOODIE_COST, (3852, 4398), 'size/color', HOODIE_TAGS),
    # Decoys: ids other code hard-codes for these garments, and near misses.
    (3, 'Kids Heavy Cotton™ Tee', 'Gildan', '5000B',
     TEE_COLORS, TEE_COST, (3600, 4320), 'color/size', TEE_TAGS),
    (165, 'Unisex Jersey Long Sleeve Tee', 'Bella+Canvas', '3501',
     TEE_COLORS, TEE_COST, (4500, 5400), 'color/size', TEE_TAGS),
    (384, 'Unisex Heavy Blend™ Crewneck Sweatshirt', 'Gildan', '18000',
     HOODIE_COLORS, HOODIE_COST, (4200, 4800), 'color/size', HOODIE_TAGS),
    (145, 'Unisex Softstyle T-Shirt', 'Gildan', '64000',
     TEE_COLORS, TEE_COST, (4500, 5400), 'size/color', TEE_TAGS),
    (706, 'Unisex Garment-Dyed T-shirt', 'Comfort Colors', '1717',
     TEE_COLORS, TEE_COST, (4200, 4800), 'color/size', TEE_TAGS),
)


def variant_id(bp, pp, ci, si):
    """A stable, non-sequential 5-digit id for one colour/size of a blueprint+provider."""
    return 10000 + (bp * 7919 + pp * 3571) % 60000 + ci * 257 + si * 61


def build_catalog():
    """{blueprint id: {'info', 'providers': {pp: {'variants', 'costs', 'grams'}}, ...}}"""
    catalog = {}
    for bp, title, brand, model, colors, costs, front, order, tags in BLUEPRINTS:
        info = {'id': bp, 'title': title, 'brand': brand, 'model': model,
                'description': f'<p>{brand} {model}: {title}.</p>',
                'images': [f'https://images.printify.com/blueprint-{bp}-{n}.jpg' for n in (1, 2)]}
        providers = {pp: _provider_variants(bp, pp, colors, costs, front, order)
                     for pp in PROVIDERS}
        catalog[bp] = {'info': info, 'providers': providers, 'tags': tags}
    return catalog


def _provider_variants(bp, pp, colors, costs, front, order):
    """The variants one provider offers for a blueprint, with their costs."""
    variants, cost, grams = [], {}, {}
    for ci, color in enumerate(colors):
        for si, size in enumerate(SIZES):
            if pp == 99 and ci == len(colors) - 1 and size == '3XL':
                continue  # Printify Choice doesn't stock every colour in 3XL
            vid = variant_id(bp, pp, ci, si)
            title = f'{color} / {size}' if order == 'color/size' else f'{size} / {color}'
            variants.append({'id': vid, 'title': title, 'options': {'color': color, 'size': size},
                             'placeholders': [
                                 {'position': 'front', 'width': front[0], 'height': front[1]},
                                 {'position': 'back', 'width': 4500, 'height': 5400}]})
            cost[vid] = costs[size] - (15 if pp == 99 else 0)
            grams[vid] = (600 if costs is HOODIE_COST else 150) + si * 20
    return {'variants': variants, 'costs': cost, 'grams': grams}


def shipping_profile(provider):
    """The shipping.json answer for one blueprint/provider."""
    ids = [v['id'] for v in provider['variants']]
    return {'handling_time': {'value': 3, 'unit': 'day'},
            'profiles': [{'variant_ids': ids, 'first_item': {'currency': 'USD', 'cost': 475},
                          'additional_items': {'currency': 'USD', 'cost': 240},
                          'countries': ['US']},
                         {'variant_ids': ids, 'first_item': {'currency': 'USD', 'cost': 1000},
                          'additional_items': {'currency': 'USD', 'cost': 400},
                          'countries': ['REST_OF_THE_WORLD']}]}


# Errors ####################################################################

def invalid(code, reason, status=400):
    """A Printify validation error (8150, 8251, 8252, 8254)."""
    return ApiError(status, {'status': 'error', 'code': code, 'message': 'Validation failed.',
                             'errors': {'reason': reason, 'code': code}})


def plain_error(status, message):
    return ApiError(status, {'status': 'error', 'code': status, 'message': message})


# Field checks (Laravel-style messages) #####################################

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def need(data, key, path, kind):
    """Return data[key] after checking it is present and of ``kind``, else 8150."""
    value = data.get(key) if isinstance(data, dict) else None
    if value is None or value == '' or value == []:
        raise invalid(8150, f'The {path} field is required.')
    check_kind(value, path, kind)
    return value


def check_kind(value, path, kind):
    """8150 unless value is a 'string', 'integer', 'number', 'boolean' or 'array'."""
    ok = {'string': lambda v: isinstance(v, str), 'integer': _is_int, 'number': _is_number,
          'boolean': lambda v: isinstance(v, bool), 'array': lambda v: isinstance(v, list),
          'object': lambda v: isinstance(v, dict)}[kind](value)
    if not ok:
        article = 'an' if kind[0] in 'aeiou' else 'a'
        raise invalid(8150, f'The {path} must be {article} {kind}.')


def optional(data, key, path, kind):
    if data.get(key) is not None:
        check_kind(data[key], path, kind)


def check_variants(variants, path='variants', price_required=True):
    """Shape of ``variants``: [{id int, price int >= 0, is_enabled bool}]."""
    for n, entry in enumerate(variants):
        check_kind(entry, f'{path}.{n}', 'object')
        need(entry, 'id', f'{path}.{n}.id', 'integer')
        if price_required or 'price' in entry:
            price = need(entry, 'price', f'{path}.{n}.price', 'integer')
            if price < 0:
                raise invalid(8150, f'The {path}.{n}.price must be at least 0.')
        optional(entry, 'is_enabled', f'{path}.{n}.is_enabled', 'boolean')


def check_print_areas(areas):
    """Shape of ``print_areas``: [{variant_ids, placeholders: [{position, images}]}]."""
    for n, area in enumerate(areas):
        path = f'print_areas.{n}'
        check_kind(area, path, 'object')
        for k, vid in enumerate(need(area, 'variant_ids', f'{path}.variant_ids', 'array')):
            check_kind(vid, f'{path}.variant_ids.{k}', 'integer')
        placeholders = need(area, 'placeholders', f'{path}.placeholders', 'array')
        for m, holder in enumerate(placeholders):
            check_placeholder(holder, f'{path}.placeholders.{m}')
        if not any(holder['images'] for holder in placeholders):
            raise invalid(8150, f'The {path}.placeholders must contain at least one image.')


def check_placeholder(holder, path):
    check_kind(holder, path, 'object')
    need(holder, 'position', f'{path}.position', 'string')
    if not isinstance(holder.get('images'), list):
        raise invalid(8150, f'The {path}.images field is required.')
    for k, image in enumerate(holder['images']):
        ipath = f'{path}.images.{k}'
        check_kind(image, ipath, 'object')
        need(image, 'id', f'{ipath}.id', 'string')
        for key in ('x', 'y', 'scale', 'angle'):
            if image.get(key) is None:
                raise invalid(8150, f'The {ipath}.{key} field is required.')
            check_kind(image[key], f'{ipath}.{key}', 'number')
        if image['scale'] <= 0:
            raise invalid(8150, f'The {ipath}.scale must be greater than 0.')
        if image['angle'] != int(image['angle']):
            raise invalid(8150, f'The {ipath}.angle must be an integer.')


def check_create_shape(body):
    """Every 8150 check of a create body, in Laravel's rule order."""
    need(body, 'title', 'title', 'string')
    need(body, 'description', 'description', 'string')
    need(body, 'blueprint_id', 'blueprint_id', 'integer')
    need(body, 'print_provider_id', 'print_provider_id', 'integer')
    check_variants(need(body, 'variants', 'variants', 'array'))
    check_print_areas(need(body, 'print_areas', 'print_areas', 'array'))
    check_extras(body)


def check_extras(body):
    optional(body, 'tags', 'tags', 'array')
    for n, tag in enumerate(body.get('tags') or []):
        check_kind(tag, f'tags.{n}', 'string')
    optional(body, 'visible', 'visible', 'boolean')


def check_order_shape(body):
    """Every 8150 check of an order create body."""
    need(body, 'external_id', 'external_id', 'string')
    optional(body, 'label', 'label', 'string')
    for n, item in enumerate(need(body, 'line_items', 'line_items', 'array')):
        check_line_item(item, f'line_items.{n}')
    method = need(body, 'shipping_method', 'shipping_method', 'integer')
    if method not in SHIPPING_METHODS:
        raise invalid(8150, f'The selected shipping_method is invalid: {method} is not one of '
                            f'{sorted(SHIPPING_METHODS)}.')
    optional(body, 'is_printify_express', 'is_printify_express', 'boolean')
    optional(body, 'send_shipping_notification', 'send_shipping_notification', 'boolean')
    check_address(need(body, 'address_to', 'address_to', 'object'))


def check_line_item(item, path):
    """{product_id, variant_id, quantity} or {sku, quantity}; quantity an int >= 1."""
    check_kind(item, path, 'object')
    if item.get('sku') is not None:
        need(item, 'sku', f'{path}.sku', 'string')
    elif item.get('product_id') in (None, ''):
        raise invalid(8150, f'The {path}.product_id field is required when {path}.sku is '
                            'not present.')
    else:
        need(item, 'product_id', f'{path}.product_id', 'string')
        need(item, 'variant_id', f'{path}.variant_id', 'integer')
    if need(item, 'quantity', f'{path}.quantity', 'integer') < 1:
        raise invalid(8150, f'The {path}.quantity must be at least 1.')


def check_address(address):
    for key in ADDRESS_REQUIRED:
        need(address, key, f'address_to.{key}', 'string')
    for key in ADDRESS_OPTIONAL:
        optional(address, key, f'address_to.{key}', 'string')
    if not re.fullmatch(r'[A-Z]{2}', address['country']):
        raise invalid(8150, 'The address_to.country must be a 2-letter ISO 3166 country code.')


def check_webhook_url(url):
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise invalid(8150, 'The url must be a valid URL.')
    return url


# The fake ##################################################################

class PrintifyFake:
    """Scenario, catalog and state of one fake Printify account."""

    def __init__(self):
        self.catalog = build_catalog()
        self.reset()

    def reset(self):
        for pid in list(getattr(self, 'locks', ())):
            self.unlock(pid)    # a pending sync must not outlive its scenario
        self.stop_background()
        self.scenario = copy.deepcopy(DEFAULT_SCENARIO)
        self.requests = []
        self.products = {}      # id -> product as the API returns it
        self.locks = {}         # id -> {'until': t or None, 'outcome': ..., 'timer'}
        self.uploads = {}       # id -> upload answer
        self.blobs = {}         # id -> bytes
        self.rendering = {}     # product id -> (monotonic time its mockups are done, base URL)
        self.mockup_jpegs = {}  # mockup path -> JPEG bytes
        self.orders = {}        # id -> order as the API returns it
        self.order_shop = {}    # order id -> shop id
        self.producing = {}     # order id -> {'until': monotonic time, 'timer'}
        self.shipped = {}       # order id -> [{'shipped_at', 'skus'}], one per shipment
        self.webhooks = {}      # id -> {id, topic, url, shop_id, secret}
        self.deliveries = []    # one entry per webhook delivery attempt
        self.senders = gevent.pool.Group()  # webhook deliveries in flight
        self.windows = collections.defaultdict(collections.deque)
        self.counts = {'publishes': 0, 'rate_limited': 0, 'errors': 0, 'total_requests': 0,
                       'publishing_succeeded': 0, 'publishing_failed': 0, 'syncs': 0,
                       'mockup_downloads': 0, 'orders_sent_to_production': 0,
                       'orders_canceled': 0}
        self.random = random.Random(DEFAULT_SCENARIO['error_seed'])
        self.by_group = collections.Counter()

    def stop_background(self):
        """Kill pending production timers and webhook deliveries."""
        for entry in getattr(self, 'producing', {}).values():
            entry['timer'].kill(block=False)
        if hasattr(self, 'senders'):
            self.senders.kill(block=False)

    def configure(self, patch):
        self.scenario.update(patch)
        if 'error_seed' in patch:
            self.random = random.Random(patch['error_seed'])

    def shop(self, shop_id):
        for shop in self.scenario['shops']:
            if shop['id'] == shop_id:
                return shop
        raise plain_error(404, 'Shop not found.')

    def blueprint(self, bp):
        if bp not in self.catalog:
            raise plain_error(404, 'Blueprint not found.')
        return self.catalog[bp]

    def provider(self, bp, pp):
        if pp not in self.blueprint(bp)['providers']:
            raise plain_error(404, 'Print provider not found for this blueprint.')
        return self.catalog[bp]['providers'][pp]

    def state(self):
        for pid in list(self.products):
            self.settle(pid)
            self.settle_mockups(pid)
        for oid in list(self.producing):
            self.settle_order(oid)
        return {'products': list(self.products.values()),
                'uploads': list(self.uploads.values()),
                'orders': list(self.orders.values()),
                'webhooks': list(self.webhooks.values()),
                'webhook_deliveries': self.deliveries,
                'locked': sum(p['is_locked'] for p in self.products.values()),
                'requests_by_group': dict(self.by_group), **self.counts}

    # Rate limits -------------------------------------------------------

    def groups(self, path):
        """[(group, limit, window seconds)] that a request to ``path`` counts in."""
        scale = float(self.scenario['rate_window_scale'])
        groups = [('global', self.scenario['rate_global_per_min'], 60 * scale)]
        if path.startswith('/v1/catalog/'):
            groups.append(('catalog', self.scenario['rate_catalog_per_min'], 60 * scale))
        elif path.endswith('/publish.json'):
            groups.append(('publish', self.scenario['rate_publish_per_30min'], 1800 * scale))
        return groups

    def take_slot(self, path):
        """Count the request, or raise 429; return the X-RateLimit headers."""
        now = time.monotonic()
        groups = self.groups(path)
        for name, limit, window in groups:
            self.by_group[name] += 1
            queue = self.windows[name]
            while queue and queue[0] <= now - window:
                queue.popleft()
        for name, limit, window in groups:
            queue = self.windows[name]
            if len(queue) >= limit:
                raise self.too_many(queue, limit, window, now)
        for name, _, _ in groups:
            self.windows[name].append(now)
        name, limit, _ = groups[-1]
        return {'X-RateLimit-Limit': str(limit),
                'X-RateLimit-Remaining': str(max(0, limit - len(self.windows[name])))}

    def too_many(self, queue, limit, window, now):
        self.counts['rate_limited'] += 1
        headers = {'X-RateLimit-Limit': str(limit), 'X-RateLimit-Remaining': '0'}
        if self.scenario['retry_after_header']:
            wait = (queue[0] + window - now) if queue else 1
            headers['Retry-After'] = str(max(1, math.ceil(wait)))
        return ApiError(429, {'status': 'error', 'code': 429, 'message': 'Too Many Attempts.'},
                        headers)

    # Failure injection -------------------------------------------------

    def injected_failure(self, method, path):
        """The first matching ``fail_next`` rule, consumed, or None; else,
        with ``error_rate``, now and then a 500 (for a create, as often
        after it was saved as before)."""
        rate = float(self.scenario.get('error_rate') or 0)
        if rate and path.startswith('/v1/') and self.random.random() < rate:
            return {'status': 500, 'after_save': method == 'POST' and self.random.random() < 0.5,
                    'message': 'Internal server error.'}
        for rule in list(self.scenario.get('fail_next') or []):
            if rule.get('path_contains', '') not in path:
                continue
            if rule.get('method', method).upper() != method:
                continue
            rule['times'] = rule.get('times', 1) - 1
            if rule['times'] <= 0:
                self.scenario['fail_next'].remove(rule)
            return rule
        return None

    def delay_for(self, path):
        rules = self.scenario.get('slow') or []
        for rule in [rules] if isinstance(rules, dict) else rules:
            if rule.get('path_contains', '') in path:
                return float(rule.get('seconds', 0))
        return 0

    def take_crash(self, knob='crash_after_create'):
        """True when this create must drop its connection (``crash_after_create``,
        or ``crash_after_order_create`` for order creates)."""
        left = self.scenario.get(knob)
        if not left:
            return False
        self.scenario[knob] = False if left is True else int(left) - 1
        return True

    # Uploads -----------------------------------------------------------

    def upload(self, body, base_url):
        """POST /v1/uploads/images.json: store content-addressed, answer metadata."""
        file_name = need(body, 'file_name', 'file_name', 'string')
        if body.get('contents') is not None:
            data = decode_contents(body['contents'])
        elif body.get('url') is not None:
            data = fetch_url(need(body, 'url', 'url', 'string'))
        else:
            raise invalid(8150, 'The contents field is required when url is not present.')
        return self.store_upload(file_name, data, base_url)

    def store_upload(self, file_name, data, base_url):
        width, height, mime = image_facts(data)
        upload_id = hashlib.sha256(data).hexdigest()[:24]
        if upload_id not in self.uploads:
            self.blobs[upload_id] = data
            self.uploads[upload_id] = {
                'id': upload_id, 'file_name': file_name, 'height': height, 'width': width,
                'size': len(data), 'mime_type': mime,
                'preview_url': f'{base_url}/_fake/uploads/{upload_id}',
                'upload_time': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}
        return self.uploads[upload_id]

    # Products ----------------------------------------------------------

    def create_product(self, shop_id, body, base_url):
        """POST /v1/shops/{shop}/products.json."""
        self.shop(shop_id)
        check_create_shape(body)
        bp, pp = body['blueprint_id'], body['print_provider_id']
        provider = self.check_catalog(bp, pp)
        self.check_product_variants(body['variants'], provider)
        self.check_areas(body['print_areas'], provider, body['variants'])
        product = self.render(shop_id, body, provider, base_url)
        self.products[product['id']] = product
        seconds = float(self.scenario['mockup_seconds']) * float(self.scenario['time_scale'])
        self.rendering[product['id']] = (time.monotonic() + max(0.0, seconds), base_url)
        return product

    def check_catalog(self, bp, pp):
        if bp not in self.catalog:
            raise invalid(8150, 'The selected blueprint_id is invalid.')
        if pp not in self.catalog[bp]['providers']:
            raise invalid(8251, f'Print provider {pp} does not offer blueprint {bp}.')
        return self.catalog[bp]['providers'][pp]

    def check_product_variants(self, variants, provider):
        known = provider['costs']
        ids = [v['id'] for v in variants]
        unknown = [vid for vid in ids if vid not in known]
        if unknown:
            raise invalid(8251, f'Variants {unknown[:10]} do not match the blueprint and '
                                'print provider.')
        if len(set(ids)) != len(ids):
            raise invalid(8251, 'Each variant may appear only once in variants.')

    def check_areas(self, areas, provider, variants, cover_all=False):
        """8251/8150 checks of print areas against the catalog and the uploads."""
        known, seen = provider['costs'], set()
        positions = {p['position'] for p in provider['variants'][0]['placeholders']}
        for n, area in enumerate(areas):
            bad = [vid for vid in area['variant_ids'] if vid not in known or vid in seen]
            if bad:
                raise invalid(8251, f'print_areas.{n}.variant_ids {bad[:10]} are not valid '
                                    'variants of this product or appear in two print areas.')
            seen.update(area['variant_ids'])
            self.check_area_images(area, n, positions)
        wanted = set(known) if cover_all else {
            v['id'] for v in variants if v.get('is_enabled', True)}
        if wanted - seen:
            raise invalid(8251, f'Variants {sorted(wanted - seen)[:10]} have no print area; '
                                'print_areas.variant_ids must cover them.')

    def check_area_images(self, area, n, positions):
        for m, holder in enumerate(area['placeholders']):
            path = f'print_areas.{n}.placeholders.{m}'
            if holder['position'] not in positions:
                raise invalid(8150, f'The selected {path}.position is invalid.')
            for k, image in enumerate(holder['images']):
                if image['id'] not in self.uploads:
                    raise invalid(8150, f'The selected {path}.images.{k}.id is invalid.')

    def render(self, shop_id, body, provider, base_url):
        """The product as the create response shows it: every variant, costs, no
        external, and the mockups rendered so far (the default colour's)."""
        now = stamp()
        sent = {v['id']: v for v in body['variants']}
        variants = [self.render_variant(v, sent.get(v['id']), provider)
                    for v in provider['variants']]
        first_enabled = next((v for v in variants if v['is_enabled']), None)
        if first_enabled:
            first_enabled['is_default'] = True
        bp = body['blueprint_id']
        pid = new_id()
        return {
            'id': pid, 'title': body['title'], 'description': body['description'],
            'tags': merge_tags(body.get('tags') or [], self.catalog[bp]['tags']),
            'options': product_options(provider),
            'variants': variants,
            'images': mockups(base_url, pid, variants, partial=True),
            'created_at': now, 'updated_at': now,
            'visible': body.get('visible', True), 'is_locked': False,
            'blueprint_id': bp, 'print_provider_id': body['print_provider_id'],
            'user_id': 4242, 'shop_id': shop_id,
            'print_areas': self.render_areas(body['print_areas'], provider),
            'print_details': [], 'sales_channel_properties': [],
        }

    def render_variant(self, catalog_variant, sent, provider):
        vid = catalog_variant['id']
        cost = provider['costs'][vid]
        opts = catalog_variant['options']
        return {'id': vid, 'sku': str(10 ** 19 + vid * 7919 + cost), 'cost': cost,
                'price': sent['price'] if sent else int(round(cost * 1.6, -1)) - 1,
                'title': catalog_variant['title'], 'grams': provider['grams'][vid],
                'is_enabled': bool(sent) and sent.get('is_enabled', True),
                'is_default': False, 'is_available': True, 'is_printify_express_eligible': False,
                'options': [COLOR_IDS[opts['color']], SIZE_IDS[opts['size']]]}

    def render_areas(self, areas, provider):
        """Sent areas, widened to every variant, with the unused placeholders added."""
        out = [copy.deepcopy(area) for area in areas]
        mentioned = {vid for area in areas for vid in area['variant_ids']}
        out[0]['variant_ids'] += [v['id'] for v in provider['variants']
                                  if v['id'] not in mentioned]
        positions = [p['position'] for p in provider['variants'][0]['placeholders']]
        for area in out:
            have = {holder['position'] for holder in area['placeholders']}
            area['placeholders'] += [{'position': pos, 'images': []}
                                     for pos in positions if pos not in have]
            for holder in area['placeholders']:
                holder['images'] = [self.render_image(img) for img in holder['images']]
        return out

    def render_image(self, image):
        upload = self.uploads[image['id']]
        return {'id': image['id'], 'name': upload['file_name'], 'type': upload['mime_type'],
                'height': upload['height'], 'width': upload['width'],
                'x': image['x'], 'y': image['y'], 'scale': image['scale'],
                'angle': image['angle']}

    def product(self, shop_id, pid):
        self.shop(shop_id)
        if pid not in self.products or self.products[pid]['shop_id'] != shop_id:
            raise plain_error(404, 'Product not found.')
        self.settle(pid)
        self.settle_mockups(pid)
        return self.products[pid]

    def settle_mockups(self, pid):
        """Show every mockup once Printify has finished rendering them."""
        due = self.rendering.get(pid)
        if due and time.monotonic() >= due[0] and pid in self.products:
            del self.rendering[pid]
            product = self.products[pid]
            product['images'] = mockups(due[1], pid, product['variants'])

    def mockup_image(self, pid, vid, camera, position):
        """GET /mockup/...: a small JPEG of the design on the variant's colour."""
        product = self.products.get(pid)
        variant = next((v for v in (product or {}).get('variants', []) if v['id'] == vid), None)
        cameras = dict(CAMERAS)
        if variant is None or cameras.get(position) != camera:
            raise plain_error(404, 'Not found.')
        if self.scenario['mockups_unreachable']:
            raise plain_error(503, 'Service Unavailable')
        key = f'{pid}/{vid}/{camera}'
        if key not in self.mockup_jpegs:
            self.mockup_jpegs[key] = self.draw_mockup(product, variant, position)
        self.counts['mockup_downloads'] += 1
        return self.mockup_jpegs[key]

    def draw_mockup(self, product, variant, position):
        """A shirt of the variant's colour on Printify's grey studio backdrop,
        the front print on its chest (scaled from the print area)."""
        colour = {v: k for k, v in COLOR_IDS.items()}[variant['options'][0]]
        image = Image.new('RGB', MOCKUP_PX, (236, 236, 236))
        width, height = MOCKUP_PX
        ImageDraw.Draw(image).polygon([(x * width, y * height) for x, y in SHIRT_OUTLINE],
                                      fill=COLOR_HEX[colour], outline=(190, 190, 190))
        upload = next((img['id'] for area in product['print_areas']
                       for holder in area['placeholders'] if holder['position'] == 'front'
                       for img in holder['images']), None)
        if position == 'front' and upload in self.blobs:
            with Image.open(io.BytesIO(self.blobs[upload])) as design:
                art = design.convert('RGBA')
                art.thumbnail((int(width * 0.4), int(height * 0.48)))  # the print area
                image.paste(art, ((width - art.width) // 2, int(height * 0.24)), art)
        buffer = io.BytesIO()
        image.save(buffer, 'JPEG', quality=85)
        return buffer.getvalue()

    def list_products(self, shop_id, query):
        """GET products.json: a Laravel paginator, newest first, filters ignored."""
        self.shop(shop_id)
        limit = page_param(query, 'limit', 10, 50)
        page = page_param(query, 'page', 1, None)
        items = [self.product(shop_id, pid) for pid in reversed(list(self.products))
                 if self.products[pid]['shop_id'] == shop_id]
        return paginate(items, page, limit, f'/v1/shops/{shop_id}/products.json')

    def update_product(self, shop_id, pid, body):
        """PUT: partial update; variants merge by id; print areas must cover all."""
        product = self.unlocked(shop_id, pid)
        for key in ('title', 'description'):
            if key in body:
                need(body, key, key, 'string')
        check_extras(body)
        provider = self.provider(product['blueprint_id'], product['print_provider_id'])
        if 'variants' in body:
            check_variants(need(body, 'variants', 'variants', 'array'))
            self.check_product_variants(body['variants'], provider)
        if 'print_areas' in body:
            check_print_areas(need(body, 'print_areas', 'print_areas', 'array'))
            self.check_areas(body['print_areas'], provider, [], cover_all=True)
        self.apply_update(product, body, provider)
        return product

    def apply_update(self, product, body, provider):
        for key in ('title', 'description', 'visible'):
            if key in body:
                product[key] = body[key]
        if 'tags' in body:
            product['tags'] = list(body['tags'])
        by_id = {v['id']: v for v in product['variants']}
        for entry in body.get('variants', []):
            by_id[entry['id']]['price'] = entry['price']
            by_id[entry['id']]['is_enabled'] = entry.get('is_enabled', True)
        if 'print_areas' in body:
            product['print_areas'] = self.render_areas(body['print_areas'], provider)
        base = self.rendering.get(product['id'], (None, base_url()))[1]
        product['images'] = mockups(base, product['id'], product['variants'],
                                    partial=product['id'] in self.rendering)
        product['updated_at'] = stamp()

    def unlocked(self, shop_id, pid):
        product = self.product(shop_id, pid)
        if product['is_locked']:
            raise invalid(8252, 'Product is disabled for editing.')
        return product

    def delete_product(self, shop_id, pid):
        self.unlocked(shop_id, pid)
        del self.products[pid]
        self.unlock(pid)
        self.rendering.pop(pid, None)
        return {}

    # Publishing --------------------------------------------------------

    def publish(self, shop_id, pid, body):
        """POST publish.json: refuse below-cost prices; lock, then set external."""
        product = self.unlocked(shop_id, pid)
        check_publish_flags(body)
        if shop_kind(self.shop(shop_id).get('sales_channel')) == 'none':
            raise invalid(8254, 'The shop has no sales channel connected.')
        enabled = [v for v in product['variants'] if v['is_enabled']]
        if not enabled:
            raise invalid(8251, 'The product has no enabled variants to publish.')
        cheap = [v for v in enabled if v['price'] < v['cost']]
        if cheap:
            v = cheap[0]
            raise invalid(8251, f'Variant {v["id"]} price {v["price"]} is below its cost '
                                f'{v["cost"]}; {len(cheap)} enabled variant(s) are priced '
                                'below cost.')
        product.pop('publish_failure', None)
        self.lock(pid)
        self.counts['publishes'] += 1
        return {}

    def lock(self, pid):
        """Lock for the publish: an API shop until its integration answers,
        a connected shop until its sync ends (on a timer, and on reads)."""
        shop = self.shop(self.products[pid]['shop_id'])
        self.products[pid]['is_locked'] = True
        if shop_kind(shop.get('sales_channel')) == 'api':
            self.locks[pid] = {'until': None, 'outcome': 'answer'}
            return
        outcome = self.scenario['sync_outcome']
        seconds = max(0.0, float(self.scenario['sync_seconds'])
                      * float(self.scenario['time_scale']))
        lock = {'until': None, 'outcome': outcome, 'timer': None}
        if outcome != 'never':
            lock['until'] = time.monotonic() + seconds
            lock['timer'] = gevent.spawn_later(seconds, self.settle, pid, lock)
        self.locks[pid] = lock

    def unlock(self, pid):
        """Forget the publish lock of ``pid`` (if any) and its pending sync."""
        lock = self.locks.pop(pid, None)
        if lock and lock.get('timer') and lock['timer'] is not gevent.getcurrent():
            lock['timer'].kill(block=False)

    def settle(self, pid, due=None):
        """Finish a sync whose time has passed. ``due`` is the lock whose
        timer fired: that one is settled without comparing clocks, because a
        gevent timer may fire a few ms before time.monotonic() reaches ``until``
        (the loop's cached time lags after CPU work) and would otherwise be lost."""
        lock = self.locks.get(pid)
        if not lock or lock['until'] is None:
            return
        if lock is not due and time.monotonic() < lock['until']:
            return
        del self.locks[pid]  # before the channel call, which may yield to readers
        if pid not in self.products:
            return
        product = self.products[pid]
        if lock['outcome'] == 'succeeded':
            try:
                product['external'] = self.external_for(product)
            except Exception as exc:  # any channel trouble is a failed sync, as on Printify
                product['publish_failure'] = f'the channel refused the product: {exc!r}'
        else:
            product['publish_failure'] = 'the channel refused the product'
        product['is_locked'] = False
        self.counts['syncs'] += 1

    def external_for(self, product):
        shop = self.shop(product['shop_id'])
        number = str(7_000_000_000_000 + int(product['id'][-8:], 16) % 10 ** 12)
        if str(shop.get('sales_channel') or '').strip().lower() == 'shopify':
            if self.scenario.get('shopify_fake_url'):
                return self.channel_product(product, shop)
            handle = f'https://{self.scenario["shopify_domain"]}/products/{slug(product["title"])}'
            return {'id': number, 'handle': handle}
        listing = number[-10:]
        return {'id': listing, 'handle': f'https://www.etsy.com/listing/{listing}'}

    def channel_product(self, product, shop):
        """Make the product in the fake Shopify, as Printify's sync does."""
        options = {COLOR_IDS[c]: c for c in COLOR_IDS}
        sizes = {SIZE_IDS[s]: s for s in SIZE_IDS}
        variants = [{'sku': v['sku'], 'price': decimal_price(v['price']), 'grams': v['grams'],
                     'options': {'Size': sizes[v['options'][1]],
                                 'Color': options[v['options'][0]]}}
                    for v in product['variants'] if v['is_enabled']]
        session = requests.Session()
        session.trust_env = False   # loopback: never through an HTTP(S)_PROXY
        response = session.post(
            self.scenario['shopify_fake_url'].rstrip('/') + '/_fake/channel_products',
            timeout=10, json={'title': product['title'],
                              'descriptionHtml': product['description'],
                              'tags': product['tags'], 'vendor': shop.get('title', ''),
                              'variants': variants,
                              'image_url': (product['images'] or [{}])[0].get('src', '')})
        response.raise_for_status()
        made = response.json()
        return {'id': str(made['legacyResourceId']), 'handle': made['onlineStoreUrl']}

    def publishing_succeeded(self, shop_id, pid, body):
        product = self.product(shop_id, pid)
        external = need(body, 'external', 'external', 'object')
        need(external, 'id', 'external.id', 'string')
        need(external, 'handle', 'external.handle', 'string')
        self.unlock(pid)
        product.pop('publish_failure', None)
        product.update(is_locked=False, external={'id': external['id'],
                                                   'handle': external['handle']})
        self.counts['publishing_succeeded'] += 1
        return {'product_id': pid}

    def publishing_failed(self, shop_id, pid, body):
        product = self.product(shop_id, pid)
        product['publish_failure'] = need(body, 'reason', 'reason', 'string')
        self.unlock(pid)
        product['is_locked'] = False
        self.counts['publishing_failed'] += 1
        return {'product_id': pid}

    def unpublish(self, shop_id, pid):
        product = self.product(shop_id, pid)
        product.pop('external', None)
        return {}

    # Orders ------------------------------------------------------------

    def create_order(self, shop_id, body):
        """POST /v1/shops/{shop}/orders.json: a new 'on-hold' order, answered {id}.
        external_id is not unique (as on Printify): the same one twice makes two."""
        self.shop(shop_id)
        check_order_shape(body)
        lines = [self.order_line(shop_id, item, f'line_items.{n}')
                 for n, item in enumerate(body['line_items'])]
        if body.get('is_printify_express'):
            self.check_express(lines)
        order = self.render_order(body, lines)
        self.orders[order['id']] = order
        self.order_shop[order['id']] = shop_id
        self.shipped[order['id']] = []
        self.notify_status(order['id'], 'order:created')
        return {'id': order['id']}

    def order_line(self, shop_id, item, path):
        """(product, variant) a line item names: by sku, or product id + enabled variant."""
        if item.get('sku') is not None:
            return self.product_by_sku(shop_id, item['sku'], path)
        pid, vid = item['product_id'], item['variant_id']
        product = self.products.get(pid)
        if product is None or product['shop_id'] != shop_id:
            raise invalid(8150, f'The selected {path}.product_id is invalid: no product '
                                f'{pid!r} in shop {shop_id}.')
        variant = next((v for v in product['variants']
                        if v['id'] == vid and v['is_enabled']), None)
        if variant is None:
            raise invalid(8150, f'The selected {path}.variant_id is invalid: variant {vid} '
                                f'is not enabled on product {pid}.')
        return product, variant

    def product_by_sku(self, shop_id, sku, path):
        """The newest product of the shop with an enabled variant of this SKU (the
        fake's SKUs repeat across products of one blueprint and provider)."""
        for product in reversed(list(self.products.values())):
            if product['shop_id'] != shop_id:
                continue
            for variant in product['variants']:
                if variant['sku'] == sku and variant['is_enabled']:
                    return product, variant
        raise invalid(8150, f'The selected {path}.sku is invalid: no enabled variant of the '
                            f"shop's products has SKU {sku!r}.")

    def check_express(self, lines):
        for n, (product, variant) in enumerate(lines):
            if not variant['is_printify_express_eligible']:
                raise invalid(8251, f'Printify Express is not available for line_items.{n}: '
                                    f'variant {variant["id"]} of product {product["id"]} is '
                                    'not eligible.')

    def render_order(self, body, lines):
        """The order as GET shows it; money in cents."""
        address = body['address_to']
        costs = shipping_costs(lines, body['line_items'], body['shipping_method'],
                               address['country'])
        items = [order_item(product, variant, item['quantity'], cost)
                 for (product, variant), item, cost in zip(lines, body['line_items'], costs)]
        return {
            'id': new_id(),
            'address_to': {key: address.get(key) for key in ADDRESS_REQUIRED + ADDRESS_OPTIONAL
                           if key in address},
            'line_items': items,
            'metadata': {'order_type': 'external',
                         'shop_order_id': 10_000_000 + len(self.orders) + 1,
                         'shop_order_label': body.get('label') or body['external_id'],
                         'shop_fulfilled_at': None},
            'total_price': sum(i['cost'] * i['quantity'] for i in items),
            'total_shipping': sum(costs), 'total_tax': 0, 'status': 'on-hold',
            'shipping_method': body['shipping_method'],
            'is_printify_express': bool(body.get('is_printify_express')),
            'send_shipping_notification': bool(body.get('send_shipping_notification')),
            'shipments': [], 'created_at': stamp(), 'sent_to_production_at': None,
            'fulfilled_at': None, 'external_id': body['external_id'],
        }

    def order(self, shop_id, oid):
        self.shop(shop_id)
        if self.order_shop.get(oid) != shop_id:
            raise plain_error(404, 'Order not found.')
        self.settle_order(oid)
        return self.orders[oid]

    def list_orders(self, shop_id, query):
        """GET orders.json: a Laravel paginator, newest first, limit <= 10,
        optional ``status`` and ``sku`` filters."""
        self.shop(shop_id)
        limit = page_param(query, 'limit', 10, 10)
        page = page_param(query, 'page', 1, None)
        status, sku = query.get('status') or None, query.get('sku') or None
        if status and status not in ORDER_STATUSES:
            raise invalid(8150, f'The selected status is invalid: {status!r}.')
        items = [self.order(shop_id, oid) for oid in reversed(list(self.orders))
                 if self.order_shop[oid] == shop_id]
        items = [o for o in items if (not status or o['status'] == status)
                 and (not sku or any(i['metadata']['sku'] == sku for i in o['line_items']))]
        return paginate(items, page, limit, f'/v1/shops/{shop_id}/orders.json')

    def send_to_production(self, shop_id, oid):
        """POST send_to_production.json: 'on-hold' -> 'sending-to-production', and
        'in-production' after production_seconds * time_scale."""
        order = self.order(shop_id, oid)
        if order['status'] != 'on-hold':
            raise invalid(8253, f"Order can't be sent to production: its status is "
                                f"'{order['status']}', and only an 'on-hold' order can be.")
        now = stamp()
        set_status(order, 'sending-to-production')
        order['sent_to_production_at'] = now
        for item in order['line_items']:
            item['sent_to_production_at'] = now
        self.counts['orders_sent_to_production'] += 1
        self.start_production(oid)
        self.notify_status(oid, 'order:updated')
        return order

    def start_production(self, oid):
        seconds = max(0.0, float(self.scenario['production_seconds'])
                      * float(self.scenario['time_scale']))
        entry = {'until': time.monotonic() + seconds}
        entry['timer'] = gevent.spawn_later(seconds, self.settle_order, oid, entry)
        self.producing[oid] = entry

    def settle_order(self, oid, due=None):
        """Put a sent order in production once its time has passed (``due``: the
        entry whose timer fired, settled without comparing clocks, see settle)."""
        entry = self.producing.get(oid)
        if not entry or (entry is not due and time.monotonic() < entry['until']):
            return
        del self.producing[oid]
        if entry['timer'] is not gevent.getcurrent():
            entry['timer'].kill(block=False)
        set_status(self.orders[oid], 'in-production')
        self.notify_status(oid, 'order:sent-to-production')
        self.notify_status(oid, 'order:updated')

    def cancel_order(self, shop_id, oid):
        """POST cancel.json: only an 'on-hold' (or 'payment-not-received') order."""
        order = self.order(shop_id, oid)
        if order['status'] not in CANCELABLE:
            raise invalid(8253, f"Order can't be canceled: {why_not_cancelable(order['status'])}.")
        set_status(order, 'canceled')
        self.counts['orders_canceled'] += 1
        self.notify_status(oid, 'order:updated')
        return order

    # Shipping (control routes) -----------------------------------------

    def control_order(self, oid):
        if oid not in self.orders:
            raise ApiError(404, {'error': f'no order {oid!r}'})
        self.settle_order(oid)
        return self.orders[oid]

    def ship_order(self, oid, body):
        """POST /_fake/orders/<id>/ship: a shipment of the named (default: every
        unshipped) line items; 409 unless the order was sent to production."""
        order = self.control_order(oid)
        check_ship_body(body)
        if order['status'] in NOT_SENT + ('canceled', 'fulfilled'):
            raise ApiError(409, {'error': f'order {oid} cannot ship: its status is '
                                          f"'{order['status']}'" + unshippable_hint(order)})
        if oid in self.producing:  # shipping means production is over
            self.settle_order(oid, self.producing[oid])
        skus = self.shipment_skus(order, body.get('skus'))
        shipment, now = new_shipment(body), stamp()
        for item in order['line_items']:
            if item['fulfilled_at'] is None and item['metadata']['sku'] in skus:
                item.update(status='fulfilled', fulfilled_at=now)
        order['shipments'].append(shipment)
        self.shipped[oid].append({'shipped_at': now, 'skus': skus})
        done = all(item['fulfilled_at'] for item in order['line_items'])
        order['status'] = 'fulfilled' if done else 'partially-fulfilled'
        order['fulfilled_at'] = now if done else None
        self.notify_shipment(oid, len(order['shipments']) - 1, 'order:shipment:created')
        self.notify_status(oid, 'order:updated')
        return order

    def shipment_skus(self, order, wanted):
        open_skus = [item['metadata']['sku'] for item in order['line_items']
                     if item['fulfilled_at'] is None]
        unknown = [sku for sku in wanted or [] if sku not in open_skus]
        if unknown:
            raise ApiError(400, {'error': f'no unshipped line item has SKU(s) {unknown}'})
        return list(dict.fromkeys(wanted or open_skus))

    def deliver_order(self, oid):
        """POST /_fake/orders/<id>/deliver: every undelivered shipment arrives."""
        order = self.control_order(oid)
        pending = [n for n, s in enumerate(order['shipments']) if s['delivered_at'] is None]
        if not pending:
            raise ApiError(409, {'error': f'order {oid} has no undelivered shipment'})
        now = stamp()
        for n in pending:
            order['shipments'][n]['delivered_at'] = now
            self.notify_shipment(oid, n, 'order:shipment:delivered')
        return order

    # Webhooks ----------------------------------------------------------

    def webhooks_of(self, shop_id):
        self.shop(shop_id)
        return [public_webhook(h) for h in self.webhooks.values() if h['shop_id'] == shop_id]

    def add_webhook(self, shop_id, body):
        """POST webhooks.json {topic, url, secret?} -> {id, topic, url, shop_id}."""
        self.shop(shop_id)
        topic = need(body, 'topic', 'topic', 'string')
        if topic not in WEBHOOK_TOPICS:
            raise invalid(8150, f'The selected topic is invalid: {topic!r} is not one of '
                                f'{", ".join(WEBHOOK_TOPICS)}.')
        url = check_webhook_url(need(body, 'url', 'url', 'string'))
        optional(body, 'secret', 'secret', 'string')
        hook = {'id': new_id(), 'topic': topic, 'url': url, 'shop_id': shop_id,
                'secret': body.get('secret') or None}
        self.webhooks[hook['id']] = hook
        return public_webhook(hook)

    def webhook(self, shop_id, wid):
        self.shop(shop_id)
        hook = self.webhooks.get(wid)
        if hook is None or hook['shop_id'] != shop_id:
            raise plain_error(404, 'Webhook not found.')
        return hook

    def update_webhook(self, shop_id, wid, body):
        """PUT webhooks/{id}.json {url?, secret?}."""
        hook = self.webhook(shop_id, wid)
        if 'url' in body:
            hook['url'] = check_webhook_url(need(body, 'url', 'url', 'string'))
        if 'secret' in body:
            optional(body, 'secret', 'secret', 'string')
            hook['secret'] = body['secret'] or None
        return public_webhook(hook)

    def delete_webhook(self, shop_id, wid):
        self.webhook(shop_id, wid)
        del self.webhooks[wid]
        return {'id': wid}

    def notify_status(self, oid, topic):
        order = self.orders[oid]
        self.notify(self.order_shop[oid], topic, oid, {'status': order['status']})

    def notify_shipment(self, oid, n, topic):
        shipment, facts = self.orders[oid]['shipments'][n], self.shipped[oid][n]
        when = ({'delivered_at': shipment['delivered_at']} if topic.endswith('delivered')
                else {'shipped_at': facts['shipped_at']})
        self.notify(self.order_shop[oid], topic, oid, {
            **when, 'carrier': {'code': shipment['carrier'], 'tracking_number': shipment['number'],
                                'tracking_url': shipment['url']},
            'skus': facts['skus']})

    def notify(self, shop_id, topic, oid, data):
        """Send the event to every subscription of the shop to ``topic``, in the background."""
        event = {'id': str(uuid.uuid4()), 'type': topic, 'created_at': stamp(),
                 'resource': {'id': oid, 'type': 'order',
                              'data': {'shop_id': shop_id, **data}}}
        for hook in list(self.webhooks.values()):
            if hook['shop_id'] == shop_id and hook['topic'] == topic:
                self.senders.spawn(self.deliver, dict(hook), event)

    def deliver(self, hook, event):
        """POST the event, signed when the subscription has a secret; a non-2xx
        answer or an error is retried ``webhook_retries`` times."""
        raw = json.dumps(event).encode()
        headers = {'Content-Type': 'application/json', 'User-Agent': 'Printify-Webhooks/1.0'}
        if hook['secret']:
            digest = hmac.new(hook['secret'].encode(), raw, hashlib.sha256).hexdigest()
            headers['X-Pfy-Signature'] = f'sha256={digest}'
        attempts = 1 + int(self.scenario['webhook_retries'])
        for attempt in range(1, attempts + 1):
            status, error = self.post_event(hook['url'], raw, headers)
            self.deliveries.append({'event_id': event['id'], 'webhook_id': hook['id'],
                                    'topic': event['type'], 'url': hook['url'],
                                    'attempt': attempt, 'status_code': status, 'error': error,
                                    'time': time.time()})
            if status is not None and 200 <= status < 300:
                return
            if attempt < attempts and hook['id'] in self.webhooks:
                gevent.sleep(float(self.scenario['webhook_retry_seconds']))
            else:
                return

    def post_event(self, url, raw, headers):
        """(status code or None, error text or None) of one delivery attempt."""
        if urlsplit(url).hostname not in LOOPBACK:
            return None, 'not delivered: the fake reaches loopback addresses only'
        session = requests.Session()
        session.trust_env = False   # loopback: never through an HTTP(S)_PROXY
        try:
            response = session.post(url, data=raw, headers=headers, allow_redirects=False,
                                    timeout=float(self.scenario['webhook_timeout_seconds']))
        except requests.RequestException as exc:
            return None, repr(exc)
        return response.status_code, None


def shipping_costs(lines, items, method, country):
    """Shipping cents per line item, from its provider's shipping profile: the
    order's first item at the first-item rate (plus the method's surcharge),
    every other item at the additional-item rate."""
    costs = []
    for n, ((product, _), item) in enumerate(zip(lines, items)):
        first, extra = shipping_rates(product, country)
        lead = first + SHIPPING_SURCHARGE[method] if n == 0 else extra
        costs.append(lead + extra * (item['quantity'] - 1))
    return costs


def shipping_rates(product, country):
    """(first item, additional item) cents to ``country`` for the product's provider."""
    provider = {'variants': [{'id': v['id']} for v in product['variants']]}
    profiles = shipping_profile(provider)['profiles']
    profile = next((p for p in profiles if country in p['countries']), profiles[-1])
    return profile['first_item']['cost'], profile['additional_items']['cost']


def order_item(product, variant, quantity, shipping_cost):
    location = PROVIDERS[product['print_provider_id']]['location']['country']
    return {'product_id': product['id'], 'quantity': quantity, 'variant_id': variant['id'],
            'print_provider_id': product['print_provider_id'], 'cost': variant['cost'],
            'shipping_cost': shipping_cost, 'status': 'on-hold',
            'metadata': {'title': product['title'], 'price': variant['price'],
                         'variant_label': variant['title'], 'sku': variant['sku'],
                         'country': COUNTRY_NAMES.get(location, location)},
            'sent_to_production_at': None, 'fulfilled_at': None}


def set_status(order, status):
    """The order's status and that of every line item not yet shipped."""
    order['status'] = status
    for item in order['line_items']:
        if item['fulfilled_at'] is None:
            item['status'] = status


def why_not_cancelable(status):
    if status in ('sending-to-production', 'in-production'):
        return 'it is already in production'
    if status in ('fulfilled', 'partially-fulfilled'):
        return 'it has already shipped'
    if status == 'canceled':
        return 'it is already canceled'
    return f"its status is '{status}'"


def unshippable_hint(order):
    if order['status'] in NOT_SENT:
        return ' (it was never sent to production)'
    return {'canceled': ' (it was canceled)',
            'fulfilled': ' (every line item has shipped)'}[order['status']]


def check_ship_body(body):
    for key in ('carrier', 'number', 'url'):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, {'error': f'{key} must be a string'})
    skus = body.get('skus')
    if skus is not None and not (isinstance(skus, list) and skus
                                 and all(isinstance(s, str) for s in skus)):
        raise ApiError(400, {'error': 'skus must be a non-empty list of strings'})


def new_shipment(body):
    """{carrier, number, url, delivered_at}, defaults: USPS, a generated number."""
    carrier = body.get('carrier') or 'usps'
    number = body.get('number') or f'9400{secrets.randbelow(10 ** 18):018d}'
    template = TRACKING_URLS.get(carrier.lower(), TRACKING_URLS['usps'])
    return {'carrier': carrier, 'number': number,
            'url': body.get('url') or template.format(number=number), 'delivered_at': None}


def public_webhook(hook):
    """A subscription as the API shows it (the secret is never echoed)."""
    return {key: hook[key] for key in ('id', 'topic', 'url', 'shop_id')}


def control_json():
    """A control route's optional JSON body ({} when empty), or 400."""
    raw = bottle.request.body.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ApiError(400, {'error': 'the body is not valid JSON'}) from None
    if not isinstance(data, dict):
        raise ApiError(400, {'error': 'the body must be a JSON object'})
    return data


def shop_kind(sales_channel):
    """``api`` (custom integration), ``connected`` (a channel) or ``none``."""
    channel = str(sales_channel or '').strip().lower()
    if not channel:
        return 'none'
    return 'api' if channel in API_CHANNELS else 'connected'


def check_publish_flags(body):
    for key in PUBLISH_FLAGS:
        if key not in body:
            raise invalid(8150, f'The {key} field is required.')
    for key in PUBLISH_FLAGS + OPTIONAL_PUBLISH_FLAGS:
        optional(body, key, key, 'boolean')


def product_options(provider):
    colors, sizes = [], []
    for v in provider['variants']:
        color, size = v['options']['color'], v['options']['size']
        if color not in colors:
            colors.append(color)
        if size not in sizes:
            sizes.append(size)
    return [{'name': 'Colors', 'type': 'color',
             'values': [{'id': COLOR_IDS[c], 'title': c, 'colors': [COLOR_HEX[c]]}
                        for c in colors]},
            {'name': 'Sizes', 'type': 'size',
             'values': [{'id': SIZE_IDS[s], 'title': s} for s in sizes]}]


def mockups(base_url, pid, variants, partial=False):
    """A front and a back mockup per enabled colour (read-only, as on the real
    API), the default colour's front first and default; ``partial``: only
    the default colour's, as while Printify is still rendering them."""
    by_color = collections.OrderedDict()
    for v in variants:
        if v['is_enabled']:
            by_color.setdefault(v['options'][0], []).append(v['id'])
    colours = list(by_color.values())[:1] if partial else list(by_color.values())
    return [{'src': f'{base_url}/mockup/{pid}/{ids[0]}/{camera}/{position}.jpg'
                    f'?camera_label={position}',
             'variant_ids': ids, 'position': position, 'is_default': n == 0 and k == 0,
             'is_selected_for_publishing': True}
            for n, ids in enumerate(colours) for k, (position, camera) in enumerate(CAMERAS)]


def merge_tags(sent, blueprint_tags):
    return list(dict.fromkeys(list(sent) + list(blueprint_tags)))


def page_param(query, key, default, maximum):
    raw = query.get(key)
    if raw in (None, ''):
        return default
    if not re.fullmatch(r'\d+', raw) or int(raw) < 1:
        raise invalid(8150, f'The {key} must be an integer of at least 1.')
    if maximum and int(raw) > maximum:
        raise invalid(8150, f'The {key} may not be greater than {maximum}.')
    return int(raw)


def paginate(items, page, limit, path):
    """One page of ``items`` as a Laravel paginator."""
    last = max(1, math.ceil(len(items) / limit))
    data = items[(page - 1) * limit:page * limit]
    base = f'{path}?limit={limit}&page='
    return {'current_page': page, 'data': data, 'first_page_url': base + '1',
            'from': (page - 1) * limit + 1 if data else None, 'last_page': last,
            'last_page_url': base + str(last),
            'next_page_url': base + str(page + 1) if page < last else None,
            'path': path, 'per_page': limit,
            'prev_page_url': base + str(page - 1) if page > 1 else None,
            'to': (page - 1) * limit + len(data) if data else None, 'total': len(items)}


def new_id():
    """A 24-hex-digit id, time first, like Printify's object ids."""
    return f'{int(time.time()):08x}{secrets.token_hex(8)}'


def decimal_price(minor):
    """2499 -> '24.99', exactly (no float rounding)."""
    return f'{minor // 100}.{minor % 100:02d}'


def slug(text):
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-') or 'product'


def stamp():
    return time.strftime('%Y-%m-%d %H:%M:%S+00:00', time.gmtime())


def decode_contents(contents):
    if not isinstance(contents, str) or not contents:
        raise invalid(8150, 'The contents must be a base64 encoded string.')
    try:
        return base64.b64decode(contents, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(8150, 'The contents must be a base64 encoded string.') from None


def fetch_url(url):
    """Download an image by URL; only loopback URLs can work in the test sandbox."""
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https') or parts.hostname not in LOOPBACK:
        raise invalid(8150, f'The file could not be downloaded from {url!r}.')
    session = requests.Session()
    session.trust_env = False   # loopback: never through an HTTP(S)_PROXY
    try:
        response = session.get(url, timeout=10)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise invalid(8150, f'The file could not be downloaded from {url!r}: {exc}') from None
    return response.content


def image_facts(data):
    """(width, height, mime type) of an image, or 8150 if it isn't one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            mime = Image.MIME.get(image.format, 'application/octet-stream')
            return image.width, image.height, mime
    except Exception:  # Pillow raises many types for bad data
        raise invalid(8150, 'The uploaded file is not a valid image.') from None


# HTTP ######################################################################


def read_json(optional=False):
    """The request's JSON object body, or 400 (``optional``: none at all is {})."""
    raw = bottle.request.body.read()
    if optional and not raw.strip():
        return {}
    content_type = bottle.request.content_type.split(';')[0].strip().lower()
    if content_type != 'application/json':
        raise plain_error(400, 'The request body must be JSON (Content-Type: application/json).')
    try:
        data = json.loads(raw)
    except ValueError:
        raise plain_error(400, 'The request body is not valid JSON.') from None
    if not isinstance(data, dict):
        raise plain_error(400, 'The request body must be a JSON object.')
    return data


def base_url():
    parts = bottle.request.urlparts
    return f'{parts.scheme}://{parts.netloc}'


class Pipeline:
    """Bottle plugin: record, inject failures, authenticate, rate-limit, answer JSON."""

    name = 'printify-pipeline'
    api = 2

    def __init__(self, fake):
        self.fake = fake

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            if not bottle.request.path.startswith(('/_fake/', '/mockup/')):
                return self.handle(callback, args, kwargs)
            try:
                return callback(*args, **kwargs)
            except ApiError as exc:
                return reply(exc.body, exc.status)
        return wrapper

    def handle(self, callback, args, kwargs):
        fake, request = self.fake, bottle.request
        entry = record(request)
        fake.requests.append(entry)
        fake.counts['total_requests'] += 1
        headers = {}
        try:
            headers, after = self.gate(request)
            response = reply(callback(*args, **kwargs), headers=headers)
            if after:  # done, and yet answered as a failure
                raise injected(after, request)
        except ApiError as exc:
            response = reply(exc.body, exc.status, {**headers, **exc.headers})
        except Exception:  # a bug in the fake: show it in the fake's log
            traceback.print_exc(file=sys.stderr)
            response = reply({'status': 'error', 'code': 500, 'message': 'Fake crashed.'}, 500)
        entry['status'] = response.status_code
        entry['dropped'] = bool(request.environ.get('fake.drop'))
        if response.status_code >= 400:
            fake.counts['errors'] += 1
        return response

    def gate(self, request):
        """Everything before the handler; returns the rate-limit headers and
        a failure to answer once the handler has run (``after_save``)."""
        fake, path = self.fake, request.path
        check_auth(request, fake.scenario['token'])
        headers = fake.take_slot(path) if path.startswith('/v1/') else {}
        delay = fake.delay_for(path)
        if delay:
            gevent.sleep(delay)
        rule = fake.injected_failure(request.method, path)
        if rule and not rule.get('after_save'):
            raise injected(rule, request)
        if request.method in ('POST', 'PUT'):
            request.environ['fake.json'] = read_json(optional=path.endswith(BODYLESS))
        return headers, rule


def injected(rule, request):
    status = int(rule.get('status', 500))
    if status == 0:
        request.environ['fake.drop'] = True
        return ApiError(500, {})
    headers = {'Retry-After': str(rule['retry_after'])} if 'retry_after' in rule else {}
    return ApiError(status, {'status': 'error', 'code': status,
                             'message': rule.get('message', 'Injected failure.')}, headers)


def check_auth(request, token):
    if request.headers.get('Authorization', '') != f'Bearer {token}':
        raise plain_error(401, 'Unauthenticated.')
    agent = request.headers.get('User-Agent', '').strip()
    if not agent or agent.lower().startswith(LIBRARY_AGENTS):
        raise ApiError(400, {'status': 'error', 'code': 400,
                             'message': 'A User-Agent naming your application is required.',
                             'errors': {'reason': f'User-Agent {agent!r} is missing or a '
                                                  'default library value.', 'code': 400}})


def record(request):
    raw = request.body.read() if request.method in ('POST', 'PUT', 'PATCH') else b''
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return {'method': request.method, 'path': request.path, 'query': dict(request.query),
            'json': body, 'headers': dict(request.headers), 'time': time.time()}


def body():
    return bottle.request.environ['fake.json']


# Routes ####################################################################

def create_app():
    """A fresh WSGI app serving one fake Printify account (see the module docstring)."""
    fake = PrintifyFake()
    app = bottle.Bottle()
    app.install(Pipeline(fake))
    control_routes(app, fake)
    catalog_routes(app, fake)
    upload_routes(app, fake)
    product_routes(app, fake)
    order_routes(app, fake)
    webhook_routes(app, fake)
    mockup_routes(app, fake)

    @app.route('/<path:path>', method='ANY')
    def unknown(path):
        raise plain_error(404, 'Not found.')

    return droppable(app)


def control_routes(app, fake):
    shared_control_routes(app, fake)

    @app.get('/_fake/uploads/<upload_id>')
    def blob(upload_id):
        if upload_id not in fake.blobs:
            return reply({'error': 'no such upload'}, 404)
        mime = fake.uploads[upload_id]['mime_type']
        return bottle.HTTPResponse(fake.blobs[upload_id], 200, {'Content-Type': mime})

    @app.post('/_fake/orders/<oid>/ship')
    def ship(oid):
        return reply(fake.ship_order(oid, control_json()))

    @app.post('/_fake/orders/<oid>/deliver')
    def deliver(oid):
        return reply(fake.deliver_order(oid))


def catalog_routes(app, fake):
    @app.get('/v1/shops.json')
    def shops():
        return [{k: shop.get(k) for k in ('id', 'title', 'sales_channel')}
                for shop in fake.scenario['shops']]

    @app.delete('/v1/shops/<shop_id:int>/connection.json')
    def disconnect(shop_id):
        fake.shop(shop_id)['sales_channel'] = None
        return {}

    @app.get('/v1/catalog/blueprints.json')
    def blueprints():
        return [entry['info'] for entry in fake.catalog.values()]

    @app.get('/v1/catalog/blueprints/<bp:int>.json')
    def blueprint(bp):
        return fake.blueprint(bp)['info']

    @app.get('/v1/catalog/blueprints/<bp:int>/print_providers.json')
    def providers(bp):
        return [PROVIDERS[pp] for pp in fake.blueprint(bp)['providers']]

    @app.get('/v1/catalog/blueprints/<bp:int>/print_providers/<pp:int>/variants.json')
    def variants(bp, pp):
        provider = fake.provider(bp, pp)
        listing = copy.deepcopy(provider['variants'])
        if fake.scenario['front_size']:  # a smaller print area keeps big tests quick
            width, height = fake.scenario['front_size']
            for variant in listing:
                variant['placeholders'][0].update(width=width, height=height)
        return {'id': pp, 'title': PROVIDERS[pp]['title'], 'variants': listing}

    @app.get('/v1/catalog/blueprints/<bp:int>/print_providers/<pp:int>/shipping.json')
    def shipping(bp, pp):
        return shipping_profile(fake.provider(bp, pp))

    @app.get('/v1/catalog/print_providers.json')
    def all_providers():
        return list(PROVIDERS.values())


def upload_routes(app, fake):
    @app.post('/v1/uploads/images.json')
    def upload():
        return fake.upload(body(), base_url())

    @app.get('/v1/uploads.json')
    def uploads():
        items = list(fake.uploads.values())
        return {'current_page': 1, 'data': items, 'last_page': 1, 'per_page': 100,
                'total': len(items)}

    @app.get('/v1/uploads/<upload_id>.json')
    def one_upload(upload_id):
        if upload_id not in fake.uploads:
            raise plain_error(404, 'Upload not found.')
        return fake.uploads[upload_id]

    @app.post('/v1/uploads/<upload_id>/archive.json')
    def archive(upload_id):
        one_upload(upload_id)
        return {}


def product_routes(app, fake):
    base = '/v1/shops/<shop_id:int>/products'

    @app.post(base + '.json')
    def create(shop_id):
        product = fake.create_product(shop_id, body(), base_url())
        if fake.take_crash():
            bottle.request.environ['fake.drop'] = True
        return product

    @app.get(base + '.json')
    def listing(shop_id):
        return fake.list_products(shop_id, bottle.request.query)

    @app.get(base + '/<pid>.json')
    def get(shop_id, pid):
        return fake.product(shop_id, pid)

    @app.put(base + '/<pid>.json')
    def update(shop_id, pid):
        return fake.update_product(shop_id, pid, body())

    @app.delete(base + '/<pid>.json')
    def delete(shop_id, pid):
        return fake.delete_product(shop_id, pid)

    @app.post(base + '/<pid>/publish.json')
    def publish(shop_id, pid):
        return fake.publish(shop_id, pid, body())

    @app.post(base + '/<pid>/publishing_succeeded.json')
    def succeeded(shop_id, pid):
        return fake.publishing_succeeded(shop_id, pid, body())

    @app.post(base + '/<pid>/publishing_failed.json')
    def failed(shop_id, pid):
        return fake.publishing_failed(shop_id, pid, body())

    @app.post(base + '/<pid>/unpublish.json')
    def unpublish(shop_id, pid):
        return fake.unpublish(shop_id, pid)


def order_routes(app, fake):
    base = '/v1/shops/<shop_id:int>/orders'

    @app.post(base + '.json')
    def create(shop_id):
        answer = fake.create_order(shop_id, body())
        if fake.take_crash('crash_after_order_create'):
            bottle.request.environ['fake.drop'] = True
        return answer

    @app.get(base + '.json')
    def listing(shop_id):
        return fake.list_orders(shop_id, bottle.request.query)

    @app.get(base + '/<oid>.json')
    def get(shop_id, oid):
        return fake.order(shop_id, oid)

    @app.post(base + '/<oid>/send_to_production.json')
    def send(shop_id, oid):
        return fake.send_to_production(shop_id, oid)

    @app.post(base + '/<oid>/cancel.json')
    def cancel(shop_id, oid):
        return fake.cancel_order(shop_id, oid)


def webhook_routes(app, fake):
    base = '/v1/shops/<shop_id:int>/webhooks'

    @app.get(base + '.json')
    def listing(shop_id):
        return fake.webhooks_of(shop_id)

    @app.post(base + '.json')
    def create(shop_id):
        return fake.add_webhook(shop_id, body())

    @app.put(base + '/<wid>.json')
    def update(shop_id, wid):
        return fake.update_webhook(shop_id, wid, body())

    @app.delete(base + '/<wid>.json')
    def delete(shop_id, wid):
        return fake.delete_webhook(shop_id, wid)


def mockup_routes(app, fake):
    """Printify's mockup CDN (images-api.printify.com), on the fake's own address."""
    @app.get('/mockup/<pid>/<vid:int>/<camera:int>/<name>')
    def mockup(pid, vid, camera, name):
        position = name.rsplit('.', 1)[0]
        if not name.endswith('.jpg'):
            raise plain_error(404, 'Not found.')
        return bottle.HTTPResponse(fake.mockup_image(pid, vid, camera, position), 200,
                                   {'Content-Type': 'image/jpeg',
                                    'Cache-Control': 'public, max-age=3600'})
