"""Orders: a Shopify sale of an engine product reaches Printify.

A Printify API ("custom integration") shop never sees the storefront's
orders: the integration must send them. When the engine makes both sides of
a listing (the Shopify product and the Printify product it sells, linked by
``publishing_succeeded`` and the same SKUs), it forwards their sales:

    verify_shopify(secret, body, signature)   the webhook's HMAC, in constant time
    verify_printify(secret, body, signature)  Printify's (X-Pfy-Signature)
    Listings(path)      Shopify product id -> the Printify product the engine made
    OrderBook(path)     the Shopify orders taken, so each becomes one job, and
                        how far the reconciler has read Shopify's orders
    OrderDesk(printify, shopify, settings)
        .forward(request, ctx)    the ``order`` job: one Printify order, sent to
                                  production unless ORDER_HOLD
        .recent_orders(since), .products_of(order)
                                  what the reconciler reads (no customer data)
        .register_webhooks(public_url, printify_secret)   at start, with PUBLIC_URL

What happens to a forwarded order after that is adapters/shipments.py's.

Personal data: the customer's name and address are read from Shopify when
the job runs and sent to Printify; they are never stored, logged or put in
the job's request, result or checkpoints (only ids, SKUs and quantities),
and a refusal that echoes them has them replaced before it is logged.

At most once: the Printify create is checkpointed; before it is sent, and
again after an unclear answer (5xx, timeout, dropped connection), the shop's
recent orders are searched for one with this ``external_id`` (Printify does
not refuse a second order with the same one).
"""

import base64
import datetime
import hashlib
import hmac
import logging
import time

import gevent.lock

from adapters.api import DurableDict, UnclearAnswer
from adapters.base import AdapterError

log = logging.getLogger('podengine.orders')

CREATE_TRIES = 4
FIND_PAGES = 5          # pages of 10 (Printify's largest) searched for an order
LINE_ITEMS = 50         # of one Shopify order read
ORDER_COST = 2 + 1 + 2 + LINE_ITEMS * 3  # Shopify's charge for ORDER_QUERY
RECENT_PAGES = 100      # of 10 orders, read by one reconcile
RECENT_COST = 2 + 10 + 1  # Shopify's charge for RECENT_QUERY: it is read often
PRODUCTS_COST = 1 + 2 + LINE_ITEMS * 2
RECONCILE_OVERLAP = 600  # seconds read again: Shopify's updatedAt is not a queue
SHIPPING_METHODS = (('express', 3), ('priority', 2), ('economy', 4))  # else 1, standard

ORDER_QUERY = '''query Order($id: ID!) {
  order(id: $id) {
    id legacyResourceId name cancelledAt email
    shippingAddress { firstName lastName company address1 address2 city provinceCode zip
                      countryCodeV2 phone }
    shippingLine { code title }
    lineItems(first: %d) { nodes { id sku quantity product { id } } }
  }
}''' % LINE_ITEMS


RECENT_QUERY = '''query Recent($query: String!, $after: String) {
  orders(first: 10, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes { id name createdAt updatedAt cancelledAt displayFulfillmentStatus }
    pageInfo { hasNextPage endCursor }
  }
}'''
PRODUCTS_QUERY = '''query Products($id: ID!) {
  order(id: $id) { lineItems(first: %d) { nodes { product { id } } } }
}''' % LINE_ITEMS


SUBSCRIBE = '''mutation Subscribe($topic: WebhookSubscriptionTopic!,
                          $subscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $subscription) {
    webhookSubscription { id }
    userErrors { field message }
  }
}'''
SHOPIFY_TOPICS = ('ORDERS_CREATE', 'ORDERS_CANCELLED')
PRINTIFY_TOPICS = ('order:shipment:created', 'order:shipment:delivered', 'order:updated')


def verify_shopify(secret, body, signature):
    """Whether ``signature`` (X-Shopify-Hmac-Sha256) is the base64 HMAC-SHA256
    of the raw ``body`` with ``secret``; compared in constant time."""
    if not secret or not signature:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.strip().encode())


def verify_printify(secret, body, signature):
    """Whether ``signature`` (X-Pfy-Signature) is ``sha256=`` and the hex
    HMAC-SHA256 of the raw ``body`` with ``secret``; compared in constant time."""
    if not secret or not signature or not signature.startswith('sha256='):
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest.encode(), signature[len('sha256='):].strip().encode())


def product_gid(numeric_id):
    return f'gid://shopify/Product/{numeric_id}'


class Listings(DurableDict):
    """The Shopify products the engine made, each with the Printify product
    it sells (DATA_DIR/listings.json): what tells an engine sale from any
    other product's."""

    def note(self, job_id, products):
        """Record the linked Shopify products of a finished job's result."""
        added = False
        for product in products or []:
            linked = product.get('printifyProductId')
            if product.get('platform') == 'shopify' and linked:
                added |= self.items.get(product['productId']) != linked
                self.items[product['productId']] = linked
        if added:
            self.save()

    def printify_product(self, shopify_product_id):
        return self.items.get(shopify_product_id)


class OrderBook(DurableDict):
    """The Shopify orders taken, by order gid -> job id (DATA_DIR/orders.json),
    and how far the reconciler has read Shopify's orders.

    ``take`` is the one way in: a repeated webhook (Shopify redelivers) or a
    poll that sees the order again finds it here and makes no second job."""

    def __init__(self, path):
        super().__init__(path)
        if 'orders' not in self.items:  # the first layout: only the orders
            self.items = {'orders': self.items}
        self.orders = self.items['orders']
        self._lock = gevent.lock.Semaphore()

    def job_of(self, order_id):
        """The job id of a taken order, or None."""
        return self.orders.get(order_id)

    def take(self, order_id, submit):
        """The job id of ``order_id``: ``submit()``'s, the first time."""
        with self._lock:  # two deliveries at once: one submit
            if order_id not in self.orders:
                self.orders[order_id] = submit()
                self.save()
            return self.orders[order_id]

    def restore(self, order_id, job_id):
        """Put back an order whose job was saved but not its line here (a crash)."""
        if order_id not in self.orders:
            self.orders[order_id] = job_id
            self.save()

    def window(self, started):
        """(intake start, read-from), epoch seconds: orders made before the
        engine first ran with orders on (``started``, the first time) are never
        forwarded (they were sold before, and handled some other way); reading
        resumes where it stopped, with RECONCILE_OVERLAP."""
        if 'intakeSince' not in self.items:
            self.items['intakeSince'] = started
            self.save()
        since = self.items['intakeSince']
        return since, max(since, self.items.get('readTo', since) - RECONCILE_OVERLAP)

    def read_to(self, when):
        self.items['readTo'] = when
        self.save()


class OrderDesk:
    """The ``order`` job's steps, on the engine's Printify and Shopify clients."""

    def __init__(self, printify, shopify, settings):
        self.printify = printify
        self.shopify = shopify
        self.settings = settings

    def forward(self, request, ctx, listings):
        """Make the Printify order of one Shopify order (checkpointed)."""
        order = self.shopify_order(request['shopifyOrderId'])
        base = {'shopifyOrderId': order['id'], 'shopifyOrderName': order['name']}
        if order.get('cancelledAt') and not ctx.lookup('printify:order'):
            ctx.log(f'order {order["name"]} was cancelled before it was forwarded')
            return {**base, 'orderStatus': 'cancelled', 'printifyOrderId': None}
        lines, ignored = self.printify_lines(order, listings, ctx)
        if not lines:
            ctx.log(f'order {order["name"]} has no product the engine made; left alone')
            return {**base, 'orderStatus': 'ignored', 'ignoredLineItems': ignored}
        shop_id = self.printify.shop()['id']
        made = self.create_once(shop_id, order, lines, ctx)
        if not self.settings.order_hold:
            ctx.checkpoint('printify:order:sent', lambda: self.send(shop_id, made, order, ctx))
        return {**base, 'orderStatus': 'forwarded', 'printifyOrderId': made,
                'sentToProduction': not self.settings.order_hold,
                'lineItems': lines,
                'ignoredLineItems': ignored}

    # Shopify ---------------------------------------------------------------

    def shopify_order(self, gid):
        data = self.shopify.client.graphql(ORDER_QUERY, {'id': gid}, cost=ORDER_COST)
        order = data.get('order')
        if not order:
            raise AdapterError(f'shopify: order {gid} does not exist', adapter='shopify',
                               retryable=False)
        return order

    def recent_orders(self, since):
        """The Shopify orders changed since ``since`` (epoch s), oldest change
        first: ``{id, name, createdAt, updatedAt (epoch s), cancelled,
        unfulfilled}``; no customer data is asked for."""
        after, search = None, f"updated_at:>='{iso_time(since)}'"
        for _ in range(RECENT_PAGES):
            data = self.shopify.client.graphql(RECENT_QUERY, {'query': search, 'after': after},
                                               cost=RECENT_COST)
            page = data['orders']
            for node in page['nodes']:
                yield {'id': node['id'], 'name': node['name'],
                       'createdAt': epoch(node['createdAt']),
                       'updatedAt': epoch(node['updatedAt']),
                       'cancelled': bool(node.get('cancelledAt')),
                       'unfulfilled': node.get('displayFulfillmentStatus') == 'UNFULFILLED'}
            if not page['pageInfo']['hasNextPage']:
                return
            after = page['pageInfo']['endCursor']

    def products_of(self, gid):
        """The product gids of a Shopify order's line items."""
        data = self.shopify.client.graphql(PRODUCTS_QUERY, {'id': gid}, cost=PRODUCTS_COST)
        items = ((data.get('order') or {}).get('lineItems') or {}).get('nodes') or []
        return [(item.get('product') or {}).get('id') for item in items]

    def register_webhooks(self, public_url, printify_secret):
        """Subscribe ``public_url``'s webhook routes to the order topics, on
        Shopify and (with a secret to sign them) on Printify; a subscription
        that exists already is kept. Returns what was added."""
        added = []
        for topic in SHOPIFY_TOPICS:
            data = self.shopify.client.graphql(SUBSCRIBE, {'topic': topic, 'subscription': {
                'callbackUrl': f'{public_url}/webhooks/shopify', 'format': 'JSON'}})
            payload = data.get('webhookSubscriptionCreate') or {}
            errors = [e.get('message', '') for e in payload.get('userErrors') or []]
            if errors and not all('already been taken' in e for e in errors):
                raise AdapterError(f'shopify: subscribing to {topic}: {"; ".join(errors)}',
                                   adapter='shopify', retryable=False)
            if payload.get('webhookSubscription'):
                added.append(f'shopify {topic}')
        if not printify_secret:
            return added
        shop_id = self.printify.shop()['id']
        url = f'{public_url}/webhooks/printify'
        have = {hook.get('topic') for hook in self.printify.client.call(
            'GET', f'/shops/{shop_id}/webhooks.json') or [] if hook.get('url') == url}
        for topic in PRINTIFY_TOPICS:
            if topic not in have:
                self.printify.client.call('POST', f'/shops/{shop_id}/webhooks.json', json={
                    'topic': topic, 'url': url, 'secret': printify_secret}, once=True)
                added.append(f'printify {topic}')
        return added

    def printify_lines(self, order, listings, ctx):
        """Printify line items of the order's engine products; the rest, ignored."""
        lines, ignored = [], []
        for item in order['lineItems']['nodes']:
            product = (item.get('product') or {}).get('id')
            linked = listings.printify_product(product) if product else None
            if linked is None:
                ignored.append({'sku': item.get('sku'), 'quantity': item['quantity']})
                ctx.log(f'order {order["name"]}: {item.get("sku") or "a line item"} is not '
                        f'a product the engine made; not forwarded')
                continue
            variant = self.variant_of(linked, item.get('sku'), ctx)
            lines.append({'sku': item['sku'], 'quantity': item['quantity'],
                          'printifyProductId': linked, 'variantId': variant})
        return lines, ignored

    def variant_of(self, product_id, sku, ctx):
        shop_id = self.printify.shop()['id']
        product = ctx.remember(f'printify:read:{product_id}', lambda: self.printify.client.call(
            'GET', f'/shops/{shop_id}/products/{product_id}.json'))
        for variant in product.get('variants', []):
            if variant.get('sku') == sku and variant.get('is_enabled', True):
                return variant['id']
        raise AdapterError(f'printify: product {product_id} sells no variant with SKU {sku}',
                           adapter='printify', retryable=False)

    # Printify --------------------------------------------------------------

    def create_once(self, shop_id, order, lines, ctx):
        """The Printify order id, made at most once per Shopify order."""
        done = ctx.lookup('printify:order')
        if done:
            return done
        external = str(order['legacyResourceId'])
        found = self.find(shop_id, external, ctx)
        if found:
            return ctx.checkpoint('printify:order', lambda: found)
        body = order_body(order, lines)
        for attempt in range(1, CREATE_TRIES + 1):
            try:
                made = self.printify.client.call('POST', f'/shops/{shop_id}/orders.json',
                                                 json=body, once=True)
            except UnclearAnswer as exc:
                ctx.log(f'{exc}; looking for the order before sending it again', 'WARNING')
                self.printify.client.retry.sleep(self.printify.client.retry.backoff(attempt))
                found = self.find(shop_id, external, ctx)
                if found:
                    return ctx.checkpoint('printify:order', lambda: found)
                continue
            except AdapterError as exc:
                raise AdapterError(redact(str(exc), order), adapter='printify',
                                   retryable=exc.retryable) from None
            ctx.log(f'order {order["name"]}: Printify order {made["id"]} made '
                    f'({sum(line["quantity"] for line in lines)} item(s))', 'SUCCESS')
            return ctx.checkpoint('printify:order', lambda: made['id'])
        raise AdapterError(f'printify: creating order {order["name"]} got no clear answer '
                           f'{CREATE_TRIES} times', adapter='printify')

    def find(self, shop_id, external_id, ctx):
        """The id of the shop's recent order with ``external_id``, or None."""
        for page in range(1, FIND_PAGES + 1):
            listing = self.printify.client.call(
                'GET', f'/shops/{shop_id}/orders.json', params={'limit': 10, 'page': page})
            for found in listing.get('data', []):
                if str(found.get('external_id')) == external_id:
                    ctx.log(f'printify: order {found["id"]} for this sale already exists; '
                            f'not making another', 'WARNING')
                    return found['id']
            if page >= int(listing.get('last_page') or 1):
                return None
        return None

    def send(self, shop_id, order_id, order, ctx):
        """Send the order to production. Printify refuses a second send, so
        after an unclear answer (or such a refusal) the order's status says
        whether the first one took effect."""
        try:
            self.printify.client.call(
                'POST', f'/shops/{shop_id}/orders/{order_id}/send_to_production.json',
                once=True)
        except AdapterError as exc:
            status = self.printify.client.call(
                'GET', f'/shops/{shop_id}/orders/{order_id}.json').get('status')
            if status in ('on-hold', 'canceled', None):
                raise
            ctx.log(f'order {order["name"]}: Printify order {order_id} is {status} already '
                    f'({exc}); not sent again', 'WARNING')
        else:
            ctx.log(f'order {order["name"]}: sent Printify order {order_id} to production')
        return int(time.time())


def order_body(order, lines):
    """The Printify order of a Shopify order: its engine line items, shipping
    method and address. Printify sends no e-mail: Shopify tells the customer."""
    return {'external_id': str(order['legacyResourceId']), 'label': order['name'],
            'line_items': [{'product_id': line['printifyProductId'],
                            'variant_id': line['variantId'], 'quantity': line['quantity']}
                           for line in lines],
            'shipping_method': shipping_method(order.get('shippingLine')),
            'send_shipping_notification': False,
            'address_to': address_to(order.get('shippingAddress') or {}, order.get('email'))}


def shipping_method(line):
    words = ' '.join(str((line or {}).get(k) or '') for k in ('code', 'title')).lower()
    return next((method for word, method in SHIPPING_METHODS if word in words), 1)


def address_to(address, email):
    fields = {'first_name': 'firstName', 'last_name': 'lastName', 'company': 'company',
              'address1': 'address1', 'address2': 'address2', 'city': 'city',
              'region': 'provinceCode', 'zip': 'zip', 'country': 'countryCodeV2',
              'phone': 'phone'}
    shaped = {ours: address.get(theirs) or '' for ours, theirs in fields.items()}
    return {**shaped, 'email': email or ''}


def iso_time(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        '%Y-%m-%dT%H:%M:%SZ')


def epoch(text):
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


def redact(text, order):
    """``text`` without the order's personal values (a refusal may echo them)."""
    values = [str(v) for v in (order.get('shippingAddress') or {}).values() if v]
    for value in sorted(values + [order.get('email') or ''], key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, '[redacted]')
    return text
