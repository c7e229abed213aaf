"""Print preparation of AI art: background, trim, placement, DPI, garment colours.

Every image here is drawn by the test, antialiased as a model's output is
(drawn at 4x and reduced), on the backgrounds image models paint.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters import printready  # noqa: E402
from adapters.base import AdapterError  # noqa: E402

RED, WHITE, NAVY_INK = (200, 40, 40), (255, 255, 255), (20, 20, 160)


def subject(background, size=1024, hole=WHITE):
    """A red disc holding a white disc (the subject's own white), over a
    blue bar, on ``background`` (a colour, or an image for a gradient)."""
    big = size * 4
    if isinstance(background, Image.Image):
        image = background.resize((big, big)).convert('RGB')
    else:
        image = Image.new('RGB', (big, big), background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((1000, 800, 3120, 3200), fill=RED)
    draw.ellipse((1600, 1520, 2480, 2400), fill=hole)
    draw.rectangle((1200, 3280, 2880, 3600), fill=NAVY_INK)
    return image.reduce(4)


def at(art, image_xy, box_in_source):
    """The art's pixel at source coordinates (art is trimmed to ``box``)."""
    return art.getpixel((image_xy[0] - box_in_source[0], image_xy[1] - box_in_source[1]))


# Background -------------------------------------------------------------------

@pytest.mark.parametrize('background', [(255, 255, 255), (246, 244, 240), (0, 0, 0)])
def test_a_plain_background_is_removed_and_the_subject_trimmed(background):
    art, report = printready.cut_out(subject(background))
    assert report['decision'] == 'removed' and 0.6 < report['removed'] < 0.8
    # Trimmed to the disc and bar: 250..780 wide, 200..900 tall in the source.
    assert abs(art.width - 530) <= 4 and abs(art.height - 700) <= 4
    alpha = np.asarray(art.getchannel('A'))
    assert alpha[0, 0] == 0 and alpha[-1, -1] == 0          # corners: background
    assert at(art, (510, 490), (250, 200))[3] == 255         # the white inside is kept
    assert at(art, (510, 490), (250, 200))[:3] == WHITE
    assert at(art, (510, 300), (250, 200)) == RED + (255,)


def test_the_edge_is_soft_and_free_of_the_background_colour():
    art, _ = printready.cut_out(subject((255, 255, 255)))
    pixels = np.asarray(art).astype(int)
    edge = (pixels[..., 3] > 0) & (pixels[..., 3] < 255)
    assert edge.sum() > 500  # antialiased, not a staircase
    # On the red disc's rim, a white halo would show as green and blue well
    # above the red ink's 40; de-fringed, the rim's colour is the ink's own.
    rim = pixels[edge & (pixels[..., 0] > 150)]
    assert rim[:, 1].mean() < 80 and rim[:, 2].mean() < 80


def test_a_gradient_background_is_kept_under_auto_and_removed_when_asked():
    gradient = Image.linear_gradient('L').resize((1024, 1024))
    art, report = printready.cut_out(subject(gradient))
    assert report['decision'] == 'kept' and 'not plain' in report['reason']
    assert art.size == (1024, 1024) and art.getextrema()[3] == (255, 255)
    _, forced = printready.cut_out(subject(gradient), 'remove')
    assert forced['decision'] == 'removed' and forced['removed'] > 0


def test_an_image_with_alpha_is_left_alone_but_trimmed():
    image = Image.new('RGBA', (800, 800), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((100, 150, 700, 650), fill=(250, 250, 250, 255))
    art, report = printready.cut_out(image)
    assert report == {'decision': 'transparent', 'removed': 0.0,
                      'reason': 'the image already has transparency'}
    assert art.size == (601, 501)
    assert np.array_equal(np.asarray(art), np.asarray(image.crop((100, 150, 701, 651))))


def test_keep_keeps_and_a_flat_image_is_not_a_background():
    _, kept = printready.cut_out(subject((255, 255, 255)), 'keep')
    assert kept['decision'] == 'kept' and kept['reason'] == 'BACKGROUND=keep'
    art, flat = printready.cut_out(Image.new('RGB', (600, 600), (200, 0, 0)))
    assert flat['decision'] == 'kept' and art.size == (600, 600)
    with pytest.raises(AdapterError, match='fully transparent'):
        printready.cut_out(Image.new('RGBA', (64, 64), (0, 0, 0, 0)))


def test_a_background_reached_only_through_a_winding_path_is_removed():
    # A spiral corridor of white: the flood fill takes many turns to reach it.
    image = Image.new('RGB', (400, 400), WHITE)
    draw = ImageDraw.Draw(image)
    for k in range(0, 180, 20):
        draw.rectangle((k + 10, k + 10, 389 - k, 389 - k), outline=(0, 0, 0), width=8)
        draw.rectangle((k + 10, k + 10, k + 30, k + 20), fill=WHITE)  # a gap per ring
    art, report = printready.cut_out(image, 'remove')
    alpha = np.asarray(art.getchannel('A'))
    assert alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] == 0  # the centre, reached


# Placement and resolution -------------------------------------------------------

AREA = (4500, 5400)


def test_chest_is_top_aligned_and_centred_at_a_chest_width():
    x, y, w, h = printready.placed_box((1000, 800), AREA, 'chest')
    assert (w, h) == (3600, 2880) and x == 450 and y == 324
    tall = printready.placed_box((500, 1000), AREA, 'chest')
    assert tall[3] == 3240 and tall[1] == 324 and tall[0] == (4500 - tall[2]) // 2


def test_center_and_full():
    assert printready.placed_box((1000, 1000), AREA, 'center') == (450, 900, 3600, 3600)
    assert printready.placed_box((1000, 1000), AREA, 'full') == (0, 450, 4500, 4500)
    assert printready.placed_box((4500, 5400), AREA, 'full') == (0, 0, 4500, 5400)


def test_effective_dpi():
    assert printready.effective_dpi(1024, 4500) == 68   # 1024 px over 15 inches
    assert printready.effective_dpi(530, 3600) == 44
    assert printready.effective_dpi(4500, 4500) == 300


def test_render_print_writes_an_exact_transparent_print_file(tmp_path):
    subject((255, 255, 255)).save(tmp_path / 'design.png')
    art = printready.prepare_art(tmp_path, {'path': 'design.png', 'width': 1024,
                                            'height': 1024, 'backend': 'comfyui'}, 'auto')
    assert art['background']['decision'] == 'removed' and art['source'] == [1024, 1024]
    made = printready.render_print(tmp_path, art, AREA, 'chest')
    with Image.open(tmp_path / made['path']) as png:
        assert png.size == AREA and png.mode == 'RGBA' and round(png.info['dpi'][0]) == 300
        alpha = np.asarray(png.getchannel('A'))
    x, y, w, h = made['box']
    assert y == 324 and alpha[:y - 2].max() == 0 and alpha[y + h + 2:].max() == 0
    assert alpha[0, 0] == 0 and alpha[y + h // 3, 2250] == 255
    assert made['placement'] == 'chest' and made['effectiveDpi'] == round(300 * art['width'] / w)
    assert 0.1 < made['coverage'] < 0.5


def test_two_renders_of_one_print_file_at_once_both_finish(tmp_path):
    # A cancelled attempt's render thread runs on while its retry renders the
    # same file: each writes through a temp file of its own.
    import threading
    subject((255, 255, 255)).save(tmp_path / 'design.png')
    art = printready.prepare_art(tmp_path, {'path': 'design.png', 'width': 1024,
                                            'height': 1024, 'backend': 'comfyui'}, 'auto')
    made, failed, start = [], [], threading.Barrier(4)

    def render():
        start.wait()
        try:
            made.append(printready.render_print(tmp_path, art, AREA, 'chest'))
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            failed.append(exc)

    threads = [threading.Thread(target=render) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failed and len(made) == 4 and len({m['path'] for m in made}) == 1
    with Image.open(tmp_path / made[0]['path']) as png:
        assert png.size == AREA
    assert not [p for p in (tmp_path / made[0]['path']).parent.iterdir() if p.name.endswith('.tmp')]


def test_art_laid_out_for_print_is_kept_whole(tmp_path):
    Image.new('RGBA', AREA, (10, 200, 10, 255)).save(tmp_path / 'local.png', dpi=(300, 300))
    image = {'path': 'local.png', 'width': 4500, 'height': 5400, 'backend': 'local',
             'laid_out': True}
    art = printready.prepare_art(tmp_path, image, 'auto')
    assert art['path'] == 'local.png' and art['background']['decision'] == 'as drawn'
    same = printready.render_print(tmp_path, art, AREA, 'chest')
    assert same['path'] == 'local.png' and same['placement'] == 'as drawn'
    smaller = printready.render_print(tmp_path, art, (3852, 4398), 'chest')
    assert smaller['box'][2] == 3665 and smaller['effectiveDpi'] == 368


# Garment colours ----------------------------------------------------------------

def black_design():
    image = Image.new('RGBA', (600, 600), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 50, 550, 550), fill=(12, 12, 14, 255))
    return image


def test_a_black_design_disappears_on_black_and_navy(tmp_path):
    black_design().save(tmp_path / 'art.png')
    found = printready.check_colours(tmp_path, {'path': 'art.png'},
                                     ['Black', 'Navy', 'White', 'Heather Grey', 'Mauve'],
                                     None, 0.25)
    assert found['disabled'] == ['Black', 'Navy']
    assert found['kept'] == ['White', 'Heather Grey', 'Mauve']  # Mauve: unknown, kept
    assert found['visibility']['Black'] == 0 and found['visibility']['White'] == 1


def test_colour_visibility_weighs_the_ink():
    art, _ = printready.cut_out(subject((255, 255, 255)))
    assert printready.visibility(art, printready.fabric_rgb('Black')) > 0.9
    # The white inside and the red show on navy; the navy-ish bar does not.
    on_navy = printready.visibility(art, printready.fabric_rgb('navy'))
    assert 0.6 < on_navy < 0.95
    assert printready.fabric_rgb('Mauve', {'mauve': '#e0b0ff'}) == (224, 176, 255)


# Against the engine ---------------------------------------------------------------

def comfy_engine(engines, fake, **env):
    return engines.start(COMFYUI_URL=fake.url, COMFYUI_STEPS=4, CUSTOM_HANDLERS='testkit',
                         **env)


def logs_of(job, level=None):
    return [line['message'] for line in job['logs'] if level in (None, line['type'])]


def test_a_comfyui_design_on_white_becomes_a_transparent_chest_print(engines, fakes):
    fake = fakes.start('comfyui', picture='subject')
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(engine.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt']},
                                        path='/api/generate'), 'completed', timeout=60)
    [image] = job['result']['generatedImages']
    report = job['result']['designs'][0]['print']
    assert report == image['print']
    assert report['sourcePx'] == [1024, 1024] and report['printPx'] == [4500, 5400]
    assert report['background']['decision'] == 'removed'
    assert report['background']['color'] == '#ffffff'
    assert 0.7 < report['background']['removed'] < 0.8  # all but a 512x614 disc
    assert report['placement'] == 'chest'
    with Image.open(engine.data_dir / image['path']) as png:
        assert png.size == (4500, 5400) and png.mode == 'RGBA'
        alpha = np.asarray(png.getchannel('A'))
    rows = np.nonzero(alpha.max(axis=1))[0]
    cols = np.nonzero(alpha.max(axis=0))[0]
    assert abs(rows[0] - 324) <= 2 and rows[-1] < 5400 * 0.7   # on the chest
    assert abs((cols[0] + cols[-1]) / 2 - 2250) <= 3           # centred
    # The 512-px disc printed about 9 inches wide: 57 DPI, and said so.
    assert abs(report['effectiveDpi'] - 300 * 512 / (cols[-1] - cols[0] + 1)) < 1.5
    [warning] = report['warnings']
    assert 'under PRINT_MIN_DPI 150' in warning and warning in logs_of(job, 'WARNING')
    assert 0.1 < report['coverage'] < 0.45


def test_strict_dpi_fails_the_design_and_placement_is_asked_per_request(engines, fakes):
    fake = fakes.start('comfyui', picture='subject')
    engine = comfy_engine(engines, fake, PRINT_MIN_DPI_STRICT='true')
    job = engine.wait_for(engine.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt']},
                                        path='/api/generate'), 'failed', timeout=60)
    assert 'DPI' in job['error'] and 'PRINT_MIN_DPI_STRICT' in job['error']
    assert job['retryCount'] == 0
    lenient = comfy_engine(engines, fake, PRINT_MIN_DPI='30')
    job = lenient.wait_for(lenient.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt'],
                                           'placement': 'full'}, path='/api/generate'),
                           'completed', timeout=60)
    report = job['result']['designs'][0]['print']
    assert report['placement'] == 'full' and report['warnings'] == []
    assert 30 <= report['effectiveDpi'] < 40  # the disc's 614 px over 18 inches


def test_a_black_design_is_not_sold_on_black_or_navy(engines, fakes):
    from test_platforms import PRINTIFY_TOKEN, platform_engine, state
    printify = fakes.start('printify')
    engine = platform_engine(engines, printify, ENABLED_PLATFORMS='printify')
    inbox = engine.data_dir / 'inbox'
    inbox.mkdir(parents=True, exist_ok=True)
    black = Image.new('RGBA', (1200, 1500), (0, 0, 0, 0))
    ImageDraw.Draw(black).ellipse((100, 100, 1100, 1400), fill=(10, 10, 12, 255))
    black.save(inbox / 'black.png')
    job = engine.wait_for(engine.submit({'type': 'custom', 'request': {
        'handler': 'publish_image', 'image': 'black.png', 'productTypes': ['tshirt'],
        'title': 'Black Disc Tee'}}), 'completed', timeout=60)
    report = job['result']['designs'][0]['print']
    assert report['disabledColours'] == {'tshirt': ['Black', 'Navy']}
    assert any('tshirt in Black, Navy disabled' in line for line in logs_of(job))
    [made] = state(printify)['products']
    colours = {v['options'][0] for v in made['variants'] if v['is_enabled']}
    assert colours and not colours & {'Black', 'Navy'}



def fake_requests(fake, method, path):
    log = requests.get(fake.url + '/_fake/requests', timeout=5).json()
    return [r for r in log if r['method'] == method and r['path'] == path]


def prompt_classes(request):
    return sorted(node['class_type'] for node in request['json']['prompt'].values())


@pytest.mark.parametrize('model, dpi, warned', [('4x-UltraSharp.pth', (200, 240), False),
                                                ('RealESRGAN_x2.pth', (100, 125), True)])
def test_art_under_the_dpi_floor_is_upscaled_on_comfyui(engines, fakes, model, dpi, warned):
    fake = fakes.start('comfyui', picture='subject')
    engine = comfy_engine(engines, fake, COMFYUI_UPSCALE_MODEL=model)
    job = engine.wait_for(engine.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt']},
                                        path='/api/generate'), 'completed', timeout=60)
    report = job['result']['designs'][0]['print']
    assert report['upscaledBy'] == model
    assert dpi[0] <= report['effectiveDpi'] <= dpi[1]   # 57 DPI before, times the scale
    assert len(fake_requests(fake, 'POST', '/upload/image')) == 1
    prompts = fake_requests(fake, 'POST', '/prompt')
    assert prompt_classes(prompts[-1]) == ['ImageUpscaleWithModel', 'LoadImage', 'SaveImage',
                                           'UpscaleModelLoader']
    if warned:
        [warning] = report['warnings']
        assert f'after {model}, upscaled with Lanczos' in warning
    else:
        assert report['warnings'] == []
    with Image.open(engine.data_dir / job['result']['generatedImages'][0]['path']) as png:
        assert png.size == (4500, 5400) and png.mode == 'RGBA'
        corner = png.getpixel((10, 10))
    assert corner[3] == 0  # the background stays removed on the enlarged art
