"""A JSON Schema turned into one plain Python function that says whether a
value fits it, for the request bodies of every submit.

jsonschema (the judge of every refusal, and the wording of its message) walks
the schema anew for each value: about 60-200 us a submit body here. The
function built by ``compile_schema`` does the same tests as closures made
once, in a few microseconds. It knows the keywords of draft 2020-12 the API
document uses and no others: a schema with any other keyword raises
``Unsupported`` when compiled, so the caller keeps jsonschema for it instead
of accepting what it cannot judge. ``tests/test_request_schemas.py`` holds it
to jsonschema's verdict on about a thousand odd bodies.
"""

import re

ANNOTATIONS = frozenset({'description', 'default', 'title', 'examples', 'deprecated',
                         'readOnly', 'writeOnly', 'format'})  # format: an annotation in 2020-12
REF_PREFIX = '#/components/schemas/'


class Unsupported(ValueError):
    """The schema uses a keyword this module does not judge."""


def compile_schema(schema, schemas):
    """``fits(value) -> bool`` for ``schema``; ``$ref``s name ``schemas`` entries."""
    return Compiler(schemas).compile(schema)


class Compiler:
    def __init__(self, schemas):
        self.schemas = schemas
        self.named = {}  # schema name -> its function, once compiled (refs may loop)

    def compile(self, schema):
        if schema is True or schema == {}:
            return lambda value: True
        if schema is False:
            return lambda value: False
        if not isinstance(schema, dict):
            raise Unsupported(f'a schema must be an object, not {schema!r}')
        tests = []
        for key in schema:
            if key in ANNOTATIONS or key.startswith('x-') or key in ('then', 'else'):
                continue
            build = getattr(self, 'kw_' + key.lstrip('$'), None)
            if build is None:
                raise Unsupported(f'keyword {key!r}')
            tests.append(build(schema[key], schema))
        return all_of(tests)

    # Keywords ----------------------------------------------------------------

    def kw_ref(self, ref, schema):
        if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
            raise Unsupported(f'$ref {ref!r}')
        name = ref[len(REF_PREFIX):]
        if name not in self.named:
            self.named[name] = None  # a loop back here looks it up when called
            self.named[name] = self.compile(self.schemas[name])
        found = self.named[name]
        return found if found is not None else (lambda value: self.named[name](value))

    def kw_type(self, names, schema):
        names = [names] if isinstance(names, str) else names
        if any(name not in TYPES for name in names):
            raise Unsupported(f'type {names!r}')
        tests = [TYPES[name] for name in names]
        if len(tests) == 1:
            return tests[0]
        return lambda value: any(test(value) for test in tests)

    def kw_enum(self, options, schema):
        if all(isinstance(option, str) for option in options):
            allowed = frozenset(options)
            return lambda value: isinstance(value, str) and value in allowed
        return lambda value: any(json_equal(value, option) for option in options)

    def kw_const(self, expected, schema):
        return lambda value: json_equal(value, expected)

    def kw_required(self, keys, schema):
        return lambda value: not isinstance(value, dict) or all(key in value for key in keys)

    def kw_properties(self, properties, schema):
        checks = {key: self.compile(sub) for key, sub in properties.items()}

        def properties_fit(value):
            if not isinstance(value, dict):
                return True
            for key, fits in checks.items():
                if key in value and not fits(value[key]):
                    return False
            return True
        return properties_fit

    def kw_additionalProperties(self, extra, schema):
        known = frozenset(schema.get('properties', ()))
        if 'patternProperties' in schema:
            raise Unsupported('additionalProperties beside patternProperties')
        if extra is False:
            return lambda value: not isinstance(value, dict) or known.issuperset(value)
        fits = self.compile(extra)
        return lambda value: not isinstance(value, dict) or all(
            fits(item) for key, item in value.items() if key not in known)

    def kw_minProperties(self, low, schema):
        return lambda value: not isinstance(value, dict) or len(value) >= low

    def kw_maxProperties(self, high, schema):
        return lambda value: not isinstance(value, dict) or len(value) <= high

    def kw_items(self, items, schema):
        if 'prefixItems' in schema:
            raise Unsupported('items beside prefixItems')
        fits = self.compile(items)
        return lambda value: not isinstance(value, list) or all(fits(item) for item in value)

    def kw_minItems(self, low, schema):
        return lambda value: not isinstance(value, list) or len(value) >= low

    def kw_maxItems(self, high, schema):
        return lambda value: not isinstance(value, list) or len(value) <= high

    def kw_uniqueItems(self, unique, schema):
        if not unique:
            return lambda value: True
        return lambda value: not isinstance(value, list) or all_distinct(value)

    def kw_minLength(self, low, schema):
        return lambda value: not isinstance(value, str) or len(value) >= low

    def kw_maxLength(self, high, schema):
        return lambda value: not isinstance(value, str) or len(value) <= high

    def kw_pattern(self, pattern, schema):
        search = re.compile(pattern).search
        return lambda value: not isinstance(value, str) or search(value) is not None

    def kw_minimum(self, low, schema):
        return lambda value: not is_number(value) or value >= low

    def kw_maximum(self, high, schema):
        return lambda value: not is_number(value) or value <= high

    def kw_allOf(self, subs, schema):
        key = switch_key(subs)
        if key is None:
            return all_of([self.compile(sub) for sub in subs])
        branches = {sub['if']['properties'][key]['const']: self.compile(sub['then'])
                    for sub in subs}
        every = all_of(list(branches.values()))

        # One branch found by its key instead of every `if` tried in turn. Not
        # an object: `properties` and `required` hold vacuously, so every `then` applies.
        def switch(value):
            if not isinstance(value, dict):
                return every(value)
            chosen = value.get(key)
            if not isinstance(chosen, str) or chosen not in branches:
                return True
            return branches[chosen](value)
        return switch

    def kw_anyOf(self, subs, schema):
        tests = [self.compile(sub) for sub in subs]
        return lambda value: any(test(value) for test in tests)

    def kw_not(self, sub, schema):
        fits = self.compile(sub)
        return lambda value: not fits(value)

    def kw_if(self, condition, schema):
        holds = self.compile(condition)
        then = self.compile(schema.get('then', True))
        otherwise = self.compile(schema.get('else', True))
        return lambda value: then(value) if holds(value) else otherwise(value)


def all_of(tests):
    if len(tests) == 1:
        return tests[0]

    def every(value):  # a loop, not all() over a generator: this runs per keyword per value
        for test in tests:
            if not test(value):
                return False
        return True
    return every


def switch_key(subs):
    """K when every one of ``subs`` is ``{if: {properties: {K: {const: <a
    string>}}, required: [K]}, then: ...}`` with one K and distinct strings."""
    keys, seen = set(), set()
    for sub in subs:
        if not isinstance(sub, dict) or set(sub) != {'if', 'then'}:
            return None
        condition = sub['if']
        if not isinstance(condition, dict) or set(condition) != {'properties', 'required'}:
            return None
        properties = condition['properties']
        if not isinstance(properties, dict) or len(properties) != 1:
            return None
        [(key, test)] = properties.items()
        if test != {'const': test.get('const') if isinstance(test, dict) else None} or \
                not isinstance(test['const'], str) or test['const'] in seen or \
                condition['required'] != [key]:
            return None
        keys.add(key)
        seen.add(test['const'])
    return keys.pop() if len(keys) == 1 and len(subs) > 1 else None


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TYPES = {
    'object': lambda value: isinstance(value, dict),
    'array': lambda value: isinstance(value, list),
    'string': lambda value: isinstance(value, str),
    'boolean': lambda value: isinstance(value, bool),
    'null': lambda value: value is None,
    'number': is_number,
    # 2020-12: 1.0 is an integer, True is not
    'integer': lambda value: (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()),
}


def json_equal(one, two):
    """Equal as JSON values: 1 == 1.0, but True is not 1."""
    if isinstance(one, bool) or isinstance(two, bool):
        return type(one) is type(two) and one == two
    if is_number(one) and is_number(two):
        return one == two
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(map(json_equal, one, two))
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(json_equal(one[key], two[key]) for key in one)
    return type(one) is type(two) and one == two


def all_distinct(items):
    return not any(json_equal(items[i], items[j])
                   for i in range(len(items)) for j in range(i + 1, len(items)))
