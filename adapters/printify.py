"""Printify publisher: upload, create, price above cost, publish, follow.

Built to Printify's REST API v1 as documented and measured (there is no
sandbox): bearer token plus a User-Agent on every call, integer prices in
minor units, real variant ids from the catalogue, ``print_areas`` with the
design on the front placeholder, and a publish only when every enabled price
is above cost. Blueprints, providers and variants are resolved by brand,
model and provider name through the catalogue once and cached on disk.

Printify has no idempotency key, so every write is checkpointed in the job
before the next one starts; a create that may have happened (the engine died
waiting for its answer) is looked for upstream before it is sent again.
"""

import base64
import hashlib
import json
import logging
import math
import time

import gevent

from adapters.api import ApiClient, KeyedLocks, RateLimiter
from adapters.base import AdapterError, ConfigError, Publisher

log = logging.getLogger('podengine.printify')

PUBLISH_FIELDS = {'title': True, 'description': True, 'images': True, 'variants': True,
                  'tags': True, 'keyFeatures': True, 'shipping_template': True}
FIND_PAGES = 4  # pages of 50 products searched for one that may already exist


class PrintifyClient(ApiClient):
    """Printify's HTTP API with its three rate limits."""

    platform = 'printify'

    def __init__(self, settings, http):
        super().__init__(settings.printify_api_url.rstrip('/') + '/v1', http)
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
        spec = printify_spec(product_type)
        key = json.dumps([spec, product_type.colors, product_type.sizes])
        entries = self._load()
        if key not in entries:
            with self._resolving.hold(key):
                if key not in entries:
                    entries[key] = self._lookup(spec, product_type)
                    self._save()
        return entries[key]

    def _lookup(self, spec, product_type):
        blueprint = self._blueprint(spec)
        provider = self._provider(blueprint['id'], spec)
        listing = self.client.call(
            'GET', f'/catalog/blueprints/{blueprint["id"]}/print_providers/'
                   f'{provider["id"]}/variants.json')
        variants = pick_variants(listing.get('variants', []), product_type)
        return {'blueprint_id': blueprint['id'], 'print_provider_id': provider['id'],
                'blueprint': blueprint.get('title', ''), 'provider': provider.get('title', ''),
                'variants': variants, 'front': front_size(listing.get('variants', []),
                                                          variants)}

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
    """The catalogue variants in the type's colours and sizes, read from
    ``options`` (titles come as "Black / L" and as "L / Black")."""
    wanted_colors = {c.lower() for c in product_type.colors}
    wanted_sizes = {s.lower() for s in product_type.sizes}
    chosen = [{'id': v['id'], 'color': v['options'].get('color'),
               'size': v['options'].get('size')}
              for v in variants
              if str(v.get('options', {}).get('color', '')).lower() in wanted_colors
              and str(v.get('options', {}).get('size', '')).lower() in wanted_sizes]
    if not chosen:
        raise AdapterError(f'printify: none of the colours {product_type.colors} in sizes '
                           f'{product_type.sizes} exist for {product_type.key}',
                           adapter='printify', retryable=False)
    return chosen


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


def margin_floor(cost, percent):
    """The lowest .99 price that keeps ``percent`` over ``cost`` (minor units)."""
    floor = cost * (1 + percent / 100)
    return math.ceil((floor + 1) / 100) * 100 - 1


class PrintifyPublisher(Publisher):
    """Creates each product on the configured Printify shop."""

    name = 'printify'

    def __init__(self, settings, http=None):
        super().__init__(settings, http)
        if not settings.printify_api_token:
            raise ConfigError('ENABLED_PLATFORMS includes printify but PRINTIFY_API_TOKEN '
                              'is not set')
        self.client = PrintifyClient(settings, http)
        self.catalog = Catalog(self.client, settings.data_path / 'cache' /
                               'printify-catalog.json')
        self.dry_run = settings.dry_run
        self._shop = None
        self._once = KeyedLocks()  # steps two product types of a design share

    def describe(self):
        return 'printify (dry run)' if self.dry_run else 'printify'

    def health(self):
        try:
            self.client.call('GET', '/shops.json')
            return True
        except AdapterError:
            return False

    def print_area(self, product_type, ctx):
        return tuple(self.catalog.resolve(product_type)['front'])

    # The shop ----------------------------------------------------------------

    def shop(self):
        """``{id, sales_channel}`` of PRINTIFY_SHOP_ID, or of the only shop."""
        if self._shop is None:
            with self._once.hold('shop'):  # designs publishing at once share one lookup
                if self._shop is None:
                    self._shop = self.find_shop()
        return self._shop

    def find_shop(self):
        shops = self.client.call('GET', '/shops.json') or []
        wanted = str(self.settings.printify_shop_id or '')
        matches = [s for s in shops if str(s['id']) == wanted] if wanted else shops
        if len(matches) != 1:
            ids = ', '.join(str(s['id']) for s in shops) or 'none'
            raise AdapterError(f'printify: set PRINTIFY_SHOP_ID to one of the token\'s '
                               f'shops ({ids})', adapter='printify', retryable=False)
        return {'id': matches[0]['id'], 'sales_channel': matches[0].get('sales_channel', '')}

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
        product = self.create_once(shop_id, body, tag, ctx)
        if self.under_margin(product):  # when none is, there is nothing to do or record
            ctx.checkpoint(f'printify:priced:{tag}',
                           lambda: self.keep_margin(shop_id, product, ctx))
        external = None
        if auto_publish:
            ctx.checkpoint(f'printify:publish:{tag}',
                           lambda: self.send_publish(shop_id, product['id'], ctx))
            external = ctx.checkpoint(f'printify:external:{tag}',
                                      lambda: self.follow(shop_id, product['id'], ctx))
        return self.result(product, product_type, brief, auto_publish, external)

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

    def create_once(self, shop_id, body, tag, ctx):
        """Create the product unless this job already did, even if the engine
        died before it heard the answer."""
        done = ctx.lookup(f'printify:product:{tag}')
        if done:
            return done
        if ctx.lookup(f'printify:creating:{tag}'):
            found = self.find_created(shop_id, body)
            if found:
                ctx.log(f'printify: found product {found["id"]} made before an '
                        f'interruption; not creating it again', 'WARNING')
                return ctx.checkpoint(f'printify:product:{tag}', lambda: summary(found))
        ctx.checkpoint(f'printify:creating:{tag}', lambda: {'since': int(time.time())})
        return ctx.checkpoint(f'printify:product:{tag}', lambda: summary(self.client.call(
            'POST', f'/shops/{shop_id}/products.json', json=body)))

    def find_created(self, shop_id, body):
        image_id = body['print_areas'][0]['placeholders'][0]['images'][0]['id']
        for page in range(1, FIND_PAGES + 1):
            listing = self.client.call('GET', f'/shops/{shop_id}/products.json',
                                       params={'limit': 50, 'page': page}) or {}
            for product in listing.get('data', []):
                if product.get('title') == body['title'] and \
                        product.get('blueprint_id') == body['blueprint_id'] and \
                        image_id in json.dumps(product.get('print_areas', [])):
                    return product
            if page >= listing.get('last_page', 1):
                return None
        return None

    def under_margin(self, product):
        """The enabled variants under MIN_MARGIN_PERCENT over cost, at their floor."""
        percent = self.settings.min_margin_percent
        return [{'id': v['id'], 'price': margin_floor(v['cost'], percent), 'is_enabled': True}
                for v in product['variants']
                if v['cost'] is not None and v['price'] < margin_floor(v['cost'], percent)]

    def keep_margin(self, shop_id, product, ctx):
        """Raise every enabled price that is under MIN_MARGIN_PERCENT over cost."""
        percent = self.settings.min_margin_percent
        raised = self.under_margin(product)
        if raised:
            self.client.call('PUT', f'/shops/{shop_id}/products/{product["id"]}.json',
                             json={'variants': raised})
            top = max(raised, key=lambda v: v['price'])['price']
            ctx.log(f'printify: raised {len(raised)} variant price(s) to keep {percent}% over '
                    f'cost (up to {top / 100:.2f})', 'WARNING')
        return {'raised': len(raised)}

    def send_publish(self, shop_id, product_id, ctx):
        self.client.call('POST', f'/shops/{shop_id}/products/{product_id}/publish.json',
                         json=PUBLISH_FIELDS)
        ctx.log(f'printify: publishing product {product_id}')
        return {'at': int(time.time())}

    def follow(self, shop_id, product_id, ctx):
        """Wait until publishing settles: the lock clears and ``external`` is set.
        None when the deadline passes first (the product stays published)."""
        deadline = time.monotonic() + self.settings.printify_publish_wait_ms / 1000
        pause = 0.25
        while time.monotonic() < deadline:
            product = self.client.call('GET', f'/shops/{shop_id}/products/{product_id}.json')
            if not product.get('is_locked') and product.get('external'):
                return product['external']
            gevent.sleep(pause)
            pause = min(pause * 2, 5)
        ctx.log(f'printify: product {product_id} is still publishing; its store link will '
                f'be missing', 'WARNING')
        return None

    def result(self, product, product_type, brief, auto_publish, external):
        handle = (external or {}).get('handle', '')
        result = {'platform': 'printify', 'productId': product['id'],
                  'url': f'https://printify.com/app/products/{product["id"]}',
                  'type': product_type.key, 'title': brief.title, 'published': auto_publish,
                  'salesChannel': self.shop()['sales_channel']}
        if handle:
            result['storeUrl'] = handle if handle.startswith('http') else None
            result['external'] = external
        return result

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


def summary(product):
    """What the job keeps of a created product: its id and enabled variants."""
    return {'id': product['id'],
            'variants': [{'id': v['id'], 'cost': v.get('cost'), 'price': v.get('price')}
                         for v in product.get('variants', []) if v.get('is_enabled')]}
