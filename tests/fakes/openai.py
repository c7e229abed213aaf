"""Fake OpenAI-compatible chat completions (OpenAI, Ollama's /v1, vLLM, LM Studio).

``POST /v1/chat/completions`` enforces what api.openai.com enforces for the
subset the engine uses and answers like it; ``GET /v1/models`` lists the one
model, for health checks. Every answer is JSON; errors look like
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``.

Checks, in order (each refusal counts in ``rejected`` and consumes no mode):

    401  ``Authorization: Bearer <api_key>`` missing or wrong
         (``api_key`` None = no auth, like Ollama)
    400  body not a JSON object; an unknown parameter; ``model`` not a string;
         ``messages`` missing, empty, or an entry not {role: system | user |
         assistant, content: string}; ``temperature`` not a number in 0..2;
         ``max_tokens`` not an integer >= 1; ``stream`` true (this fake never
         streams); ``response_format`` not {"type": "text" | "json_object" |
         "json_schema"}; json_object while no message says "json"
    404  ``model`` is not the scenario's ``model`` (``model`` None = any)

The answer's content depends on the scenario's mode (see ``compose``). The
number of designs N comes from the LAST user message: the first match of
``exactly (\\d+) design`` else ``"count"\\s*:\\s*(\\d+)`` (case-insensitive),
else 1. Words come from ``theme: X``, ``style: Y`` and ``niche: Z`` lines (or
``"theme": "X"`` JSON pairs) of that message, else generic ones. When the
answer is longer than ``max_tokens`` (4 characters a token) it is cut there and
``finish_reason`` is "length", as the real API does.

Scenario knobs (``POST /_fake/config`` merges them, 400 on an unknown knob or
mode; ``/_fake/reset`` restores):

    mode          "valid"  the answer for every call once ``modes`` is empty
    modes         []       answers queued ahead of ``mode``, one per admitted call
    model         "fake-model"
    api_key       "sk-test-fake-key-0000"
    blocked_word  "Nike"   the trademark of the "blocked" mode
    slow_seconds  5        how long the "slow" mode sleeps
    bad_fields    ["tags", "title", "description"]  the faults of "bad_fields"
                  (also "image_prompt": a number instead of a string)

Modes: valid, fenced, invalid_json, too_few, bad_fields, blocked, slow (text
answers, see ``compose``); error_500 (500 server_error), overloaded (503),
rate_limited (429 with ``retry-after: 1``).

Control routes: ``POST /_fake/config``, ``GET /_fake/requests`` (every
non-/_fake request: method, path, query, json, headers, status),
``POST /_fake/reset``, ``GET /_fake/state`` ({calls: completion requests
received, answered: {mode: n}, rejected: {status: n}, listings: model list
requests}).

The mode machinery, the design builder and the request recorder are shared
with ``fakes/anthropic.py``.
"""

import collections
import copy
import json
import math
import re
import secrets
import sys
import time
import traceback

import bottle
import gevent
from fakes.control import ApiError, control_routes, reply

DEFAULT_SCENARIO = {
    'mode': 'valid',
    'modes': [],
    'model': 'fake-model',
    'api_key': 'sk-test-fake-key-0000',
    'blocked_word': 'Nike',
    'slow_seconds': 5,
    'bad_fields': ['tags', 'title', 'description'],
}

TEXT_MODES = ('valid', 'fenced', 'invalid_json', 'too_few', 'bad_fields', 'blocked', 'slow')
ERROR_MODES = ('error_500', 'overloaded', 'rate_limited')
MODES = TEXT_MODES + ERROR_MODES
BAD_FIELDS = ('tags', 'title', 'description', 'image_prompt')

CHAT_PARAMS = {'model', 'messages', 'temperature', 'max_tokens', 'max_completion_tokens',
               'response_format', 'top_p', 'n', 'stop', 'stream', 'seed', 'presence_penalty',
               'frequency_penalty', 'logit_bias', 'user', 'logprobs', 'top_logprobs'}
ROLES = ('system', 'user', 'assistant')
FORMATS = ('text', 'json_object', 'json_schema')


# Designs (shared with anthropic.py) ########################################

COUNT_PATTERNS = (re.compile(r'exactly (\d+) design', re.I),
                  re.compile(r'"count"\s*:\s*(\d+)', re.I))
GENERIC = {'theme': 'abstract shapes', 'style': 'minimalist', 'niche': 'gift'}
VARIANTS = ('Sunset', 'Midnight', 'Vintage', 'Bold', 'Golden', 'Electric', 'Wild', 'Calm',
            'Retro', 'Neon', 'Forest', 'Ocean', 'Desert', 'Cosmic', 'Urban', 'Pastel')
FILLER_TAGS = ('graphic tee', 'gift idea', 'unisex', 'original art', 'trendy', 'streetwear',
               'casual wear', 'birthday gift', 'cool design', 'statement shirt',
               'everyday style', 'printed apparel', 'illustration')
STOP = {'the', 'and', 'for', 'with', 'from', 'over', 'under', 'into'}
NEGATIVE = 'blurry, low quality, watermark, text, signature, jpeg artifacts, cropped, deformed'
MAX_DESIGNS = 100


def design_count(prompt):
    """N from ``exactly N design`` or ``"count": N``; 1 when neither is there."""
    for pattern in COUNT_PATTERNS:
        found = pattern.search(prompt)
        if found:
            return min(int(found.group(1)), MAX_DESIGNS)
    return 1


def prompt_word(prompt, key):
    """The value of a ``key: value`` line or ``"key": "value"`` pair, cleaned, or a default."""
    found = (re.search(rf'(?im)^[\s\-*#]*{key}\s*:\s*(.+?)\s*$', prompt)
             or re.search(rf'(?i)"{key}"\s*:\s*"([^"]*)"', prompt))
    words = re.sub(r"[^A-Za-z0-9' -]+", ' ', found.group(1) if found else '').split()
    return ' '.join(words[:6]) or GENERIC[key]


def shorten(text, limit):
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(' ', 1)[0] if ' ' in text[:limit + 1] else text[:limit]
    return cut[:limit].rstrip(' -')


def make_tags(words, variant, count):
    """``count`` distinct lowercase tags of at most 20 characters."""
    theme, style, niche = words
    words = [w for w in f'{theme} {style}'.split() if len(w) > 2 and w.lower() not in STOP]
    candidates = [theme, style, niche, variant, f'{style} art', f'{niche} gift', *words,
                  *FILLER_TAGS]
    tags = []
    for candidate in candidates:
        tag = shorten(' '.join(candidate.lower().split()), 20)
        if len(tag) >= 2 and tag not in tags:
            tags.append(tag)
    return tags[:count]


def make_design(words, index):
    """Design ``index`` (0-based): every field distinct from the other indexes'."""
    theme, style, niche = words
    variant = VARIANTS[index % len(VARIANTS)]
    if index >= len(VARIANTS):
        variant = f'{variant} {index // len(VARIANTS) + 1}'
    title = shorten(f'{variant} {theme.title()} - {style.title()} Graphic', 80)
    mood = variant.lower()
    return {
        'image_prompt': f'{theme}, {mood} mood, {style} illustration for a {niche} audience, '
                        f'centered print-ready t-shirt graphic, clean lines, high contrast, '
                        f'plain background, variation {index + 1}',
        'negative_prompt': NEGATIVE,
        'title': title,
        'description': f'A {mood} take on {theme}, drawn in a {style} style. '
                       f'Made for the {niche} crowd and anyone who wants a bold graphic. '
                       f'Printed on demand, so every piece is made just for you.',
        'tags': make_tags(words, mood, 13 - index % 3),
    }


def build_designs(prompt, count):
    words = tuple(prompt_word(prompt, key) for key in ('theme', 'style', 'niche'))
    return [make_design(words, index) for index in range(count)]


def block(design, word):
    """Put the trademark ``word`` in the design's title and first tag."""
    design['title'] = shorten(f'{word} Style {design["title"]}', 80)
    tag = shorten(word.lower(), 20)
    design['tags'] = [tag] + [t for t in design['tags'] if t != tag][:12]


def spoil(design, faults):
    """Give the design the wrong-typed fields named in ``faults``."""
    if 'tags' in faults:
        design['tags'] = ', '.join(design['tags'])
    if 'title' in faults:
        design['title'] = (design['title'] + ' ') * (300 // len(design['title']) + 1)
        design['title'] = design['title'][:300]
    if 'description' in faults:
        del design['description']
    if 'image_prompt' in faults:
        design['image_prompt'] = 42


def compose(mode, scenario, prompt):
    """The answer text for a text mode; "slow" sleeps ``slow_seconds`` first.

    valid         {"designs": [N entries]} as strict JSON
    fenced        the same JSON in a ```json block after a sentence of chatter
    invalid_json  'Sure! Here are your designs: {designs: [oops'
    too_few       strict JSON with N-1 designs (none when N is 1)
    bad_fields    strict JSON, N entries with the ``bad_fields`` faults
    blocked       strict JSON, design 0's title and first tag carry ``blocked_word``
    """
    if mode == 'slow':
        gevent.sleep(float(scenario['slow_seconds']))
    if mode == 'invalid_json':
        return 'Sure! Here are your designs: {designs: [oops'
    count = design_count(prompt)
    designs = build_designs(prompt, max(0, count - 1) if mode == 'too_few' else count)
    if mode == 'blocked' and designs:
        block(designs[0], scenario['blocked_word'])
    if mode == 'bad_fields':
        for design in designs:
            spoil(design, scenario['bad_fields'])
    text = json.dumps({'designs': designs}, indent=2)
    if mode == 'fenced':
        return f'Here are your designs, formatted as requested:\n\n```json\n{text}\n```'
    return text


def tokens(text):
    """A rough token count: four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def clip(text, max_tokens):
    """(text, truncated): the text cut to ``max_tokens`` tokens if it is longer."""
    if max_tokens is None or tokens(text) <= max_tokens:
        return text, False
    return text[:max_tokens * 4], True


# Fake state and plumbing (shared with anthropic.py) ########################

class LlmFake:
    """Scenario, recorded requests and counters of one fake LLM server."""

    def __init__(self, defaults):
        self.defaults = defaults
        self.reset()

    def reset(self):
        self.scenario = copy.deepcopy(self.defaults)
        self.requests = []
        self.calls = 0
        self.listings = 0
        self.answered = collections.Counter()
        self.rejected = collections.Counter()

    def configure(self, patch):
        """Merge ``patch`` into the scenario; ValueError on an unknown knob or mode."""
        if not isinstance(patch, dict):
            raise ValueError('the config must be a JSON object')
        unknown = sorted(set(patch) - set(self.defaults))
        if unknown:
            raise ValueError(f'unknown scenario knobs: {unknown}')
        if not isinstance(patch.get('modes', []), list):
            raise ValueError('modes must be a list')
        modes = list(patch.get('modes') or []) + ([patch['mode']] if 'mode' in patch else [])
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f'unknown modes {bad}; known: {list(MODES)}')
        if set(patch.get('bad_fields') or ()) - set(BAD_FIELDS):
            raise ValueError(f'bad_fields must be among {list(BAD_FIELDS)}')
        self.scenario.update(copy.deepcopy(patch))

    def serve(self, admit, respond):
        """One completion call: count it, ``admit`` it (auth and validation; a
        refusal is counted by status and consumes no mode), then ``respond`` to
        the admitted body with the next mode."""
        self.calls += 1
        try:
            body = admit()
        except ApiError as exc:
            self.rejected[str(exc.status)] += 1
            raise
        queued = self.scenario['modes']
        mode = queued.pop(0) if queued else self.scenario['mode']
        self.answered[mode] += 1
        return respond(body, mode)

    def state(self):
        return {'calls': self.calls, 'answered': dict(self.answered),
                'rejected': dict(self.rejected), 'listings': self.listings}



def record(request):
    raw = request.body.read() if request.method in ('POST', 'PUT', 'PATCH') else b''
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return {'method': request.method, 'path': request.path, 'query': dict(request.query),
            'json': body, 'headers': dict(request.headers), 'time': time.time()}


def read_body(fail):
    """The request's JSON object body; ``fail(message)`` builds the 400."""
    try:
        data = json.loads(bottle.request.body.read() or b'null')
    except ValueError:
        raise fail('We could not parse the JSON body of your request.') from None
    if not isinstance(data, dict):
        raise fail('The request body must be a JSON object.')
    return data


class Recorder:
    """Bottle plugin: record every non-/_fake request and answer ApiErrors as JSON."""

    name = 'llm-recorder'
    api = 2

    def __init__(self, fake, crash_body):
        self.fake = fake
        self.crash_body = crash_body

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            entry = None
            if not bottle.request.path.startswith('/_fake/'):
                entry = record(bottle.request)
                self.fake.requests.append(entry)
            response = self.answer(callback, args, kwargs)
            if entry is not None:
                entry['status'] = response.status_code
            return response
        return wrapper

    def answer(self, callback, args, kwargs):
        try:
            result = callback(*args, **kwargs)
            return result if isinstance(result, bottle.HTTPResponse) else reply(result)
        except ApiError as exc:
            return reply(exc.body, exc.status, exc.headers)
        except Exception:  # a bug in the fake: show it in the fake's log
            traceback.print_exc(file=sys.stderr)
            return reply(self.crash_body, 500)


def last_user_text(messages, text_of):
    """The text of the last user message ('' if none)."""
    users = [m for m in messages if m.get('role') == 'user']
    return text_of(users[-1]['content']) if users else ''


# OpenAI errors and checks ##################################################

def error(status, message, kind='invalid_request_error', param=None, code=None, headers=None):
    return ApiError(status, {'error': {'message': message, 'type': kind, 'param': param,
                                       'code': code}}, headers)


def bad(message, param=None):
    return error(400, message, param=param)


MODE_ERRORS = {
    'error_500': lambda: error(500, 'The server had an error while processing your request. '
                               'Sorry about that!', 'server_error'),
    'overloaded': lambda: error(503, 'The engine is currently overloaded, please try again '
                                'later.', 'server_error'),
    'rate_limited': lambda: error(429, 'Rate limit reached for requests. Please try again in '
                                  '1s.', 'requests', code='rate_limit_exceeded',
                                  headers={'retry-after': '1'}),
}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_name(value):
    names = {dict: 'an object', list: 'an array', str: 'a string', bool: 'a boolean',
             int: 'an integer', float: 'a number', type(None): 'null'}
    return names.get(type(value), 'a value')


def check_auth(scenario):
    key = scenario['api_key']
    if key is not None and bottle.request.headers.get('Authorization') != f'Bearer {key}':
        raise error(401, 'Incorrect API key provided', code='invalid_api_key')


def check_messages(messages):
    if messages is None:
        raise bad("Missing required parameter: 'messages'.", 'messages')
    if not isinstance(messages, list):
        raise bad(f"Invalid type for 'messages': expected an array, but got "
                  f"{type_name(messages)} instead.", 'messages')
    if not messages:
        raise bad("Invalid 'messages': empty array. Expected an array with minimum length 1, "
                  "but got an empty array instead.", 'messages')
    for n, message in enumerate(messages):
        check_message(message, f'messages[{n}]')


def check_message(message, path):
    if not isinstance(message, dict):
        raise bad(f"Invalid type for '{path}': expected an object, but got "
                  f"{type_name(message)} instead.", path)
    if message.get('role') not in ROLES:
        raise bad(f"Invalid value: {message.get('role')!r}. Supported values are: 'system', "
                  f"'user', and 'assistant'.", f'{path}.role')
    if not isinstance(message.get('content'), str):
        raise bad(f"Invalid type for '{path}.content': expected a string, but got "
                  f"{type_name(message.get('content'))} instead.", f'{path}.content')


def check_options(body):
    temperature = body.get('temperature')
    if temperature is not None and not (_number(temperature) and 0 <= temperature <= 2):
        raise bad(f"Invalid 'temperature': expected a number from 0 to 2, but got "
                  f"{temperature!r} instead.", 'temperature')
    for key in ('max_tokens', 'max_completion_tokens'):
        value = body.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= 1):
            raise bad(f"Invalid '{key}': expected an integer >= 1, but got {value!r} "
                      f"instead.", key)
    if body.get('stream'):
        raise bad('This fake does not stream: send "stream": false or leave it out.', 'stream')


def check_format(body):
    spec = body.get('response_format')
    if spec is None:
        return
    kind = spec.get('type') if isinstance(spec, dict) else None
    if kind not in FORMATS:
        raise bad(f"Invalid value: {kind!r}. Supported values are: 'json_object', "
                  f"'json_schema', and 'text'.", 'response_format.type')
    said_json = any('json' in m['content'].lower() for m in body['messages'])
    if kind == 'json_object' and not said_json:
        raise bad("'messages' must contain the word 'json' in some form, to use "
                  "'response_format' of type 'json_object'.", 'messages')


def check_body(body, scenario):
    unknown = sorted(set(body) - CHAT_PARAMS)
    if unknown:
        raise bad(f'Unrecognized request argument supplied: {unknown[0]}', unknown[0])
    if body.get('model') is None:
        raise bad('you must provide a model parameter', 'model')
    if not isinstance(body['model'], str):
        raise bad(f"Invalid type for 'model': expected a string, but got "
                  f"{type_name(body['model'])} instead.", 'model')
    check_messages(body.get('messages'))
    check_options(body)
    check_format(body)
    if scenario['model'] is not None and body['model'] != scenario['model']:
        raise error(404, f"The model `{body['model']}` does not exist or you do not have "
                    f"access to it.", code='model_not_found')


# Answers ###################################################################

def completion(body, mode, scenario):
    if mode in MODE_ERRORS:
        raise MODE_ERRORS[mode]()
    prompt = last_user_text(body['messages'], lambda content: content)
    limit = body.get('max_completion_tokens') or body.get('max_tokens')
    text, truncated = clip(compose(mode, scenario, prompt), limit)
    used = sum(tokens(m['content']) + 4 for m in body['messages'])
    return {'id': f'chatcmpl-{secrets.token_urlsafe(21)}', 'object': 'chat.completion',
            'created': int(time.time()), 'model': body['model'],
            'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text},
                         'finish_reason': 'length' if truncated else 'stop'}],
            'usage': {'prompt_tokens': used, 'completion_tokens': tokens(text),
                      'total_tokens': used + tokens(text)}}


# Routes ####################################################################

def create_app():
    """A fresh WSGI app serving one fake OpenAI-compatible server (see the docstring)."""
    fake = LlmFake(DEFAULT_SCENARIO)
    app = bottle.Bottle()
    app.install(Recorder(fake, {'error': {'message': 'Fake crashed.', 'type': 'server_error',
                                          'param': None, 'code': None}}))
    control_routes(app, fake)

    def admit():
        check_auth(fake.scenario)
        body = read_body(bad)
        check_body(body, fake.scenario)
        return body

    @app.post('/v1/chat/completions')
    def chat():
        return fake.serve(admit, lambda body, mode: completion(body, mode, fake.scenario))

    @app.get('/v1/models')
    def models():
        fake.listings += 1
        check_auth(fake.scenario)
        model = fake.scenario['model'] or DEFAULT_SCENARIO['model']
        return {'object': 'list', 'data': [{'id': model, 'object': 'model', 'created': 0,
                                            'owned_by': 'fake'}]}

    @app.route('/<path:path>', method='ANY')
    def unknown(path):
        raise error(404, f'Invalid URL ({bottle.request.method} /{path})')

    return app
