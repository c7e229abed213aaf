"""Built-in prompt and listing-copy writer, used when no LLM is configured.

``TemplateWriter`` turns a generate request into ``DesignBrief``s from phrase
banks. With a direct ``prompt`` it keeps that prompt for every design and
writes the copy around its key words. Without one it composes a distinct
image prompt per design from theme, style and niche, varying the motif,
angle, composition, color mood and art direction.

Output is deterministic: the random source is seeded from a sha256 of the
request fields and ``seed``, so a retried job gets the same briefs.

``clean_tags`` and ``clip_title`` are public because the LLM writer must obey
the same marketplace limits on whatever the model returns.
"""

import hashlib
import html
import json
import random
import re
import unicodedata
from collections import namedtuple
import dataclasses
from dataclasses import dataclass

from .base import DesignBrief, PromptWriter

__all__ = ['TemplateWriter', 'clean_tags', 'clip_title', 'copy_for']


###############################################################################
# Constants and phrase banks ##################################################
###############################################################################

NEGATIVE_PROMPT = ('text artifacts, watermark, signature, blurry, '
                   'low quality, jpeg artifacts, cropped, frame, border, '
                   'photo background')
DEFAULTS = {'theme': 'classic', 'style': 'modern', 'niche': 'everyday'}
TITLE_LIMIT = 140
TAG_LIMIT = 13
TAG_MAX_LEN = 20
TITLE_WORD_MAX = 20  # longer "words" are junk (URLs, keyboard mashing)
FIELD_WORD_MAX = 30
FIELD_WORDS = 10

# A word: letters/digits, optionally joined by an apostrophe or hyphen.
WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
FIELD_WORD_RE = re.compile(WORD_RE.pattern + '|&')  # "dog moms & dads"
TAG_RE = re.compile(r'<[^>]*>')

SMALL_WORDS = frozenset(
    'a an and as at but by for from in into nor of on or per the to via with'
    .split())
STOPWORDS = SMALL_WORDS | frozenset('''
    about above after again against all am any are be because been before
    being below between both can could did do does doing down during each few
    further had has have having he her here hers him his how i if is it its
    just me more most my no not now off once only other our out over own same
    she should so some such than that their them then there these they this
    those through too under until up very was we were what when where which
    while who whom why will would you your please draw create generate make
    image picture photo showing featuring depicting among amid around across
    along behind beside beneath inside near onto toward towards upon within
    without'''.split())
# Art-direction words say how to draw, not what: useless in titles and tags.
PROMPT_NOISE = frozenset('''
    vector illustration art artwork style styled design graphic detailed
    highly high quality resolution hd uhd 4k 8k background transparent
    isolated print printable ready tshirt t-shirt shirt tee hoodie svg png
    centered composition trending artstation masterpiece ultra realistic
    render rendering digital sharp focus lines clean bold palette color
    colors colour colours limited flat'''.split())
LEAD_FILLER = re.compile(
    r'^\s*(please\s+)?((draw|create|generate|make|design|render|paint)\s+'
    r'(me\s+)?)?((an?\s+)?(image|picture|illustration|drawing|design|graphic)'
    r'\s+(of|showing)\s+)?', re.IGNORECASE)

Product = namedtuple('Product', 'kind title_words short feel feature')
PRODUCTS = {
    'tshirt': Product('t-shirt', ('Tee', 'T-Shirt'), 'tee',
                      'soft, lightweight',
                      'Soft, lightweight tee for everyday wear'),
    'hoodie': Product('hoodie', ('Hoodie',), 'hoodie', 'cozy, warm',
                      'Cozy, warm hoodie for cool days and chilly nights'),
}
GENERIC_PRODUCT = Product('shirt', ('Shirt',), 'shirt', 'comfortable',
                          'Comfortable shirt for everyday wear')
PRODUCT_ALIASES = {'tee': 'tshirt', 'tshirts': 'tshirt', 'hoodies': 'hoodie'}

Motif = namedtuple('Motif', 'title prompt')


def _motifs(*pairs):
    return tuple(Motif(title, prompt) for title, prompt in pairs)


# (aliases, motifs). Matched on the words of the theme and of the niche.
THEME_BANKS = (
    (('nature', 'forest', 'woods', 'wilderness', 'tree', 'earth'), _motifs(
        ('Lone Pine', 'a lone pine tree on a quiet ridge'),
        ('Mountain Sunrise', 'layered mountain peaks under a rising sun'),
        ('Wild Fern', 'unfurling fern fronds'),
        ('Forest Moon', 'a crescent moon over a pine forest'),
        ('River Valley', 'a winding river through a quiet valley'),
        ('Wildflower Meadow', 'a cluster of wildflowers and tall grass'),
        ('Oak Leaf', 'a single oak leaf with fine vein detail'),
        ('Misty Peaks', 'misty peaks rising above the treeline'))),
    (('mountain', 'hiking', 'hike', 'hiker', 'camping', 'camp', 'camper',
      'adventure', 'outdoor', 'outdoors', 'trail'), _motifs(
        ('Summit Bound', 'a winding trail leading to a snowy summit'),
        ('Campfire Nights', 'a glowing campfire under the stars'),
        ('Trail Compass', 'a vintage compass over a topographic map'),
        ('Tent Under Stars', 'a small tent beneath a starry sky'),
        ('Sunset Peaks', 'jagged mountain peaks at sunset'),
        ('Wander Boots', 'well-worn hiking boots on a rocky path'))),
    (('ocean', 'beach', 'sea', 'surf', 'surfing', 'coast',
      'tropical'),
     _motifs(
        ('Wave Rider', 'a curling ocean wave'),
        ('Palm Sunset', 'palm trees against a setting sun'),
        ('Lighthouse Coast', 'a lighthouse on a rocky coast'),
        ('Deep Blue Whale', 'a whale gliding through deep water'),
        ('Spiral Seashell', 'a spiral seashell with fine ridges'),
        ('Surf Check', 'a surfboard leaning against a beach hut'))),
    (('space', 'galaxy', 'cosmic', 'astronomy', 'planet', 'moon', 'star',
      'astronaut'), _motifs(
        ('Moon Phases', 'the phases of the moon in a row'),
        ('Lost in Space', 'a lone astronaut floating among stars'),
        ('Ringed Planet', 'a ringed planet with orbiting moons'),
        ('Retro Rocket', 'a classic rocket blasting off'),
        ('Constellation Map', 'a constellation map with glowing stars'),
        ('Solar System', 'the planets of the solar system in orbit'))),
    (('cat', 'kitten', 'kitty', 'feline'), _motifs(
        ('Sleepy Cat', 'a curled-up sleeping cat'),
        ('Curious Kitten', 'a curious kitten peeking out'),
        ('Cat Moon', 'a black cat sitting under a full moon'),
        ('Cat Stretch', 'a cat in a long lazy stretch'),
        ('Paw Prints', 'a trail of small paw prints'),
        ('Cat and Yarn', 'a playful cat tangled in a ball of yarn'))),
    (('dog', 'puppy', 'pup', 'canine'), _motifs(
        ('Happy Pup', 'a happy dog with a wagging tail'),
        ('Good Boy', 'a smiling dog portrait'),
        ('Fetch Time', 'a dog leaping for a ball'),
        ('Sleepy Pup', 'a puppy napping in a basket'),
        ('Paw Heart', 'a paw print shaped like a heart'),
        ('Dog Walk', 'a dog trotting along on a leash'))),
    (('coffee', 'espresso', 'latte', 'cafe', 'caffeine'), _motifs(
        ('Morning Brew', 'a steaming cup of coffee'),
        ('Coffee Beans', 'scattered roasted coffee beans'),
        ('Pour Over', 'a pour-over coffee setup'),
        ('Espresso Shot', 'an espresso cup with rising steam'),
        ('Latte Art', 'a latte with leaf-shaped latte art'),
        ('French Press', 'a classic french press'))),
    (('halloween', 'spooky', 'witch', 'ghost', 'pumpkin'), _motifs(
        ('Pumpkin Glow', 'a grinning carved pumpkin'),
        ('Haunted House', 'a crooked haunted house'),
        ('Black Cat Moon', 'a black cat arched under a full moon'),
        ('Witch Hat', 'a pointed witch hat with a buckle'),
        ('Friendly Ghost', 'a friendly little ghost'),
        ('Bat Flight', 'a flock of bats crossing the moon'))),
    (('christmas', 'xmas', 'holiday', 'winter', 'festive'), _motifs(
        ('Cozy Christmas', 'a decorated christmas tree'),
        ('Snowy Cabin', 'a snowy cabin with glowing windows'),
        ('Festive Reindeer', 'a reindeer with festive antlers'),
        ('Gingerbread', 'a smiling gingerbread cookie'),
        ('Snowflake', 'a detailed snowflake'),
        ('Winter Wreath', 'a holly wreath with red berries'))),
    (('music', 'musician', 'guitar', 'vinyl', 'band', 'rock'), _motifs(
        ('Vinyl Spin', 'a spinning vinyl record'),
        ('Retro Cassette', 'a retro cassette tape'),
        ('Acoustic Soul', 'an acoustic guitar'),
        ('Headphones', 'a pair of over-ear headphones'),
        ('Sound Waves', 'flowing sound waves'),
        ('Piano Keys', 'a ribbon of piano keys'))),
    (('flower', 'floral', 'botanical', 'garden', 'plant', 'bloom'), _motifs(
        ('Wild Bloom', 'a bouquet of wildflowers'),
        ('Rose Garden', 'a blooming rose with leaves'),
        ('Sunflower', 'a tall sunflower'),
        ('Botanical Sprig', 'a sprig of eucalyptus'),
        ('Lotus', 'a lotus flower on still water'),
        ('Daisy Chain', 'a chain of daisies'))),
    (('animal', 'wildlife', 'fox', 'bear', 'wolf', 'owl', 'deer'), _motifs(
        ('Wild Fox', 'a red fox with a bushy tail'),
        ('Bear Country', 'a grizzly bear on the move'),
        ('Night Owl', 'an owl perched on a branch'),
        ('Soaring Eagle', 'an eagle with spread wings'),
        ('Wolf Howl', 'a wolf howling at the moon'),
        ('Deer Crossing', 'a deer standing in tall grass'))),
    (('fitness', 'gym', 'workout', 'running', 'yoga', 'sport'), _motifs(
        ('Iron Will', 'a loaded barbell'),
        ('Kettlebell Club', 'a heavy kettlebell'),
        ('Run Club', 'a runner mid-stride'),
        ('Gym Grind', 'a dumbbell with motion lines'),
        ('Yoga Flow', 'a figure in a balanced yoga pose'),
        ('Finish Line', 'a runner breaking the finish tape'))),
)

# Used for any theme, after the theme's own motifs run out. {T} is the
# title-cased short theme, {t} the theme and {a_t} the theme with "a"/"an".
GENERIC_MOTIFS = _motifs(
    ('{T} Emblem', 'a bold {t} emblem'),
    ('{T} Badge', 'a round {t} badge'),
    ('Sunset {T}', '{a_t} scene against a setting sun'),
    ('{T} Crest', 'a symmetrical {t} crest with laurel details'),
    ('Midnight {T}', '{a_t} scene under a starry night sky'),
    ('{T} Icon', 'a simple, iconic {t} symbol'),
    ('Golden Hour {T}', '{a_t} scene in golden-hour light'),
)

ANGLES = ('seen from a low angle', 'in side profile', 'viewed straight on',
          'seen from above', 'as a close-up detail', 'in three-quarter view',
          'as a bold silhouette')
COMPOSITIONS = ('centered composition', 'framed inside a circular badge',
                'set within a rounded emblem', 'symmetrical layout',
                'framed by a simple arch', 'stacked vertical layout',
                'inside a clean hexagon frame',
                'off-center with generous negative space')
NEUTRAL_ART = ('crisp edges', 'high contrast', 'strong readable silhouette',
               'balanced negative space', 'bold clean lines', 'smooth finish')
GENERIC_PALETTES = ('warm sunset palette of orange and dusty pink',
                    'cool blue and teal palette',
                    'earthy olive, rust and cream palette',
                    'high-contrast black and gold palette',
                    'vibrant complementary colors', 'muted pastel palette')

# style key -> (aliases, art-direction phrases, palettes or None for generic)
STYLE_BANKS = {
    'minimalist': (
        ('minimalist', 'minimal', 'minimalism', 'simple', 'clean'),
        ('minimal vector illustration', 'single-weight line work',
         'flat color, no gradients',
         'simple geometric forms', 'two-tone design'),
        ('monochrome black and white palette',
         'soft sage green and charcoal palette',
         'two-tone navy and cream palette', 'muted earth-tone palette')),
    'retro': (
        ('retro', '70s', '80s', '90s', 'seventies', 'eighties', 'synthwave'),
        ('1970s sunset stripes', 'vintage screen-print look',
         'bold rounded shapes', 'grainy halftone texture',
         'warm retro color blocking'),
        ('mustard, burnt orange and brown palette',
         'sunset orange, pink and teal palette',
         'faded 70s palette of cream and rust')),
    'vintage': (
        ('vintage', 'distressed', 'antique', 'oldschool', 'old-school'),
        ('distressed worn texture', 'aged screen-print look',
         'classic badge styling', 'engraved etching detail',
         'faded ink texture'),
        ('faded cream and rust palette', 'worn navy and brick red palette',
         'warm sepia palette')),
    'watercolor': (
        ('watercolor', 'watercolour', 'painted', 'painterly'),
        ('soft watercolor washes', 'loose painterly edges',
         'gentle color bleeds', 'delicate layered glazes'),
        ('soft pastel palette', 'dreamy blue and lavender palette',
         'warm peach and sage palette')),
    'lineart': (
        ('line', 'lineart', 'outline', 'monoline'),
        ('continuous single line drawing', 'fine ink line work',
         'minimal monoline strokes', 'elegant contour lines'),
        ('black ink only', 'white line work for dark fabric',
         'single-color gold line palette')),
    'cute': (
        ('cute', 'kawaii', 'chibi', 'cartoon', 'playful', 'whimsical',
         'funny'),
        ('cute chibi proportions', 'thick friendly outlines',
         'rounded playful shapes', 'sticker-style white outline',
         'cheerful cartoon shading'),
        ('soft pastel pink and mint palette', 'bright candy-color palette',
         'cheerful primary-color palette')),
    'grunge': (
        ('grunge', 'punk', 'gothic', 'goth', 'dark', 'edgy'),
        ('rough brush texture', 'distressed grunge overlay',
         'ink splatter accents', 'gritty screen-print texture'),
        ('black and blood-red palette', 'washed-out black and gray palette',
         'black and acid-green palette')),
    'geometric': (
        ('geometric', 'geometry', 'abstract', 'lowpoly', 'polygon'),
        ('low-poly facets', 'sacred geometry lines',
         'sharp triangular shapes', 'interlocking geometric forms'),
        ('bold primary-color palette', 'teal and coral palette',
         'black and gold palette')),
    'boho': (
        ('boho', 'bohemian', 'hippie', 'hippy'),
        ('hand-drawn boho linework', 'sun and arch motifs',
         'organic flowing shapes', 'earthy textured fills'),
        ('terracotta, sand and sage palette',
         'muted mustard and blush palette')),
    'popart': (
        ('pop', 'comic', 'popart'),
        ('bold comic-book outlines', 'Ben-Day halftone dots',
         'punchy pop-art shading'),
        ('bright red, yellow and blue palette', 'hot pink and cyan palette')),
    'realistic': (
        ('realistic', 'photorealistic', 'realism', 'detailed', 'hyperreal'),
        ('highly detailed realistic rendering', 'natural soft lighting',
         'fine texture detail', 'sharp focus'),
        None),
    'modern': (
        ('modern', 'contemporary', 'flat'),
        ('bold flat shapes', 'crisp clean edges', 'vector illustration',
         'contemporary graphic design', 'smooth geometric shapes'),
        None),
}

TITLE_FLAIRS = ('Graphic', 'Illustrated', 'Statement', 'Art', 'Design')

# Copy templates. Fields: kind, feel, style, theme, niche, subject, a_style
# and a_theme (with "a"/"an"), A_style (the same, capitalized). The subject
# is only ever an object, so plural motifs ("fern fronds") never need verb
# agreement.
OPENINGS_COMPOSED = (
    '{A_style} {theme} design featuring {subject}, printed on a {feel} '
    '{kind}.',
    'This {feel} {kind} features {subject}, drawn in {a_style} style with '
    '{a_theme} feel.',
    'Show off your love of all things {theme} with this {style} {kind} '
    'featuring {subject}.',
    'This {style} {theme} {kind} puts {subject} center stage.',
)
OPENINGS_DIRECT = (
    'An original graphic {kind} featuring {subject}.',
    'This {feel} {kind} showcases {subject} in rich, vivid detail.',
    'Wear something truly different: {subject}, printed on a {feel} {kind}.',
)
AUDIENCE_NICHE = (
    'Perfect for {niche}, it makes a thoughtful gift for birthdays, holidays '
    'or just because.',
    "Made with {niche} in mind, it's an easy pick for yourself and a gift "
    "they'll actually wear.",
    "A great gift idea for {niche}, whether it's a birthday, a holiday or a "
    "well-earned treat.",
    'Treat yourself or surprise the {niche} in your life with a gift that '
    'gets worn again and again.',
)
AUDIENCE_EVERYDAY = (
    'An easy everyday favorite for errands, weekends and lazy days at home, '
    'and a simple gift idea too.',
    'Made for everyday wear, it pairs with jeans or joggers and makes a '
    'thoughtful gift for just about anyone.',
)
PRINT_LINES = (
    'Each {kind} is printed on demand with vivid, long-lasting inks.',
    'Printed to order with crisp detail and rich color, so every piece is '
    'made just for you.',
    'The design is printed on demand in sharp, vibrant color that holds up '
    'wash after wash.',
)
EXTRA_LINES = (
    'Check the size chart to find your perfect fit.',
    'Wash inside out in cold water to keep the print looking fresh.',
    'Pair it with your favorite jeans for an easy, laid-back look.',
)
CARE_BULLETS = ('Printed on demand with vivid, durable inks',
                'Made to order just for you',
                'Machine washable: turn inside out and wash cold')


###############################################################################
# Shared helpers (also used by the LLM writer) ################################
###############################################################################

def clean_tags(tags, limit=TAG_LIMIT, max_len=TAG_MAX_LEN):
    """Marketplace-safe tags: lowercase, punctuation folded to spaces,
    duplicates (case-insensitive), empty and over-long tags dropped, first
    ``limit`` kept in their original order."""
    out, seen = [], set()
    for tag in tags or ():
        text = _normalize_tag(tag)
        if text and len(text) <= max_len and text not in seen:
            seen.add(text)
            out.append(text)
    return out[:limit]


def clip_title(title, limit=TITLE_LIMIT):
    """``title`` with whitespace collapsed, cut at a word boundary to fit
    ``limit`` characters, without a dangling connector or punctuation."""
    text = ' '.join(str(title or '').split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(' ', 1)[0]
    # One giant word would leave almost nothing; a hard cut reads better.
    if len(cut) < limit // 2:
        cut = text[:limit]
    return _trim_tail(cut[:limit]) or text[:limit]


def _normalize_tag(tag):
    if tag is None:
        return ''
    text = unicodedata.normalize('NFKC', str(tag)).lower()
    # Marketplaces reject "&" in tags; "and" keeps "moms & dads" readable.
    text = text.replace('&', ' and ').replace('’', "'")
    text = re.sub(r"[^\w\s'-]|_", ' ', text)
    return ' '.join(text.split()).strip(" '-")


def _trim_tail(text):
    words = text.rstrip(' ,;:-–—/&|+').split(' ')
    # "Fox and" or "Tee for" reads as a broken title, so drop the connector.
    while len(words) > 1 and words[-1].lower() in SMALL_WORDS:
        words.pop()
    return ' '.join(words).rstrip(' ,;:-–—/&|+')


###############################################################################
# Text helpers ################################################################
###############################################################################

def _words(text):
    return WORD_RE.findall(text or '')


def _keywords(text):
    """Content words of ``text`` in order, without stopwords or art-direction
    noise, each once (case-insensitive)."""
    out, seen = [], set()
    for word in _words(TAG_RE.sub(' ', text or '')):
        low = word.lower()
        if (low in STOPWORDS or low in PROMPT_NOISE or low in seen
                or not any(ch.isalpha() for ch in word)):
            continue
        seen.add(low)
        out.append(word)
    return out


def _title_word(word, first_or_last):
    if not first_or_last and word.lower() in SMALL_WORDS:
        return word.lower()
    return '-'.join(part[:1].upper() + part[1:] for part in word.split('-'))


def _title_case(words):
    last = len(words) - 1
    return ' '.join(_title_word(word, i in (0, last))
                    for i, word in enumerate(words))


def _dedupe_words(words):
    """Drop repeated content words ("Retro Sunset Retro Tee")."""
    out, seen = [], set()
    for word in words:
        low = word.lower()
        if low in seen and low not in SMALL_WORDS:
            continue
        seen.add(low)
        out.append(word)
    return out


def _article(word):
    low = word.lower()
    if low.startswith(('uni', 'use', 'eu', 'one')):
        return 'a'
    return 'an' if low[:1] in 'aeiou' else 'a'


def _with_article(phrase):
    return f'{_article(phrase)} {phrase}'


def _capitalize(text):
    return text[:1].upper() + text[1:]


def _tokens(text):
    """Words of ``text`` with a plural ``s`` stripped, for bank matching."""
    words = [w.lower() for w in _words(text)]
    return set(words) | {w[:-1] for w in words if w.endswith('s')}


def _deck(rng, bank, count):
    """``count`` picks from ``bank``; every item is used before any repeats."""
    out = []
    while len(out) < count:
        out.extend(rng.sample(list(bank), len(bank)))
    return out[:count]


###############################################################################
# Request parsing #############################################################
###############################################################################

@dataclass
class _Inputs:
    prompt: str
    theme: str
    style: str
    niche: str
    given: frozenset
    product: Product
    product_words: tuple
    print_suffix: str = ''
    print_style: str = ''


# Art that prints: a subject a background remover can free, not a scene, a
# mockup or a framed picture; image models read "transparent background" as
# a grey checkerboard, so the background asked for is plain white.
PRINT_SUFFIX = ('isolated subject centered on a plain white background, flat colours, '
                'crisp clean edges, no mockup, no picture frame, no border')
TEXT_WORDS = frozenset({'text', 'typography', 'lettering', 'letters', 'quote', 'slogan',
                        'saying', 'words', 'font', 'calligraphy', 'wordmark'})


def print_suffix(request, print_style=''):
    """What a generated image prompt ends with so the art prints well:
    PRINT_STYLE when set, else PRINT_SUFFIX and "no text" unless the request
    asks for lettering."""
    if print_style:
        return print_style
    asked = ' '.join(str(request.get(k) or '') for k in ('prompt', 'theme', 'style', 'niche'))
    wants_text = TEXT_WORDS & set(re.findall(r'[a-z]+', asked.lower()))
    return PRINT_SUFFIX if wants_text else PRINT_SUFFIX + ', no text'


def direct_prompt(prompt, print_style=''):
    """The user's own prompt: unchanged, unless PRINT_STYLE is set."""
    return f'{prompt}, {print_style}' if print_style else prompt


def _prompt(request):
    # Kept byte for byte: the user's prompt is what they asked to be drawn.
    value = request.get('prompt')
    return value if isinstance(value, str) and value.strip() else ''


def _field(request, key):
    """A theme/style/niche as plain lowercase words, markup and emoji
    dropped, short enough to sit inside a sentence."""
    value = request.get(key)
    if not isinstance(value, str):
        return ''
    text = TAG_RE.sub(' ', unicodedata.normalize('NFKC', value))
    words = [w for w in FIELD_WORD_RE.findall(text)
             if len(w) <= FIELD_WORD_MAX]
    return ' '.join(words[:FIELD_WORDS]).lower()


def _product(request):
    types = request.get('productTypes') or []
    first = types[0] if isinstance(types, (list, tuple)) and types else ''
    key = re.sub(r'[^a-z]', '', str(first).lower())
    return PRODUCTS.get(PRODUCT_ALIASES.get(key, key), GENERIC_PRODUCT)


def _rng(request):
    """A private Random seeded from the request, never the global one."""
    keys = ('prompt', 'theme', 'style', 'niche', 'productTypes', 'seed')
    blob = json.dumps({k: request.get(k) for k in keys}, sort_keys=True,
                      default=str)
    digest = hashlib.sha256(blob.encode('utf-8')).digest()
    return random.Random(int.from_bytes(digest[:8], 'big'))


def _parse(request, rng, print_style=''):
    fields = {k: _field(request, k) for k in DEFAULTS}
    given = {k for k, v in fields.items() if v}
    fields = {k: v or DEFAULTS[k] for k, v in fields.items()}
    product = _product(request)
    # One product word per request keeps a batch consistent; the other
    # spelling is a spare for de-duplicating titles.
    words = rng.sample(product.title_words, len(product.title_words))
    return _Inputs(prompt=_prompt(request), given=frozenset(given),
                   product=product, product_words=tuple(words),
                   print_suffix=print_suffix(request, print_style),
                   print_style=print_style, **fields)


def _short(text, limit):
    """The first ``limit`` usable key words of ``text``, for titles."""
    words = [w for w in _keywords(text) if len(w) <= TITLE_WORD_MAX]
    return words[:limit]


###############################################################################
# Titles ######################################################################
###############################################################################

def _title(head, product_word, flair=''):
    words = _dedupe_words([*head, *flair.split(), product_word])
    return clip_title(_title_case(words))


def _unique_title(head, inputs, rng, taken):
    """The first title variant not used yet in this batch."""
    flairs = ('',) + tuple(rng.sample(TITLE_FLAIRS, len(TITLE_FLAIRS)))
    for flair in flairs:
        for word in inputs.product_words:
            title = _title(head, word, flair)
            if title.lower() not in taken:
                return _claim(title, taken)
    return _numbered_title(_title(head, inputs.product_words[0]), taken)


def _numbered_title(base, taken):
    number = 2
    while True:
        suffix = f' No. {number}'
        title = clip_title(base, TITLE_LIMIT - len(suffix)) + suffix
        if title.lower() not in taken:
            return _claim(title, taken)
        number += 1


def _claim(title, taken):
    taken.add(title.lower())
    return title


###############################################################################
# Copy ########################################################################
###############################################################################

def _copy_values(inputs, subject):
    return {
        'kind': inputs.product.kind, 'feel': inputs.product.feel,
        'style': inputs.style, 'theme': inputs.theme, 'niche': inputs.niche,
        'subject': subject,
        'a_style': _with_article(inputs.style),
        'A_style': _capitalize(_with_article(inputs.style)),
        'a_theme': _with_article(inputs.theme),
    }


def _description(inputs, subject, picks, rng):
    """Two to four sentences: the design, who it's for, print quality and
    sometimes a fit or care note."""
    values = _copy_values(inputs, subject)
    sentences = [picks['opening'], picks['audience'], picks['print']]
    if rng.random() < 0.5:
        sentences.append(rng.choice(EXTRA_LINES))
    return ' '.join(_capitalize(s.format(**values)) for s in sentences)


def _bullets(inputs, direct, rng):
    if direct:
        art = (f'Original {inputs.style} artwork' if 'style' in inputs.given
               else 'One-of-a-kind original artwork')
    else:
        art = f'Original {inputs.style} {inputs.theme} artwork'
    bullets = [art, inputs.product.feature]
    if rng.random() < 0.7:
        bullets.append(rng.choice(CARE_BULLETS))
    return bullets


def _html(description, bullets):
    items = ''.join(f'<li>{html.escape(b)}</li>' for b in bullets)
    return f'<p>{html.escape(description)}</p><ul>{items}</ul>'


def _base_tags(inputs):
    theme, style, niche = inputs.theme, inputs.style, inputs.niche
    short = inputs.product.short
    tags = [theme, style, f'{style} {theme}', f'{theme} {short}']
    if niche != DEFAULTS['niche']:
        tags[2:2] = [niche, f'gift for {niche}']
    return tags


def _product_tags(inputs):
    short = inputs.product.short
    return [f'{inputs.style} {short}', f'graphic {short}', 'gift idea',
            inputs.product.kind]


def _field_word_tags(inputs):
    # Single words rescue a theme or niche too long to be a tag itself.
    return [*_keywords(inputs.theme), *_keywords(inputs.niche),
            *_keywords(inputs.style)]


def _composed_tags(inputs, motif_title):
    return clean_tags([*_base_tags(inputs), motif_title.lower(),
                       *_product_tags(inputs), *_field_word_tags(inputs)])


def _direct_tags(inputs):
    keys = [w.lower() for w in _keywords(inputs.prompt)]
    fields = [getattr(inputs, k) for k in sorted(inputs.given)]
    lead = [' '.join(keys[:2])] if len(keys) > 1 else []
    gift = ([f'gift for {inputs.niche}'] if 'niche' in inputs.given else [])
    return clean_tags([*lead, *keys[:5], *fields, *gift,
                       *_product_tags(inputs)[1:], *keys[5:]])


###############################################################################
# Image prompts ###############################################################
###############################################################################

def _style_bank(style):
    tokens = _tokens(style)
    for aliases, art, palettes in STYLE_BANKS.values():
        if tokens & set(aliases):
            return art, palettes or GENERIC_PALETTES
    return STYLE_BANKS['modern'][1], GENERIC_PALETTES


def _bank_motifs(text):
    tokens = _tokens(text)
    return next((m for aliases, m in THEME_BANKS if tokens & set(aliases)), ())


def _theme_motifs(theme, niche):
    """(motifs matching the theme or niche, generic motifs filled in with
    the theme). A niche bank adds "hikers" motifs to a "nature" theme."""
    specific = _bank_motifs(theme)
    specific += tuple(m for m in _bank_motifs(niche) if m not in specific)
    short = _title_case(_short(theme, 3)) or 'Classic'
    generic = tuple(Motif(m.title.format(T=short),
                          m.prompt.format(t=theme, a_t=_with_article(theme)))
                    for m in GENERIC_MOTIFS)
    return specific, generic


def _motif_plan(rng, inputs, count):
    specific, generic = _theme_motifs(inputs.theme, inputs.niche)
    # Theme-specific motifs first: they make better designs than the
    # generic fill-ins, which only appear in larger batches.
    order = (rng.sample(specific, len(specific))
             + rng.sample(generic, len(generic)))
    return [order[i % len(order)] for i in range(count)]


def _audience(inputs):
    if inputs.niche == DEFAULTS['niche']:
        return 'everyday wear'
    return inputs.niche


def _image_prompt(inputs, motif, look, rng):
    art, _ = _style_bank(inputs.style)
    lead = (f'{inputs.style} {inputs.theme} {inputs.product.kind} design '
            f'for {_audience(inputs)}')
    parts = [f'{lead}: {motif.prompt} {look["angle"]}', look['composition'],
             look['palette'], *rng.sample(art, 2), rng.choice(NEUTRAL_ART),
             inputs.print_suffix]
    return ', '.join(parts)


def _unique_prompt(inputs, motif, look, rng, taken):
    prompt = _image_prompt(inputs, motif, look, rng)
    for _ in range(20):
        if prompt not in taken:
            break
        look = dict(look, angle=rng.choice(ANGLES),
                    composition=rng.choice(COMPOSITIONS))
        prompt = _image_prompt(inputs, motif, look, rng)
    number = 2
    while prompt in taken:
        prompt = f'{prompt.rsplit(", variation ", 1)[0]}, variation {number}'
        number += 1
    taken.add(prompt)
    return prompt


###############################################################################
# Briefs ######################################################################
###############################################################################

def _copy_plan(rng, count, direct, inputs):
    """Per-design sentence templates, spread so a batch doesn't repeat one
    opening while others go unused."""
    everyday = inputs.niche == DEFAULTS['niche']
    banks = {
        'opening': OPENINGS_DIRECT if direct else OPENINGS_COMPOSED,
        'audience': AUDIENCE_EVERYDAY if everyday else AUDIENCE_NICHE,
        'print': PRINT_LINES,
    }
    return _plan(rng, count, banks)


def _plan(rng, count, banks):
    decks = {name: _deck(rng, bank, count) for name, bank in banks.items()}
    return [{name: deck[i] for name, deck in decks.items()}
            for i in range(count)]


def _composed_briefs(inputs, count, rng):
    motifs = _motif_plan(rng, inputs, count)
    _, palettes = _style_bank(inputs.style)
    looks = _plan(rng, count, {'angle': ANGLES, 'composition': COMPOSITIONS,
                               'palette': palettes})
    copy = _copy_plan(rng, count, False, inputs)
    titles, prompts = set(), set()
    return [_composed_brief(inputs, motif, look, picks, rng, titles, prompts)
            for motif, look, picks in zip(motifs, looks, copy)]


def _composed_brief(inputs, motif, look, picks, rng, titles, prompts):
    head = [*_words(motif.title), *_short(inputs.style, 2),
            *_short(inputs.theme, 2)]
    description = _description(inputs, motif.prompt, picks, rng)
    return DesignBrief(
        image_prompt=_unique_prompt(inputs, motif, look, rng, prompts),
        title=_unique_title(head, inputs, rng, titles),
        description=description,
        description_html=_html(description, _bullets(inputs, False, rng)),
        tags=_composed_tags(inputs, motif.title),
        negative_prompt=NEGATIVE_PROMPT, writer=TemplateWriter.name,
        caption=motif.title)


def _subject(prompt, max_words=12):
    """The prompt's first clause as a noun phrase for the description,
    reduced to plain words so no markup reaches the copy."""
    text = TAG_RE.sub(' ', prompt)
    clause = next((c for c in re.split(r'[,;.:!?\n]', text) if c.strip()), '')
    clause = LEAD_FILLER.sub('', clause)
    words = [w for w in FIELD_WORD_RE.findall(clause)
             if len(w) <= TITLE_WORD_MAX][:max_words]
    while words and '&' in (words[0], words[-1]):
        words.pop(0 if words[0] == '&' else -1)
    if words and words[0].lower() in ('a', 'an', 'the'):
        words[0] = words[0].lower()
    return ' '.join(words) or 'an original design'


def _direct_briefs(inputs, count, rng):
    head = _short(inputs.prompt, 5) or ['Original', 'Art']
    subject = _subject(inputs.prompt)
    titles = set()
    return [_direct_brief(inputs, head, subject, picks, rng, titles)
            for picks in _copy_plan(rng, count, True, inputs)]


def _direct_brief(inputs, head, subject, picks, rng, titles):
    description = _description(inputs, subject, picks, rng)
    return DesignBrief(
        image_prompt=direct_prompt(inputs.prompt, inputs.print_style),
        title=_unique_title(head, inputs, rng, titles),
        description=description,
        description_html=_html(description, _bullets(inputs, True, rng)),
        tags=_direct_tags(inputs),
        negative_prompt=NEGATIVE_PROMPT, writer=TemplateWriter.name)


###############################################################################
# Adapter #####################################################################
###############################################################################

class TemplateWriter(PromptWriter):
    """Writes design briefs from phrase banks, with no model or network.

    The fallback ``PromptWriter`` when no LLM is configured; see the module
    docstring for how prompts and copy are built.
    """

    name = 'template'

    def write(self, request, count, ctx):
        """Write ``count`` distinct briefs for ``request``.

        :param request: dict with optional ``prompt``, ``theme``, ``style``,
            ``niche``, ``productTypes`` and ``seed``
        :param count: how many designs to brief
        :param ctx: the job context, or None; only ``ctx.log`` is used
        :return: a list of ``count`` DesignBrief, the same for the same
            request and seed
        """
        count = max(0, int(count))
        rng = _rng(request)
        inputs = _parse(request, rng, getattr(self.settings, 'print_style', ''))
        if ctx is not None:
            source = ('the prompt' if inputs.prompt
                      else 'theme, style and niche')
            ctx.log(f'Template writer: {count} brief(s) from {source}', 'INFO')
        build = _direct_briefs if inputs.prompt else _composed_briefs
        return build(inputs, count, rng)


###############################################################################
# One design, several products ################################################
###############################################################################

GARMENT_RE = re.compile(r'\b(t-shirts?|tees?|hoodies?|sweatshirts?|shirts?)\b',
                        re.IGNORECASE)


def copy_for(brief, type_key):
    """``brief`` with its product words changed to ``type_key``'s.

    A brief is written once per design, for the request's first product
    type; the hoodie made from the same design must not be sold as a tee.
    """
    target = PRODUCTS.get(PRODUCT_ALIASES.get(type_key, type_key), GENERIC_PRODUCT)
    if GARMENT_RE.search(brief.title) and not any(
            word.lower() in brief.title.lower() for word in target.title_words):
        brief = dataclasses.replace(brief, title=GARMENT_RE.sub(target.title_words[0],
                                                                brief.title))
    return dataclasses.replace(
        brief, description=_reword(brief.description, target),
        description_html=_reword(brief.description_html, target),
        tags=clean_tags([_reword(tag, target) for tag in brief.tags]))


def _reword(text, target):
    for product in (*PRODUCTS.values(), GENERIC_PRODUCT):
        if product is not target:
            text = text.replace(product.feature, target.feature)
            text = text.replace(product.feel, target.feel)
    return GARMENT_RE.sub(lambda m: _noun(m.group(0), target), text)


def _noun(word, target):
    noun = target.short if word.lower().startswith('tee') and target.short else target.kind
    return noun.capitalize() if word[0].isupper() else noun
