"""The request checks: the quick check of a body against the one if/then
branch it takes (SubmitBody by type) judges every body as the whole schema
does, which words every refusal."""

import copy
import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import podengine  # noqa: E402

SUBMITS = [  # bodies POST /api/jobs takes, one per branch
    {'type': 'generate', 'request': {'prompt': 'a cat', 'productTypes': ['tshirt'],
                                     'count': 2, 'placement': 'chest'}},
    {'type': 'batch', 'request': {'items': [{'theme': 'surf', 'productTypes': ['hoodie']}]},
     'priority': 'high', 'maxRetries': 3},
    {'type': 'custom', 'request': {'handler': 'publish_image', 'image': 'inbox/a.png',
                                   'productTypes': ['tshirt'], 'tags': ['x']}},
    {'type': 'custom', 'request': {'handler': 'comfyui_workflow', 'workflow': {
        '9': {'class_type': 'SaveImage', 'inputs': {}}, '3': {'class_type': 'KSampler'}}}},
]
ODD_VALUES = [None, True, False, 0, 1, 1.0, 2.5, -1, 10 ** 30, '', 'x', 'a' * 600, [], ['tshirt'],
              [1], {}, {'a': 1}, 'inbox/../x', 'C:\\x', 'generate', 'custom', 'SaveImage']


def variants(body):
    """The body with each value (at any depth) replaced by odd ones, each key
    dropped, and an unknown key added at each level."""
    yield body
    for path, _ in leaves(body):
        for odd in ODD_VALUES:
            yield replaced(body, path, odd)
        yield replaced(body, path, None, drop=True)
    for path, value in leaves(body, containers=True):
        if isinstance(value, dict):
            yield replaced(body, path + ('unknownField',), 1)


def leaves(value, path=(), containers=False):
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        yield path, value
        return
    if containers:
        yield path, value
    for key, item in items:
        yield from leaves(item, path + (key,), containers)


def replaced(body, path, new, drop=False):
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    if not path:
        return new
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return body


def test_the_quick_check_judges_as_the_whole_schema():
    schemas = podengine.RequestSchemas(['tshirt', 'hoodie'],
                                       {'publish_image': 1, 'comfyui_workflow': 1})
    whole = schemas._validator('SubmitBody')
    compared = refused = 0
    for body in itertools.chain.from_iterable(variants(b) for b in SUBMITS):
        quick = schemas._branch_validator('SubmitBody', body)
        if quick is None:  # no branch to take: the whole schema judges it
            continue
        judged = whole.is_valid(body)
        assert quick.is_valid(body) == judged, f'the quick check judged {body!r} otherwise'
        compared += 1
        refused += not judged
    assert compared > 300 and 0 < refused < compared
    assert all(whole.is_valid(body) for body in SUBMITS)


def test_a_refusal_is_worded_by_the_whole_schema():
    schemas = podengine.RequestSchemas(['tshirt'], {'comfyui_workflow': 1})
    body = {'type': 'custom', 'request': {'handler': 'comfyui_workflow', 'workflow': {
        '': {'class_type': 'SAVE'}, 'x': {'class_type': '', 'inputs': [None, None]}}}}
    with pytest.raises(podengine.ValidationError, match='request.workflow'):
        schemas.check('SubmitBody', body)
