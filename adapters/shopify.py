"""Shopify publisher, on the GraphQL Admin API.

One ``productSet`` per product (options, variants, prices and the design in
one synchronous call), keyed by a handle derived from the job, design and
product type, so a repeat updates the same product instead of making a
second one. Local designs go up through a staged upload. With ``autoPublish``
the product is set ACTIVE and published to the Online Store publication.

Business errors arrive with HTTP 200 as ``userErrors``; every response is
checked for them. Throttling is a cost bucket reported in
``extensions.cost.throttleStatus``: the client keeps its own estimate of the
bucket and waits before it would run dry, and waits out a THROTTLED answer
(with HTTP 200 or 429) without failing the job.

Each variant is one of the Printify product's, with its SKU, its price (2XL
costs more than M) and its weight, sold while out of stock and untracked:
Shopify's defaults (tracked, 0 in stock, DENY) would show it "Sold out".
Its media is checked (READY, not FAILED) before the listing counts as made.
On a Printify API shop, Printify's publisher then answers its publish with
this product, which links the two for orders. When that Printify product has
a default mockup, the listing shows it first (Shopify fetches the image from
Printify's URL itself), then the design; a mockup Shopify could not fetch is
a WARNING, not a failed listing.

When the Printify shop is connected to Shopify, Printify's sync creates the
Shopify product itself; then this publisher creates nothing.
"""

import hashlib
import html
import logging
import re
import time
from urllib.parse import urlsplit

import gevent
import gevent.lock
import requests

from adapters.api import ApiClient, KeyedLocks, WaitTally, upstream_retry
from adapters.base import AdapterError, ConfigError, Publisher
from adapters.printify import default_mockup

log = logging.getLogger('podengine.shopify')

PUBLICATIONS = 'query Publications { publications(first: 10) { nodes { id name catalog { title } } } }'
SHOP = 'query Shop { shop { name } }'
SHOP_FACTS = 'query ShopFacts { shop { name myshopifyDomain } }'
MEDIA_STATUS = '''query MediaStatus($id: ID!) {
  product(id: $id) { media(first: 5) { nodes { status mediaErrors { message } } } }
}'''
STAGED_UPLOAD = '''mutation StagedUpload($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}'''
PRODUCT_SET = '''mutation ProductSet($identifier: ProductSetIdentifiers, $input: ProductSetInput!) {
  productSet(identifier: $identifier, input: $input, synchronous: true) {
    product { id handle status onlineStoreUrl }
    userErrors { field message code }
  }
}'''
PUBLISH = '''mutation Publish($id: ID!, $input: [PublicationInput!]!) {
  publishablePublish(id: $id, input: $input) {
    publishable { ... on Product { id onlineStoreUrl } }
    userErrors { field message }
  }
}'''
MUTATION_COST = 10
MEDIA_WAIT_SECONDS = 60
MEDIA_COST = 13  # what Shopify charges for MEDIA_STATUS: 1 + 2 + 5 x 2
DISPLAY_PX = 2048


class ShopifyClient(ApiClient):
    """The GraphQL endpoint, with the cost bucket kept in view."""

    platform = 'shopify'

    def __init__(self, settings, http):
        store = settings.shopify_store_url.rstrip('/')
        super().__init__(f'{store}/admin/api/{settings.shopify_api_version}', http,
                         upstream_retry(settings))
        self._token = settings.shopify_access_token
        self.available = None  # points left in the bucket, as last reported
        self.restore_rate = 50.0
        self.maximum = 1000.0
        self.reported_at = time.monotonic()
        self.limits = {'cost_bucket': WaitTally()}
        self._bucket = gevent.lock.Semaphore()
        self.in_flight = 0  # points reserved by calls not yet answered

    def headers(self):
        return {'X-Shopify-Access-Token': self._token, 'Content-Type': 'application/json',
                'User-Agent': self.http.headers.get('User-Agent', 'pod-engine')}

    def reason(self, response):
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or response.reason
        return str(body.get('errors', body))[:300] if isinstance(body, dict) else str(body)

    def graphql(self, query, variables=None, cost=MUTATION_COST, once=False):
        """The ``data`` of one GraphQL call, after any throttling waits.

        ``once``: a mutation that must not happen twice: a 5xx or a lost
        connection raises UnclearAnswer instead of sending it again."""
        sent = self.requests_sent
        # A throttled answer spends a try of the same policy as a 429 does:
        # at most `tries` sends in all, not `tries` for each throttled one.
        while (left := self.retry.tries - (self.requests_sent - sent)) > 0:
            body = self._paced_call(query, variables, cost, once, left)
            self._note_cost(body)
            errors = body.get('errors') or []
            if any(error_code(e) == 'THROTTLED' for e in errors):
                cost = requested_cost(body) or cost  # Shopify says what it will charge
                if self.requests_sent - sent < self.retry.tries:  # no wait after the last
                    self._pause(max(self._refill_time(cost), 0.5))
                continue
            if errors:
                raise AdapterError(f'shopify: {"; ".join(error_text(e) for e in errors)}',
                                   adapter='shopify', retryable=any(
                                       error_code(e) == 'INTERNAL_SERVER_ERROR' for e in errors))
            return body.get('data') or {}
        raise AdapterError(f'shopify: still throttled after {self.retry.tries} tries',
                           adapter='shopify')

    def _paced_call(self, query, variables, cost, once=False, tries=None):
        """Send once the bucket holds ``cost``, spending it at once so that
        concurrent calls see what is left; the very first call goes alone,
        to learn the bucket."""
        payload = {'query': query, 'variables': variables or {}}
        with self._bucket:
            self._wait_for_points(cost)
            if self.available is None:
                return self.call('POST', '/graphql.json', json=payload, once=once,
                                 tries=tries) or {}
            self.available = self._estimate() - cost
            self.reported_at = time.monotonic()
            self.in_flight += cost
        try:
            return self.call('POST', '/graphql.json', json=payload, once=once,
                             tries=tries) or {}
        finally:
            self.in_flight -= cost

    def _note_cost(self, body):
        status = (((body.get('extensions') or {}).get('cost') or {})
                  .get('throttleStatus') or {})
        if 'currentlyAvailable' in status:
            self.restore_rate = float(status.get('restoreRate') or self.restore_rate)
            self.maximum = float(status.get('maximumAvailable') or self.maximum)
            # The report predates the calls still on their way: they are spent
            # too. Answers can overtake each other, so an older, fuller report
            # must not raise the estimate: keep the lower of the two.
            reported = float(status['currentlyAvailable']) - self.in_flight
            estimate = self._estimate()
            self.available = reported if estimate is None else min(reported, estimate)
            self.reported_at = time.monotonic()

    def _estimate(self):
        if self.available is None:
            return None
        refilled = self.available + (time.monotonic() - self.reported_at) * self.restore_rate
        return min(self.maximum, refilled)  # the bucket never holds more than its size

    def _refill_time(self, cost):
        estimate = self._estimate()
        if estimate is None or estimate >= cost:
            return 0.0
        return (cost - estimate) / self.restore_rate

    def _wait_for_points(self, cost):
        wait = self._refill_time(cost)
        if wait > 0:
            self._pause(wait)

    def _pause(self, seconds):
        self.limits['cost_bucket'].add(seconds)
        gevent.sleep(seconds)


def requested_cost(body):
    return ((body.get('extensions') or {}).get('cost') or {}).get('requestedQueryCost')


def error_code(error):
    return ((error or {}).get('extensions') or {}).get('code')


def error_text(error):
    return str((error or {}).get('message', error))[:200]


def check_user_errors(payload, what):
    problems = (payload or {}).get('userErrors') or []
    if problems:
        text = '; '.join(f'{".".join(map(str, p.get("field") or []))}: {p.get("message")}'
                         .lstrip(': ') for p in problems)
        raise AdapterError(f'shopify refused {what}: {text}', adapter='shopify',
                           retryable=False)
    return payload


def media_reasons(nodes):
    """The mediaErrors messages of failed media nodes, in one line."""
    return '; '.join(e.get('message', '') for n in nodes
                     for e in n.get('mediaErrors') or []) or 'no reason given'


def slug(text, limit=60):
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:limit].strip('-') or 'design'


class ShopifyPublisher(Publisher):
    """Creates each product in the configured Shopify store."""

    name = 'shopify'

    def __init__(self, settings, http):
        super().__init__(settings, http)
        if not (settings.shopify_store_url and settings.shopify_access_token):
            raise ConfigError('ENABLED_PLATFORMS includes shopify but SHOPIFY_STORE_URL or '
                              'SHOPIFY_ACCESS_TOKEN is not set')
        self.client = ShopifyClient(settings, http)
        self.dry_run = settings.dry_run
        self._publication = None
        self._shop_facts = None
        self._once = KeyedLocks()

    def describe(self):
        return 'shopify (dry run)' if self.dry_run else 'shopify'

    def health(self):
        try:
            return bool(self.client.graphql(SHOP, cost=1).get('shop'))
        except AdapterError:
            return False

    def print_area(self, product_type, ctx):
        """A display copy, not the print file: Shopify refuses images over
        4472 px a side or 20 MP, and storefronts show at most ~2048 px."""
        width, height = product_type.print_width, product_type.print_height
        scale = min(1.0, DISPLAY_PX / max(width, height))
        return round(width * scale), round(height * scale)

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        printify = self.printify(ctx)
        if printify is not None and printify.syncs_to_shopify():
            ctx.log(f'shopify: Printify\'s shop makes the Shopify {product_type.key} itself; '
                    f'not making a second one')
            return None
        variants = printify.listing_variants(artwork, product_type, ctx) if printify else None
        tag = f'{artwork.key}:{product_type.key}'
        linked = ctx.lookup(f'printify:product:{tag}') if variants else None
        handle = product_handle(brief.title, ctx.job_id, artwork.key, product_type.key)
        listing = ListingInput(brief, product_type, variants or catalogue_variants(
            product_type), auto_publish, mockup=default_mockup(linked))
        if self.dry_run:
            return self.rehearse(artwork, listing, handle)
        with self._once.hold((ctx.job_id, artwork.path)):  # types sharing a file: one upload
            source = ctx.checkpoint(f'shopify:file:{artwork.path}',
                                    lambda: self.file_source(artwork, ctx))
        product = ctx.checkpoint(f'shopify:product:{tag}', lambda: self.set_product(
            handle, listing.product(source), ctx))
        media = ctx.checkpoint(f'shopify:media:{tag}',
                               lambda: self.wait_for_media(product, ctx, listing.mockup))
        if auto_publish:
            product = ctx.checkpoint(f'shopify:published:{tag}',
                                     lambda: self.publish_online(product, ctx))
        shown = listing.mockup if media.get('mockupShown') else None
        return self.result(product, product_type, brief, auto_publish, linked, shown)

    # Other platforms ---------------------------------------------------------

    @staticmethod
    def printify(ctx):
        return next((p for p in ctx.publishers if p.name == 'printify'), None)

    def fulfilment_warnings(self, publishers):
        printify = next((p for p in publishers if p.name == 'printify'), None)
        if printify is None:
            return ['shopify: no print provider is configured (ENABLED_PLATFORMS has no '
                    'printify): orders for the products made here reach no printer']
        facts = printify.facts() or {}
        if facts.get('shopKind') == 'connected' and facts.get('salesChannel') != 'shopify':
            return [f'shopify: the Printify shop syncs to {facts["salesChannel"]}, not to '
                    f'Shopify: the Shopify products made here are not linked to Printify, so '
                    f'their orders reach no printer']
        if facts.get('salesChannel') == 'shopify' and not self.same_store(facts['shopTitle']):
            return [f'shopify: the Printify shop {facts["shopTitle"]!r} syncs to a Shopify '
                    f'store that may not be {self.store_host()}: its products will not appear '
                    f'in SHOPIFY_STORE_URL']
        return []

    def same_store(self, printify_title):
        """Whether Printify's shop title names this store (its name or its
        myshopify subdomain): shops.json says no more about the channel."""
        if self._shop_facts is None:
            try:
                self._shop_facts = self.client.graphql(SHOP_FACTS, cost=1).get('shop') or {}
            except AdapterError:
                return True  # unknown: health reports the store itself
        title = str(printify_title or '').strip().lower()
        names = {str(self._shop_facts.get('name', '')).strip().lower(),
                 str(self._shop_facts.get('myshopifyDomain', '')).lower(),
                 str(self._shop_facts.get('myshopifyDomain', '')).split('.')[0].lower(),
                 self.store_host().lower(), self.store_host().split('.')[0].lower()}
        return title in names

    def store_host(self):
        return urlsplit(self.settings.shopify_store_url).hostname or ''

    # Writing -----------------------------------------------------------------

    def file_source(self, artwork, ctx):
        """A URL Shopify can read the design from: the public one, or a staged upload."""
        if self.settings.public_url:
            return artwork.url
        data = (ctx.data_dir / artwork.path).read_bytes()
        name = artwork.path.rsplit('/', 1)[-1]
        staged = check_user_errors(self.client.graphql(STAGED_UPLOAD, {'input': [{
            'filename': name, 'mimeType': 'image/png', 'httpMethod': 'POST',
            'resource': 'IMAGE', 'fileSize': str(len(data))}]}).get('stagedUploadsCreate'),
            'the staged upload')
        target = staged['stagedTargets'][0]
        self.send_file(target, name, data)
        ctx.log(f'shopify: uploaded {name}')
        return target['resourceUrl']

    def send_file(self, target, name, data):
        # The staged target is storage, not the Admin API: no token goes there.
        fields = {p['name']: p['value'] for p in target.get('parameters', [])}
        try:
            response = self.http.post(target['url'], data=fields,
                                      files={'file': (name, data, 'image/png')}, timeout=120)
        except requests.RequestException as exc:
            raise AdapterError(f'shopify: staged upload failed: {type(exc).__name__}',
                               adapter='shopify') from None
        if response.status_code >= 300:
            raise AdapterError(f'shopify: staged upload answered {response.status_code}',
                               adapter='shopify', retryable=response.status_code >= 500)

    def set_product(self, handle, product, ctx):
        data = self.client.graphql(PRODUCT_SET, {'identifier': {'handle': handle},
                                                 'input': product})
        result = check_user_errors(data.get('productSet'), 'the product')['product']
        ctx.log(f'shopify: product {result["id"]} ({handle}) is {result["status"]}')
        return result

    def wait_for_media(self, product, ctx, mockup=None):
        """Wait until Shopify has processed the design image: READY, or FAILED
        with its reasons (then the listing has no picture: the job fails).
        With a ``mockup`` (the first media), its failure is only a WARNING:
        the listing still shows the design."""
        deadline = time.monotonic() + MEDIA_WAIT_SECONDS
        pause, first, warned = 0.25, 1 if mockup else 0, False
        while True:
            data = self.client.graphql(MEDIA_STATUS, {'id': product['id']}, cost=MEDIA_COST)
            nodes = (((data.get('product') or {}).get('media') or {}).get('nodes')) or []
            shown, design = nodes[:first], nodes[first:]
            if any(n.get('status') == 'FAILED' for n in shown) and not warned:
                ctx.log(f'shopify: {product["id"]} could not show the Printify mockup '
                        f'({media_reasons(shown)}); it shows the design', 'WARNING')
                warned = True
            failed = [n for n in design if n.get('status') == 'FAILED']
            if failed:
                raise AdapterError(f'shopify: the design image failed processing: '
                                   f'{media_reasons(failed)}', adapter='shopify',
                                   retryable=False)
            if all(n.get('status') in ('READY', 'FAILED') for n in shown) and \
                    all(n.get('status') == 'READY' for n in design):
                return {'media': len(nodes), 'mockupShown': bool(shown) and not warned}
            if time.monotonic() > deadline:
                ctx.log(f'shopify: the images of {product["id"]} are still processing',
                        'WARNING')
                return {'media': len(nodes), 'processing': True}
            gevent.sleep(pause)
            pause = min(pause * 2, 4)

    def publish_online(self, product, ctx):
        data = self.client.graphql(PUBLISH, {'id': product['id'], 'input': [
            {'publicationId': self.online_store(ctx)}]})
        published = check_user_errors(data.get('publishablePublish'), 'the publish')
        url = (published.get('publishable') or {}).get('onlineStoreUrl')
        ctx.log(f'shopify: published {product["id"]} to the Online Store')
        return {**product, 'onlineStoreUrl': url or product.get('onlineStoreUrl')}

    def online_store(self, ctx):
        if self._publication is None:
            nodes = self.client.graphql(PUBLICATIONS, cost=22).get('publications', {})
            for node in nodes.get('nodes', []):
                title = (node.get('catalog') or {}).get('title') or node.get('name')
                if title == 'Online Store':
                    self._publication = node['id']
                    break
            else:
                raise AdapterError('shopify: the store has no Online Store publication '
                                   '(is the write_publications scope granted?)',
                                   adapter='shopify', retryable=False)
        return self._publication

    def result(self, product, product_type, brief, auto_publish, linked, mockup=None):
        numeric = product['id'].rsplit('/', 1)[-1]
        result = {'platform': 'shopify', 'productId': product['id'],
                  'url': self.admin_url(numeric), 'storeUrl': product.get('onlineStoreUrl'),
                  'handle': product.get('handle'), 'type': product_type.key,
                  'title': brief.title, 'published': auto_publish,
                  'status': 'published' if auto_publish else 'draft'}
        if linked:
            result['printifyProductId'] = linked['id']
        if mockup:
            result['mockupUrl'] = mockup
        return result

    def admin_url(self, numeric_id):
        store = urlsplit(self.settings.shopify_store_url).hostname or ''
        return (f'https://admin.shopify.com/store/{store.split(".")[0]}/products/'
                f'{numeric_id}')

    # Dry run -----------------------------------------------------------------

    def rehearse(self, artwork, listing, handle):
        source = artwork.url if self.settings.public_url else '<staged upload resourceUrl>'
        sent = [{'query': PRODUCT_SET, 'variables': {
            'identifier': {'handle': handle}, 'input': listing.product(source)}}]
        if not self.settings.public_url:
            sent.insert(0, {'query': STAGED_UPLOAD, 'variables': {'input': [{
                'filename': artwork.path.rsplit('/', 1)[-1], 'mimeType': 'image/png',
                'httpMethod': 'POST', 'resource': 'IMAGE'}]}})
        if listing.auto_publish:
            sent.append({'query': PUBLISH, 'variables': {
                'id': '<product id>', 'input': [{'publicationId': '<Online Store>'}]}})
        return {'platform': 'shopify', 'productId': f'dry-run-{handle}', 'dryRun': True,
                'type': listing.product_type.key, 'title': listing.brief.title,
                'published': False, 'status': 'draft', 'requests': sent}


def product_handle(title, job_id, key, type_key):
    """A handle unique to this job, design and type: ``productSet`` upserts
    by it, so sending the product again never makes a second one."""
    digest = hashlib.sha1(f'{job_id}|{key}|{type_key}'.encode()).hexdigest()[:8]
    return f'{slug(title)}-{type_key}-{digest}'


def catalogue_variants(product_type):
    """Variants from the catalogue alone (no print provider): every size and
    colour at the type's price, with a SKU of our own."""
    price = int(round(float(product_type.price) * 100))
    return [{'sku': f'POD-{product_type.key}-{slug(color)}-{slug(size)}'.upper(),
             'price': price, 'color': color, 'size': size, 'grams': None}
            for size in product_type.sizes for color in product_type.colors]


class ListingInput:
    """The ProductSetInput of one listing: Size and Color options, one
    variant per print variant with its SKU and price, sold while out of
    stock (a print-on-demand product has no stock: Shopify's defaults,
    tracked inventory at 0 and DENY, would show every size "Sold out")."""

    def __init__(self, brief, product_type, variants, auto_publish, mockup=None):
        self.brief = brief
        self.product_type = product_type
        self.variants = variants
        self.auto_publish = auto_publish
        self.mockup = mockup  # a Printify mockup's URL, shown first

    def files(self, source):
        """The listing's images: the default mockup (Shopify downloads it from
        Printify's URL), then the design."""
        design = {'originalSource': source, 'contentType': 'IMAGE', 'alt': self.brief.title}
        if not self.mockup:
            return [design]
        return [{'originalSource': self.mockup, 'contentType': 'IMAGE',
                 'alt': f'{self.brief.title} ({self.product_type.name})'}, design]

    def product(self, source):
        brief = self.brief
        return {
            'title': brief.title,
            'descriptionHtml': brief.description_html or
            f'<p>{html.escape(brief.description)}</p>',
            'vendor': 'POD Engine', 'productType': self.product_type.name, 'tags': brief.tags,
            'status': 'ACTIVE' if self.auto_publish else 'DRAFT',
            'productOptions': [self.option('Size', 'size'), self.option('Color', 'color')],
            'variants': [self.variant(v) for v in self.variants],
            'files': self.files(source),
        }

    def option(self, name, field):
        values = list(dict.fromkeys(v[field] for v in self.variants))
        return {'name': name, 'values': [{'name': value} for value in values]}

    @staticmethod
    def variant(variant):
        item = {'sku': variant['sku'], 'tracked': False}
        if variant.get('grams'):
            item['measurement'] = {'weight': {'value': float(variant['grams']),
                                              'unit': 'GRAMS'}}
        return {'optionValues': [{'optionName': 'Size', 'name': variant['size']},
                                 {'optionName': 'Color', 'name': variant['color']}],
                'price': f'{variant["price"] / 100:.2f}', 'sku': variant['sku'],
                'inventoryPolicy': 'CONTINUE', 'inventoryItem': item}
