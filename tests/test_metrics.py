"""GET /metrics: the Prometheus text format, parsed by prometheus_client."""

from prometheus_client.parser import text_string_to_metric_families

from test_events import socketio_client, Recorder
from test_jobs import sleep_job


def scrape(engine, **headers):
    response = engine.get('/metrics', headers=headers)
    assert response.status_code == 200
    assert response.headers['Content-Type'].startswith('text/plain')
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family, **labels):
    return [s for s in family.samples
            if all(s.labels.get(k) == v for k, v in labels.items())]


def value(family, suffix='', **labels):
    return sum(s.value for s in samples(family, **labels) if s.name == family.name + suffix)


def test_operators_see_jobs_retries_durations_queue_and_clients(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    client = socketio_client(engine, Recorder())
    try:
        done = engine.submit(sleep_job(0))
        flaky = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 1}})
        failed = engine.submit({'type': 'custom', 'request': {'handler': 'fail'}})
        for job_id, status in ((done, 'completed'), (flaky, 'completed'), (failed, 'failed')):
            engine.wait_for(job_id, status)
        engine.submit(sleep_job(30))
        engine.submit(sleep_job(0))
        metrics = scrape(engine)
    finally:
        client.disconnect()
    assert value(metrics['pod_jobs'], status='completed') == 2
    assert value(metrics['pod_jobs'], status='failed') == 1
    assert value(metrics['pod_jobs_finished'], '_total', outcome='completed') == 2
    assert value(metrics['pod_job_retries'], '_total') == 1
    assert value(metrics['pod_queue_depth']) >= 1
    assert value(metrics['pod_websocket_clients'], transport='socketio') == 1
    durations = metrics['pod_job_duration_seconds']
    assert value(durations, '_count', type='custom', outcome='completed') == 2
    assert value(durations, '_count', type='custom', outcome='failed') == 1


def test_upstream_requests_and_rate_limit_waits(engines, fakes):
    printify = fakes.start('printify', rate_global_per_min=3, rate_window_scale=0.02)
    engine = engines.start(CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000,
                           PRINTIFY_API_URL=printify.url, PRINTIFY_API_TOKEN='test-printify-token',
                           PRINTIFY_RATE_LIMIT='3/1.2')
    job_id = engine.submit({'prompt': 'x', 'productTypes': ['tshirt']}, path='/api/generate')
    engine.wait_for(job_id, 'completed', timeout=60)
    metrics = scrape(engine)
    sent = metrics['pod_upstream_requests']
    assert value(sent, '_total', service='printify', status='200') >= 5
    assert value(metrics['pod_rate_limit_waits'], '_total', service='printify', limit='all') >= 1
    assert value(metrics['pod_rate_limit_wait_seconds'], '_total', service='printify') > 0


def test_metrics_need_the_api_key_when_one_is_set(engines):
    engine = engines.start(POD_API_KEY='metrics-key-123456')
    assert engine.get('/metrics').status_code == 401
    assert 'pod_jobs' in scrape(engine, Authorization='Bearer metrics-key-123456')


def test_concurrent_submits_share_fsyncs(engines):
    """Group commit: submits that arrive while a journal fsync is in flight
    are made durable by the next one, and each 201 comes after its own."""
    import threading
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    before = scrape(engine)
    start, ids = threading.Barrier(40), []

    def submit():
        start.wait()
        ids.append(engine.submit(sleep_job(60)))

    threads = [threading.Thread(target=submit) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    after = scrape(engine)
    commits = value(after['pod_store_commits'], '_total') - value(before['pod_store_commits'],
                                                                  '_total')
    changes = value(after['pod_store_changes'], '_total') - value(before['pod_store_changes'],
                                                                  '_total')
    assert len(ids) == 40 and changes >= 40
    assert 1 <= commits < changes, (commits, changes)
    engine.kill9()
    again = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1,
                          data_dir=engine.data_dir)
    assert all(again.job(job_id)['id'] == job_id for job_id in ids)
