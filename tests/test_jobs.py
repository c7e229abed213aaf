"""The life of a job: priorities, retries, timeout, cancel, failure, cleanup."""

import json
import time

import pytest
import requests
from PIL import Image


def sleep_job(seconds, **options):
    return {'type': 'custom', 'request': {'handler': 'sleep', 'seconds': seconds}, **options}


def trace(engine, name):
    path = engine.data_dir / 'trace' / name
    return path.read_text().splitlines() if path.exists() else []


def set_control(engine, name, rules):
    folder = engine.data_dir / 'control'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f'{name}.json').write_text(json.dumps(rules))


def messages(job):
    return [line['message'] for line in job['logs']]


# The main job, end to end ------------------------------------------------------

def test_generate_makes_a_print_ready_design_and_one_product_per_type(engine):
    job_id = engine.submit({'prompt': 'A futuristic cityscape at sunset',
                            'productTypes': ['tshirt', 'hoodie'], 'autoPublish': True},
                           path='/api/generate')
    job = engine.wait_for(job_id, 'completed', timeout=60)
    result = job['result']
    assert result['success'] is True and result['errors'] == []
    assert job['progress'] == 100 and job['completedAt'] >= job['startedAt']
    [image] = result['generatedImages']
    assert image['prompt'] == 'A futuristic cityscape at sunset'
    assert image['backend'] == 'local'
    with Image.open(engine.data_dir / image['path']) as png:
        assert png.size == (4500, 5400) and png.mode == 'RGBA'
        assert round(png.info['dpi'][0]) == 300
    assert requests.get(image['url'], timeout=10).content[:4] == b'\x89PNG'
    products = result['products']
    assert sorted(p['type'] for p in products) == ['hoodie', 'tshirt']
    for product in products:
        assert product['platform'] == 'local' and product['productId']
        assert product['imageId'] == image['id']
        assert (engine.data_dir / product['mockupPath']).is_file()
        listing = requests.get(product['url'], timeout=10).json()
        assert listing['productId'] == product['productId']
        assert listing['published'] is True
        assert requests.get(product['mockupUrl'], timeout=10).content[:4] == b'\x89PNG'
    assert result['designs'][0]['writer'] == 'template'
    assert isinstance(result['totalTime'], int)


def test_count_makes_that_many_distinct_designs(engine):
    job_id = engine.submit({'theme': 'ocean', 'style': 'retro', 'niche': 'surfers',
                            'productTypes': ['tshirt'], 'count': 2}, path='/api/generate')
    result = engine.wait_for(job_id, 'completed', timeout=60)['result']
    images = result['generatedImages']
    assert len(images) == 2 and len(result['products']) == 2
    assert images[0]['prompt'] != images[1]['prompt']
    first, second = (engine.data_dir / image['path'] for image in images)
    assert first.read_bytes() != second.read_bytes()


# Priorities --------------------------------------------------------------------

def test_priorities_order_the_queue_fifo_within_one(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    blocker = engine.submit(sleep_job(0.5))
    engine.wait_for(blocker, 'running')
    names = ['low', 'normal-1', 'urgent', 'high', 'normal-2', 'urgent-2']
    # Each job sleeps 20 ms so that start times (in ms) never tie.
    ids = {name: engine.submit(sleep_job(0.02, priority=name.split('-')[0])) for name in names}
    for job_id in ids.values():
        engine.wait_for(job_id, 'completed')
    order = sorted(names, key=lambda name: engine.job(ids[name])['startedAt'])
    assert order == ['urgent', 'urgent-2', 'high', 'normal-1', 'normal-2', 'low']


def test_concurrency_limit_is_respected(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=2)
    ids = [engine.submit(sleep_job(0.4)) for _ in range(4)]
    time.sleep(0.2)
    metrics = engine.get('/api/metrics').json()
    assert metrics['runningJobs'] == 2 and metrics['pendingJobs'] == 2
    for job_id in ids:
        engine.wait_for(job_id, 'completed')


# Retries -----------------------------------------------------------------------

def test_retryable_failures_back_off_exponentially_then_succeed(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', RETRY_DELAY_MS=300)
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 2},
                            'maxRetries': 3})
    job = engine.wait_for(job_id, 'completed', timeout=20)
    assert job['retryCount'] == 2 and job['result'] == {'attempts': 3}
    starts = [float(line) for line in trace(engine, f'attempts-{job_id}')]
    first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.24 <= first_gap <= 0.6, first_gap     # 300 ms +-20 %
    assert 0.48 <= second_gap <= 1.0, second_gap   # 600 ms +-20 %
    assert any('Retrying job (attempt 1/3)' in m for m in messages(job))


def test_pending_retry_is_visible_with_its_due_time(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', RETRY_DELAY_MS=2000)
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 1}})
    job = engine.wait_for(job_id, 'pending', where=lambda j: j['retryCount'] == 1)
    assert job['error'] == 'flaky failure on attempt 1'
    assert job['nextRetryAt'] > time.time() * 1000
    assert engine.get('/api/metrics').json()['pendingJobs'] == 1


def test_retries_run_out_then_the_job_fails(engine):
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 9},
                            'maxRetries': 2})
    job = engine.wait_for(job_id, 'failed', timeout=20)
    assert job['retryCount'] == 2 and job['error'] == 'flaky failure on attempt 3'
    assert job['completedAt'] is not None
    assert len(trace(engine, f'attempts-{job_id}')) == 3


def test_non_retryable_failure_fails_at_once(engine):
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'fail', 'message': 'bad'},
                            'maxRetries': 3})
    job = engine.wait_for(job_id, 'failed')
    assert job['retryCount'] == 0 and job['error'] == 'bad'
    assert len(trace(engine, f'attempts-{job_id}')) == 1


def test_a_bug_in_a_handler_fails_the_job_without_retries(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    engines.allow_tracebacks = True  # the engine logs the bug's traceback, as it should
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'crash'}})
    job = engine.wait_for(job_id, 'failed')
    assert job['retryCount'] == 0 and 'KeyError' in job['error']
    assert engine.get('/health').json()['metrics']['failedJobs'] == 1


def test_manual_retry_gives_a_fresh_budget(engine):
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 2},
                            'maxRetries': 1})
    job = engine.wait_for(job_id, 'failed')
    assert job['retryCount'] == 1
    assert engine.post(f'/api/jobs/{job_id}/retry').json() == {'success': True}
    job = engine.wait_for(job_id, 'completed')
    assert job['retryCount'] == 0 and job['error'] is None and job['result'] == {'attempts': 3}
    assert engine.get('/api/metrics').json()['failedJobs'] == 0


# Timeout and cancel --------------------------------------------------------------

def test_timeout_stops_the_work_and_goes_down_the_retry_path(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', JOB_TIMEOUT_MS=300)
    job_id = engine.submit(sleep_job(1.0, maxRetries=1))
    job = engine.wait_for(job_id, 'failed', timeout=10)
    assert job['error'] == 'Job timeout' and job['retryCount'] == 1
    time.sleep(1.2)  # longer than the handler would have slept
    assert trace(engine, f'sleep-{job_id}') == ['started', 'started']


def test_cancel_a_pending_job(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    blocker = engine.submit(sleep_job(0.5))
    waiting = engine.submit(sleep_job(0))
    assert engine.post(f'/api/jobs/{waiting}/cancel').json() == {'success': True}
    job = engine.job(waiting)
    assert job['status'] == 'cancelled' and job['completedAt'] is not None
    engine.wait_for(blocker, 'completed')
    time.sleep(0.2)
    assert engine.job(waiting)['status'] == 'cancelled'
    assert trace(engine, f'sleep-{waiting}') == []


def test_cancel_a_running_job_stops_its_work(engine):
    job_id = engine.submit(sleep_job(1.0))
    engine.wait_for(job_id, 'running', where=lambda j: j['progress'] >= 10)
    assert engine.post(f'/api/jobs/{job_id}/cancel').json() == {'success': True}
    job = engine.job(job_id)
    assert job['status'] == 'cancelled' and job['completedAt'] is not None
    time.sleep(1.2)
    assert trace(engine, f'sleep-{job_id}') == ['started']
    assert engine.job(job_id)['status'] == 'cancelled'
    assert engine.get('/api/metrics').json()['runningJobs'] == 0


def test_cancel_while_waiting_for_a_retry_sticks(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', RETRY_DELAY_MS=400)
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 1}})
    engine.wait_for(job_id, 'pending', where=lambda j: j['retryCount'] == 1)
    assert engine.post(f'/api/jobs/{job_id}/cancel').status_code == 200
    time.sleep(1.0)
    assert engine.job(job_id)['status'] == 'cancelled'
    assert len(trace(engine, f'attempts-{job_id}')) == 1


def test_retry_a_cancelled_job(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    blocker = engine.submit(sleep_job(0.3))
    job_id = engine.submit(sleep_job(0))
    engine.post(f'/api/jobs/{job_id}/cancel')
    assert engine.post(f'/api/jobs/{job_id}/retry').json() == {'success': True}
    engine.wait_for(blocker, 'completed')
    assert engine.wait_for(job_id, 'completed')['completedAt'] is not None


# Failure is failure, and retries resume ----------------------------------------

def test_partial_generate_fails_then_resumes_without_redoing_work(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='traced',
                           ENABLED_PLATFORMS='switch')
    set_control(engine, 'switch', {'fail': ['hoodie'], 'retryable': False})
    job_id = engine.submit({'prompt': 'Retro ocean waves', 'productTypes': ['tshirt', 'hoodie']},
                           path='/api/generate')
    job = engine.wait_for(job_id, 'failed', timeout=60)
    assert job['retryCount'] == 0
    assert 'hoodie' in job['error']
    result = job['result']
    assert result['success'] is False
    assert [p['type'] for p in result['products']] == ['tshirt']
    assert len(result['generatedImages']) == 1 and result['errors']
    image = engine.data_dir / result['generatedImages'][0]['path']
    drawn_at = image.stat().st_mtime_ns

    set_control(engine, 'switch', {})
    engine.post(f'/api/jobs/{job_id}/retry')
    job = engine.wait_for(job_id, 'completed', timeout=60)
    assert sorted(p['type'] for p in job['result']['products']) == ['hoodie', 'tshirt']
    assert len(trace(engine, 'image-calls')) == 1
    assert image.stat().st_mtime_ns == drawn_at
    calls = trace(engine, 'switch-calls')
    assert sum(line.endswith('tshirt') for line in calls) == 1
    assert sum(line.endswith('hoodie') for line in calls) == 2


def test_batch_runs_every_item_and_reports_failed_ones(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', ENABLED_PLATFORMS='switch')
    set_control(engine, 'switch', {'fail': ['hoodie']})
    job_id = engine.submit({'items': [
        {'prompt': 'Design 1', 'productTypes': ['tshirt']},
        {'prompt': 'Design 2', 'productTypes': ['hoodie']},
        {'theme': 'abstract', 'style': 'colorful', 'productTypes': ['tshirt']},
    ]}, path='/api/generate/batch')
    job = engine.wait_for(job_id, 'failed', timeout=90)
    result = job['result']
    assert result['total'] == 3
    assert [e['index'] for e in result['errors']] == [1]
    assert result['results'][0]['success'] and result['results'][2]['success']
    assert result['results'][1]['success'] is False
    assert job['progress'] == 100

    set_control(engine, 'switch', {})
    engine.post(f'/api/jobs/{job_id}/retry')
    job = engine.wait_for(job_id, 'completed', timeout=90)
    assert job['result']['errors'] == [] and all(r['success'] for r in job['result']['results'])
    calls = trace(engine, 'switch-calls')
    assert len(calls) == 4  # items 0 and 2 once each, item 1 twice


def test_publish_image_handler_from_the_inbox(engine):
    inbox = engine.data_dir / 'inbox'
    inbox.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (1200, 1500), (200, 40, 40)).save(inbox / 'logo.jpg')
    Image.new('RGB', (800, 600), (200, 40, 40)).save(inbox / 'small.jpg')
    job_id = engine.submit({'type': 'custom', 'request': {
        'handler': 'publish_image', 'image': 'logo.jpg', 'productTypes': ['tshirt'],
        'title': 'Red Block Tee', 'tags': ['red']}})
    job = engine.wait_for(job_id, 'completed', timeout=60)
    [product] = job['result']['products']
    assert product['title'] == 'Red Block Tee'
    [image] = job['result']['generatedImages']
    assert image['source'] == {'width': 1200, 'height': 1500}
    assert (image['width'], image['height']) == (4500, 5400)
    with Image.open(engine.data_dir / image['path']) as png:
        assert png.size == (4500, 5400) and png.mode == 'RGBA'
        assert round(png.info['dpi'][0]) == 300
        assert png.getpixel((0, 0))[3] == 0 and png.getpixel((2250, 2700)) == (200, 40, 40, 255)
    small = engine.submit({'type': 'custom', 'request': {
        'handler': 'publish_image', 'image': 'small.jpg', 'productTypes': ['tshirt']}})
    job = engine.wait_for(small, 'failed')
    assert '800x600' in job['error'] and 'MIN_SOURCE_PX' in job['error']
    assert job['retryCount'] == 0


def test_publish_image_refuses_a_missing_inbox_file(engine):
    job_id = engine.submit({'type': 'custom', 'request': {
        'handler': 'publish_image', 'image': 'nothing.png', 'productTypes': ['tshirt']}})
    job = engine.wait_for(job_id, 'failed')
    assert 'inbox' in job['error'] and job['retryCount'] == 0


# Cleanup, metrics, health --------------------------------------------------------

def test_cleanup_removes_finished_jobs_only(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    done = engine.submit(sleep_job(0))
    engine.wait_for(done, 'completed')
    failed = engine.submit({'type': 'custom', 'request': {'handler': 'fail'}})
    engine.wait_for(failed, 'failed')
    running = engine.submit(sleep_job(1))
    pending = engine.submit(sleep_job(0))
    cancelled = engine.submit(sleep_job(0))
    engine.post(f'/api/jobs/{cancelled}/cancel')
    engine.wait_for(running, 'running')
    assert engine.post('/api/jobs/cleanup', json={'maxAge': 86_400_000}).json() == {'cleared': 0}
    assert engine.post('/api/jobs/cleanup', json={'maxAge': 0}).json() == {'cleared': 3}
    left = {job['id'] for job in engine.get('/api/jobs').json()}
    assert left == {running, pending}
    metrics = engine.get('/api/metrics').json()
    assert metrics['totalJobs'] == 5 and metrics['completedJobs'] == 1


def test_scheduled_cleanup_runs_on_its_own(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', CLEANUP_INTERVAL_MS=1000,
                           CLEANUP_MAX_AGE_MS=0)
    job_id = engine.submit(sleep_job(0))
    engine.wait_for(job_id, 'completed')
    deadline = time.monotonic() + 5
    while engine.get(f'/api/jobs/{job_id}').status_code != 404:
        assert time.monotonic() < deadline, 'the scheduled cleanup never ran'
        time.sleep(0.1)


def test_metrics_count_and_round(engine):
    ids = [engine.submit(sleep_job(0)) for _ in range(2)]
    ids.append(engine.submit({'type': 'custom', 'request': {'handler': 'fail'}}))
    for job_id in ids:
        engine.wait_for(job_id, 'completed', 'failed')
    metrics = engine.get('/api/metrics').json()
    assert metrics['totalJobs'] == 3 and metrics['completedJobs'] == 2
    assert metrics['failedJobs'] == 1 and metrics['successRate'] == 66.67
    assert isinstance(metrics['averageJobTime'], int) and metrics['averageJobTime'] >= 0
    assert metrics['lastActivity'] >= engine.job(ids[-1])['completedAt']


def finish_jobs(engine, ok, failed):
    ids = [engine.submit(sleep_job(0)) for _ in range(ok)]
    ids += [engine.submit({'type': 'custom', 'request': {'handler': 'fail'}, 'maxRetries': 0})
            for _ in range(failed)]
    for job_id in ids:
        engine.wait_for(job_id, 'completed', 'failed')


def test_health_judges_the_failure_rate_of_enough_recent_jobs(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    finish_jobs(engine, ok=2, failed=1)
    response = engine.get('/health')
    assert response.status_code == 200 and response.json()['status'] == 'healthy'
    assert response.json()['reasons'] == [
        'every backend is up',
        '1 of the 3 jobs finished in the last 15 min failed; 10 are needed to judge']
    # A cancelled job is neither a success nor a failure.
    cancelled = engine.submit(sleep_job(30))
    engine.wait_for(cancelled, 'running')
    assert engine.post(f'/api/jobs/{cancelled}/cancel').status_code == 200
    engine.wait_for(cancelled, 'cancelled')
    finish_jobs(engine, ok=2, failed=5)
    response = engine.get('/health')
    assert response.status_code == 503, response.text
    assert response.json()['status'] == 'unhealthy'
    assert response.json()['reasons'] == ['6 of the 10 jobs finished in the last 15 min failed']
    # A page that shows the state asks for the report: 200, same body.
    report = engine.get('/health?report=true')
    assert report.status_code == 200 and report.json()['status'] == 'unhealthy'
    assert report.json()['reasons'] == response.json()['reasons']
    assert engine.get('/health?report=maybe').status_code == 400
    engine.stop()  # the outcomes are kept on disk with the metrics
    again = engines.start(engine.data_dir, CUSTOM_HANDLERS='testkit')
    assert again.get('/health').json()['reasons'] == response.json()['reasons']


def test_one_failure_in_three_is_healthy_even_when_three_are_enough(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', HEALTH_MIN_SAMPLE=3)
    finish_jobs(engine, ok=2, failed=1)
    response = engine.get('/health')
    assert response.status_code == 200 and response.json()['status'] == 'healthy'
    assert '1 of the 3 jobs finished in the last 15 min failed' in response.json()['reasons']


def test_failures_older_than_the_window_no_longer_count(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', HEALTH_MIN_SAMPLE=2,
                           HEALTH_WINDOW_MS=1500)
    finish_jobs(engine, ok=0, failed=2)
    response = engine.get('/health')
    assert response.status_code == 503
    assert response.json()['reasons'] == ['2 of the 2 jobs finished in the last 1.5 s failed']
    deadline = time.monotonic() + 10  # the two leave the window a few ms apart
    while '0 of the 0' not in (response := engine.get('/health')).text:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.status_code == 200
    assert response.json()['reasons'][-1] == (
        '0 of the 0 jobs finished in the last 1.5 s failed; 2 are needed to judge')


def test_health_is_degraded_when_a_platform_is_down(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', ENABLED_PLATFORMS='local,switch',
                           HEALTH_CHECK_INTERVAL_MS=200)
    set_control(engine, 'switch', {'healthy': False})
    deadline = time.monotonic() + 5
    while (response := engine.get('/health')).json()['status'] != 'degraded':
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.status_code == 200 and response.json()['services']['switch'] is False


def test_health_is_unhealthy_when_the_image_backend_is_down(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='down')
    response = engine.get('/health')
    assert response.status_code == 503 and response.json()['status'] == 'unhealthy'


@pytest.mark.parametrize('setting, value', [
    ('PORT', 'abc'), ('MAX_CONCURRENT_JOBS', '0'), ('ENABLE_PERSISTENCE', 'maybe'),
    ('IMAGE_BACKEND', 'dalle'), ('ENABLED_PLATFORMS', 'etsy'), ('CUSTOM_HANDLERS', 'no_such_mod'),
    ('LOG_LEVEL', 'LOUD'), ('PRODUCT_TYPES_FILE', '/nonexistent.json'),
])
def test_invalid_settings_stop_start_up_naming_the_setting(engines, setting, value):
    engine = engines.start(expect_ready=False, **{setting: value})
    assert engine.wait_exit() == 2
    assert setting in engine.log()


def test_publish_image_handler_from_a_url(engine, tmp_path):
    import functools
    import http.server
    import threading
    Image.new('RGBA', (1200, 1200), (20, 90, 200, 255)).save(tmp_path / 'art.png')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{server.server_port}'
        job_id = engine.submit({'type': 'custom', 'request': {
            'handler': 'publish_image', 'image': f'{url}/art.png',
            'productTypes': ['tshirt', 'hoodie']}})
        job = engine.wait_for(job_id, 'completed', timeout=60)
        assert len(job['result']['products']) == 2
        missing = engine.submit({'type': 'custom', 'request': {
            'handler': 'publish_image', 'image': f'{url}/nothing.png',
            'productTypes': ['tshirt']}, 'maxRetries': 2})
        job = engine.wait_for(missing, 'failed', timeout=20)
        assert '404' in job['error'] and job['retryCount'] == 0
    finally:
        server.shutdown()


def test_job_logs_are_capped_to_the_newest(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_JOB_LOGS=10, RETRY_DELAY_MS=10)
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 6},
                            'maxRetries': 10})
    job = engine.wait_for(job_id, 'completed', timeout=20)
    assert len(job['logs']) == 10
    assert job['logs'][-1]['message'] == 'Job completed successfully'


def test_retry_delay_is_capped(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', RETRY_DELAY_MS=200,
                           RETRY_MAX_DELAY_MS=200)
    job_id = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 3}})
    engine.wait_for(job_id, 'completed', timeout=20)
    starts = [float(line) for line in trace(engine, f'attempts-{job_id}')]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert len(gaps) == 3 and all(0.15 <= gap <= 0.5 for gap in gaps), gaps


def test_settings_come_from_the_env_file_under_the_environment(engines, tmp_path):
    env_file = tmp_path / 'no.env'  # the file the harness points ENV_FILE at
    env_file.write_text('# settings\nMAX_CONCURRENT_JOBS=5\nMAX_JOB_RETRIES=7\n')
    engine = engines.start(MAX_JOB_RETRIES=1)
    config = engine.get('/api/info').json()['config']
    assert config['maxConcurrent'] == 5 and config['maxRetries'] == 1


def draws(engine):
    times = [line.split() for line in trace(engine, 'draw')]
    return [(float(a[1]), float(b[1])) for a, b in zip(times[::2], times[1::2])]


@pytest.mark.parametrize('shape', ['count', 'batch'])
def test_the_next_design_is_drawn_while_the_last_one_publishes(engines, shape):
    types = engines.tmp_path / 'types.json'  # print at the drawn size: no resizing
    types.write_text(json.dumps({'tshirt': {'print_width': 1200, 'print_height': 1440}}))
    engine = engines.start(CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='sleepy',
                           ENABLED_PLATFORMS='sleepy', MIN_SOURCE_PX=1000,
                           PRODUCT_TYPES_FILE=types)
    set_control(engine, 'sleepy', {'image': 0.4, 'publish': 0.4})
    if shape == 'count':
        job_id = engine.submit({'prompt': 'x', 'productTypes': ['tshirt'], 'count': 4},
                               path='/api/generate')
    else:
        job_id = engine.submit({'items': [{'prompt': f'item {n}', 'productTypes': ['tshirt']}
                                          for n in range(4)]}, path='/api/generate/batch')
    job = engine.wait_for(job_id, 'completed', timeout=60)
    took = (job['completedAt'] - job['startedAt']) / 1000
    # One after another: 4 x (0.4 + 0.4) = 3.2 s. Overlapped: ~4 x 0.4 + 0.4 = 2 s.
    assert took < 2.6, took
    spans = draws(engine)
    assert len(spans) == 4
    starts = sorted(start for start, _ in spans)
    # At most two images in flight (one drawing, the next queued), started in order.
    for start in starts:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
