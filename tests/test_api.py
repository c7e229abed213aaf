"""The HTTP contract of the spec: shapes, status codes, error bodies."""

import re

import pytest

JOB_KEYS = ['id', 'type', 'status', 'priority', 'request', 'progress', 'createdAt',
            'startedAt', 'completedAt', 'result', 'error', 'retryCount', 'maxRetries', 'logs']
METRIC_KEYS = {'totalJobs', 'completedJobs', 'failedJobs', 'runningJobs', 'pendingJobs',
               'averageJobTime', 'successRate', 'uptime', 'lastActivity'}


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    """One engine for the read-only and validation tests of this module."""
    from conftest import Engines
    manager = Engines(tmp_path_factory.mktemp('api'))
    # The workers are kept busy elsewhere: jobs here stay pending unless a test
    # waits for them, so a long timeout keeps nothing from running.
    yield manager.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    manager.close()


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers['Content-Type'].startswith('application/json')
    body = response.json()
    assert set(body) == {'error'} and body['error']
    return body['error']


# Status endpoints ----------------------------------------------------------------

def test_health_info_and_metrics_shapes(shared):
    health = shared.get('/health')
    assert health.status_code == 200
    body = health.json()
    assert body['status'] == 'healthy'
    assert set(body) == {'status', 'uptime', 'reasons', 'metrics', 'services'}
    assert body['reasons'][0] == 'every backend is up'
    assert METRIC_KEYS <= set(body['metrics'])
    assert all(isinstance(up, bool) for up in body['services'].values())
    assert {'comfyui', 'printify', 'shopify'} <= set(body['services'])

    info = shared.get('/api/info').json()
    assert info['name'] == 'POD Engine' and info['version'] == '1.0.0'
    config = info['config']
    assert config['maxConcurrent'] == 1 and config['maxRetries'] == 3
    assert config['persistenceEnabled'] is True and config['monitoringEnabled'] is True
    assert config['imageBackend'].startswith('local')
    assert config['platforms'][0].startswith('local')

    metrics = shared.get('/api/metrics').json()
    assert METRIC_KEYS <= set(metrics)
    assert isinstance(metrics['averageJobTime'], int)


# Submitting ----------------------------------------------------------------------

def test_submit_returns_201_with_a_pending_job(shared):
    response = shared.post('/api/jobs', json={
        'type': 'custom', 'request': {'handler': 'sleep', 'seconds': 0.1},
        'priority': 'low', 'maxRetries': 0})
    assert response.status_code == 201
    body = response.json()
    job = body['job']
    assert body['jobId'] == job['id']
    assert re.fullmatch(r'job_\d{13}_[0-9a-z]{9}', job['id'])
    # The spec's fields and the two the API document adds; never the checkpoints.
    assert set(job) == {*JOB_KEYS, 'interruptions', 'nextRetryAt'}
    assert job['status'] == 'pending' and job['progress'] == 0
    assert job['priority'] == 'low' and job['maxRetries'] == 0 and job['retryCount'] == 0
    assert job['logs'][0]['type'] == 'INFO' and set(job['logs'][0]) == {
        'timestamp', 'message', 'type'}
    assert 'checkpoints' not in job
    assert shared.job(job['id'])['request'] == {'handler': 'sleep', 'seconds': 0.1}


def test_generate_endpoint_fills_defaults_and_takes_priority(shared):
    response = shared.post('/api/generate', json={
        'prompt': 'A majestic mountain landscape', 'productTypes': ['tshirt'],
        'priority': 'high', 'maxRetries': 1})
    assert response.status_code == 201
    job = response.json()['job']
    assert job['type'] == 'generate' and job['priority'] == 'high' and job['maxRetries'] == 1
    assert job['request'] == {'prompt': 'A majestic mountain landscape',
                              'productTypes': ['tshirt'], 'count': 1, 'autoPublish': True}


def test_integers_written_with_a_fraction_are_integers(shared):
    # JSON Schema counts 3.0 as an integer, and schemathesis sends such numbers.
    response = shared.post('/api/generate', data=b'{"prompt": "A fox", "seed": 3.0, '
                           b'"productTypes": ["tshirt"], "count": 1.0, "autoPublish": false}',
                           headers={'Content-Type': 'application/json'})
    assert response.status_code == 201, response.text
    job = response.json()['job']
    assert job['request']['seed'] == 3 and type(job['request']['seed']) is int
    done = shared.wait_for(job['id'], 'completed', 'failed', timeout=120)
    assert done['status'] == 'completed', done['error']
    assert [image['seed'] for image in done['result']['generatedImages']] == [3]


def test_batch_endpoint(shared):
    response = shared.post('/api/generate/batch', json={
        'items': [{'theme': 'nature', 'style': 'minimalist', 'productTypes': ['tshirt']},
                  {'prompt': 'Design 2', 'productTypes': ['hoodie']}],
        'priority': 'high'})
    assert response.status_code == 201
    job = response.json()['job']
    assert job['type'] == 'batch' and job['priority'] == 'high'
    assert len(job['request']['items']) == 2


@pytest.mark.parametrize('body, message', [
    ({}, 'Missing required fields: type, request'),
    ({'type': 'generate'}, 'Missing required fields: type, request'),
    ({'type': 'nope', 'request': {'prompt': 'x'}}, 'type must be one of'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'priority': 'asap'}, 'priority'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'maxRetries': 11}, 'maxRetries'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'maxRetries': -1}, 'maxRetries'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'maxRetries': '3'}, 'maxRetries'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'maxRetries': True}, 'maxRetries'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': []}}, 'productTypes'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': 'tshirt'}},
     'productTypes'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['mug']}},
     "unknown product type 'mug'"),
    ({'type': 'generate', 'request': {'productTypes': ['tshirt']}}, 'prompt'),
    ({'type': 'generate', 'request': {'prompt': '', 'productTypes': ['tshirt']}}, 'prompt'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt'],
                                      'count': 0}}, 'count'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt'],
                                      'count': 51}}, 'count'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt'],
                                      'count': 2.5}}, 'count'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt'],
                                      'autoPublish': 'yes'}}, 'autoPublish'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt'],
                                      'colour': 'red'}}, 'colour'),
    ({'type': 'generate', 'request': 'draw a cat'}, 'request must be a JSON object'),
    ({'type': 'batch', 'request': {'items': []}}, 'items'),
    ({'type': 'batch', 'request': {'items': [
        {'prompt': 'ok', 'productTypes': ['tshirt']},
        {'prompt': 'bad', 'productTypes': ['mug']}]}}, 'items[1].productTypes'),
    ({'type': 'custom', 'request': {'handler': 'nope'}}, 'request.handler'),
    ({'type': 'custom', 'request': {'prompt': 'x'}}, 'request.handler'),
    ({'type': 'custom', 'request': {'handler': 'publish_image', 'productTypes': ['tshirt']}},
     'request.image'),
    ({'type': 'custom', 'request': {'handler': 'publish_image', 'image': '../secret.png',
                                    'productTypes': ['tshirt']}}, 'request.image'),
    ({'type': 'custom', 'request': {'handler': 'publish_image', 'image': '/etc/passwd',
                                    'productTypes': ['tshirt']}}, 'request.image'),
    ({'type': 'generate', 'request': {'prompt': 'x', 'productTypes': ['tshirt']},
      'extra': 1}, 'extra'),
])
def test_bad_jobs_are_refused_with_a_message_naming_the_field(shared, body, message):
    before = len(shared.get('/api/jobs').json())
    assert message in error_of(shared.post('/api/jobs', json=body), 400)
    assert len(shared.get('/api/jobs').json()) == before


@pytest.mark.parametrize('path, body, message', [
    ('/api/generate', {'productTypes': ['tshirt']}, 'prompt'),
    ('/api/generate', {'prompt': 'x'}, 'productTypes'),
    ('/api/generate', {'prompt': 'x', 'productTypes': ['tshirt'], 'priority': 'top'},
     'priority'),
    ('/api/generate/batch', {}, 'Items array is required'),
    ('/api/generate/batch', {'items': 'all'}, 'Items array is required'),
    ('/api/generate/batch', {'items': [{'prompt': 'x'}]}, 'items[0].productTypes'),
    ('/api/generate/batch', {'items': [{'prompt': 'x', 'productTypes': ['tshirt']}] * 101},
     'at most 100'),
])
def test_bad_generate_requests(shared, path, body, message):
    assert message in error_of(shared.post(path, json=body), 400)


def test_malformed_bodies_get_json_errors(shared):
    headers = {'Content-Type': 'application/json'}
    assert 'Invalid JSON' in error_of(
        shared.post('/api/jobs', data='{bad', headers=headers), 400)
    assert 'JSON object' in error_of(shared.post('/api/jobs', data='[1, 2]', headers=headers), 400)
    assert 'UTF-8' in error_of(
        shared.post('/api/jobs', data=b'{"type": "\xff"}', headers=headers), 400)
    assert 'JSON object' in error_of(shared.post('/api/generate', data='', headers=headers), 400)
    assert 'Content-Type' in error_of(shared.post(
        '/api/generate', data='{"prompt": "x", "productTypes": ["tshirt"]}',
        headers={'Content-Type': 'text/plain'}), 415)
    deep = '[' * 100_000 + ']' * 100_000
    error_of(shared.post('/api/jobs', data=deep, headers=headers), 400)
    huge = '{"prompt": "%s"}' % ('x' * (2**20 + 10))
    assert 'larger than' in error_of(shared.post('/api/generate', data=huge, headers=headers), 413)
    assert shared.get('/health').status_code == 200


# Reading, cancelling, retrying ---------------------------------------------------

def test_unknown_ids_and_routes_are_json_404s(shared):
    assert error_of(shared.get('/api/jobs/job_1_nothing'), 404) == 'Job not found'
    assert error_of(shared.post('/api/jobs/job_1_nothing/cancel'), 404) == 'Job not found'
    assert error_of(shared.post('/api/jobs/job_1_nothing/retry'), 404) == 'Job not found'
    error_of(shared.get('/api/nothing/here'), 404)
    error_of(shared.request('DELETE', '/api/jobs'), 405)


def test_job_list_filters_by_status(shared):
    job_id = shared.submit({'type': 'custom', 'request': {'handler': 'fail'}, 'maxRetries': 0})
    shared.wait_for(job_id, 'failed')
    failed = shared.get('/api/jobs?status=failed').json()
    assert job_id in [job['id'] for job in failed]
    assert all(job['status'] == 'failed' for job in failed)
    every = shared.get('/api/jobs').json()
    assert isinstance(every, list) and len(every) >= len(failed)
    assert 'status must be one of' in error_of(shared.get('/api/jobs?status=done'), 400)


def test_cancel_and_retry_refuse_jobs_in_the_wrong_state(shared):
    job_id = shared.submit({'type': 'custom', 'request': {'handler': 'sleep', 'seconds': 0},
                            'priority': 'urgent'})
    shared.wait_for(job_id, 'completed')
    assert error_of(shared.post(f'/api/jobs/{job_id}/cancel'), 400) == 'Cannot cancel job'
    assert error_of(shared.post(f'/api/jobs/{job_id}/retry'), 400) == 'Cannot retry job'


def test_cleanup_validates_max_age(shared):
    assert shared.post('/api/jobs/cleanup').json() == {'cleared': 0}
    for bad in (-1, 'soon', True, 1.5):
        assert 'maxAge' in error_of(shared.post('/api/jobs/cleanup', json={'maxAge': bad}), 400)
    assert 'maxAge' in error_of(shared.post('/api/jobs/cleanup', json={'max': 1}), 400)


# Files -------------------------------------------------------------------------

def test_files_never_leave_data_dir(shared, tmp_path):
    secret = shared.data_dir.parent / 'secret.txt'
    secret.write_text('top secret')
    (shared.data_dir / 'inbox').mkdir(exist_ok=True)
    (shared.data_dir / 'inbox' / 'link.txt').symlink_to(secret)
    (shared.data_dir / 'inbox' / 'ok.txt').write_text('fine')
    assert shared.get('/files/inbox/ok.txt').text == 'fine'
    for path in ('/files/../secret.txt', '/files/%2e%2e/secret.txt',
                 '/files/inbox/..%2f..%2fsecret.txt', '/files//etc/passwd',
                 '/files/%2fetc%2fpasswd', '/files/inbox/link.txt'):
        response = shared.get(path)
        assert response.status_code == 404, path
        assert 'top secret' not in response.text and 'root:' not in response.text


def test_job_list_pages_and_orders(shared):
    ids = [shared.submit({'type': 'custom', 'request': {'handler': 'sleep', 'seconds': 0}})
           for _ in range(3)]
    every = [job['id'] for job in shared.get('/api/jobs').json()]
    assert every[-3:] == ids
    newest = [job['id'] for job in shared.get('/api/jobs?order=newest&limit=2').json()]
    assert newest == ids[::-1][:2]
    assert [j['id'] for j in shared.get(f'/api/jobs?offset={len(every) - 1}').json()] == ids[-1:]
    for bad in ('limit=-1', 'offset=x', 'order=random'):
        error_of(shared.get(f'/api/jobs?{bad}'), 400)


def test_thumbnails_are_small_and_stay_inside_data_dir(shared):
    from PIL import Image
    import io
    (shared.data_dir / 'inbox').mkdir(exist_ok=True)
    Image.new('RGB', (1200, 1500), 'navy').save(shared.data_dir / 'inbox' / 'big.png')
    response = shared.get('/thumbs/inbox/big.png?w=128')
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (128, 160)
    error_of(shared.get('/thumbs/inbox/big.png?w=5000'), 400)
    error_of(shared.get('/thumbs/../secret.txt'), 404)
    error_of(shared.get('/thumbs/inbox/ok.txt'), 404)


def test_first_requests_of_one_thumbnail_at_once_all_get_it(shared):
    # Each renders it (none is cached yet), through a temp file of its own.
    from concurrent.futures import ThreadPoolExecutor
    from PIL import Image
    (shared.data_dir / 'inbox').mkdir(exist_ok=True)
    Image.new('RGB', (2400, 3000), 'teal').save(shared.data_dir / 'inbox' / 'wide.png')
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: shared.get('/thumbs/inbox/wide.png?w=300'), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text[:100] for a in answers]
    folder = shared.data_dir / '.thumbs' / '300' / 'inbox'
    assert [p.name for p in folder.iterdir()] == ['wide.png']  # no temp file left
