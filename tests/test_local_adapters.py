"""Tests for the built-in local backends: LocalImageBackend and LocalPublisher.

Both are driven directly through a small stand-in for the job context, so no
engine, server or network is involved.
"""

import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

# Let the file run from any directory without a conftest.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.base import AdapterError, Artwork, DesignBrief, ImageSpec, ProductType  # noqa: E402
from adapters.local import (  # noqa: E402
    LocalImageBackend, LocalPublisher, garment_rgb, title_words,
)

SMALL = {'width': 900, 'height': 1080}


class Ctx:
    """Just the parts of podengine.JobContext the local adapters use."""

    def __init__(self, data_dir, job_id='job1'):
        self.job_id = job_id
        self.data_dir = Path(data_dir)
        self.job_dir = self.data_dir / 'jobs' / job_id
        self.cancelled = False
        self.logs = []

    def log(self, message, level='INFO'):
        self.logs.append((level, message))

    def progress(self, percent):
        pass

    def file_url(self, path):
        return 'http://127.0.0.1:9/files/' + path

    def run_in_thread(self, fn, *args):
        return fn(*args)


def generate(tmp_path, prompt, seed=0, job_id='job1', **spec):
    """Generate with a fresh context; return (image files, context)."""
    ctx = Ctx(tmp_path, job_id)
    files = LocalImageBackend({}).generate(
        ImageSpec(prompt=prompt, seed=seed, **{**SMALL, **spec}), ctx)
    return files, ctx


def open_rgba(ctx, image_file):
    with Image.open(ctx.data_dir / image_file.path) as image:
        return image.convert('RGBA')


def file_bytes(ctx, image_file):
    return (ctx.data_dir / image_file.path).read_bytes()


def changed_fraction(a, b):
    """Share of pixels that differ between two same-size RGBA images."""
    diff = ImageChops.difference(a, b).convert('L').point(lambda v: 255 if v else 0)
    return ImageStat.Stat(diff).mean[0] / 255


def mean_over_opaque(image):
    """Mean (R, G, B) over pixels that are not transparent."""
    return ImageStat.Stat(image.convert('RGB'), mask=image.getchannel('A')).mean


###############################################################################
# LocalImageBackend ###########################################################
###############################################################################

def test_design_is_transparent_300dpi_png_of_spec_size(tmp_path):
    files, ctx = generate(tmp_path, 'Retro ocean waves surf club', seed=5)
    [image_file] = files
    assert image_file.path == 'jobs/job1/design_0.png'
    assert (image_file.backend, image_file.seed) == ('local', 5)
    assert (image_file.width, image_file.height) == (900, 1080)
    with Image.open(ctx.data_dir / image_file.path) as image:
        assert (image.format, image.mode, image.size) == ('PNG', 'RGBA', (900, 1080))
        assert image.info['dpi'] == pytest.approx((300, 300), abs=0.01)
    assert len(ctx.logs) == 1


def test_full_print_size(tmp_path):
    [image_file], ctx = generate(tmp_path, 'Majestic mountain landscape', width=4500,
                                 height=5400)
    with Image.open(ctx.data_dir / image_file.path) as image:
        assert (image.mode, image.size) == ('RGBA', (4500, 5400))
        assert image.info['dpi'] == pytest.approx((300, 300), abs=0.01)


def test_same_prompt_and_seed_give_identical_bytes(tmp_path):
    a, ctx_a = generate(tmp_path / 'a', 'A futuristic cityscape at sunset', seed=42)
    b, ctx_b = generate(tmp_path / 'b', 'A futuristic cityscape at sunset', seed=42)
    assert file_bytes(ctx_a, a[0]) == file_bytes(ctx_b, b[0])


def test_different_seeds_give_visibly_different_images(tmp_path):
    a, ctx_a = generate(tmp_path / 'a', 'A futuristic cityscape at sunset', seed=1)
    b, ctx_b = generate(tmp_path / 'b', 'A futuristic cityscape at sunset', seed=2)
    assert changed_fraction(open_rgba(ctx_a, a[0]), open_rgba(ctx_b, b[0])) > .05


def test_different_prompts_give_different_images(tmp_path):
    a, ctx_a = generate(tmp_path / 'a', 'Galaxy astronaut adventure', seed=3)
    b, ctx_b = generate(tmp_path / 'b', 'Good vibes only', seed=3)
    assert changed_fraction(open_rgba(ctx_a, a[0]), open_rgba(ctx_b, b[0])) > .1


def test_palette_follows_prompt_keywords(tmp_path):
    ocean, ctx_o = generate(tmp_path / 'o', 'Calm ocean at dawn', seed=9)
    sunset, ctx_s = generate(tmp_path / 's', 'Blazing sunset over the hills', seed=9)
    r_o, _, b_o = mean_over_opaque(open_rgba(ctx_o, ocean[0]))
    r_s, _, b_s = mean_over_opaque(open_rgba(ctx_s, sunset[0]))
    assert b_o - r_o > 30       # ocean is blue-dominant
    assert r_s - b_s > -10      # sunset is warm, not blue
    assert (b_o - r_o) - (b_s - r_s) > 40


def test_design_is_mostly_background_with_substantial_art(tmp_path):
    [image_file], ctx = generate(tmp_path, 'Majestic mountain landscape')
    alpha = open_rgba(ctx, image_file).getchannel('A')
    histogram = alpha.histogram()
    total = alpha.width * alpha.height
    transparent, opaque = histogram[0] / total, histogram[255] / total
    assert .3 < transparent < .8
    assert opaque > .2
    # The art is a real composition, not a flat blob of one colour.
    colours = open_rgba(ctx, image_file).convert('RGB').getcolors(maxcolors=1 << 20)
    assert len(colours) > 50


def test_count_gives_distinct_files_with_consecutive_seeds(tmp_path):
    files, ctx = generate(tmp_path, 'Good vibes only', seed=10, count=3,
                          filename_prefix='tee')
    assert [f.path for f in files] == [f'jobs/job1/tee_{i}.png' for i in range(3)]
    assert [f.seed for f in files] == [10, 11, 12]
    assert len({file_bytes(ctx, f) for f in files}) == 3
    assert sorted(p.name for p in ctx.job_dir.iterdir()) == ['tee_0.png', 'tee_1.png', 'tee_2.png']


def test_cancelled_job_draws_nothing(tmp_path):
    ctx = Ctx(tmp_path)
    ctx.cancelled = True
    assert LocalImageBackend({}).generate(ImageSpec(prompt='x', count=2, **SMALL), ctx) == []
    assert not ctx.job_dir.exists() or not any(ctx.job_dir.iterdir())


def test_rendering_goes_through_run_in_thread(tmp_path):
    ctx = Ctx(tmp_path)
    calls = []
    ctx.run_in_thread = lambda fn, *args: calls.append(fn) or fn(*args)
    LocalImageBackend({}).generate(ImageSpec(prompt='x', count=2, **SMALL), ctx)
    assert len(calls) == 2


def test_title_keeps_key_words_only():
    assert title_words('A futuristic cityscape at sunset, t-shirt design, vector') == [
        'FUTURISTIC', 'CITYSCAPE', 'SUNSET']
    assert title_words('Café night') == ['CAFE', 'NIGHT']


###############################################################################
# LocalPublisher ##############################################################
###############################################################################

TSHIRT = ProductType(key='tshirt', name='Classic Tee', price=24.99,
                     sizes=['S', 'M', 'L', 'XL'], colors=['Black', 'White', 'Navy'])
HOODIE = ProductType(key='hoodie', name='Pullover Hoodie', price=44.0,
                     sizes=['M', 'L'], colors=['Heather Grey'])
BRIEF = DesignBrief(image_prompt='ocean', title='Surf Club Tee',
                    description='Waves & sun.', tags=['surf', 'retro'])


@pytest.fixture(scope='module')
def design_dir(tmp_path_factory):
    """A data dir holding one small generated design, shared by the tests."""
    root = tmp_path_factory.mktemp('data')
    generate(root, 'Retro ocean waves surf club', seed=1)
    return root


@pytest.fixture
def publish_ctx(design_dir, tmp_path):
    data = tmp_path / 'data'
    (data / 'jobs' / 'job1').mkdir(parents=True)
    source = design_dir / 'jobs' / 'job1' / 'design_0.png'
    (data / 'jobs' / 'job1' / 'design_0.png').write_bytes(source.read_bytes())
    return Ctx(data)


def artwork(key='design_0', path='jobs/job1/design_0.png'):
    return Artwork(key=key, path=path, url='http://127.0.0.1:9/files/' + path,
                   width=900, height=1080)


def publish(ctx, product_type=TSHIRT, art=None, auto_publish=True):
    return LocalPublisher({}).publish(art or artwork(), product_type, BRIEF, ctx,
                                      auto_publish=auto_publish)


def test_publish_writes_product_json_and_mockup(publish_ctx):
    result = publish(publish_ctx, auto_publish=False)
    folder = publish_ctx.data_dir / 'products' / result['productId']
    product = json.loads((folder / 'product.json').read_text())
    assert result == {
        'platform': 'local', 'productId': product['productId'],
        'url': f"http://127.0.0.1:9/files/products/{product['productId']}/product.json",
        'mockupUrl': f"http://127.0.0.1:9/files/products/{product['productId']}/mockup.png",
        'mockupPath': f"products/{product['productId']}/mockup.png",
        'type': 'tshirt', 'title': 'Surf Club Tee', 'published': False,
        'status': 'draft',
    }
    assert result['productId'].startswith('local_') and len(result['productId']) == 18
    assert product['platform'] == 'local' and product['type'] == 'tshirt'
    assert product['typeName'] == 'Classic Tee' and product['title'] == 'Surf Club Tee'
    assert product['tags'] == ['surf', 'retro'] and product['price'] == 24.99
    assert product['descriptionHtml'] == '<p>Waves &amp; sun.</p>'
    assert product['design'] == 'jobs/job1/design_0.png'
    assert product['designUrl'] == 'http://127.0.0.1:9/files/jobs/job1/design_0.png'
    assert product['mockup'] == 'mockup.png' and product['published'] is False
    assert product['jobId'] == 'job1' and product['createdAt'] > 1_600_000_000_000
    assert len(product['variants']) == 4 * 3
    assert {(v['size'], v['color']) for v in product['variants']} == {
        (s, c) for s in TSHIRT.sizes for c in TSHIRT.colors}
    assert all(v['price'] == 24.99 for v in product['variants'])
    with Image.open(folder / 'mockup.png') as mockup:
        assert (mockup.mode, mockup.size) == ('RGB', (1000, 1200))
    assert not [p for p in folder.iterdir() if p.name.endswith('.tmp')]


def test_publish_twice_returns_same_product_without_rewriting(publish_ctx):
    first = publish(publish_ctx)
    folder = publish_ctx.data_dir / 'products' / first['productId']
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = publish(publish_ctx)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert len(list((publish_ctx.data_dir / 'products').iterdir())) == 1


def test_product_id_depends_on_job_artwork_and_type(publish_ctx):
    ids = {publish(publish_ctx)['productId'],
           publish(publish_ctx, HOODIE)['productId'],
           publish(publish_ctx, art=artwork(key='design_1'))['productId']}
    other_job = Ctx(publish_ctx.data_dir, job_id='job2')
    ids.add(publish(other_job)['productId'])
    assert len(ids) == 4


def test_mockup_shows_garment_colour_and_design(publish_ctx):
    def mockup(product_type, key):
        # A distinct artwork key per colour: same job+key+type is one product.
        result = publish(publish_ctx, product_type, art=artwork(key=key))
        path = publish_ctx.data_dir / 'products' / result['productId'] / 'mockup.png'
        with Image.open(path) as image:
            return image.convert('RGB')

    black = mockup(TSHIRT, 'black')
    white = mockup(ProductType(key='tshirt', name='Tee', price=20, sizes=['M'],
                               colors=['White']), 'white')
    assert sum(black.getpixel((500, 900))) < 150       # below the print: fabric
    assert sum(white.getpixel((500, 900))) > 600
    assert sum(black.getpixel((500, 40))) > 600         # light background
    # The design sits on the chest, so that area differs from plain fabric.
    chest = ImageStat.Stat(black.crop((360, 330, 640, 660))).stddev
    assert max(chest) > 20


def test_hoodie_and_tshirt_mockups_differ(publish_ctx):
    grey_tee = ProductType(key='tshirt', name='Tee', price=20, sizes=['M'],
                           colors=['Heather Grey'])
    paths = []
    for product_type in (grey_tee, HOODIE):
        result = publish(publish_ctx, product_type)
        paths.append(publish_ctx.data_dir / 'products' / result['productId'] / 'mockup.png')
    tee, hoodie = (Image.open(p).convert('RGBA') for p in paths)
    assert changed_fraction(tee, hoodie) > .05


def test_colour_names_map_to_rgb():
    assert garment_rgb('Black') != garment_rgb('White')
    assert garment_rgb('heather-grey') == garment_rgb('Heather Grey')
    assert garment_rgb('Unobtainium Teal') == garment_rgb(None) == (160, 160, 160)


def test_missing_design_is_not_retryable(publish_ctx):
    with pytest.raises(AdapterError) as info:
        publish(publish_ctx, art=artwork(path='jobs/job1/nope.png'))
    assert info.value.retryable is False
    assert not (publish_ctx.data_dir / 'products').exists() or not any(
        (publish_ctx.data_dir / 'products').rglob('product.json'))


def test_unreadable_design_is_not_retryable(publish_ctx):
    (publish_ctx.data_dir / 'jobs' / 'job1' / 'junk.png').write_bytes(b'not a png')
    with pytest.raises(AdapterError) as info:
        publish(publish_ctx, art=artwork(path='jobs/job1/junk.png'))
    assert info.value.retryable is False


def test_write_failure_is_retryable(publish_ctx):
    (publish_ctx.data_dir / 'products').write_text('a file where a folder should be')
    with pytest.raises(AdapterError) as info:
        publish(publish_ctx)
    assert info.value.retryable is True


def test_design_write_failure_is_retryable(tmp_path):
    ctx = Ctx(tmp_path)
    ctx.data_dir.mkdir(exist_ok=True)
    (ctx.data_dir / 'jobs').write_text('not a folder')
    with pytest.raises(AdapterError) as info:
        LocalImageBackend({}).generate(ImageSpec(prompt='x', **SMALL), ctx)
    assert info.value.retryable is True
