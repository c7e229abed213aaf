"""Prompts and listing copy: the LLM writer (fake OpenAI and Anthropic servers),
its template fallback, the blocklist and the copy rules."""

import json

import pytest

OPENAI_KEY = 'sk-test-fake-key-0000'
ANTHROPIC_KEY = 'sk-ant-test-fake-key-0000'
THEMED = {'theme': 'ocean', 'style': 'retro', 'niche': 'surfers', 'productTypes': ['tshirt'],
          'count': 3}


@pytest.fixture(autouse=True)
def small_print_areas(engines):
    """Tiny designs printed at their own size: these tests are about words."""
    types = engines.tmp_path / 'types.json'
    small = {'print_width': 1200, 'print_height': 1440}
    types.write_text(json.dumps({'tshirt': small, 'hoodie': small}))
    engines.defaults = {'PRODUCT_TYPES_FILE': types}


def llm_engine(engines, fake, **env):
    if fake.name == 'openai':
        llm = {'LLM_BASE_URL': fake.url + '/v1', 'LLM_API_KEY': OPENAI_KEY,
               'LLM_MODEL': 'fake-model'}
    else:
        llm = {'ANTHROPIC_API_URL': fake.url, 'ANTHROPIC_API_KEY': ANTHROPIC_KEY,
               'ANTHROPIC_MODEL': 'claude-fake'}
    return engines.start(IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000, CUSTOM_HANDLERS='testkit',
                         **{**llm, **env})


def designs_of(job):
    return job['result']['designs']


def check_copy(designs, count):
    assert len(designs) == count
    assert len({d['image_prompt'] for d in designs}) == count
    assert len({d['title'] for d in designs}) == count
    for design in designs:
        assert 0 < len(design['title']) <= 140
        assert 0 < len(design['tags']) <= 13 and len(set(design['tags'])) == len(design['tags'])
        assert all(0 < len(tag) <= 20 for tag in design['tags'])
        assert design['description'] and design['description_html'].startswith('<p>')


@pytest.mark.parametrize('kind', ['openai', 'anthropic'])
def test_three_distinct_designs_from_the_llm(engines, fakes, kind):
    fake = fakes.start(kind)
    engine = llm_engine(engines, fake)
    assert engine.get('/api/info').json()['config']['promptWriter'].startswith('llm')
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'completed', timeout=60)
    designs = designs_of(job)
    check_copy(designs, 3)
    assert {d['writer'] for d in designs} == {'llm'}
    assert len(job['result']['products']) == 3
    [call] = fake.requests('/v1/chat' if kind == 'openai' else '/v1/messages')
    text = json.dumps(call['json'])
    assert 'exactly 3 designs' in text and 'theme: ocean' in text and 'niche: surfers' in text
    assert engine.get('/health').json()['services']['llm'] is True


def test_three_distinct_designs_with_no_llm_at_all(engines):
    engine = engines.start(IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000, CUSTOM_HANDLERS='testkit')
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'completed', timeout=60)
    designs = designs_of(job)
    check_copy(designs, 3)
    assert {d['writer'] for d in designs} == {'template'}
    for design in designs:
        assert 'surfers' in design['description'].lower()
        assert 't-shirt' in design['description'].lower() or 'tee' in design['description'].lower()


def test_two_jobs_on_one_theme_differ_unless_seeded(engines):
    engine = engines.start(IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000, CUSTOM_HANDLERS='testkit')
    ids = [engine.submit({**THEMED, 'count': 1}, path='/api/generate') for _ in range(2)]
    ids += [engine.submit({**THEMED, 'count': 1, 'seed': 5}, path='/api/generate')
            for _ in range(2)]
    prompts = [designs_of(engine.wait_for(i, 'completed', timeout=60))[0]['image_prompt']
               for i in ids]
    assert prompts[0] != prompts[1] and prompts[2] == prompts[3]


def test_a_direct_prompt_is_kept_and_copy_is_still_written(engines, fakes):
    fake = fakes.start('openai')
    engine = llm_engine(engines, fake)
    prompt = 'A fox astronaut floating among pastel planets, vector art'
    job = engine.wait_for(engine.submit({'prompt': prompt, 'productTypes': ['hoodie'],
                                         'count': 2}, path='/api/generate'),
                          'completed', timeout=60)
    designs = designs_of(job)
    assert [d['image_prompt'] for d in designs] == [prompt, prompt]
    assert designs[0]['title'] != designs[1]['title']
    assert [i['prompt'] for i in job['result']['generatedImages']] == [prompt, prompt]


@pytest.mark.parametrize('modes, writer', [
    (['fenced'], 'llm'),
    (['invalid_json', 'valid'], 'llm'),
    (['too_few', 'valid'], 'llm'),
    (['invalid_json', 'invalid_json'], 'template'),
    (['bad_fields', 'too_few'], 'template'),
    (['blocked', 'blocked'], 'template'),
])
def test_invalid_answers_are_asked_again_then_fall_back(engines, fakes, modes, writer):
    fake = fakes.start('openai', modes=modes)
    engine = llm_engine(engines, fake)
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'completed', timeout=60)
    designs = designs_of(job)
    check_copy(designs, 3)
    assert {d['writer'] for d in designs} == {writer}
    assert len(fake.requests('/v1/chat')) == min(len(modes), 2)
    if writer == 'template':
        assert any('falling back to the template writer' in line['message'] and
                   line['type'] == 'WARNING' for line in job['logs'])
    assert not any('nike' in json.dumps(d).lower() for d in designs)


@pytest.mark.parametrize('mode', ['error_500', 'rate_limited'])
def test_server_errors_are_retried_and_the_job_recovers(engines, fakes, mode):
    fake = fakes.start('anthropic', modes=[mode])
    engine = llm_engine(engines, fake)
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'completed', timeout=60)
    assert {d['writer'] for d in designs_of(job)} == {'llm'}


def fell_back(job, count, wording):
    """Every design was written by the templates, saying why; the job's log warns."""
    designs = designs_of(job)
    check_copy(designs, count)
    assert {d['writer'] for d in designs} == {'template'}
    assert all(wording in d['writer_reason'] for d in designs), designs[0]['writer_reason']
    [warning] = [line['message'] for line in job['logs']
                 if line['type'] == 'WARNING' and line['message'].startswith('llm:')]
    assert wording in warning and 'the template writer writes' in warning
    assert len(job['result']['products']) == count


@pytest.mark.parametrize('kind, mode, status', [('openai', 'error_500', '500'),
                                                ('anthropic', 'overloaded', '529')])
def test_an_llm_outage_falls_back_to_the_templates(engines, fakes, kind, mode, status):
    fake = fakes.start(kind, mode=mode)
    engine = llm_engine(engines, fake, UPSTREAM_RETRY_DELAY_MS=20)
    job = engine.wait_for(engine.submit({**THEMED, 'maxRetries': 0}, path='/api/generate'),
                          'completed', timeout=60)
    fell_back(job, 3, f'({status})')
    calls = [r for r in fake.requests('/v1/') if r['method'] == 'POST']
    assert job['retryCount'] == 0 and len(calls) == 3  # retried in place, then templates
    waiting = llm_engine(engines, fake, LLM_FALLBACK='fail', UPSTREAM_RETRY_DELAY_MS=20)
    failed = waiting.wait_for(waiting.submit({**THEMED, 'maxRetries': 0},
                                             path='/api/generate'), 'failed', timeout=60)
    assert f'({status})' in failed['error'] and failed['result'] is None


def test_a_slow_llm_times_out_and_never_hangs_the_job(engines, fakes):
    fake = fakes.start('openai', mode='slow', slow_seconds=5)
    engine = llm_engine(engines, fake, LLM_TIMEOUT_MS=1000)
    job = engine.wait_for(engine.submit({**THEMED, 'maxRetries': 0}, path='/api/generate'),
                          'completed', timeout=30)
    fell_back(job, 3, 'Timeout')
    waiting = llm_engine(engines, fake, LLM_TIMEOUT_MS=1000, LLM_FALLBACK='fail')
    job = waiting.wait_for(waiting.submit({**THEMED, 'maxRetries': 0}, path='/api/generate'),
                           'failed', timeout=30)
    assert 'llm' in job['error'] and 'Timeout' in job['error']


@pytest.mark.parametrize('scenario, env, status, hint', [
    ({'api_key': 'sk-another-key-entirely'}, {}, 401, 'check the API key'),
    ({}, {'LLM_MODEL': 'no-such-model'}, 404, 'check the model name'),
])
def test_a_refused_configuration_fails_at_once_and_shows_in_health(engines, fakes, scenario,
                                                                   env, status, hint):
    fake = fakes.start('openai', **scenario)
    engine = llm_engine(engines, fake, **env)
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'failed', timeout=30)
    assert job['retryCount'] == 0 and f'({status})' in job['error'] and hint in job['error']
    assert len(fake.requests('/v1/chat')) == 1  # no fallback, no retry
    response = engine.get('/health')
    health = response.json()
    assert response.status_code == 503 and health['status'] == 'unhealthy'
    assert health['services']['llm'] is False
    assert any(f'llm refuses the configuration ({status})' in r for r in health['reasons'])
    assert f'({status})' in health['details']['llm']['refused']
    for text in (engine.log(), json.dumps(job), response.text):
        assert OPENAI_KEY not in text


def test_a_wrong_key_shows_in_health_before_any_job(engines, fakes):
    fake = fakes.start('openai', api_key='sk-another-key-entirely')
    engine = llm_engine(engines, fake)
    response = engine.get('/health')
    assert response.status_code == 503, response.text
    assert response.json()['reasons'][0].startswith('llm refuses the configuration (401)')


def test_the_blocklist_refuses_trademarks_at_submit(engines, tmp_path):
    engine = engines.start()
    for body in ({'prompt': 'Vintage Nike swoosh sunset', 'productTypes': ['tshirt']},
                 {'theme': 'star wars', 'productTypes': ['tshirt']}):
        response = engine.post('/api/generate', json=body)
        assert response.status_code == 400 and 'blocked term' in response.json()['error']
    batch = engine.post('/api/generate/batch', json={'items': [
        {'prompt': 'ok', 'productTypes': ['tshirt']},
        {'prompt': 'Disney castle', 'productTypes': ['tshirt']}]})
    assert batch.status_code == 400 and 'items[1].prompt' in batch.json()['error']
    assert engine.post('/api/generate', json={'prompt': 'Nikerson family reunion',
                                              'productTypes': ['tshirt']}).status_code == 201
    custom = tmp_path / 'terms.txt'
    custom.write_text('# ours\nAcme Rockets\n')
    other = engines.start(BLOCKED_TERMS_FILE=custom)
    assert other.post('/api/generate', json={'prompt': 'acme-rockets fan club',
                                             'productTypes': ['tshirt']}).status_code == 400
    assert other.post('/api/generate', json={'prompt': 'Nike', 'productTypes':
                                             ['tshirt']}).status_code == 201


def test_keys_never_reach_logs_or_job_records(engines, fakes):
    openai = fakes.start('openai', modes=['invalid_json'])
    engine = llm_engine(engines, openai)
    job = engine.wait_for(engine.submit(THEMED, path='/api/generate'), 'completed', timeout=60)
    wrong = fakes.start('openai', api_key='sk-another-key-entirely')
    failing = llm_engine(engines, wrong)
    bad = failing.wait_for(failing.submit({**THEMED, 'maxRetries': 0}, path='/api/generate'),
                           'failed', timeout=60)
    assert 'Incorrect API key' in bad['error']
    for text in (engine.log(), failing.log(), json.dumps(job), json.dumps(bad),
                 engine.get('/api/info').text, failing.get('/health').text):
        assert OPENAI_KEY not in text


def test_each_product_type_gets_its_own_product_words(engines):
    engine = engines.start(IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000, CUSTOM_HANDLERS='testkit')
    job = engine.wait_for(engine.submit({'theme': 'mountains', 'style': 'vintage',
                                         'productTypes': ['tshirt', 'hoodie']},
                                        path='/api/generate'), 'completed', timeout=60)
    titles = {p['type']: p['title'] for p in job['result']['products']}
    assert 'Hoodie' in titles['hoodie'] and 'Hoodie' not in titles['tshirt']
    listing = json.loads((engine.data_dir / 'products').glob('*/product.json').__next__()
                         .read_text())
    words = 'hoodie' if listing['type'] == 'hoodie' else 't-shirt'
    assert words in listing['description'].lower()
