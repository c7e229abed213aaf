"""TemplateWriter: prompts and listing copy without an LLM."""

import re
import sys
import types
from pathlib import Path

import pytest

# The repo root holds the ``adapters`` package; make it importable however
# pytest is started (no conftest or package marker is assumed here).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.base import DesignBrief  # noqa: E402
from adapters.templates import (  # noqa: E402
    TemplateWriter, clean_tags, clip_title,
)

HIKERS = {'theme': 'nature', 'style': 'minimalist', 'niche': 'hikers',
          'productTypes': ['tshirt']}


def write(request, count=1):
    return TemplateWriter(None).write(request, count, None)


def tags_ok(tags):
    return (len(tags) <= 13 and all(tags) and all(len(t) <= 20 for t in tags)
            and len(set(tags)) == len(tags)
            and all(t == t.lower() and t == t.strip() for t in tags))


def sentences(text):
    return [s for s in re.split(r'(?<=[.!?])\s+', text.strip()) if s]


###############################################################################
# Shape #######################################################################
###############################################################################

def test_name_and_record_shape():
    briefs = write(HIKERS, 2)
    assert TemplateWriter.name == 'template'
    assert len(briefs) == 2
    for brief in briefs:
        assert isinstance(brief, DesignBrief)
        assert brief.writer == 'template'
        assert 'watermark' in brief.negative_prompt
        assert brief.title and brief.description and brief.tags


@pytest.mark.parametrize('count', [0, 1, 5, 25])
def test_returns_count_briefs(count):
    assert len(write(HIKERS, count)) == count


def test_ctx_log_is_used_when_given():
    class Ctx:
        def __init__(self):
            self.lines = []

        def log(self, message, level='info'):
            self.lines.append((message, level))

    ctx = Ctx()
    TemplateWriter(None).write(HIKERS, 2, ctx)
    assert ctx.lines


###############################################################################
# Direct prompt ###############################################################
###############################################################################

def test_direct_prompt_is_kept_verbatim():
    prompt = '  A fox astronaut,\n floating among  pastel planets!  '
    briefs = write({'prompt': prompt, 'productTypes': ['tshirt']}, 3)
    assert [b.image_prompt for b in briefs] == [prompt] * 3
    assert len({b.title for b in briefs}) == 3


def test_direct_prompt_title_uses_key_words():
    brief = write({'prompt': 'a fox astronaut floating among pastel planets',
                   'productTypes': ['tshirt']})[0]
    words = brief.title.split()
    assert words[:2] == ['Fox', 'Astronaut']
    assert 'among' not in brief.title.lower().split()
    assert words[-1] in ('Tee', 'T-Shirt')


def test_direct_prompt_copy_is_written_from_prompt():
    brief = write({'prompt': 'a grumpy owl drinking espresso',
                   'productTypes': ['hoodie'], 'niche': 'night owls'})[0]
    assert 'grumpy owl' in brief.description
    assert 'owl' in brief.tags
    assert 'night owls' in brief.description


###############################################################################
# Composed prompts ############################################################
###############################################################################

def test_count_three_gives_distinct_prompts_and_titles():
    briefs = write(HIKERS, 3)
    assert len({b.image_prompt for b in briefs}) == 3
    assert len({b.title for b in briefs}) == 3
    for brief in briefs:
        prompt = brief.image_prompt
        assert 'minimalist' in prompt and 'nature' in prompt
        # Art a background remover can free, not a scene or a mockup.
        assert prompt.endswith('isolated subject centered on a plain white background, flat '
                               'colours, crisp clean edges, no mockup, no picture frame, '
                               'no border, no text')


def test_print_style_replaces_the_print_suffix_and_lettering_keeps_its_text():
    styled = TemplateWriter(types.SimpleNamespace(print_style='die-cut sticker style'))
    [brief] = styled.write(HIKERS, 1, None)
    assert brief.image_prompt.endswith(', die-cut sticker style')
    assert 'plain white background' not in brief.image_prompt
    [lettered] = write({**HIKERS, 'style': 'retro typography'})
    assert 'no mockup' in lettered.image_prompt and 'no text' not in lettered.image_prompt


def test_a_direct_prompt_is_used_unchanged_unless_print_style_is_set():
    [plain] = write({'prompt': 'A fox in the snow', 'productTypes': ['tshirt']})
    assert plain.image_prompt == 'A fox in the snow'
    styled = TemplateWriter(types.SimpleNamespace(print_style='flat vector, white background'))
    [brief] = styled.write({'prompt': 'A fox in the snow', 'productTypes': ['tshirt']}, 1, None)
    assert brief.image_prompt == 'A fox in the snow, flat vector, white background'


def test_large_batches_stay_distinct():
    briefs = write({'theme': 'coffee', 'productTypes': ['hoodie']}, 60)
    assert len({b.image_prompt for b in briefs}) == 60
    assert len({b.title.lower() for b in briefs}) == 60
    assert all(len(b.title) <= 140 for b in briefs)


def test_articles_agree_with_the_theme():
    briefs = write({'theme': 'ocean', 'style': 'abstract'}, 14)
    text = ' '.join(b.image_prompt + ' ' + b.description for b in briefs)
    assert 'an ocean scene' in text
    assert not re.search(r'\ba (ocean|abstract)\b', text)


def test_defaults_fill_missing_fields():
    brief = write({'style': 'retro'})[0]
    assert 'classic' in brief.image_prompt
    assert 'everyday' in brief.description.lower()
    brief = write({'niche': 'nurses'})[0]
    assert 'modern classic' in brief.image_prompt
    assert 'nurses' in brief.description


def test_style_bank_changes_art_direction():
    retro = ' '.join(b.image_prompt for b in write({'theme': 'cats',
                                                    'style': 'retro'}, 4))
    watercolor = ' '.join(b.image_prompt for b in write(
        {'theme': 'cats', 'style': 'watercolor'}, 4))
    assert re.search(r'retro|70s|halftone|screen-print', retro)
    assert 'watercolor' in watercolor and 'halftone' not in watercolor


def test_title_reads_like_a_listing():
    for brief in write(HIKERS, 5):
        words = brief.title.split()
        assert words[-1] in ('Tee', 'T-Shirt'), brief.title
        assert 'Minimalist' in words and 'Nature' in words
        assert all(w[0].isupper() for w in words if w not in ('of', 'in'))


###############################################################################
# Determinism #################################################################
###############################################################################

def test_same_request_same_briefs():
    request = dict(HIKERS, seed=42)
    first = [b.to_dict() for b in write(request, 3)]
    again = [b.to_dict() for b in write(dict(request), 3)]
    assert first == again


def test_different_seed_different_briefs():
    one = [b.image_prompt for b in write(dict(HIKERS, seed=1), 3)]
    two = [b.image_prompt for b in write(dict(HIKERS, seed=2), 3)]
    assert one != two


def test_global_random_is_untouched():
    import random
    random.seed(123)
    expected = random.random()
    random.seed(123)
    write(HIKERS, 3)
    assert random.random() == expected


###############################################################################
# Titles ######################################################################
###############################################################################

def test_title_fits_for_a_very_long_prompt():
    prompt = ' '.join(f'word{i}' for i in range(200))[:1000]
    for brief in write({'prompt': prompt}, 3):
        assert 0 < len(brief.title) <= 140


def test_title_fits_for_one_giant_word():
    brief = write({'prompt': 'x' * 1000, 'theme': 'y' * 1000})[0]
    assert 0 < len(brief.title) <= 140


def test_clip_title_cuts_at_a_word_boundary():
    title = clip_title('Lovely ' * 40, 140)
    assert len(title) <= 140
    assert title.endswith('Lovely')
    assert clip_title('Short Title') == 'Short Title'
    assert clip_title('Fox and ' + 'Owl ' * 40, 9) == 'Fox'
    assert len(clip_title('z' * 500)) == 140


###############################################################################
# Tags ########################################################################
###############################################################################

def test_tags_follow_marketplace_rules():
    for brief in write(HIKERS, 3):
        assert tags_ok(brief.tags), brief.tags
        assert 'nature' in brief.tags and 'hikers' in brief.tags
        assert 'graphic tee' in brief.tags


@pytest.mark.parametrize('request_', [
    {'prompt': 'Supercalifragilisticexpialidocious-antidisestablishment '
               'cat!!! ??? ... 🚀🚀 ＦＵＬＬＷＩＤＴＨ naïve café'},
    {'theme': 'a' * 500, 'style': '!!!???', 'niche': '💥 ' * 50},
    {'theme': 'Cats & Dogs', 'style': 'RETRO', 'niche': 'dog moms & dads',
     'productTypes': ['hoodie']},
    {'prompt': ',,,;;;...', 'niche': '<b>nurses</b>'},
])
def test_tags_survive_hostile_input(request_):
    for brief in write(request_, 3):
        assert tags_ok(brief.tags), brief.tags
        assert 0 < len(brief.title) <= 140


def test_clean_tags_rules():
    tags = clean_tags(['Nature', 'nature ', ' NATURE', '', None, '   ',
                       'x' * 21, 'Dog Moms & Dads', 'Foo_Bar!!', 'Café',
                       '🚀', 'ＲＥＴＲＯ'] + [f'tag{i}' for i in range(20)])
    assert tags[:5] == ['nature', 'dog moms and dads', 'foo bar', 'café',
                        'retro']
    assert len(tags) == 13
    assert tags_ok(tags)
    assert clean_tags(['a', 'b', 'c'], limit=2) == ['a', 'b']
    assert clean_tags(['abcdef'], max_len=5) == []


###############################################################################
# Copy ########################################################################
###############################################################################

def test_description_mentions_product_and_niche():
    for brief in write(HIKERS, 3):
        text = brief.description.lower()
        assert 't-shirt' in text
        assert 'hikers' in text
        assert 2 <= len(sentences(brief.description)) <= 4


def test_descriptions_vary_across_a_batch():
    briefs = write(HIKERS, 3)
    openings = {sentences(b.description)[0].split()[0] for b in briefs}
    assert len({b.description for b in briefs}) == 3
    assert len(openings) > 1


def test_hoodie_wording():
    brief = write(dict(HIKERS, productTypes=['hoodie', 'tshirt']))[0]
    assert brief.title.endswith(' Hoodie')
    assert 'hoodie' in brief.description
    assert 't-shirt' not in brief.description
    assert 'graphic hoodie' in brief.tags
    assert 'hoodie design' in brief.image_prompt


def test_tshirt_wording():
    brief = write(dict(HIKERS, productTypes=['tshirt', 'hoodie']))[0]
    assert brief.title.endswith((' Tee', ' T-Shirt'))
    assert 't-shirt' in brief.description
    assert 'hoodie' not in brief.description


def test_other_products_are_shirts():
    brief = write(dict(HIKERS, productTypes=['tanktop']))[0]
    assert brief.title.endswith(' Shirt')
    assert 'shirt' in brief.description


def test_description_html_structure():
    brief = write(HIKERS)[0]
    html = brief.description_html
    assert html.startswith('<p>') and '</p><ul>' in html
    assert html.endswith('</ul>')
    assert 2 <= html.count('<li>') <= 3


def test_description_html_is_escaped():
    prompt = '<script>alert("x")</script> a cat & a <b>dog</b>'
    for brief in write({'prompt': prompt, 'niche': '<img src=x>'}, 3):
        assert '<script' not in brief.description_html.lower()
        assert '<img' not in brief.description_html.lower()
        assert '<b>' not in brief.description_html
        assert '<script' not in brief.description.lower()
        assert brief.image_prompt == prompt
    brief = write({'prompt': 'a cat & a dog'})[0]
    assert '&amp;' in brief.description_html
