"""The request checks: the quick check (the schema compiled to one function,
adapters/quickcheck.py) judges every body as jsonschema does, which words
every refusal."""

import copy
import itertools
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import podengine  # noqa: E402
from adapters import quickcheck  # noqa: E402

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


def test_the_quick_check_judges_as_jsonschema():
    schemas = podengine.RequestSchemas(['tshirt', 'hoodie'],
                                       {'publish_image': 1, 'comfyui_workflow': 1})
    whole = schemas._validator('SubmitBody')
    quick = schemas._quick_check('SubmitBody')
    assert quick is not None, 'SubmitBody uses a keyword the quick check does not know'
    compared = refused = 0
    for body in itertools.chain.from_iterable(variants(b) for b in SUBMITS):
        judged = whole.is_valid(body)
        assert quick(body) == judged, f'the quick check judged {body!r} otherwise'
        compared += 1
        refused += not judged
    assert compared > 400 and refused > 300 and compared - refused > 40
    assert all(whole.is_valid(body) for body in SUBMITS)


@pytest.mark.parametrize('name', sorted(json.loads(podengine.API_DOCUMENT.read_text())[
    'components']['schemas']))
def test_every_schema_of_the_document_is_judged_as_jsonschema_does(name):
    schemas = podengine.RequestSchemas(['tshirt'], {'publish_image': 1})
    quick, whole = schemas._quick_check(name), schemas._validator(name)
    assert quick is not None, f'{name} uses a keyword the quick check does not know'
    for value in [*ODD_VALUES, *SUBMITS, *(b['request'] for b in SUBMITS), {'x': None},
                  [None, None], ['a', 'a'], [{'a': 1}, {'a': 1.0}], 1e300, -0.0, 3.0]:
        assert quick(value) == whole.is_valid(value), f'{name} judged {value!r} otherwise'


# allOf of if/then on one key's string const: judged by looking the branch up
SWITCH = {'allOf': [{'if': {'properties': {'k': {'const': name}}, 'required': ['k']},
                     'then': {'properties': {'n': {'type': kind}}, 'type': 'object'}}
                    for name, kind in [('a', 'integer'), ('b', 'string')]]}


@pytest.mark.parametrize('schema, value, fits', [
    ({'type': 'integer'}, 1.0, True), ({'type': 'integer'}, True, False),
    ({'const': 1}, True, False), ({'const': 1}, 1.0, True), ({'enum': [False]}, 0, False),
    ({'uniqueItems': True}, [1, 1.0], False), ({'uniqueItems': True}, [1, True], True),
    ({'pattern': '^a\\Z'}, 'a\n', False), ({'maxLength': 1}, '\U0001F600', True),
    ({'if': {'type': 'string'}, 'then': {'minLength': 2}}, 'a', False),
    ({'if': {'type': 'string'}, 'then': {'minLength': 2}}, 5, True),
    ({'not': {'type': 'null'}}, None, False), ({'then': False}, 1, True),
    ({'maxLength': 2}, 'ab', True), ({'maxLength': 2}, 'abc', False),
    ({'minLength': 2}, 'ab', True), ({'minLength': 2}, 'a', False),
    ({'maxItems': 1}, [1], True), ({'maxItems': 1}, [1, 2], False),
    ({'minItems': 1}, [1], True), ({'minItems': 1}, [], False),
    ({'maxProperties': 1}, {'a': 1}, True), ({'maxProperties': 1}, {'a': 1, 'b': 2}, False),
    ({'minProperties': 1}, {'a': 1}, True), ({'minProperties': 1}, {}, False),
    ({'minimum': 1}, 1, True), ({'minimum': 1}, 0.5, False), ({'minimum': 1}, 'a', True),
    ({'maximum': 1}, 1.0, True), ({'maximum': 1}, 2, False), ({'required': ['a']}, [], True),
    ({'additionalProperties': False, 'properties': {'a': {}}}, {'a': 1, 'b': 1}, False),
    ({'additionalProperties': {'type': 'string'}}, {'b': 's'}, True),
    ({'additionalProperties': {'type': 'string'}}, {'b': 1}, False),
    ({'anyOf': [{'type': 'string'}, {'type': 'null'}]}, 1, False),
    ({'allOf': [{'type': 'number'}, {'maximum': 3}]}, 4, False),
    ({'type': ['string', 'null']}, None, True), ({'enum': ['a', 1]}, 1.0, True),
    *((SWITCH, value, fits) for value, fits in [
        ({'k': 'a', 'n': 1}, True), ({'k': 'a', 'n': 'x'}, False), ({'k': 'b', 'n': 'x'}, True),
        ({'k': 'b', 'n': 1}, False), ({'k': 'c', 'n': None}, True), ({'n': 1}, True),
        ({'k': 1, 'n': None}, True), ({'k': ['a'], 'n': None}, True),
        ('a', False), ([], False)]),  # not an object: every `then` applies
])
def test_the_quick_check_follows_json_schema_on_corner_cases(schema, value, fits):
    assert quickcheck.compile_schema(schema, {})(value) is fits
    assert podengine.Draft202012Validator(schema).is_valid(value) is fits


def test_a_keyword_it_does_not_know_leaves_the_schema_to_jsonschema():
    with pytest.raises(quickcheck.Unsupported, match='patternProperties'):
        quickcheck.compile_schema({'patternProperties': {'^a': {}}}, {})
    with pytest.raises(quickcheck.Unsupported, match='type'):
        quickcheck.compile_schema({'type': 'date'}, {})
    schemas = podengine.RequestSchemas(['tshirt'], {})
    schemas._components['schemas']['Odd'] = {'type': 'object', 'propertyNames': {'maxLength': 2}}
    assert schemas._quick_check('Odd') is None
    with pytest.raises(podengine.ValidationError):
        schemas.check('Odd', {'long': 1})
    assert schemas.check('Odd', {'ok': 1}) == {'ok': 1}


def test_a_refusal_is_worded_by_the_whole_schema():
    schemas = podengine.RequestSchemas(['tshirt'], {'comfyui_workflow': 1})
    body = {'type': 'custom', 'request': {'handler': 'comfyui_workflow', 'workflow': {
        '': {'class_type': 'SAVE'}, 'x': {'class_type': '', 'inputs': [None, None]}}}}
    with pytest.raises(podengine.ValidationError, match='request.workflow'):
        schemas.check('SubmitBody', body)
