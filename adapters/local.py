"""Zero-config built-in backends: designs drawn with Pillow, products on disk.

``LocalImageBackend`` turns a prompt into a print-ready retro badge graphic: a
transparent 300 dpi PNG whose palette and scene follow keywords in the prompt
(``ocean`` draws blue waves, ``city`` a skyline, ``mountain`` peaks, ...)
around a striped sun, with the prompt's key words set as a bold title. The
same prompt and seed always give the same bytes.

``LocalPublisher`` "publishes" a design by writing ``product.json`` and a
garment ``mockup.png`` under ``DATA_DIR/products/<productId>/``.

Neither needs a network, a GPU or a system font, so a fresh install can run a
whole job end to end.
"""

import colorsys
import hashlib
import html
import itertools
import json
import math
import random
import re
import time
import unicodedata
from functools import lru_cache
from typing import NamedTuple

from PIL import Image, ImageChops, ImageColor, ImageDraw, ImageFilter, ImageFont

from .base import AdapterError, ImageBackend, ImageFile, Publisher, write_atomic

__all__ = ['LocalImageBackend', 'LocalPublisher']

DPI = (300, 300)
# Speed over size: level 3 saves a 4500x5400 design in ~0.45 s; level 6 takes
# ~0.65 s for a file ~35% smaller, level 9 ~1.5 s.
PNG_LEVEL = 3
SMOOTH_BELOW = 2400   # px; smaller designs are drawn at 2x, see render_design


###############################################################################
# Palettes and keywords #######################################################
###############################################################################

class Palette(NamedTuple):
    """The colours of one design, as '#rrggbb' strings."""
    sky: tuple    # emblem background, top to bottom
    sun: tuple    # central sun or planet, top to bottom
    land: tuple   # scene layers, back to front
    ink: str      # frame, outlines, title shadow
    text: str     # title fill
    glow: str     # small lights: windows, stars, foam, snow
    grid: bool = False   # a synthwave grid instead of a plain ground


PALETTES = {
    'warm': Palette(('#3b1c5a', '#8e2c73', '#f0606b'), ('#ffe66d', '#ff9f43', '#ff5e78'),
                    ('#a3386c', '#6a2c70', '#2b0f3a'), '#1e0b2b', '#ff9f43', '#ffe66d'),
    'ocean': Palette(('#0f3057', '#1a6c9c', '#7cc6de'), ('#fff6d5', '#ffd8a8'),
                     ('#2ec4b6', '#1b7fa6', '#0b4f6c'), '#08243d', '#2ec4b6', '#e0fbfc'),
    'forest': Palette(('#1f4e5f', '#4f8a8b', '#c9e4ca'), ('#fbeec1', '#f6c26b'),
                      ('#7a9e7e', '#3d6b4f', '#1f3d2b'), '#14251b', '#e9a03b', '#fbeec1'),
    'neon': Palette(('#0b0536', '#2a0c5c', '#7a1d8c'), ('#fff04d', '#ff8a3d', '#ff2e97'),
                    ('#3b1b7a', '#1f0f4f', '#0d0628'), '#07031c', '#ff2bd6', '#00f0ff', True),
    'ice': Palette(('#16325c', '#3e7cb1', '#cdeafe'), ('#ffffff', '#bde0fe'),
                   ('#a2d2ff', '#5c8fc9', '#22406e'), '#0e1f3d', '#8ecae6', '#ffffff'),
    'bloom': Palette(('#5e2a6e', '#c04d8c', '#ffb3c6'), ('#fff3b0', '#ffc8dd'),
                     ('#f28aab', '#b5477a', '#4f1d4a'), '#2e0f2c', '#ff8fab', '#fff3f7'),
    'desert': Palette(('#6b2d1f', '#e76f51', '#f6d8ae'), ('#fff1c1', '#ffd166'),
                      ('#d98c5f', '#b3593b', '#5a2418'), '#33150e', '#f4a259', '#fff1c1'),
    'spooky': Palette(('#120d1f', '#3c1f5c', '#8a3f9e'), ('#ffd27a', '#ff7b00'),
                      ('#4a2a66', '#2a163d', '#0c0814'), '#07040c', '#ff7b00', '#c6ff5e', True),
}

PALETTE_WORDS = {
    'warm': 'sunset sunrise fire flame heat summer tropical warm lava dragon phoenix',
    'ocean': 'ocean sea wave surf beach tide sail water lake river island whale shark',
    'forest': 'forest nature mountain hike hiking camp camping tree wood woods outdoor '
              'adventure wilderness wild trail earth landscape',
    'neon': 'night space cyber cyberpunk futuristic neon synthwave retrowave galaxy '
            'cosmic star moon planet robot tech astronaut universe',
    'ice': 'ice winter snow frost frozen arctic cold polar glacier',
    'bloom': 'flower floral bloom love heart spring valentine cute pastel rose garden',
    'desert': 'desert cactus western cowboy sand canyon dune rodeo',
    'spooky': 'halloween spooky ghost pumpkin witch skull zombie haunted',
}

SCENE_WORDS = {
    'skyline': 'city cityscape skyline urban town downtown building metropolis street',
    'peaks': 'mountain peak alpine summit hike hiking camp camping forest trail '
             'wilderness landscape adventure outdoor snow snowy winter ski cabin '
             'nature tree pine fern leaf woods wild',
    'waves': 'ocean sea wave surf beach tide sail water lake island',
    'space': 'space star galaxy planet cosmic astronaut moon universe rocket alien',
}

# Words that describe the picture's medium rather than its subject; a title
# made of them ("VECTOR T-SHIRT DESIGN") would say nothing.
STOPWORDS = set('''
a an the of in on at with and or for to by from into over under as is are
featuring design designs t shirt tshirt tee style styled vector illustration
art artwork graphic print printable background transparent isolated high
quality detailed detail colors colours colorful colourful bold clean lines
centered composition 4k 8k hd digital flat dpi png no text
'''.split())


def _words(text):
    """Lower-case words of ``text``, in order."""
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower())


def _pick(table, words):
    """The key of ``table`` whose keywords the prompt mentions most; ties go
    to the one mentioned first. None when nothing matches."""
    best = None
    for key, keywords in table.items():
        hits = [i for i, w in enumerate(words) if _matches(w, keywords.split())]
        if hits and (best is None or (len(hits), -hits[0]) > best[0]):
            best = ((len(hits), -hits[0]), key)
    return best and best[1]


def _matches(word, keywords):
    # Accept simple plurals: 'waves', 'mountains', 'beaches'.
    stems = {word, word.removesuffix('s'), word.removesuffix('es')}
    return not stems.isdisjoint(keywords)


def _hex(h, s, v):
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return '#%02x%02x%02x' % (round(r * 255), round(g * 255), round(b * 255))


def _hash_palette(prompt):
    """A palette built around one hue taken from the prompt's hash, with a
    complementary sun and title so it still reads as designed."""
    h = int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return Palette(
        (_hex(h, .6, .3), _hex(h + .04, .5, .55), _hex(h + .08, .3, .85)),
        (_hex(h + .5, .15, 1), _hex(h + .45, .55, .98)),
        (_hex(h, .35, .6), _hex(h, .5, .38), _hex(h, .65, .18)),
        _hex(h, .6, .1), _hex(h + .5, .65, .98), _hex(h + .5, .1, 1))


def choose_palette(prompt, rng):
    """The prompt's palette, with the title colour varied by the seed."""
    name = _pick(PALETTE_WORDS, _words(prompt))
    palette = PALETTES[name] if name else _hash_palette(prompt)
    return palette._replace(text=rng.choice((palette.text, palette.sun[-1])))


def title_words(prompt, limit=5):
    """The prompt's key words: its first clause without medium/filler words."""
    clause = re.split(r'[,.;:!?\n]', prompt, maxsplit=1)[0]
    words = [w for w in _words(clause) if w not in STOPWORDS]
    if not words:
        words = [w for w in _words(prompt) if w not in STOPWORDS]
    words = [_ascii(w).upper() for w in words]
    return [w for w in words if w][:limit]


def _ascii(word):
    # The bundled font has no accents or CJK: fold 'café' to 'cafe' and drop
    # what cannot be drawn rather than print boxes.
    return unicodedata.normalize('NFKD', word).encode('ascii', 'ignore').decode()


###############################################################################
# Drawing helpers #############################################################
###############################################################################

def _rgb(color):
    return ImageColor.getrgb(color)[:3]


def _mix(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _stop_color(stops, t):
    """The colour at ``t`` (0..1) along evenly spaced colour ``stops``."""
    if len(stops) == 1:
        return stops[0]
    pos = t * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    return _mix(stops[i], stops[i + 1], pos - i)


def gradient(size, colors):
    """An RGBA vertical gradient through ``colors``, top to bottom."""
    stops = [_rgb(c) for c in colors]
    strip = Image.new('RGBA', (1, 256))
    strip.putdata([_stop_color(stops, y / 255) + (255,) for y in range(256)])
    return strip.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.BILINEAR)


def shape_mask(size, shape, inset=0):
    """An L mask of a badge ``shape`` ('circle' or 'arch') in a square of
    ``size``, shrunk by ``inset`` pixels on every side.

    Drawn at half size and scaled up: the bilinear scaling softens the edge
    into anti-aliasing, which ImageDraw does not do itself."""
    half = max(1, size // 2)
    mask = Image.new('L', (half, half), 0)
    box = [inset / 2, inset / 2, half - 1 - inset / 2, half - 1 - inset / 2]
    draw = ImageDraw.Draw(mask)
    if shape == 'arch':
        draw.polygon(_arch(box), fill=255)
    else:
        draw.ellipse(box, fill=255)
    return mask.resize((size, size), Image.Resampling.BILINEAR)


def _arch(box):
    """Polygon of a round-topped badge with rounded bottom corners: one
    outline, so no seams where a semicircle would meet a rectangle."""
    x0, y0, x1, y1 = box
    r, c = (x1 - x0) / 2, (x1 - x0) * .09
    top = [(x0 + r - r * math.cos(a), y0 + r - r * math.sin(a)) for a in _angles(0, 180)]
    right = [(x1 - c + c * math.cos(a), y1 - c + c * math.sin(a)) for a in _angles(0, 90)]
    left = [(x0 + c + c * math.cos(a), y1 - c + c * math.sin(a)) for a in _angles(90, 180)]
    return top + right + left


def _angles(start, stop, steps=48):
    return [math.radians(start + (stop - start) * k / steps) for k in range(steps + 1)]


def paste_gradient(layer, box, colors, mask):
    """Fill ``mask`` (an L image the size of ``box``) with a gradient."""
    x0, y0 = int(box[0]), int(box[1])
    layer.paste(gradient(mask.size, colors), (x0, y0), mask)


###############################################################################
# Scenes: what stands in front of the sun #####################################
###############################################################################

def draw_sun(layer, rng, palette, center, radius, stripes=True):
    """A disc with a top-to-bottom gradient; retro gaps cut across its lower
    half so the sky shows through."""
    size = int(2 * radius)
    mask = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse([0, 0, size - 1, size - 1], fill=255)
    if stripes:
        _cut_stripes(draw, size, rng.randint(4, 6))
    paste_gradient(layer, (center[0] - radius, center[1] - radius), palette.sun, mask)


def _cut_stripes(draw, size, count):
    # Gaps grow toward the bottom, like a sun sinking into the horizon.
    top, step = size * .52, size * .48 / count
    for k in range(count):
        gap = step * (.2 + .55 * k / max(1, count - 1))
        y = top + k * step
        draw.rectangle([0, y, size, y + gap], fill=0)


def scene_skyline(layer, rng, palette, d):
    """Two rows of buildings with lit windows on a ground or neon grid."""
    draw = ImageDraw.Draw(layer)
    base = d * .74
    draw_sun(layer, rng, palette, (d / 2, base - d * .12), d * .3)
    _buildings(draw, rng, d, base, d * .42, palette.land[0], None)
    _buildings(draw, rng, d, base, d * .28, palette.land[2], palette.glow)
    _ground(layer, rng, palette, d, base)


def _buildings(draw, rng, d, base, tallest, color, windows):
    x = -rng.uniform(0, d * .05)
    while x < d:
        w = rng.uniform(.05, .1) * d
        h = rng.uniform(.25, 1) * tallest
        draw.rectangle([x, base - h, x + w, base], fill=color)
        _roof(draw, rng, x, w, base - h, color)
        if windows:
            _windows(draw, rng, (x, base - h, x + w, base), d, windows)
        x += w + rng.uniform(0, .012) * d


def _roof(draw, rng, x, w, top, color):
    kind = rng.random()
    if kind < .25:   # spire
        draw.polygon([(x + w * .3, top), (x + w / 2, top - w * .9), (x + w * .7, top)], fill=color)
    elif kind < .45:  # antenna
        draw.rectangle([x + w * .46, top - w * .8, x + w * .54, top], fill=color)
    elif kind < .6:  # stepped top
        draw.rectangle([x + w * .2, top - w * .3, x + w * .8, top], fill=color)


def _windows(draw, rng, box, d, color):
    cell = d * .018
    for col in range(int((box[2] - box[0] - cell) // (cell * 1.6))):
        for row in range(int((box[3] - box[1] - cell) // (cell * 1.8))):
            if rng.random() < .35:
                x = box[0] + cell * (.8 + col * 1.6)
                y = box[1] + cell * (1 + row * 1.8)
                draw.rectangle([x, y, x + cell * .7, y + cell * .9], fill=color)


def _ground(layer, rng, palette, d, base):
    draw = ImageDraw.Draw(layer)
    draw.rectangle([0, base, d, d], fill=palette.ink)
    if palette.grid or rng.random() < .3:
        _neon_grid(draw, d, base, palette.glow)
    else:
        _reflections(draw, rng, d, base, palette.sun[-1])


def _neon_grid(draw, d, base, color):
    # A synthwave floor: lines fanning from a vanishing point on the horizon,
    # crossed by rows that bunch up toward it.
    width = max(1, round(d / 250))
    for k in range(-8, 9):
        draw.line([(d / 2 + k * d * .02, base), (d / 2 + k * d * .16, d)], fill=color, width=width)
    for k in range(1, 8):
        y = base + (d - base) * (k / 7) ** 1.8
        draw.line([(0, y), (d, y)], fill=color, width=width)


def _reflections(draw, rng, d, base, color, x=None):
    x = d / 2 if x is None else x
    for k in range(6):
        y = base + (k + 1) * d * .03
        half = d * (.2 - k * .025) * rng.uniform(.8, 1.1)
        draw.rectangle([x - half, y, x + half, y + d * .008], fill=color)


def scene_peaks(layer, rng, palette, d):
    """Three mountain ranges, snow on the back one, pines in front."""
    draw = ImageDraw.Draw(layer)
    draw_sun(layer, rng, palette, (d * rng.uniform(.4, .6), d * .42), d * .24)
    back = _range(rng, d, d * .36, d * .55, 3)
    draw.polygon(back, fill=palette.land[0])
    _snow(draw, back, palette.glow)
    draw.polygon(_range(rng, d, d * .55, d * .7, 4), fill=palette.land[1])
    draw.polygon(_range(rng, d, d * .72, d * .8, 5), fill=palette.land[2])
    _pines(draw, rng, d, palette.ink)


def _range(rng, d, top, bottom, peaks):
    """A mountain-range polygon: alternating peaks and valleys."""
    points = [(-d * .05, bottom)]
    step = d * 1.1 / (2 * peaks)
    for k in range(2 * peaks + 1):
        y = rng.uniform(top, top + (bottom - top) * .3) if k % 2 else rng.uniform(
            top + (bottom - top) * .6, bottom)
        points.append((-d * .05 + k * step + rng.uniform(-.2, .2) * step, y))
    return points + [(d * 1.05, bottom), (d * 1.05, d), (-d * .05, d)]


def _snow(draw, points, color):
    # A jagged cap over the top quarter of each peak (odd points are peaks).
    for k in range(2, len(points) - 4, 2):
        (lx, ly), (px, py), (rx, ry) = points[k - 1], points[k], points[k + 1]
        f = .28
        left = (px + (lx - px) * f, py + (ly - py) * f)
        right = (px + (rx - px) * f, py + (ry - py) * f)
        mid = (px, py + (max(ly, ry) - py) * f * .6)
        draw.polygon([(px, py), right, (px + (right[0] - px) * .4, mid[1]),
                      mid, (px + (left[0] - px) * .4, mid[1] + (ly - py) * .03), left],
                     fill=color)


def _pines(draw, rng, d, color):
    count = rng.randint(6, 10)
    for k in range(count):
        # Spread evenly, jittered, so the trees never bunch up on one side.
        x, h = d * (k + rng.uniform(.2, .8)) / count, rng.uniform(.1, .2) * d
        foot = d * rng.uniform(.86, .92)
        for tier in range(3):
            top = foot - h + tier * h * .25
            half = h * (.16 + tier * .07)
            base = top + h * .4
            draw.polygon([(x, top), (x - half, base), (x + half, base)], fill=color)
        draw.rectangle([x - h * .02, foot - h * .2, x + h * .02, foot], fill=color)


def scene_waves(layer, rng, palette, d):
    """A sun over the sea, its reflection, and rolling bands of waves."""
    draw = ImageDraw.Draw(layer)
    horizon, sun_x = d * rng.uniform(.52, .6), d * rng.uniform(.38, .62)
    draw_sun(layer, rng, palette, (sun_x, horizon - d * .04), d * rng.uniform(.2, .28))
    draw.rectangle([0, horizon, d, d], fill=palette.land[0])
    _reflections(draw, rng, d, horizon - d * .02, palette.glow, sun_x)
    _gulls(draw, rng, d, palette.ink)
    bands = rng.choice((2, 3))
    for k, color in enumerate((palette.land[1], palette.land[2], palette.ink)[:bands]):
        y = horizon + (d * .86 - horizon) * (k + 1) / (bands + .4)
        _wave_band(draw, rng, d, y, color, palette.glow)


def _gulls(draw, rng, d, color):
    for _ in range(rng.randint(0, 4)):
        x, y, s = d * rng.uniform(.2, .8), d * rng.uniform(.12, .3), d * rng.uniform(.025, .045)
        width = max(1, round(s / 5))
        draw.arc([x - s, y - s / 3, x, y + s / 3], 200, 340, fill=color, width=width)
        draw.arc([x, y - s / 3, x + s, y + s / 3], 200, 340, fill=color, width=width)


def _wave_band(draw, rng, d, y, color, foam):
    amp, length = d * rng.uniform(.025, .04), d * rng.uniform(.3, .42)
    phase = rng.uniform(0, 2 * math.pi)
    crest = [(x, y + amp * _swell(2 * math.pi * x / length + phase))
             for x in range(-10, int(d) + 20, max(2, int(d) // 200))]
    draw.polygon(crest + [(d + 20, d), (-10, d)], fill=color)
    draw.line(crest, fill=foam, width=max(1, round(d / 110)), joint='curve')


def _swell(a):
    # Sharp crests (at sin = 0, pointing up) and round troughs, like a swell.
    return abs(math.sin(a / 2)) * 2 - 1


def scene_space(layer, rng, palette, d):
    """A starfield, a ringed planet and a small moon over a dark surface."""
    draw = ImageDraw.Draw(layer)
    _stars(draw, rng, d, palette.glow)
    _planet(layer, rng, palette, d)
    moon = (d * rng.choice((.22, .78)), d * rng.uniform(.2, .3), d * .05)
    draw.ellipse([moon[0] - moon[2], moon[1] - moon[2], moon[0] + moon[2], moon[1] + moon[2]],
                 fill=palette.land[0])
    draw.ellipse([-d * .3, d * .78, d * 1.3, d * 1.6], fill=palette.land[2])


def _stars(draw, rng, d, color):
    for _ in range(90):
        x, y, r = rng.uniform(0, d), rng.uniform(0, d * .85), d * rng.uniform(.002, .006)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    for _ in range(7):
        x, y, r = rng.uniform(0, d), rng.uniform(0, d * .8), d * rng.uniform(.015, .03)
        draw.polygon([(x, y - r), (x + r * .22, y), (x, y + r), (x - r * .22, y)], fill=color)
        draw.polygon([(x - r, y), (x, y - r * .22), (x + r, y), (x, y + r * .22)], fill=color)


def _planet(layer, rng, palette, d):
    """A striped planet inside a tilted ring: the ring's far half is drawn
    first, its near half over the planet."""
    r, center = d * .22, (d / 2, d * .46)
    ring = _ellipse_points(center, 2.2 * r, .5 * r, rng.uniform(-25, -10))
    width = max(1, round(r * .1))
    draw = ImageDraw.Draw(layer)
    draw.line(ring + ring[:1], fill=palette.glow, width=width, joint='curve')
    draw_sun(layer, rng, palette, center, r, stripes=rng.random() < .7)
    draw.line(ring[:len(ring) // 2 + 1], fill=palette.glow, width=width, joint='curve')


def _ellipse_points(center, rx, ry, tilt, steps=120):
    """Points around an ellipse turned ``tilt`` degrees; the first half of
    the list is the half nearer the viewer (below the centre line)."""
    cos_t, sin_t = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    points = []
    for a in _angles(0, 360, steps)[:-1]:
        x, y = rx * math.cos(a), ry * math.sin(a)
        points.append((center[0] + x * cos_t - y * sin_t, center[1] + x * sin_t + y * cos_t))
    return points


def scene_geometric(layer, rng, palette, d):
    """A faint sunburst, a striped sun inside a line-drawn polygon, and
    70s bands along the bottom."""
    draw = ImageDraw.Draw(layer)
    center = (d / 2, d * .5)
    faint = _mix(_rgb(palette.sky[0]), _rgb(palette.sky[-1]), .45)
    _rays(draw, center, d, faint, rng.choice((16, 20, 24)))
    draw_sun(layer, rng, palette, center, d * rng.uniform(.2, .25))
    _frame_polygon(draw, rng, center, d, palette.glow)
    for k, color in enumerate(palette.land + (palette.ink,)):
        draw.rectangle([0, d * (.72 + k * .06), d, d], fill=color)


def _frame_polygon(draw, rng, center, d, color):
    # A triangle, diamond or hexagon outline around the sun.
    sides = rng.choice((3, 4, 6))
    r = d * (.36 if sides == 3 else .31)
    turn = -90 if sides != 6 else 0
    points = [(center[0] + r * math.cos(math.radians(turn + 360 * k / sides)),
               center[1] + r * math.sin(math.radians(turn + 360 * k / sides)))
              for k in range(sides)]
    draw.line(points + points[:2], fill=color, width=max(1, round(d / 90)), joint='curve')


def _rays(draw, center, d, color, count):
    span = 360 / count
    box = [center[0] - d, center[1] - d, center[0] + d, center[1] + d]
    for k in range(0, count, 2):
        draw.pieslice(box, k * span, (k + 1) * span, fill=color)


SCENES = {
    'skyline': scene_skyline,
    'peaks': scene_peaks,
    'waves': scene_waves,
    'space': scene_space,
    'geometric': scene_geometric,
}


###############################################################################
# The design: emblem plus title ###############################################
###############################################################################

class Layout(NamedTuple):
    """Where the emblem and title go on the canvas, in pixels."""
    emblem: int    # emblem diameter
    left: int
    top: int
    title_top: int
    title_height: int


def plan_layout(width, height, has_title):
    """Size the emblem so the title fits below it, and centre the pair."""
    d = int(min(width * .8, height * (.66 if has_title else .9)))
    title_h = int(min(height * .26, d * .4)) if has_title else 0
    gap = int(d * .04)
    top = int((height - d - gap - title_h) * .45)
    return Layout(max(8, d), (width - d) // 2, max(0, top), top + d + gap, title_h)


def draw_emblem(canvas, rng, palette, scene, layout):
    """Frame, sky and scene, clipped to the badge shape."""
    d = layout.emblem
    shape = rng.choice(('circle', 'circle', 'arch'))
    art = gradient((d, d), palette.sky)
    SCENES[scene](art, rng, palette, d)
    ring = max(2, round(d * .028))
    canvas.paste(_rgb(palette.ink), (layout.left, layout.top), shape_mask(d, shape))
    canvas.paste(art, (layout.left, layout.top), shape_mask(d, shape, ring))
    _inner_ring(canvas, d, shape, ring, layout, palette.glow)


def _inner_ring(canvas, d, shape, ring, layout, color):
    # A thin light line just inside the frame makes it read as a badge.
    outer = shape_mask(d, shape, int(ring * 1.9))
    inner = shape_mask(d, shape, int(ring * 1.9 + max(2, ring * .35)))
    canvas.paste(_rgb(color), (layout.left, layout.top), ImageChops.subtract(outer, inner))


@lru_cache(maxsize=64)
def font(size):
    """Pillow's bundled FreeType font, so no system font is needed."""
    return ImageFont.load_default(size=max(1, int(size)))


def _line_width(text, size):
    box = font(size).getbbox(text)
    return box[2] - box[0]


def fit_title(words, width, height):
    """Split ``words`` into 1-3 lines and pick the font size that lets the
    longest line fill ``width`` while all lines fit ``height``.

    :return: (lines, font size)
    """
    best = ([], 0)
    for lines in _splits(words, 3):
        widest = max(_line_width(line, 100) for line in lines)
        size = min(100 * width / widest, height / (len(lines) * 1.08), width * .28)
        if size > best[1] * 1.05:   # prefer fewer lines unless clearly bigger
            best = (lines, int(size))
    return best


def _splits(words, most):
    """Every way to break ``words`` into at most ``most`` consecutive lines."""
    for n in range(1, min(most, len(words)) + 1):
        for cuts in itertools.combinations(range(1, len(words)), n - 1):
            bounds = (0,) + cuts + (len(words),)
            # Two spaces: the heavy outline eats most of a single one.
            yield ['  '.join(words[a:b]) for a, b in zip(bounds, bounds[1:])]


def draw_title(canvas, words, palette, layout):
    """Bold upper-case lines with an ink outline and a drop shadow."""
    width = canvas.width * .86
    lines, size = fit_title(words, width * .92, layout.title_height * .92)
    draw = ImageDraw.Draw(canvas)
    bold, outline = max(1, size // 30), max(2, size // 12)
    for k, line in enumerate(lines):
        x = canvas.width / 2
        y = layout.title_top + size * .08 + k * size * 1.08
        for dx, dy, fill, stroke in ((size * .06, size * .06, palette.ink, outline),
                                     (0, 0, palette.ink, outline),
                                     (0, 0, palette.text, bold)):
            draw.text((x + dx, y + dy), line, font=font(size), fill=fill, anchor='mt',
                      stroke_width=stroke, stroke_fill=fill)


def render_design(prompt, seed, width, height, caption=''):
    """The whole design for ``prompt`` and ``seed`` as a transparent RGBA image.

    Small designs (previews, tests) are drawn at twice the size and shrunk,
    since ImageDraw does not anti-alias; at print size the steps are a
    three-hundredth of an inch and drawing twice as big would cost seconds."""
    if max(width, height) > SMOOTH_BELOW:
        return compose(prompt, seed, width, height, caption)
    return compose(prompt, seed, width * 2, height * 2, caption).reduce(2)


def compose(prompt, seed, width, height, caption=''):
    """Draw the design at exactly ``width`` x ``height``.

    A ``caption`` (the brief's own words) is the title and is matched first
    for the scene: a long art-directed prompt names moods and palettes that
    would otherwise pick the scene."""
    rng = random.Random(hashlib.sha256(f'{seed}|{prompt}|{caption}'.encode()).digest())
    words = _words(caption) + _words(prompt)
    palette = choose_palette(prompt, rng)
    scene = _pick(SCENE_WORDS, _words(caption)) or _pick(SCENE_WORDS, words) or 'geometric'
    title = title_words(caption) if caption else title_words(prompt)
    layout = plan_layout(width, height, bool(title))
    canvas = Image.new('RGBA', (width, height), (0, 0, 0, 0))
    draw_emblem(canvas, rng, palette, scene, layout)
    if title:
        draw_title(canvas, title, palette, layout)
    return canvas


###############################################################################
# Files #######################################################################
###############################################################################

def save_png(image, path, adapter):
    """Save ``image`` as a 300 dpi PNG, atomically."""
    write_atomic(path, lambda f: image.save(f, 'PNG', dpi=DPI, compress_level=PNG_LEVEL),
                 adapter)


def _relative(path, root):
    return path.relative_to(root).as_posix()


###############################################################################
# LocalImageBackend ###########################################################
###############################################################################

class LocalImageBackend(ImageBackend):
    """Draws retro badge designs with Pillow; needs no model and no network."""

    name = 'local'

    def describe(self):
        return 'local (Pillow badge designs)'

    def generate(self, spec, ctx):
        files = []
        for i in range(spec.count):
            if ctx.cancelled:
                return files  # the engine discards a cancelled job's output
            files.append(self._generate_one(spec, i, ctx))
        return files

    def _generate_one(self, spec, i, ctx):
        seed = spec.seed + i
        path = ctx.job_dir / f'{spec.filename_prefix}_{i}.png'
        ctx.run_in_thread(self._draw_and_save, spec, seed, path)
        ctx.log(f'local: drew {path.name} (seed {seed})', 'INFO')
        return ImageFile(path=_relative(path, ctx.data_dir), width=spec.width,
                         height=spec.height, seed=seed, prompt=spec.prompt,
                         backend=self.name, laid_out=True)

    def _draw_and_save(self, spec, seed, path):
        image = render_design(spec.prompt, seed, spec.width, spec.height, spec.caption)
        save_png(image, path, self.name)


###############################################################################
# Mockups #####################################################################
###############################################################################

GARMENT_COLORS = {
    'black': '#1c1c1e', 'white': '#f7f7f5', 'navy': '#1f2a44', 'heather grey': '#9a9a9c',
    'heather gray': '#9a9a9c', 'sport grey': '#a4a4a6', 'grey': '#8e8e90', 'gray': '#8e8e90',
    'charcoal': '#3d3f42', 'dark heather': '#45474b', 'ash': '#d8d8d6', 'red': '#c0242b',
    'maroon': '#5b1a25', 'royal': '#2a4fa8', 'royal blue': '#2a4fa8', 'light blue': '#a9c8e8',
    'forest green': '#24412e', 'military green': '#545a3a', 'irish green': '#2e9b4f',
    'sand': '#d9c9a8', 'natural': '#eee6d3', 'pink': '#f2b8c6', 'light pink': '#f6cfd8',
    'purple': '#4b2c6f', 'orange': '#e8702a', 'gold': '#e7a923', 'yellow': '#f2d64b',
    'brown': '#5a3e2b', 'cardinal': '#8a1c2b', 'olive': '#5d6135',
}
NEUTRAL_GREY = '#a0a0a0'
MOCKUP_SIZE = (1000, 1200)
SUPERSAMPLE = 2   # drawn at 2x, then shrunk, for smooth edges


def garment_rgb(name):
    """The RGB of a catalogue colour name; a neutral grey when unknown."""
    key = ' '.join(str(name or '').lower().replace('-', ' ').split())
    return _rgb(GARMENT_COLORS.get(key, NEUTRAL_GREY))


def _shade(rgb, factor):
    # Dark fabrics get lighter seams, light ones darker, so seams always show.
    if sum(rgb) < 150:
        return _mix(rgb, (255, 255, 255), (1 - factor) * .6)
    return _mix(rgb, (0, 0, 0), 1 - factor)


def _sym(points):
    """Mirror left-half outline points (x < 500) into a closed polygon."""
    return points + _mirror(points)[::-1]


def _mirror(points):
    return [(1000 - x, y) for x, y in points]


def _neckline(y_top, depth, half):
    """The left half of a neckline, from the centre out to the shoulder."""
    quarter = [t / 10 * math.pi / 2 for t in range(11)]
    return [(500 - half * math.sin(a), y_top + depth * math.cos(a)) for a in quarter]


def _curve(y_top, depth, half):
    """A whole neckline, left shoulder to right shoulder."""
    left = _neckline(y_top, depth, half)[::-1]
    return left + _mirror(left[:-1])[::-1]


class Garment(NamedTuple):
    """A front view in 1000x1200 units: outline, seams and the print area."""
    outline: list
    print_box: tuple   # left, top, right, bottom; 5:6 like the design
    seams: tuple = ()  # polylines, drawn on both sides when left of centre
    hood: bool = False


TSHIRT = Garment(
    _sym(_neckline(215, 50, 75) + [(290, 245), (128, 425), (212, 505), (252, 455),
                                   (245, 985)]),
    (350, 320, 650, 680),
    seams=([(128, 425), (212, 505)],))
LONGSLEEVE = Garment(
    _sym(_neckline(215, 50, 75) + [(290, 245), (195, 520), (150, 885), (232, 898),
                                   (258, 560), (245, 985)]),
    (350, 320, 650, 680),
    seams=([(152, 850), (234, 862)],))
HOODIE = Garment(
    _sym(_neckline(265, 100, 105) + [(285, 300), (190, 560), (148, 905), (236, 918),
                                     (258, 600), (240, 1000)]),
    (365, 420, 635, 744),
    seams=([(152, 865), (238, 878)], [(241, 952), (500, 952)],
           [(370, 770), (320, 950)], [(370, 770), (500, 770)]),
    hood=True)
GARMENTS = {'tshirt': TSHIRT, 'hoodie': HOODIE}


def render_mockup(design, product_key, color_name):
    """A 1000x1200 RGB picture of the garment with ``design`` on the chest."""
    garment = GARMENTS.get(product_key, LONGSLEEVE)
    color = garment_rgb(color_name)
    scene = _background()
    body = _garment_layer(garment, color)
    _shadow(scene, body)
    scene.alpha_composite(body)
    _print_design(scene, design, garment.print_box)
    return scene.resize(MOCKUP_SIZE, Image.Resampling.LANCZOS).convert('RGB')


def _scaled(points):
    return [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in points]


def _background():
    w, h = MOCKUP_SIZE
    return gradient((w * SUPERSAMPLE, h * SUPERSAMPLE), ('#f4f2ee', '#e4e0d8'))


def _garment_layer(garment, color):
    size = (MOCKUP_SIZE[0] * SUPERSAMPLE, MOCKUP_SIZE[1] * SUPERSAMPLE)
    layer = Image.new('RGBA', size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    seam = _shade(color, .75)
    if garment.hood:
        _hood_back(draw, color, seam)
    draw.polygon(_scaled(garment.outline), fill=color, outline=seam, width=3 * SUPERSAMPLE)
    for line in garment.seams:
        for side in (line, _mirror(line)):
            draw.line(_scaled(side), fill=seam, width=3 * SUPERSAMPLE)
    (_hood_front if garment.hood else _collar)(draw, color, seam)
    return _soften_edges(layer, color)


def _collar(draw, color, seam):
    # The inside of the back shows above the front neckline.
    draw.polygon(_scaled(_curve(215, 14, 75) + _curve(215, 50, 75)[::-1]),
                 fill=_shade(color, .6))
    draw.line(_scaled(_curve(221, 48, 73)), fill=seam, width=10 * SUPERSAMPLE, joint='curve')


def _hood_back(draw, color, seam):
    draw.ellipse(_scaled([(330, 140), (670, 420)]), fill=_shade(color, .9), outline=seam,
                 width=3 * SUPERSAMPLE)
    draw.ellipse(_scaled([(405, 235), (595, 420)]), fill=_shade(color, .6))


def _hood_front(draw, color, seam):
    # The hood's two front edges meet in a V over the chest.
    for edge in (_neckline(265, 100, 105)[::-1], _mirror(_neckline(265, 100, 105))[::-1]):
        draw.line(_scaled(edge), fill=seam, width=34 * SUPERSAMPLE, joint='curve')
        draw.line(_scaled(edge), fill=_shade(color, .93), width=28 * SUPERSAMPLE, joint='curve')
    for x0, x1 in ((470, 462), (530, 538)):   # drawstrings with tips
        draw.line(_scaled([(x0, 372), (x1, 560)]), fill=_shade(color, .6), width=6 * SUPERSAMPLE)
        draw.line(_scaled([(x1, 545), (x1, 575)]), fill=_shade(color, .45), width=8 * SUPERSAMPLE)


def _soften_edges(layer, color):
    # Darken toward the outline so the flat shape reads as cloth with volume.
    alpha = layer.getchannel('A')
    depth = alpha.filter(ImageFilter.BoxBlur(30 * SUPERSAMPLE))
    dark = Image.new('RGBA', layer.size, _shade(color, .8) + (255,))
    shaded = Image.composite(layer, dark, depth.point(lambda v: 120 + v * 135 // 255))
    shaded.putalpha(alpha)
    return shaded


def _shadow(scene, body):
    alpha = body.getchannel('A').filter(ImageFilter.BoxBlur(14 * SUPERSAMPLE))
    shadow = Image.new('RGBA', scene.size, (60, 50, 40, 0))
    shadow.putalpha(alpha.point(lambda v: v * 70 // 255))
    scene.alpha_composite(shadow, (0, 10 * SUPERSAMPLE))


def _print_design(scene, design, box):
    box = [v * SUPERSAMPLE for v in box]
    art = design.convert('RGBA')
    art.thumbnail((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS)
    x = box[0] + (box[2] - box[0] - art.width) // 2
    scene.alpha_composite(art, (int(x), int(box[1])))


def load_design(path, adapter):
    """Open and decode the design file.

    :raises AdapterError: (not retryable) when it is missing or not an image
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AdapterError(f'design {path} is missing or unreadable: {exc}',
                           adapter=adapter, retryable=False) from exc


###############################################################################
# LocalPublisher ##############################################################
###############################################################################

class LocalPublisher(Publisher):
    """Writes each product as files under ``DATA_DIR/products/<productId>/``."""

    name = 'local'

    def describe(self):
        return 'local (products written under DATA_DIR/products)'

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        product_id = self.product_id(ctx.job_id, artwork.key, product_type.key)
        folder = ctx.data_dir / 'products' / product_id
        if (folder / 'product.json').exists():
            return self._result(self._read(folder / 'product.json'), ctx)
        ctx.run_in_thread(self._write_mockup, ctx.data_dir / artwork.path, product_type,
                          folder / 'mockup.png')
        product = self._product(product_id, artwork, product_type, brief, ctx, auto_publish)
        data = json.dumps(product, indent=2).encode()
        write_atomic(folder / 'product.json', lambda f: f.write(data), self.name)
        ctx.log(f'local: product {product_id} written', 'INFO')
        return self._result(product, ctx)

    @staticmethod
    def product_id(job_id, artwork_key, type_key):
        """Stable for one design of one job, so a retried publish finds it."""
        digest = hashlib.sha1(f'{job_id}\0{artwork_key}\0{type_key}'.encode()).hexdigest()
        return f'local_{digest[:12]}'

    def _read(self, path):
        try:
            return json.loads(path.read_text(encoding='utf-8'))
        except (OSError, ValueError) as exc:
            raise AdapterError(f'cannot read {path}: {exc}', adapter=self.name) from exc

    def _write_mockup(self, design_path, product_type, path):
        design = load_design(design_path, self.name)
        color = (product_type.colors or ['White'])[0]
        save_png(render_mockup(design, product_type.key, color), path, self.name)

    def _product(self, product_id, artwork, product_type, brief, ctx, auto_publish):
        folder = f'products/{product_id}'
        return {
            'productId': product_id, 'platform': 'local', 'type': product_type.key,
            'typeName': product_type.name, 'title': brief.title,
            'description': brief.description,
            'descriptionHtml': brief.description_html or _paragraph(brief.description),
            'tags': list(brief.tags), 'price': product_type.price,
            'variants': _variants(product_type), 'design': artwork.path,
            'designUrl': artwork.url, 'mockup': 'mockup.png',
            'mockupPath': f'{folder}/mockup.png', 'published': bool(auto_publish),
            'jobId': ctx.job_id, 'createdAt': int(time.time() * 1000),
        }

    def _result(self, product, ctx):
        folder = f"products/{product['productId']}"
        return {
            'platform': 'local', 'productId': product['productId'],
            'url': ctx.file_url(f'{folder}/product.json'),
            'mockupUrl': ctx.file_url(f'{folder}/mockup.png'),
            'mockupPath': f'{folder}/mockup.png',
            'type': product['type'], 'title': product['title'],
            'published': product['published'],
            'status': 'published' if product['published'] else 'draft',
        }


def _variants(product_type):
    """Every size x colour, each at the catalogue price."""
    return [{'size': size, 'color': color, 'price': product_type.price}
            for size in product_type.sizes or ['One Size']
            for color in product_type.colors or ['White']]


def _paragraph(text):
    return f'<p>{html.escape(text)}</p>' if text else ''
