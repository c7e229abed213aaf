"""The fake LLM servers enforce their API's rules and answer per scenario mode
(see tests/fakes/openai.py and anthropic.py).

Driven with plain ``requests``; each test starts its own fake subprocess.
"""

import json
import re
import time

import pytest
import requests

OPENAI_KEY = 'sk-test-fake-key-0000'
ANTHROPIC_KEY = 'sk-ant-test-fake-key-0000'
SYSTEM = 'You write print-on-demand listings. Answer with JSON only.'
THEME = 'Cats in space'
DESIGN_KEYS = {'image_prompt', 'negative_prompt', 'title', 'description', 'tags'}


def prompt(n=1):
    return (f'Write exactly {n} designs for this request.\ntheme: {THEME}\nstyle: retro\n'
            f'niche: astronomy fans\nReturn {{"designs": [...]}}.')


class Client:
    """Requests to one fake LLM with valid credentials and a valid body."""

    def __init__(self, api, fake):
        self.api = api
        self.fake = fake
        self.path = '/v1/chat/completions' if api == 'openai' else '/v1/messages'

    def headers(self):
        if self.api == 'openai':
            return {'Authorization': f'Bearer {OPENAI_KEY}'}
        return {'x-api-key': ANTHROPIC_KEY, 'anthropic-version': '2023-06-01'}

    def body(self, text):
        if self.api == 'openai':
            return {'model': 'fake-model', 'temperature': 0.7,
                    'response_format': {'type': 'json_object'},
                    'messages': [{'role': 'system', 'content': SYSTEM},
                                 {'role': 'user', 'content': text}]}
        return {'model': 'claude-fake', 'max_tokens': 8192, 'system': SYSTEM,
                'temperature': 0.7, 'messages': [{'role': 'user', 'content': text}]}

    def call(self, text=None, body=None, headers=None, path=None, method='POST'):
        body = self.body(text or prompt()) if body is None else body
        return requests.request(method, self.fake.url + (path or self.path), json=body,
                                headers=headers if headers is not None else self.headers(),
                                timeout=10)

    def text(self, response):
        assert response.status_code == 200, response.text
        answer = response.json()
        if self.api == 'openai':
            return answer['choices'][0]['message']['content']
        return answer['content'][0]['text']

    def ask(self, text=None, **kwargs):
        return self.text(self.call(text, **kwargs))

    def state(self):
        return requests.get(self.fake.url + '/_fake/state', timeout=5).json()


@pytest.fixture(params=['openai', 'anthropic'])
def llm(request, fakes):
    return Client(request.param, fakes.start(request.param))


def sentences(text):
    return len(re.findall(r'[.!?](?:\s|$)', text))


def check_designs(text, n, theme=THEME):
    """The text is strict JSON with exactly n distinct, valid designs; returns them."""
    designs = json.loads(text)['designs']
    assert len(designs) == n, designs
    for design in designs:
        assert set(design) == DESIGN_KEYS, design
        for key in DESIGN_KEYS - {'tags'}:
            assert isinstance(design[key], str) and design[key].strip(), design
        assert len(design['title']) <= 80 and 2 <= sentences(design['description']) <= 3
        tags = design['tags']
        assert isinstance(tags, list) and 8 <= len(tags) <= 13 and len(set(tags)) == len(tags)
        assert all(isinstance(t, str) and t == t.lower() and 0 < len(t) <= 20 for t in tags)
        assert theme.lower() in design['image_prompt'].lower()
    for key in ('title', 'image_prompt', 'description'):
        assert len({design[key] for design in designs}) == n, key
    return designs


def check_envelope(client, response):
    answer = response.json()
    if client.api == 'openai':
        assert set(answer) == {'id', 'object', 'created', 'model', 'choices', 'usage'}
        assert answer['id'].startswith('chatcmpl-') and answer['object'] == 'chat.completion'
        assert abs(answer['created'] - time.time()) < 60 and answer['model'] == 'fake-model'
        [choice] = answer['choices']
        assert choice['index'] == 0 and choice['finish_reason'] == 'stop'
        assert choice['message']['role'] == 'assistant'
        usage = answer['usage']
        assert usage['total_tokens'] == usage['prompt_tokens'] + usage['completion_tokens']
        assert usage['prompt_tokens'] > 0 and usage['completion_tokens'] > 0
        return
    assert set(answer) == {'id', 'type', 'role', 'model', 'content', 'stop_reason',
                           'stop_sequence', 'usage'}
    assert answer['id'].startswith('msg_') and answer['type'] == 'message'
    assert answer['role'] == 'assistant' and answer['model'] == 'claude-fake'
    assert [block['type'] for block in answer['content']] == ['text']
    assert answer['stop_reason'] == 'end_turn' and answer['stop_sequence'] is None
    assert answer['usage']['input_tokens'] > 0 and answer['usage']['output_tokens'] > 0


def openai_error(response, status, fragment, kind='invalid_request_error'):
    assert response.status_code == status, (fragment, response.text)
    error = response.json()['error']
    assert error['type'] == kind and fragment in error['message'], (fragment, error)
    return error


def anthropic_error(response, status, kind, fragment=''):
    assert response.status_code == status, (fragment, response.text)
    body = response.json()
    assert body['type'] == 'error' and body['error']['type'] == kind, body
    assert fragment in body['error']['message'], (fragment, body)


# Auth and validation #######################################################

def test_openai_auth_and_ollama_style_no_key(fakes):
    client = Client('openai', fakes.start('openai'))
    refused = {'error': {'message': 'Incorrect API key provided',
                         'type': 'invalid_request_error', 'param': None,
                         'code': 'invalid_api_key'}}
    for headers in ({}, {'Authorization': 'Bearer sk-wrong'}, {'Authorization': OPENAI_KEY}):
        response = client.call(headers=headers)
        assert (response.status_code, response.json()) == (401, refused)
        assert client.call(method='GET', path='/v1/models', headers=headers).status_code == 401
    check_envelope(client, client.call())
    models = client.call(method='GET', path='/v1/models', body={})
    assert models.status_code == 200
    assert models.json()['object'] == 'list'
    assert [(m['id'], m['object']) for m in models.json()['data']] == [('fake-model', 'model')]

    client.fake.configure(api_key=None)
    check_designs(client.ask(headers={}), 1)
    assert client.call(method='GET', path='/v1/models', headers={}).status_code == 200
    assert client.state() == {'calls': 5, 'answered': {'valid': 2}, 'rejected': {'401': 3},
                              'listings': 5}


def test_openai_rejects_what_openai_rejects(fakes):
    client = Client('openai', fakes.start('openai'))
    base = client.body(prompt())

    def without(key):
        return {k: v for k, v in base.items() if k != key}

    def user(content, role='user'):
        return {**base, 'messages': [{'role': role, 'content': content}]}

    cases = [
        (without('model'), 'you must provide a model parameter'),
        ({**base, 'model': 5}, "Invalid type for 'model'"),
        (without('messages'), "Missing required parameter: 'messages'"),
        ({**base, 'messages': []}, 'empty array'),
        ({**base, 'messages': 'hi json'}, "Invalid type for 'messages'"),
        (user('json please', role='tool'), 'Supported values are'),
        (user([{'type': 'text', 'text': 'json'}]), "'messages[0].content': expected a string"),
        ({**base, 'temperature': 3}, "'temperature'"),
        ({**base, 'temperature': 'warm'}, "'temperature'"),
        ({**base, 'max_tokens': 0}, "'max_tokens'"),
        ({**base, 'max_tokens': '100'}, "'max_tokens'"),
        ({**base, 'response_format': {'type': 'xml'}}, 'Supported values are'),
        ({**base, 'response_format': 'json_object'}, 'Supported values are'),
        (user('Write exactly 2 designs.'), "must contain the word 'json'"),
        ({**base, 'stream': True}, 'does not stream'),
        ({**base, 'format': 'json'}, 'Unrecognized request argument supplied: format'),
    ]
    for body, fragment in cases:
        openai_error(client.call(body=body), 400, fragment)
    garbage = requests.post(client.fake.url + client.path, data='{"model": ', timeout=5,
                            headers={**client.headers(), 'Content-Type': 'application/json'})
    openai_error(garbage, 400, 'could not parse the JSON body')
    error = openai_error(client.call(body={**base, 'model': 'gpt-4o'}), 404, 'gpt-4o')
    assert error['code'] == 'model_not_found'

    plain = {**without('response_format'), 'messages': [{'role': 'user',
                                                         'content': 'exactly 2 designs'}]}
    check_designs(client.ask(body=plain), 2, theme='abstract shapes')
    check_designs(client.ask(body={**base, 'max_tokens': 4000, 'seed': 1}), 1)
    assert client.state()['calls'] == len(cases) + 4
    assert client.state()['answered'] == {'valid': 2}
    assert client.state()['rejected'] == {'400': len(cases) + 1, '404': 1}


def test_anthropic_auth_and_version_headers(fakes):
    client = Client('anthropic', fakes.start('anthropic'))
    version = {'anthropic-version': '2023-06-01'}
    for headers in ({**version}, {**version, 'x-api-key': 'sk-ant-wrong'},
                    {**version, 'Authorization': f'Bearer {ANTHROPIC_KEY}'}):
        response = client.call(headers=headers)
        assert response.status_code == 401
        assert response.json() == {'type': 'error', 'error': {
            'type': 'authentication_error', 'message': 'invalid x-api-key'}}
    response = client.call(headers={'x-api-key': ANTHROPIC_KEY})
    assert response.status_code == 400
    assert response.json() == {'type': 'error', 'error': {
        'type': 'invalid_request_error', 'message': 'anthropic-version: header is required'}}
    anthropic_error(client.call(headers={'x-api-key': ANTHROPIC_KEY,
                                         'anthropic-version': 'latest'}),
                    400, 'invalid_request_error', 'anthropic-version')
    check_envelope(client, client.call())

    models = client.call(method='GET', path='/v1/models', body={})
    assert models.status_code == 200 and models.json()['data'][0]['id'] == 'claude-fake'
    assert client.call(method='GET', path='/v1/models', headers=version).status_code == 401
    no_version = client.call(method='GET', path='/v1/models',
                             headers={'x-api-key': ANTHROPIC_KEY})
    assert no_version.status_code == 400
    assert client.state() == {'calls': 6, 'answered': {'valid': 1},
                              'rejected': {'401': 3, '400': 2}, 'listings': 3}


def test_anthropic_rejects_what_anthropic_rejects(fakes):
    client = Client('anthropic', fakes.start('anthropic'))
    base = client.body(prompt())

    def without(key):
        return {k: v for k, v in base.items() if k != key}

    def chat(*turns):
        return {**base, 'messages': [{'role': role, 'content': text} for role, text in turns]}

    cases = [
        (without('max_tokens'), 'max_tokens: Field required'),
        ({**base, 'max_tokens': '1024'}, 'max_tokens'),
        ({**base, 'max_tokens': 0}, 'max_tokens'),
        (without('model'), 'model: Field required'),
        (without('messages'), 'messages: Field required'),
        ({**base, 'messages': []}, 'at least one message'),
        (chat(('system', SYSTEM), ('user', 'hi')), "messages.0.role"),
        (chat(('assistant', 'Hello'), ('user', 'hi')), 'first message must use the "user"'),
        (chat(('user', 'hi'), ('user', 'again')), 'roles must alternate'),
        (chat(('user', '')), 'non-empty'),
        (chat(('user', [{'type': 'image', 'source': {}}])), 'messages.0.content.0.type'),
        (chat(('user', 'hi'), ('assistant', '{ ')), 'trailing whitespace'),
        ({**base, 'system': 5}, 'system'),
        ({**base, 'temperature': 1.5}, 'temperature'),
        ({**base, 'response_format': {'type': 'json_object'}}, 'Extra inputs'),
        ({**base, 'stream': True}, 'stream'),
    ]
    for body, fragment in cases:
        anthropic_error(client.call(body=body), 400, 'invalid_request_error', fragment)
    anthropic_error(client.call(body={**base, 'model': 'claude-3-opus'}), 404,
                    'not_found_error', 'claude-3-opus')

    blocks = [{'type': 'text', 'text': SYSTEM}]
    listed = {**base, 'system': blocks, 'messages': [
        {'role': 'user', 'content': [{'type': 'text', 'text': prompt(2)}]}]}
    check_designs(client.ask(body=listed), 2)
    state = client.state()
    assert state['answered'] == {'valid': 1} and state['calls'] == len(cases) + 2
    assert state['rejected'] == {'400': len(cases), '404': 1}


def test_anthropic_prefill_is_continued(fakes):
    client = Client('anthropic', fakes.start('anthropic'))
    body = {**client.body(prompt(2)), 'messages': [{'role': 'user', 'content': prompt(2)},
                                                   {'role': 'assistant', 'content': '{'}]}
    text = client.ask(body=body)
    assert not text.startswith('{')
    check_designs('{' + text, 2)


def test_config_rejects_unknown_knobs_and_modes(fakes):
    fake = fakes.start('openai', mode='fenced', slow_seconds=0.1)
    defaults = requests.post(fake.url + '/_fake/config', json={}, timeout=5).json()
    assert defaults['mode'] == 'fenced' and defaults['slow_seconds'] == 0.1
    for bad in ({'mode': 'nope'}, {'modes': ['valid', 'sometimes']}, {'modes': 'valid'},
                {'count': 3}, {'bad_fields': ['price']}):
        with pytest.raises(requests.HTTPError):
            fake.configure(**bad)
    fake.reset()
    defaults = requests.post(fake.url + '/_fake/config', json={}, timeout=5).json()
    assert defaults == {'mode': 'valid', 'modes': [], 'model': 'fake-model',
                        'api_key': OPENAI_KEY, 'blocked_word': 'Nike', 'slow_seconds': 5,
                        'bad_fields': ['tags', 'title', 'description']}


# Modes #####################################################################

def test_valid_gives_exactly_n_distinct_designs(llm):
    for n in (1, 3):
        response = llm.call(prompt(n))
        check_envelope(llm, response)
        designs = check_designs(llm.text(response), n)
        assert all('retro' in d['tags'] and 'Retro' in d['title'] for d in designs)
    count_phrase = 'Return {"designs": [...]} for {"count": 3, "theme": "ocean waves"}, json.'
    check_designs(llm.ask(count_phrase), 3, theme='ocean waves')
    check_designs(llm.ask('Some designs, please, as json.'), 1, theme='abstract shapes')
    many = check_designs(llm.ask(prompt(20)), 20)
    assert len({d['title'] for d in many}) == 20
    assert llm.state()['answered'] == {'valid': 5}


def test_text_modes(llm):
    llm.fake.configure(mode='fenced')
    text = llm.ask(prompt(3))
    chatter, fenced = text.split('```json\n', 1)
    assert chatter.strip() and fenced.rstrip().endswith('```')
    check_designs(fenced.rstrip()[:-3], 3)
    with pytest.raises(ValueError):
        json.loads(text)

    llm.fake.configure(mode='invalid_json')
    with pytest.raises(ValueError):
        json.loads(llm.ask(prompt(3)))

    llm.fake.configure(mode='too_few')
    check_designs(llm.ask(prompt(3)), 2)
    assert json.loads(llm.ask(prompt(1))) == {'designs': []}

    llm.fake.configure(mode='bad_fields')
    designs = json.loads(llm.ask(prompt(2)))['designs']
    assert len(designs) == 2
    for design in designs:
        assert isinstance(design['tags'], str) and len(design['title']) == 300
        assert 'description' not in design and isinstance(design['image_prompt'], str)
    llm.fake.configure(bad_fields=['image_prompt'])
    [design] = json.loads(llm.ask(prompt(1)))['designs']
    assert design['image_prompt'] == 42 and isinstance(design['tags'], list)

    llm.fake.configure(mode='blocked')
    first, second = json.loads(llm.ask(prompt(2)))['designs']
    assert first['title'].startswith('Nike Style ') and 'nike' in first['tags']
    assert 'nike' not in json.dumps(second).lower()
    llm.fake.configure(blocked_word='Disney')
    first, _ = check_designs(llm.ask(prompt(2)), 2)
    assert 'Disney' in first['title'] and 'disney' in first['tags']
    assert llm.state()['answered'] == {'fenced': 1, 'invalid_json': 1, 'too_few': 2,
                                       'bad_fields': 2, 'blocked': 2}


ERRORS = {
    'openai': {'error_500': (500, 'server_error'), 'overloaded': (503, 'server_error'),
               'rate_limited': (429, 'requests')},
    'anthropic': {'error_500': (500, 'api_error'), 'overloaded': (529, 'overloaded_error'),
                  'rate_limited': (429, 'rate_limit_error')},
}


def test_error_modes(llm):
    for mode, (status, kind) in ERRORS[llm.api].items():
        llm.fake.configure(mode=mode)
        response = llm.call()
        assert response.status_code == status, response.text
        body = response.json()
        if llm.api == 'openai':
            assert body['error']['type'] == kind and body['error']['message']
        else:
            assert body['type'] == 'error' and body['error']['type'] == kind
        assert response.headers.get('retry-after') == ('1' if mode == 'rate_limited' else None)
    assert llm.state()['answered'] == {mode: 1 for mode in ERRORS[llm.api]}


def test_queued_modes_then_fallback_and_state(llm):
    llm.fake.configure(mode='too_few', modes=['rate_limited', 'invalid_json', 'valid'])
    assert llm.call(headers={}).status_code == 401  # refused: consumes no queued mode
    assert llm.call().status_code == 429
    with pytest.raises(ValueError):
        json.loads(llm.ask())
    check_designs(llm.ask(prompt(3)), 3)
    check_designs(llm.ask(prompt(3)), 2)
    check_designs(llm.ask(prompt(3)), 2)
    assert llm.state() == {'calls': 6, 'rejected': {'401': 1}, 'listings': 0,
                           'answered': {'rate_limited': 1, 'invalid_json': 1, 'valid': 1,
                                        'too_few': 2}}

    recorded = llm.fake.requests()
    assert [r['path'] for r in recorded] == [llm.path] * 6
    assert [r['status'] for r in recorded] == [401, 429, 200, 200, 200, 200]
    assert recorded[3]['json']['messages'][-1]['content'] == prompt(3)
    assert recorded[3]['method'] == 'POST' and recorded[3]['query'] == {}
    headers = {k.lower(): v for k, v in recorded[3]['headers'].items()}
    assert all(headers[k.lower()] == v for k, v in llm.headers().items())

    llm.fake.reset()
    assert llm.state() == {'calls': 0, 'answered': {}, 'rejected': {}, 'listings': 0}
    assert llm.fake.requests() == []
    check_designs(llm.ask(prompt(3)), 3)


def test_slow_mode_answers_valid_after_the_delay(llm):
    llm.fake.configure(mode='slow', slow_seconds=0.4)
    started = time.monotonic()
    check_designs(llm.ask(prompt(2)), 2)
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.Timeout):
        requests.post(llm.fake.url + llm.path, json=llm.body(prompt()), timeout=0.1,
                      headers=llm.headers())
    assert llm.state()['answered'] == {'slow': 2}


def test_answers_longer_than_max_tokens_are_cut(llm):
    body = {**llm.body(prompt(3)), 'max_tokens': 50}
    response = llm.call(body=body)
    text = llm.text(response)
    assert len(text) == 200
    with pytest.raises(ValueError):
        json.loads(text)
    answer = response.json()
    if llm.api == 'openai':
        assert answer['choices'][0]['finish_reason'] == 'length'
        assert answer['usage']['completion_tokens'] == 50
    else:
        assert answer['stop_reason'] == 'max_tokens'
        assert answer['usage']['output_tokens'] == 50
