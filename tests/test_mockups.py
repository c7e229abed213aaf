"""Printify's mockups: recorded in the result, read again once Printify has
rendered them all, and shown first on the Shopify listing the engine makes."""

import io

import requests
from PIL import Image

from test_platforms import by_platform, generate, platform_engine, state


def loopback_get(url):
    session = requests.Session()
    session.trust_env = False  # the fake is on loopback: never through a proxy
    return session.get(url, timeout=10)


def wait_final(engine, job_id, timeout=30):
    return engine.wait_for(job_id, 'completed', timeout=timeout, where=lambda job: all(
        p.get('mockupsFinal') for p in by_platform(job, 'printify')))


def test_a_printify_product_records_its_mockups_and_reads_the_final_set(engines, fakes):
    printify = fakes.start('printify', mockup_seconds=1.5)
    engine = platform_engine(engines, printify, PRINTIFY_MOCKUP_WAIT_MS=1500,
                             PRINTIFY_SYNC_POLL_MS=200)
    job_id = generate(engine)
    job = engine.wait_for(job_id, 'completed', timeout=60)
    [product] = by_platform(job, 'printify')
    # The create answer shows only the default colour's mockups (front, back).
    assert product['mockupsFinal'] is False
    first = product['mockups']
    assert [m['isDefault'] for m in first] == [True, False]
    assert product['mockupUrl'] == first[0]['src']
    assert first[0]['variantIds'] and all(isinstance(v, int) for v in first[0]['variantIds'])

    job = wait_final(engine, job_id)
    [product] = by_platform(job, 'printify')
    [made] = state(printify)['products']
    colours = {v['options'][0] for v in made['variants'] if v['is_enabled']}
    assert len(colours) > 1
    assert len(product['mockups']) == 2 * len(colours)  # a front and a back per colour
    assert product['mockups'][0]['isDefault'] and product['mockupUrl'] == first[0]['src']
    assert [m['src'] for m in product['mockups']] == [i['src'] for i in made['images']]
    assert any(f'has its final {2 * len(colours)} mockup(s)' in line['message']
               for line in job['logs'])

    picture = loopback_get(product['mockupUrl'])
    assert picture.status_code == 200 and picture.headers['Content-Type'] == 'image/jpeg'
    with Image.open(io.BytesIO(picture.content)) as image:
        assert image.format == 'JPEG' and image.width > 100
        # A mockup is the design on the garment, not a plain swatch of its colour.
        assert len(image.convert('RGB').getcolors(maxcolors=1 << 16)) > 10


def test_a_failed_re_read_keeps_the_first_mockups_with_a_warning(engines, fakes):
    printify = fakes.start('printify', mockup_seconds=30)
    engine = platform_engine(engines, printify, PRINTIFY_MOCKUP_WAIT_MS=0,
                             PRINTIFY_SYNC_POLL_MS=200, UPSTREAM_RETRY_DELAY_MS=20)
    # Set before the product exists: the follower re-reads it as soon as the
    # job completes, sooner than a test could set it afterwards.
    requests.post(f'{printify.url}/_fake/config', timeout=5, json={'fail_next': [
        {'path_contains': '/products/', 'method': 'GET', 'status': 404, 'times': 10}]})
    job_id = generate(engine)
    job = engine.wait_for(job_id, 'completed', timeout=60)
    [product] = by_platform(job, 'printify')
    job = engine.wait_for(job_id, 'completed', timeout=30, where=lambda job: any(
        'final mockups' in line['message'] for line in job['logs']))
    [after] = by_platform(job, 'printify')
    assert after['mockups'] == product['mockups'] and after['status'] == product['status']
    assert after['mockupsFinal'] is False  # still the create answer's, as it says
    [warning] = [line for line in job['logs'] if 'final mockups' in line['message']]
    assert warning['type'] == 'WARNING' and 'create answer are kept' in warning['message']


def test_the_shopify_listing_shows_the_printify_mockup_first(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify)
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    [made] = by_platform(job, 'printify')
    [listing] = by_platform(job, 'shopify')
    assert listing['mockupUrl'] == made['mockups'][0]['src']
    [record] = state(shopify)['products']
    media = record['media']
    assert [m['source'] for m in media][0] == made['mockups'][0]['src']
    assert [m['status'] for m in media] == ['READY', 'READY']
    assert (media[0]['width'], media[0]['height']) == Image.open(io.BytesIO(
        loopback_get(made['mockupUrl']).content)).size  # Shopify fetched the real picture
    assert state(shopify)['external_downloads'] == 1


def test_a_mockup_shopify_cannot_fetch_is_a_warning_not_a_failed_listing(engines, fakes):
    printify, shopify = fakes.start('printify'), fakes.start('shopify')
    engine = platform_engine(engines, printify, shopify)
    requests.post(f'{printify.url}/_fake/config', timeout=5,
                  json={'mockups_unreachable': True})
    job = engine.wait_for(generate(engine), 'completed', timeout=60)
    [listing] = by_platform(job, 'shopify')
    assert 'mockupUrl' not in listing and listing['status'] == 'published'
    [record] = state(shopify)['products']
    assert [m['status'] for m in record['media']] == ['FAILED', 'READY']
    warning = [line for line in job['logs'] if 'could not show the Printify mockup' in
               line['message']]
    assert len(warning) == 1 and warning[0]['type'] == 'WARNING'
    assert 'could not be downloaded' in warning[0]['message']
