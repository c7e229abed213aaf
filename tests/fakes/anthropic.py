"""Fake Anthropic Messages API.

``POST /v1/messages`` enforces what api.anthropic.com enforces for the subset
the engine uses and answers like it; ``GET /v1/models`` lists the one model,
for health checks. Every answer is JSON; errors look like
``{"type": "error", "error": {"type": ..., "message": ...}}``.

Checks, in order (each refusal counts in ``rejected`` and consumes no mode):

    401  authentication_error: ``x-api-key`` missing or not ``api_key``
         (``api_key`` None = no auth)
    400  invalid_request_error: ``anthropic-version`` missing or not
         "2023-06-01" / "2023-01-01"; body not a JSON object; an unknown
         parameter; ``model`` not a string; ``max_tokens`` missing or not an
         integer >= 1; ``messages`` missing or empty; a role other than
         user/assistant (an OpenAI-style "system" message included); roles not
         alternating or not starting with user; content not a non-empty string
         or list of {"type": "text", "text": non-empty string}; a final
         assistant message (prefill) ending in whitespace; ``system`` not a
         string or such a list; ``temperature`` not a number in 0..1;
         ``stream`` true (this fake never streams)
    404  not_found_error: ``model`` is not the scenario's ``model`` (None = any)

The answer text is built as in ``fakes/openai.py`` (``compose``: N and the
theme/style/niche words come from the last user message). A final assistant
message is a prefill: the answer continues it, so a text that starts with the
prefill loses that prefix. Longer than ``max_tokens`` (4 characters a token):
cut, with ``stop_reason`` "max_tokens".

Scenario knobs (``POST /_fake/config`` merges them, 400 on an unknown knob or
mode; ``/_fake/reset`` restores):

    mode          "valid"  the answer for every call once ``modes`` is empty
    modes         []       answers queued ahead of ``mode``, one per admitted call
    model         "claude-fake"
    api_key       "sk-ant-test-fake-key-0000"
    blocked_word  "Nike"
    slow_seconds  5
    bad_fields    ["tags", "title", "description"] (or "image_prompt")

Modes: the text modes of ``fakes/openai.py``; error_500 (500 api_error),
overloaded (529 overloaded_error), rate_limited (429 rate_limit_error with
``retry-after: 1``).

Control routes as in ``fakes/openai.py``: config, requests, reset, state.
"""

import secrets

import bottle

from fakes.openai import (ApiError, LlmFake, Recorder, clip, compose, control_routes,
                          last_user_text, read_body, tokens, type_name)

DEFAULT_SCENARIO = {
    'mode': 'valid',
    'modes': [],
    'model': 'claude-fake',
    'api_key': 'sk-ant-test-fake-key-0000',
    'blocked_word': 'Nike',
    'slow_seconds': 5,
    'bad_fields': ['tags', 'title', 'description'],
}

VERSIONS = ('2023-06-01', '2023-01-01')
MESSAGE_PARAMS = {'model', 'messages', 'max_tokens', 'system', 'temperature', 'top_p',
                  'top_k', 'stop_sequences', 'stream', 'metadata', 'tools', 'tool_choice',
                  'thinking', 'service_tier'}


# Errors and checks #########################################################

def error(status, kind, message, headers=None):
    return ApiError(status, {'type': 'error', 'error': {'type': kind, 'message': message}},
                    headers)


def bad(message):
    return error(400, 'invalid_request_error', message)


MODE_ERRORS = {
    'error_500': lambda: error(500, 'api_error', 'Internal server error'),
    'overloaded': lambda: error(529, 'overloaded_error', 'Overloaded'),
    'rate_limited': lambda: error(429, 'rate_limit_error', 'Number of requests has exceeded '
                                  'your per-minute rate limit', {'retry-after': '1'}),
}


def check_headers(scenario):
    key = scenario['api_key']
    if key is not None and bottle.request.headers.get('x-api-key') != key:
        raise error(401, 'authentication_error', 'invalid x-api-key')
    version = bottle.request.headers.get('anthropic-version')
    if version is None:
        raise bad('anthropic-version: header is required')
    if version not in VERSIONS:
        raise bad(f'anthropic-version: invalid version {version!r}')


def check_text_blocks(blocks, path):
    if not isinstance(blocks, list) or not blocks:
        raise bad(f'{path}: Input should be a valid string or a non-empty list of blocks')
    for n, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get('type') != 'text':
            raise bad(f'{path}.{n}.type: only text blocks are supported by this fake')
        if not isinstance(block.get('text'), str) or not block['text']:
            raise bad(f'{path}.{n}.text: text content blocks must be non-empty')


def check_content(content, path):
    if isinstance(content, str):
        if not content:
            raise bad(f'{path}: text content blocks must be non-empty')
        return
    check_text_blocks(content, path)


def check_messages(messages):
    if messages is None:
        raise bad('messages: Field required')
    if not isinstance(messages, list):
        raise bad(f'messages: Input should be a valid list, not {type_name(messages)}')
    if not messages:
        raise bad('messages: at least one message is required')
    previous = None
    for n, message in enumerate(messages):
        role = message.get('role') if isinstance(message, dict) else None
        if role not in ('user', 'assistant'):
            raise bad(f"messages.{n}.role: Input should be 'user' or 'assistant'")
        if n == 0 and role != 'user':
            raise bad('messages: first message must use the "user" role')
        if role == previous:
            raise bad(f'messages: roles must alternate between "user" and "assistant", but '
                      f'found multiple "{role}" roles in a row')
        check_content(message.get('content'), f'messages.{n}.content')
        previous = role
    last = text_of(messages[-1]['content'])
    if previous == 'assistant' and last != last.rstrip():
        raise bad('messages: final assistant content cannot end with trailing whitespace')


def check_options(body):
    max_tokens = body.get('max_tokens')
    if max_tokens is None:
        raise bad('max_tokens: Field required')
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad(f'max_tokens: Input should be an integer >= 1, not {max_tokens!r}')
    system = body.get('system')
    if system is not None and not isinstance(system, str):
        check_text_blocks(system, 'system')
    temperature = body.get('temperature')
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if temperature is not None and not (number and 0 <= temperature <= 1):
        raise bad(f'temperature: Input should be a number from 0 to 1, not {temperature!r}')
    if body.get('stream'):
        raise bad('stream: this fake does not stream; send false or leave it out')


def check_body(body, scenario):
    unknown = sorted(set(body) - MESSAGE_PARAMS)
    if unknown:
        raise bad(f'{unknown[0]}: Extra inputs are not permitted')
    if body.get('model') is None:
        raise bad('model: Field required')
    if not isinstance(body['model'], str):
        raise bad('model: Input should be a valid string')
    check_options(body)
    check_messages(body.get('messages'))
    if scenario['model'] is not None and body['model'] != scenario['model']:
        raise error(404, 'not_found_error', f"model: {body['model']}")


def text_of(content):
    if isinstance(content, str):
        return content
    return '\n'.join(block['text'] for block in content)


# Answers ###################################################################

def message(body, mode, scenario):
    if mode in MODE_ERRORS:
        raise MODE_ERRORS[mode]()
    messages = body['messages']
    text = compose(mode, scenario, last_user_text(messages, text_of))
    if messages[-1]['role'] == 'assistant':
        prefill = text_of(messages[-1]['content'])
        text = text[len(prefill):] if text.startswith(prefill) else text
    text, truncated = clip(text, body['max_tokens'])
    system = body.get('system') or ''
    used = tokens(text_of(system)) + sum(tokens(text_of(m['content'])) + 4 for m in messages)
    return {'id': f'msg_{secrets.token_hex(12)}', 'type': 'message', 'role': 'assistant',
            'model': body['model'], 'content': [{'type': 'text', 'text': text}],
            'stop_reason': 'max_tokens' if truncated else 'end_turn', 'stop_sequence': None,
            'usage': {'input_tokens': used, 'output_tokens': tokens(text)}}


# Routes ####################################################################

def create_app():
    """A fresh WSGI app serving one fake Anthropic Messages API (see the docstring)."""
    fake = LlmFake(DEFAULT_SCENARIO)
    app = bottle.Bottle()
    app.install(Recorder(fake, {'type': 'error', 'error': {'type': 'api_error',
                                                           'message': 'Fake crashed.'}}))
    control_routes(app, fake)

    def admit():
        check_headers(fake.scenario)
        body = read_body(bad)
        check_body(body, fake.scenario)
        return body

    @app.post('/v1/messages')
    def messages():
        return fake.serve(admit, lambda body, mode: message(body, mode, fake.scenario))

    @app.get('/v1/models')
    def models():
        fake.listings += 1
        check_headers(fake.scenario)
        model = fake.scenario['model'] or DEFAULT_SCENARIO['model']
        return {'data': [{'type': 'model', 'id': model, 'display_name': 'Claude (fake)',
                          'created_at': '2025-01-01T00:00:00Z'}],
                'has_more': False, 'first_id': model, 'last_id': model}

    @app.route('/<path:path>', method='ANY')
    def unknown(path):
        raise error(404, 'not_found_error', f'Not found: {bottle.request.method} /{path}')

    return app
