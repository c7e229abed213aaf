"""Print preparation: an AI image made into art a customer would wear.

A generated image is usually a square with an opaque background. Before it is
printed the engine, like a seller at a desk, does four things, each recorded:

    cut_out(image, mode)                -> (art, background report)
    placed_box(art_size, area, preset)  -> (x, y, width, height) in the area
    effective_dpi(art_width, placed_width, dpi)
    visibility(art, fabric_rgb)         -> 0..1, how much of the ink shows

``cut_out`` removes a plain background connected to the image's edges (so the
subject's own light areas stay), with a soft edge whose colours are freed of
the background's tint, and trims to the opaque content. ``place`` renders the
trimmed art into an exact print file. Everything here is pure Pillow + NumPy
on images in memory: the engine decides what to do with the numbers.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import AdapterError, write_atomic

__all__ = [
    'BACKGROUND_MODES', 'GARMENT_COLOURS', 'PLACEMENTS', 'Placement', 'coverage',
    'cut_out', 'effective_dpi', 'fabric_rgb', 'place', 'placed_box', 'visibility',
]

BACKGROUND_MODES = ('auto', 'remove', 'keep')

# Colour distance (Euclidean RGB, 0..441) from the border colour.
FILL_DISTANCE = 40     # a pixel this close, connected to an edge, is background
SOFT_LOW, SOFT_HIGH = 16, 56   # the edge's alpha ramps from 0 to 1 between these
UNIFORM_DISTANCE = 30  # a border pixel this close to the border colour is "plain"
UNIFORM_SHARE = 0.95   # auto removes when this share of the border is plain
EDGE_BAND = 2          # px either side of the background's edge get a soft alpha
MAX_SWEEPS = 200       # flood-fill sweeps; bounded for pathological spirals
OPAQUE = 8             # alpha above this counts as content when trimming
MOST_REMOVED = 0.97    # a removal that leaves less than this is not a background


###############################################################################
# Background ##################################################################
###############################################################################

def cut_out(image, mode='auto'):
    """The image's content as trimmed RGBA, and what was decided.

    An image with transparency is left as it is (only trimmed). Otherwise
    ``mode`` ``keep`` keeps the background, ``remove`` removes what is close
    to the border colour and connected to the edges, and ``auto`` does so
    only when the border is plain (a gradient or a photo is kept).

    :return: (art, {'decision', 'reason', 'removed', 'color', 'uniformity'})
    """
    rgba = image.convert('RGBA')
    if has_transparency(image, rgba):
        report = {'decision': 'transparent', 'removed': 0.0,
                  'reason': 'the image already has transparency'}
        return trim(rgba), report
    rgb = np.asarray(rgba, dtype=np.float32)[..., :3]
    colour, uniformity = border_colour(rgb)
    report = {'color': '#%02x%02x%02x' % tuple(int(round(c)) for c in colour),
              'uniformity': round(uniformity, 3), 'removed': 0.0}
    if mode == 'keep' or (mode == 'auto' and uniformity < UNIFORM_SHARE):
        reason = ('BACKGROUND=keep' if mode == 'keep' else
                  f'the border is not plain ({uniformity:.0%} of it near one colour)')
        return trim(rgba), {**report, 'decision': 'kept', 'reason': reason}
    alpha, removed = (None, 1.0) if all_background(rgba, colour) else \
        background_alpha(rgb, colour)
    if alpha is None or removed > MOST_REMOVED:  # one flat colour, or the subject is the border's colour
        return trim(rgba), {**report, 'decision': 'kept', 'reason': (
            f'removing it would leave {1 - removed:.1%} of the image')}
    art = np.dstack([defringe(rgb, alpha, colour), alpha * 255]).round().astype(np.uint8)
    report.update(decision='removed', removed=round(removed, 4),
                  reason=f'a plain {report["color"]} background touching the edges')
    return trim(Image.fromarray(art, 'RGBA')), report


def has_transparency(image, rgba):
    if image.mode not in ('RGBA', 'LA', 'PA') and 'transparency' not in image.info:
        return False
    return rgba.getchannel('A').getextrema()[0] < 250


def border_colour(rgb):
    """The median colour of the two outermost rows and columns, and the share
    of them within UNIFORM_DISTANCE of it."""
    ring = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3),
                           rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)])
    colour = np.median(ring, axis=0)
    near = np.sqrt(((ring - colour) ** 2).sum(axis=1)) < UNIFORM_DISTANCE
    return colour, float(near.mean())


def background_alpha(rgb, colour):
    """Alpha (0..1, float) that is 0 on the background reached from the
    edges and, across its boundary, is each pixel's share of the subject's
    colour (the ink's nearest opaque colour against the background's);
    and the share of the image removed. Alpha is None when nearly all of
    the image would go (then it has no background to remove)."""
    distance = np.sqrt(((rgb - colour) ** 2).sum(axis=2))
    background = connected_to_edges(distance < FILL_DISTANCE)
    if background.mean() > MOST_REMOVED:  # not a background: no need to matte it
        return None, float(background.mean())
    near_edge = dilate(background, EDGE_BAND) & dilate(~background, EDGE_BAND)
    ink = spread_inwards(rgb, ~background & ~near_edge, EDGE_BAND * 2 + 1)
    towards, seen = ink - colour, rgb - colour
    share = (seen * towards).sum(axis=2) / np.maximum((towards ** 2).sum(axis=2), 1.0)
    soft = np.clip((distance - SOFT_LOW) / (SOFT_HIGH - SOFT_LOW), 0, 1)
    # Where the ink is close to the background colour the share is unsteady:
    # then the distance ramp decides.
    steady = np.sqrt((towards ** 2).sum(axis=2)) > SOFT_HIGH
    alpha = np.where(background, 0.0, 1.0)
    alpha = np.where(near_edge, np.where(steady, np.clip(share, 0, 1), soft), alpha)
    alpha[alpha < 0.06] = 0.0  # a faint halo prints as a dirty rim
    return alpha.astype(np.float32), float((alpha == 0).mean())


def spread_inwards(rgb, known, steps):
    """``rgb`` where ``known``; elsewhere the mean of the known pixels within
    ``steps`` px (the edge's own ink), or ``rgb`` when there are none."""
    weight = known.astype(np.float64)
    total = box_sum(rgb * weight[..., None], steps)
    count = box_sum(weight, steps)[..., None]
    spread = np.where(count > 0, total / np.maximum(count, 1e-9), rgb)
    return np.where(known[..., None], rgb, spread).astype(np.float32)


def box_sum(values, radius):
    """The sum of ``values`` over each pixel's (2r+1)-square, from one
    integral image (the cost does not grow with the radius)."""
    pad = [(radius + 1, radius), (radius + 1, radius)] + [(0, 0)] * (values.ndim - 2)
    table = np.pad(values.astype(np.float64), pad).cumsum(0).cumsum(1)
    span = 2 * radius + 1
    return (table[span:, span:] - table[:-span, span:] - table[span:, :-span]
            + table[:-span, :-span])


def all_background(rgba, colour):
    """Whether an eighth-size copy is already nearly all background (a flat
    image): then the full-size matte is not worth computing."""
    small = np.asarray(rgba.convert('RGB').reduce(8), dtype=np.float32)
    near = np.sqrt(((small - colour) ** 2).sum(axis=2)) < FILL_DISTANCE
    return near.mean() > MOST_REMOVED and connected_to_edges(near).mean() > MOST_REMOVED


def connected_to_edges(mask):
    """The pixels of ``mask`` 4-connected to the image's border.

    Runs of the mask along rows, then along columns, take the seed of any of
    their pixels; a few alternating sweeps reach every turn of a plain
    background, where a pixel-by-pixel flood fill would take seconds."""
    seeds = np.zeros_like(mask)
    seeds[[0, -1], :] = mask[[0, -1], :]
    seeds[:, [0, -1]] = mask[:, [0, -1]]
    count = int(seeds.sum())
    for _ in range(MAX_SWEEPS):
        seeds = grow_along_rows(mask, seeds)
        seeds = grow_along_rows(mask.T, seeds.T).T
        grown = int(seeds.sum())
        if grown == count:
            break
        count = grown
    return seeds


def grow_along_rows(mask, seeds):
    """Every run of ``mask`` in a row that holds a seed, whole."""
    height, width = mask.shape
    runs = np.zeros((height, width + 1), bool)  # a False column ends each row's run
    runs[:, :width] = mask
    flat = runs.ravel()
    starts = flat & ~np.concatenate(([False], flat[:-1]))
    ids = np.cumsum(starts) * flat
    seeded = np.zeros(int(starts.sum()) + 1, bool)
    planted = np.zeros((height, width + 1), bool)
    planted[:, :width] = seeds & mask
    seeded[ids[planted.ravel()]] = True
    seeded[0] = False
    return seeded[ids].reshape(height, width + 1)[:, :width]


def dilate(mask, steps):
    """``mask`` grown by ``steps`` pixels in all eight directions."""
    return box_sum(mask, steps) > 0.5


def defringe(rgb, alpha, colour):
    """The edge pixels' own colours: an observed edge pixel is the subject
    mixed with the background by ``alpha``, so the background is taken out
    again; otherwise a white halo rims the art on a black shirt."""
    weight = np.maximum(alpha, 0.2)[..., None]
    freed = colour + (rgb - colour) / weight
    edge = ((alpha > 0) & (alpha < 1))[..., None]
    return np.where(edge, np.clip(freed, 0, 255), rgb)


def trim(rgba):
    """``rgba`` cropped to its content (alpha over OPAQUE)."""
    box = rgba.getchannel('A').point(lambda a: 255 if a > OPAQUE else 0).getbbox()
    if box is None:
        raise AdapterError('the design is fully transparent: there is nothing to print',
                           adapter='printready', retryable=False)
    return rgba.crop(box)


###############################################################################
# Placement and resolution ####################################################
###############################################################################

@dataclass(frozen=True)
class Placement:
    """Where art goes in a print area: a box of ``width`` x ``height`` (shares
    of the area) the art is scaled to fit, ``top`` (a share of the area's
    height from its top edge, or None for centred vertically)."""
    width: float
    height: float
    top: float = None


PLACEMENTS = {
    # A chest print: about 12 of a 15-inch area wide, an inch under the collar.
    'chest': Placement(width=0.8, height=0.6, top=0.06),
    'center': Placement(width=0.8, height=0.8),
    'full': Placement(width=1.0, height=1.0),
}


def placed_box(art_size, area, preset):
    """``(x, y, width, height)`` of art of ``art_size`` placed by ``preset``
    in a print area of ``area`` px."""
    placement = PLACEMENTS[preset]
    box_w, box_h = area[0] * placement.width, area[1] * placement.height
    scale = min(box_w / art_size[0], box_h / art_size[1])
    width = max(1, min(area[0], round(art_size[0] * scale)))
    height = max(1, min(area[1], round(art_size[1] * scale)))
    x = (area[0] - width) // 2
    if placement.top is None:
        y = (area[1] - height) // 2
    else:
        y = min(round(area[1] * placement.top), area[1] - height)
    return x, y, width, height


def effective_dpi(art_width, placed_width, dpi=300):
    """Source pixels per printed inch, for art ``art_width`` px wide printed
    ``placed_width`` px wide in a file of ``dpi``."""
    return round(dpi * art_width / placed_width)


def place(art, area, preset):
    """An RGBA print file of exactly ``area`` with ``art`` placed by
    ``preset`` (Lanczos; Pillow scales RGBA premultiplied, so edges keep
    their colour). :return: (image, box)"""
    box = placed_box(art.size, area, preset)
    canvas = Image.new('RGBA', area, (0, 0, 0, 0))
    canvas.paste(art.resize(box[2:], Image.LANCZOS), box[:2])
    return canvas, box


def coverage(art, box, area):
    """The share of the print area the placed art inks (alpha-weighted)."""
    alpha = np.asarray(art.getchannel('A').reduce(max(1, min(art.size) // 128)),
                       dtype=np.float32) / 255
    return round(float(alpha.mean()) * box[2] * box[3] / (area[0] * area[1]), 4)


###############################################################################
# Garment colours #############################################################
###############################################################################

# Approximate sRGB of common blank colours (Bella+Canvas, Gildan and the like).
GARMENT_COLOURS = {
    'black': (22, 22, 24), 'white': (250, 250, 250), 'navy': (32, 38, 58),
    'heather grey': (162, 162, 166), 'heather gray': (162, 162, 166),
    'sport grey': (152, 152, 154), 'sport gray': (152, 152, 154),
    'athletic heather': (176, 176, 178), 'ash': (212, 212, 210),
    'dark heather': (66, 66, 72), 'charcoal': (64, 64, 66), 'asphalt': (78, 78, 82),
    'black heather': (44, 44, 46), 'heather navy': (58, 64, 86),
    'red': (190, 30, 45), 'maroon': (92, 26, 38), 'cardinal': (140, 24, 40),
    'royal': (30, 72, 162), 'royal blue': (30, 72, 162), 'light blue': (166, 200, 230),
    'forest green': (32, 70, 46), 'military green': (86, 92, 62),
    'irish green': (0, 150, 72), 'kelly green': (0, 140, 72),
    'purple': (82, 46, 122), 'pink': (240, 178, 196), 'light pink': (246, 204, 214),
    'gold': (240, 172, 32), 'orange': (240, 102, 32), 'yellow': (250, 220, 70),
    'natural': (240, 232, 214), 'sand': (220, 204, 174), 'cream': (244, 236, 214),
}

VISIBLE_CONTRAST = 1.6   # WCAG luminance contrast ratio at which ink shows
VISIBLE_DISTANCE = 110   # or an RGB distance: a hue apart at equal luminance


def fabric_rgb(name, overrides=None):
    """The RGB of garment colour ``name`` (``overrides``: name -> "#rrggbb"
    from the product type), or None when it is not known."""
    for key, value in (overrides or {}).items():
        if key.strip().lower() == name.strip().lower():
            value = value.lstrip('#')
            return tuple(int(value[k:k + 2], 16) for k in (0, 2, 4))
    return GARMENT_COLOURS.get(name.strip().lower())


def visibility(art, fabric):
    """The share of the art's ink (alpha-weighted) that stands out from
    ``fabric``: by luminance contrast, or by colour where the luminance is
    alike (red on green)."""
    small = art.copy()
    small.thumbnail((256, 256))
    pixels = np.asarray(small.convert('RGBA'), dtype=np.float32)
    ink, alpha = pixels[..., :3], pixels[..., 3] / 255
    if alpha.sum() == 0:
        return 0.0
    fabric = np.asarray(fabric, dtype=np.float32)
    lum_ink, lum_fabric = luminance(ink), luminance(fabric)
    contrast = (np.maximum(lum_ink, lum_fabric) + 0.05) / (np.minimum(lum_ink, lum_fabric)
                                                          + 0.05)
    distance = np.sqrt(((ink - fabric) ** 2).sum(axis=-1))
    shows = (contrast >= VISIBLE_CONTRAST) | (distance >= VISIBLE_DISTANCE)
    return round(float((alpha * shows).sum() / alpha.sum()), 3)


def luminance(rgb):
    """WCAG relative luminance of sRGB values (0..255), last axis RGB."""
    c = np.asarray(rgb, dtype=np.float32) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


###############################################################################
# Files: what the engine calls (in a worker thread) ###########################
###############################################################################

PRINT_DPI = 300


def prepare_art(data_dir, image, mode):
    """The design's art: the generated image ``image`` (a job's image record)
    cut out by ``mode`` and trimmed, saved beside it as ``<stem>_art.png``.
    An image its backend laid out for the print area (``laid_out``) is kept
    whole. :return: {path, width, height, source, background, laidOut}"""
    source = data_dir / image['path']
    if laid_out(image):
        return {'path': image['path'], 'width': image['width'], 'height': image['height'],
                'source': [image['width'], image['height']], 'laidOut': True,
                'background': {'decision': 'as drawn', 'removed': 0.0,
                               'reason': f'laid out for print by {image.get("backend")}'}}
    with Image.open(source) as opened:
        size = list(opened.size)
        art, background = cut_out(opened, mode)
    found = {'path': image['path'], 'width': art.width, 'height': art.height,
             'source': size, 'background': background, 'laidOut': False,
             'preview': save_preview(art, source, data_dir)}
    if background['decision'] == 'kept' and list(art.size) == size:
        return found  # the image itself is the art
    target = source.with_name(f'{source.stem}_art.png')
    save_png(art, target, level=1)  # read back once per print size; speed over size
    return {**found, 'path': str(target.relative_to(data_dir))}


def save_preview(art, source, data_dir):
    """A 256-px copy of ``art`` beside ``source``, for the colour checks."""
    small = art.copy()
    small.thumbnail((256, 256))
    target = source.with_name(f'{source.stem}_art_preview.png')
    save_png(small, target, level=1)
    return str(target.relative_to(data_dir))


def laid_out(image):
    # Records made before ``laid_out`` existed: the local designer lays out.
    return bool(image.get('laid_out', image.get('backend') == 'local'))


def render_print(data_dir, art, size, placement):
    """The print file of ``art`` (prepare_art's record) for a print area of
    ``size`` px: placed by ``placement``, or fitted and centred whole when
    the art was laid out for print. :return: {path, width, height, box,
    placement, effectiveDpi, coverage}"""
    source = data_dir / art['path']
    preset = 'full' if art.get('laidOut') else placement
    name = 'as drawn' if art.get('laidOut') else placement
    with Image.open(source) as opened:
        art_image = opened.convert('RGBA')
        ready = (tuple(opened.size) == tuple(size) and opened.mode == 'RGBA'
                 and round(opened.info.get('dpi', (0, 0))[0]) == PRINT_DPI)
    box = placed_box(art_image.size, tuple(size), preset)
    report = {'width': size[0], 'height': size[1], 'box': list(box), 'placement': name,
              'coverage': coverage(art_image, box, size),
              'effectiveDpi': effective_dpi(art['width'], box[2], PRINT_DPI)}
    if ready and art.get('laidOut'):  # drawn at this very size: the file is the print
        return {**report, 'path': art['path']}
    canvas, box = place(art_image, tuple(size), preset)
    stem = source.stem.removesuffix('_art')
    target = source.with_name(f'{stem}_print_{size[0]}x{size[1]}_{preset}.png')
    save_png(canvas, target)
    return {**report, 'path': str(target.relative_to(data_dir))}


def check_colours(data_dir, art, colours, overrides, minimum):
    """Which garment ``colours`` the art shows on (visibility >= ``minimum``);
    colours of unknown RGB are kept. :return: {kept, disabled, visibility}"""
    with Image.open(data_dir / (art.get('preview') or art['path'])) as opened:
        ink = opened.convert('RGBA')
        ink.thumbnail((256, 256))
    kept, disabled, seen = [], [], {}
    for name in colours:
        rgb = fabric_rgb(name, overrides)
        if rgb is None:
            kept.append(name)
            continue
        seen[name] = visibility(ink, rgb)
        (kept if seen[name] >= minimum else disabled).append(name)
    return {'kept': kept, 'disabled': disabled, 'visibility': seen}


def art_colours(data_dir, art):
    """``art``'s colours without its alpha, as ``<stem>_rgb.png``: what an
    upscale model (RGB only) is given. Edge pixels hold their de-fringed ink,
    so the enlarged edge carries no background tint."""
    source = data_dir / art['path']
    with Image.open(source) as opened:
        rgb = opened.convert('RGB')
    target = source.with_name(f'{source.stem}_rgb.png')
    save_png(rgb, target)
    return str(target.relative_to(data_dir))


def with_art_alpha(data_dir, art, enlarged, model):
    """The upscale model's RGB output ``enlarged`` (an ImageFile record) with
    ``art``'s alpha scaled to it: the art record of the upscaled design."""
    with Image.open(data_dir / art['path']) as opened:
        alpha = opened.convert('RGBA').getchannel('A')
    with Image.open(data_dir / enlarged['path']) as opened:
        image = opened.convert('RGB')
    image.putalpha(alpha.resize(image.size, Image.LANCZOS))
    source = data_dir / art['path']
    target = source.with_name(f'{source.stem}_upscaled.png')
    save_png(image, target)
    return {**art, 'path': str(target.relative_to(data_dir)), 'width': image.width,
            'height': image.height, 'upscaledBy': model}


def save_png(image, target, dpi=PRINT_DPI, level=3):
    """Write ``image`` to ``target`` through a temp file of its own and a
    rename: a cancelled attempt's render thread may still be writing the same
    file as its retry."""
    write_atomic(target, lambda f: image.save(f, 'PNG', dpi=(dpi, dpi), compress_level=level),
                 'printready')
