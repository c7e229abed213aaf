"""Printify publisher: upload, create, price above cost, publish, follow.

Built to Printify's REST API v1 as documented and measured (there is no
sandbox): bearer token plus a User-Agent on every call, integer prices in
minor units, real variant ids from the catalogue, ``print_areas`` with the
design on the front placeholder, and a publish only when every enabled price
is above cost. Blueprints, providers and variants are resolved by brand,
model and provider name through the catalogue once and cached on disk.

Printify has no idempotency key, so every write is checkpointed in the job
before the next one starts; a create that may have happened (the engine died
waiting for its answer, or the answer was a 5xx or never came) is looked for
upstream before it is sent again.

Printify renders a product's mockups (``images``) after it has answered the
create, so the set in that answer is not final: the job records it
(``mockupsFinal: false``), and the follower (adapters/publishing.py) reads
the product once more PRINTIFY_MOCKUP_WAIT_MS later to record the final set.
"""

import base64
import datetime
import hashlib
import json
import logging
import math
import time

from adapters.api import ApiClient, KeyedLocks, RateLimiter, UnclearAnswer, upstream_retry
from adapters.base import AdapterError, ConfigError, Publisher

log = logging.getLogger('podengine.printify')

PUBLISH_FIELDS = {'title': True, 'description': True, 'images': True, 'variants': True,
                  'tags': True, 'keyFeatures': True, 'shipping_template': True}
FIND_PAGES = 4  # pages of 50 products searched for one that may already exist
MAX_MOCKUPS = 50  # mockups kept per product (a product in many colours has hundreds)


class PrintifyClient(ApiClient):
    """Printify's HTTP API with its three rate limits."""

    platform = 'printify'

    def __init__(self, settings, http):
        super().__init__(settings.printify_api_url.rstrip('/') + '/v1', http,
                         upstream_retry(settings))
        self._token = settings.printify_api_token
        self.limits = {
            'all': RateLimiter(*settings.printify_rate_limit),
            'catalog': RateLimiter(*settings.printify_catalog_rate_limit),
            'publish': RateLimiter(*settings.printify_publish_rate_limit),
        }

    def headers(self):
        return {'Authorization': f'Bearer {self._token}',
                'User-Agent': self.http.headers.get('User-Agent', 'pod-engine'),
                'Content-Type': 'application/json'}

    def limiters_for(self, method, path):
        # The narrow limit first: a request waiting for it holds no place in
        # the global window, which every other request needs.
        limiters = []
        if path.startswith('/catalog/'):
            limiters.append(self.limits['catalog'])
        if path.endswith('/publish.json'):
            limiters.append(self.limits['publish'])
        return limiters + [self.limits['all']]

    def reason(self, response):
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or response.reason
        errors = body.get('errors') if isinstance(body, dict) else None
        if isinstance(errors, dict) and errors.get('reason'):
            return str(errors['reason'])[:300]
        return str(body.get('message') if isinstance(body, dict) else body)[:300]


class Catalog:
    """Blueprint, provider, variants and print area of each product type,
    resolved once through the catalogue and cached in ``path``. Designs
    published at the same time wait for one lookup rather than each making
    their own (every catalogue call counts against the rate limits)."""

    def __init__(self, client, path):
        self.client = client
        self.path = path
        self._entries = None
        self._blueprints = None
        self._resolving = KeyedLocks()

    def resolve(self, product_type):
        """The blueprint, provider, front size and variants of the type's
        colours and sizes. The lookup is kept per blueprint and sizes, so a
        design sold in fewer colours (the ones it shows on) costs no call."""
        spec = printify_spec(product_type)
        key = json.dumps([spec, product_type.sizes])
        entries = self._load()
        if key not in entries:
            with self._resolving.hold(key):
                if key not in entries:
                    entries[key] = self._lookup(spec, product_type)
                    self._save()
        plan = entries[key]
        return {**plan, 'variants': in_colours(plan['variants'], product_type)}

    def _lookup(self, spec, product_type):
        blueprint = self._blueprint(spec)
        provider = self._provider(blueprint['id'], spec)
        listing = self.client.call(
            'GET', f'/catalog/blueprints/{blueprint["id"]}/print_providers/'
                   f'{provider["id"]}/variants.json')
        variants = pick_variants(listing.get('variants', []), product_type)
        return {'blueprint_id': blueprint['id'], 'print_provider_id': provider['id'],
                'blueprint': blueprint.get('title', ''), 'provider': provider.get('title', ''),
                'variants': variants, 'front': front_size(
                    listing.get('variants', []), in_colours(variants, product_type))}

    def _blueprint(self, spec):
        for fresh in (False, True):  # a list kept from earlier may predate the blueprint
            for blueprint in self._all_blueprints(fresh):
                if same(blueprint.get('brand'), spec['brand']) and \
                        same(blueprint.get('model'), spec['model']):
                    return blueprint
        raise AdapterError(f'printify: no blueprint for {spec["brand"]} {spec["model"]} in '
                           f'the catalogue', adapter='printify', retryable=False)

    def _all_blueprints(self, fresh=False):
        """The catalogue's blueprints, fetched once for every product type; kept
        with only the fields a lookup reads, not each one's description and images."""
        with self._resolving.hold('blueprints.json'):
            if self._blueprints is None or fresh:
                self._blueprints = [
                    {field: blueprint[field] for field in ('id', 'title', 'brand', 'model')
                     if field in blueprint}
                    for blueprint in self.client.call('GET', '/catalog/blueprints.json')]
        return self._blueprints

    def _provider(self, blueprint_id, spec):
        providers = self.client.call('GET', f'/catalog/blueprints/{blueprint_id}/'
                                            f'print_providers.json')
        wanted = str(spec.get('provider', '')).strip()
        for provider in providers:
            if not wanted or same(provider.get('title'), wanted) or str(provider['id']) == wanted:
                return provider
        raise AdapterError(f'printify: {spec["brand"]} {spec["model"]} has no print '
                           f'provider {wanted!r}', adapter='printify', retryable=False)

    def _load(self):
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + '.tmp')
        temp.write_text(json.dumps(self._entries, indent=1))
        temp.replace(self.path)


def printify_spec(product_type):
    spec = product_type.extra.get('printify')
    if not spec or not spec.get('brand') or not spec.get('model'):
        raise AdapterError(f'product type {product_type.key!r} has no printify blueprint '
                           f'(extra.printify.brand and .model)', adapter='printify',
                           retryable=False)
    return spec


def same(a, b):
    return str(a or '').strip().lower() == str(b or '').strip().lower()


def pick_variants(variants, product_type):
    """The catalogue variants in the type's sizes, in every colour, read
    from ``options`` (titles come as "Black / L" and as "L / Black")."""
    wanted_sizes = {s.lower() for s in product_type.sizes}
    return [{'id': v['id'], 'color': v['options'].get('color'),
             'size': v['options'].get('size')}
            for v in variants
            if str(v.get('options', {}).get('size', '')).lower() in wanted_sizes]


def in_colours(chosen, product_type):
    """The variants of ``chosen`` in the type's colours, in catalogue order."""
    wanted_colors = {c.lower() for c in product_type.colors}
    kept = [v for v in chosen if str(v.get('color') or '').lower() in wanted_colors]
    if not kept:
        raise AdapterError(f'printify: none of the colours {product_type.colors} in sizes '
                           f'{product_type.sizes} exist for {product_type.key}',
                           adapter='printify', retryable=False)
    return kept


def front_size(variants, chosen):
    ids = {v['id'] for v in chosen}
    for variant in variants:
        if variant['id'] in ids:
            for placeholder in variant.get('placeholders', []):
                if placeholder.get('position') == 'front':
                    return [placeholder['width'], placeholder['height']]
    return [4500, 5400]


def minor_units(price):
    return int(round(float(price) * 100))


def lowest_cost(product):
    costs = [v['cost'] for v in product['variants'] if v['cost'] is not None]
    return min(costs) if costs else 0


def size_price(cost, base, lowest, percent):
    """A variant's price: the type's price for the cheapest size, plus what
    this size costs more (2XL, 3XL) rounded up to whole units, and never under
    the margin floor (minor units)."""
    extra = math.ceil((cost - lowest) / 100) * 100
    return max(base + extra, margin_floor(cost, percent))


def margin_floor(cost, percent):
    """The lowest .99 price that keeps ``percent`` over ``cost`` (minor units)."""
    floor = cost * (1 + percent / 100)
    return math.ceil((floor + 1) / 100) * 100 - 1


API_CHANNELS = ('custom_integration', 'api')  # shops whose integration answers each publish
CREATE_TRIES = 3  # sends of one create whose earlier sends got no clear answer


def shop_kind(sales_channel):
    """``api``: the integration (we) answers each publish; ``connected``:
    Printify makes the product on that channel itself; ``none``: no channel."""
    channel = str(sales_channel or '').strip().lower()
    if not channel:
        return 'none'
    return 'api' if channel in API_CHANNELS else 'connected'


class PrintifyPublisher(Publisher):
    """Creates each product on the configured Printify shop.

    How a product gets to a storefront depends on the shop (``shop_kind``):
    a connected shop syncs it to its channel by itself, later (the job ends
    with the product ``publishing`` and the follower in adapters/publishing.py
    waits for the link); an API shop locks a published product until its
    integration answers, so it is published only once the storefront product
    exists (``link``), and answered at once with that product.
    """

    name = 'printify'

    def __init__(self, settings, http):
        super().__init__(settings, http)
        if not settings.printify_api_token:
            raise ConfigError('ENABLED_PLATFORMS includes printify but PRINTIFY_API_TOKEN '
                              'is not set')
        self.client = PrintifyClient(settings, http)
        self.catalog = Catalog(self.client, settings.data_path / 'cache' /
                               'printify-catalog.json')
        self.dry_run = settings.dry_run
        self.mockup_wait_ms = settings.printify_mockup_wait_ms  # read by the follower
        self._shop = None
        self._once = KeyedLocks()  # steps two product types of a design share

    def describe(self):
        return 'printify (dry run)' if self.dry_run else 'printify'

    def health(self):
        try:  # a channel connected or dropped since start shows here
            self._note_shop(self.client.call('GET', '/shops.json') or [])
            return True
        except AdapterError:
            return False

    def facts(self):
        if self._shop is None:
            return None
        return {'shopId': self._shop['id'], 'shopTitle': self._shop['title'],
                'salesChannel': self._shop['sales_channel'], 'shopKind': self.kind()}

    def fulfilment_warnings(self, publishers):
        if self._shop is None or self.dry_run:
            return []
        names = [p.name for p in publishers]
        if self.kind() == 'api' and 'shopify' not in names:
            return [f'printify: shop {self._shop["id"]} is an API shop with no storefront '
                    f'configured: products are made as unpublished drafts (a publish would '
                    f'lock each one until a storefront answers for it)']
        if self.kind() == 'none':
            return [f'printify: shop {self._shop["id"]} has no sales channel: publishing '
                    f'will be refused']
        return []

    def print_area(self, product_type, ctx):
        return tuple(self.catalog.resolve(product_type)['front'])

    # The shop ----------------------------------------------------------------

    def shop(self):
        """``{id, title, sales_channel}`` of PRINTIFY_SHOP_ID, or of the only shop."""
        if self._shop is None:
            with self._once.hold('shop'):  # designs publishing at once share one lookup
                if self._shop is None:
                    self._note_shop(self.client.call('GET', '/shops.json') or [])
        return self._shop

    def _note_shop(self, shops):
        wanted = str(self.settings.printify_shop_id or '')
        matches = [s for s in shops if str(s['id']) == wanted] if wanted else shops
        if len(matches) != 1:
            ids = ', '.join(str(s['id']) for s in shops) or 'none'
            raise AdapterError(f'printify: set PRINTIFY_SHOP_ID to one of the token\'s '
                               f'shops ({ids})', adapter='printify', retryable=False)
        found = matches[0]
        self._shop = {'id': found['id'], 'title': found.get('title', ''),
                      'sales_channel': found.get('sales_channel') or ''}

    def kind(self):
        return shop_kind(self.shop()['sales_channel'])

    def syncs_to_shopify(self):
        """True when publishing on Printify already creates the Shopify product."""
        return str(self.shop()['sales_channel']).lower() == 'shopify'

    # Publishing --------------------------------------------------------------

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        shop_id = self.shop()['id']
        plan = self.catalog.resolve(product_type)
        tag = f'{artwork.key}:{product_type.key}'
        if self.dry_run:
            return self.rehearse(shop_id, plan, artwork, product_type, brief, auto_publish)
        image_id = self.upload_once(artwork, ctx)
        body = product_body(plan, image_id, brief, product_type)
        product = self.create_once(shop_id, body, plan, tag, ctx)
        if self.repriced(product, product_type):  # else nothing to do or record
            ctx.checkpoint(f'printify:priced:{tag}',
                           lambda: self.set_prices(shop_id, product, product_type, ctx))
        status = self.first_status(auto_publish, ctx)
        if status == 'publishing' and self.kind() != 'api':
            ctx.checkpoint(f'printify:publish:{product["id"]}',
                           lambda: self.send_publish(shop_id, product['id'], ctx))
        return self.result(product, product_type, brief, status)

    def first_status(self, auto_publish, ctx):
        if not auto_publish:
            return 'draft'
        if self.kind() == 'api' and self.storefront(ctx) is None:
            ctx.log('printify: the shop is an API shop and no storefront is configured; '
                    'the product stays an unpublished draft', 'WARNING')
            return 'draft'
        return 'publishing'

    @staticmethod
    def storefront(ctx):
        return next((p for p in ctx.publishers if p.name == 'shopify'), None)

    def upload_once(self, artwork, ctx):
        """The upload id of ``artwork``: product types that share a print file
        (published side by side) share one upload."""
        key = f'printify:upload:{artwork.path}'
        with self._once.hold((ctx.job_id, key)):
            return ctx.checkpoint(key, lambda: self.upload(artwork, ctx))

    def upload(self, artwork, ctx):
        name = artwork.path.rsplit('/', 1)[-1]
        if self.settings.public_url:  # Printify fetches it: no 5 MB body
            body = {'file_name': name, 'url': artwork.url}
        else:
            data = (ctx.data_dir / artwork.path).read_bytes()
            body = {'file_name': name, 'contents': base64.b64encode(data).decode('ascii')}
        uploaded = self.client.call('POST', '/uploads/images.json', json=body)
        ctx.log(f'printify: uploaded {name} as {uploaded["id"]}')
        return uploaded['id']

    def create_once(self, shop_id, body, plan, tag, ctx):
        """Create the product unless this job already did, even if the engine
        died before it heard the answer, or the answer was a 5xx or was lost:
        each time, the product is looked for before it is sent again."""
        done = ctx.lookup(f'printify:product:{tag}')
        if done:
            return done
        creating = ctx.lookup(f'printify:creating:{tag}')
        if creating:
            found = self.adopt(shop_id, body, creating['since'], ctx)
            if found:
                return ctx.checkpoint(f'printify:product:{tag}', lambda: summary(found, plan))
        since = ctx.checkpoint(f'printify:creating:{tag}',
                               lambda: {'since': int(time.time())})['since']
        for attempt in range(1, CREATE_TRIES + 1):
            try:
                made = self.client.call('POST', f'/shops/{shop_id}/products.json', json=body,
                                        once=True)
                return ctx.checkpoint(f'printify:product:{tag}', lambda: summary(made, plan))
            except UnclearAnswer as exc:
                ctx.log(f'{exc}; looking for the product before sending it again', 'WARNING')
                self.client.retry.sleep(self.client.retry.backoff(attempt))
                found = self.adopt(shop_id, body, since, ctx)
                if found:
                    return ctx.checkpoint(f'printify:product:{tag}',
                                          lambda: summary(found, plan))
        raise AdapterError(f'printify: creating the product got no clear answer '
                           f'{CREATE_TRIES} times', adapter='printify')

    def adopt(self, shop_id, body, since, ctx):
        found = self.find_created(shop_id, body, since)
        if found:
            ctx.log(f'printify: found product {found["id"]} made before an unclear answer or '
                    f'an interruption; not creating it again', 'WARNING')
        return found

    def find_created(self, shop_id, body, since):
        """The shop's product with this title, blueprint and design upload,
        made since the create was first sent (a job that drew the very same
        image earlier must not lend its product)."""
        image_id = body['print_areas'][0]['placeholders'][0]['images'][0]['id']
        for page in range(1, FIND_PAGES + 1):
            listing = self.client.call('GET', f'/shops/{shop_id}/products.json',
                                       params={'limit': 50, 'page': page}) or {}
            for product in listing.get('data', []):
                if product.get('title') == body['title'] and \
                        product.get('blueprint_id') == body['blueprint_id'] and \
                        image_id in json.dumps(product.get('print_areas', [])) and \
                        created_since(product, since):
                    return product
            if page >= listing.get('last_page', 1):
                return None
        return None

    def repriced(self, product, product_type):
        """The enabled variants whose price is not yet their price by size
        (``size_price``), as a PUT's ``variants``."""
        base = minor_units(product_type.price)
        percent = self.settings.min_margin_percent
        return [{'id': v['id'], 'price': size_price(v['cost'], base, lowest_cost(product),
                                                    percent), 'is_enabled': True}
                for v in product['variants'] if v['cost'] is not None and
                v['price'] != size_price(v['cost'], base, lowest_cost(product), percent)]

    def set_prices(self, shop_id, product, product_type, ctx):
        """Price bigger sizes up by what they cost more, and every variant at
        least MIN_MARGIN_PERCENT over cost."""
        percent = self.settings.min_margin_percent
        changed = self.repriced(product, product_type)
        if changed:
            self.client.call('PUT', f'/shops/{shop_id}/products/{product["id"]}.json',
                             json={'variants': changed})
            top = max(changed, key=lambda v: v['price'])['price']
            costs = {v['id']: v['cost'] for v in product['variants']}
            if any(v['price'] == margin_floor(costs[v['id']], percent) for v in changed):
                ctx.log(f'printify: raised variant prices to keep {percent}% over cost (up '
                        f'to {top / 100:.2f})', 'WARNING')
            ctx.log(f'printify: priced {len(changed)} variant(s) by size, up to '
                    f'{top / 100:.2f}')
        return {'raised': len(changed)}

    def listing_variants(self, artwork, product_type, ctx):
        """What a storefront listing of this job's Printify product needs, per
        enabled variant: ``{sku, price (minor units), color, size, grams}``,
        at the prices Printify sells it for; None before it is made."""
        product = ctx.lookup(f'printify:product:{artwork.key}:{product_type.key}')
        if not product or any('sku' not in v for v in product['variants']):
            return None
        raised = {v['id']: v['price'] for v in self.repriced(product, product_type)}
        return [{'sku': v['sku'], 'price': raised.get(v['id'], v['price']),
                 'color': v['color'], 'size': v['size'], 'grams': v.get('grams')}
                for v in product['variants']]

    def send_publish(self, shop_id, product_id, ctx):
        try:
            self.client.call('POST', f'/shops/{shop_id}/products/{product_id}/publish.json',
                             json=PUBLISH_FIELDS)
        except AdapterError as exc:
            # A publish sent again after a 5xx finds the product locked by the
            # first one: it was accepted then.
            if exc.status != 400 or 'disabled for editing' not in str(exc):
                raise
        ctx.log(f'printify: publishing product {product_id}')
        return {'at': int(time.time())}

    # An API shop's answer ------------------------------------------------------

    def link(self, products, failures, ctx):
        """Publish this design's product on an API shop once its storefront
        product exists, and answer the publish with it at once, so the product
        is locked for a moment only and Printify knows which storefront
        product a sale is; without one, the product is never locked."""
        mine = next((p for p in products if p['platform'] == self.name
                     and p.get('status') == 'publishing'), None)
        if mine is None or self.kind() != 'api':
            return
        pid = mine['productId']
        listing = next((p for p in products if p.get('printifyProductId') == pid), None)
        if listing is None:
            failure = failures.get('shopify')
            mine.update(status='publish_failed', published=False,
                        error=f'the storefront product was not made: {failure}')
            return
        shop_id = self.shop()['id']
        ctx.checkpoint(f'printify:publish:{pid}', lambda: self.send_publish(shop_id, pid, ctx))
        external = ctx.checkpoint(f'printify:external:{pid}', lambda: self.answer_succeeded(
            shop_id, pid, listing, ctx))
        mine.update(status='published', published=True, external=external,
                    storeUrl=listing.get('storeUrl'), shopifyProductId=listing['productId'])

    def answer_succeeded(self, shop_id, product_id, listing, ctx):
        external = {'id': str(listing['productId']).rsplit('/', 1)[-1],
                    'handle': listing.get('storeUrl') or listing.get('handle') or ''}
        self.client.call('POST', f'/shops/{shop_id}/products/{product_id}/'
                                 f'publishing_succeeded.json', json={'external': external})
        ctx.log(f'printify: product {product_id} is published, linked to Shopify product '
                f'{external["id"]}')
        return external

    # Following a connected shop's sync -------------------------------------------

    def publish_state(self, product):
        """Where the publish of ``product`` (a job result entry) stands:
        ``('published', changes)``, ``('publishing', None)`` or
        ``('publish_failed', reason)``."""
        shop_id = product.get('shopId') or self.shop()['id']
        found = self.client.call('GET', f'/shops/{shop_id}/products/{product["productId"]}.json')
        external = found.get('external')
        if external and external.get('handle'):
            return 'published', self.linked(external)
        if found.get('is_locked'):
            return 'publishing', None
        return 'publish_failed', (f'Printify\'s {self.shop()["sales_channel"]} sync ended '
                                  f'without a store link')

    def linked(self, external):
        handle = str(external.get('handle', ''))
        changes = {'external': {'id': str(external.get('id', '')), 'handle': handle},
                   'storeUrl': handle if handle.startswith('http') else None}
        if self.syncs_to_shopify() and external.get('id'):
            changes['shopifyProductId'] = f'gid://shopify/Product/{external["id"]}'
        return changes

    def republish(self, product):
        """Send the publish of a ``publish_failed`` product again."""
        shop_id = product.get('shopId') or self.shop()['id']
        self.client.call('POST', f'/shops/{shop_id}/products/{product["productId"]}/'
                                 f'publish.json', json=PUBLISH_FIELDS)

    def final_mockups(self, product):
        """The mockups of ``product`` (a result entry) as Printify shows them
        now that it has rendered them all: the fields to record."""
        shop_id = product.get('shopId') or self.shop()['id']
        found = self.client.call('GET', f'/shops/{shop_id}/products/{product["productId"]}.json')
        mockups = mockups_of(found.get('images'))
        if not mockups:  # nothing to show instead of the create's: keep those
            return {'mockupsFinal': True}
        return {'mockups': mockups, 'mockupUrl': mockups[0]['src'], 'mockupsFinal': True}

    def result(self, product, product_type, brief, status):
        entry = {'platform': 'printify', 'productId': product['id'],
                 'url': f'https://printify.com/app/products/{product["id"]}',
                 'type': product_type.key, 'title': brief.title, 'status': status,
                 'published': status == 'published', 'shopId': self.shop()['id'],
                 'salesChannel': self.shop()['sales_channel']}
        if product.get('mockups'):  # those of the create answer, until the follower's re-read
            entry.update(mockups=product['mockups'], mockupUrl=default_mockup(product),
                         mockupsFinal=False)
        return entry

    # Dry run -----------------------------------------------------------------

    def rehearse(self, shop_id, plan, artwork, product_type, brief, auto_publish):
        """The requests a real run would send, and no write at all."""
        name = artwork.path.rsplit('/', 1)[-1]
        upload = ({'file_name': name, 'url': artwork.url} if self.settings.public_url
                  else {'file_name': name, 'contents': f'<base64 of {name}>'})
        body = product_body(plan, '<upload id>', brief, product_type)
        sent = [{'method': 'POST', 'path': '/v1/uploads/images.json', 'json': upload},
                {'method': 'POST', 'path': f'/v1/shops/{shop_id}/products.json', 'json': body}]
        if auto_publish:
            sent.append({'method': 'POST', 'json': PUBLISH_FIELDS,
                         'path': f'/v1/shops/{shop_id}/products/<product id>/publish.json'})
        digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        return {'platform': 'printify', 'productId': f'dry-run-{digest}', 'dryRun': True,
                'status': 'draft',
                'type': product_type.key, 'title': brief.title, 'published': False,
                'requests': sent}


def product_body(plan, image_id, brief, product_type):
    """The create request: real variant ids, integer prices, the front print area."""
    price = minor_units(product_type.price)
    variant_ids = [v['id'] for v in plan['variants']]
    return {
        'title': brief.title, 'description': brief.description_html or brief.description,
        'tags': brief.tags, 'blueprint_id': plan['blueprint_id'],
        'print_provider_id': plan['print_provider_id'],
        'variants': [{'id': vid, 'price': price, 'is_enabled': True} for vid in variant_ids],
        'print_areas': [{'variant_ids': variant_ids, 'placeholders': [{
            'position': 'front',
            'images': [{'id': image_id, 'x': 0.5, 'y': 0.5, 'scale': 1, 'angle': 0}]}]}],
    }


def summary(product, plan):
    """What the job keeps of a created product: its id and enabled variants,
    with what a storefront listing of them needs (SKU, colour, size, weight),
    and the mockups the create answer showed."""
    options = {v['id']: v for v in plan['variants']}
    return {'id': product['id'],
            'variants': [{'id': v['id'], 'cost': v.get('cost'), 'price': v.get('price'),
                          'sku': v.get('sku'), 'grams': v.get('grams'),
                          'color': options.get(v['id'], {}).get('color'),
                          'size': options.get(v['id'], {}).get('size')}
                         for v in product.get('variants', []) if v.get('is_enabled')],
            'mockups': mockups_of(product.get('images'))}


def mockups_of(images):
    """``[{src, variantIds, isDefault}]`` of a product's ``images``, the default
    first: those selected for publishing when Printify says which, at most
    MAX_MOCKUPS."""
    images = [i for i in images or [] if isinstance(i, dict)
              and str(i.get('src') or '').startswith(('https://', 'http://'))]
    if any('is_selected_for_publishing' in i for i in images):
        images = [i for i in images if i.get('is_selected_for_publishing')] or images
    images.sort(key=lambda i: not i.get('is_default'))  # stable: Printify's order after it
    return [{'src': i['src'], 'variantIds': list(i.get('variant_ids') or []),
             'isDefault': bool(i.get('is_default'))} for i in images[:MAX_MOCKUPS]]


def default_mockup(product):
    """The default mockup's URL of a product summary (or result entry), or None."""
    mockups = (product or {}).get('mockups') or []
    return mockups[0]['src'] if mockups else None


def created_since(product, since):
    """Whether Printify's ``created_at`` is at most 10 min before ``since``
    (clocks differ); True when it cannot be read."""
    try:
        made = datetime.datetime.fromisoformat(str(product.get('created_at')))
    except ValueError:
        return True
    if made.tzinfo is None:
        made = made.replace(tzinfo=datetime.timezone.utc)
    return made.timestamp() >= since - 600
