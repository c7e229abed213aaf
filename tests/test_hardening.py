"""Production hardening: access control, CORS, binding, secrets, logs,
shutdown, the systemd watchdog, and a disk that fills up."""

import json
import logging
import time

import pytest
import requests
import socketio
import websocket

import podengine

from test_events import Recorder, socketio_client
from test_jobs import sleep_job

KEY = 'pod-key-for-tests-0123456789'


def ws_url(engine, query=''):
    return engine.url.replace('http', 'ws') + '/ws' + query


# Access control ------------------------------------------------------------------

def test_the_api_key_guards_every_api_route(engines):
    engine = engines.start(POD_API_KEY=KEY, CUSTOM_HANDLERS='testkit')
    for method, path in (('GET', '/api/jobs'), ('GET', '/api/info'), ('GET', '/api/metrics'),
                         ('POST', '/api/generate'), ('POST', '/api/jobs/cleanup'),
                         ('GET', '/api/jobs/job_1_x'), ('GET', '/api/openapi.json')):
        for headers in ({}, {'Authorization': 'Bearer wrong'}, {'X-API-Key': KEY[:-1]}):
            response = engine.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert 'API key' in response.json()['error']
    assert engine.get('/api/jobs', headers={'Authorization': f'Bearer {KEY}'}).status_code == 200
    assert engine.get('/api/jobs', headers={'X-API-Key': KEY}).status_code == 200
    assert engine.get(f'/api/jobs?key={KEY}').status_code == 401  # no keys in HTTP URLs


def test_health_stays_open_but_tells_strangers_nothing(engines):
    engine = engines.start(POD_API_KEY=KEY)
    stranger = engine.get('/health')
    assert stranger.status_code == 200 and set(stranger.json()) == {'status', 'uptime'}
    insider = engine.get('/health', headers={'X-API-Key': KEY}).json()
    assert {'metrics', 'services'} <= set(insider)


def test_websockets_need_the_key_too(engines):
    engine = engines.start(POD_API_KEY=KEY, CUSTOM_HANDLERS='testkit')
    with pytest.raises(socketio.exceptions.ConnectionError):
        socketio.Client(reconnection=False).connect(engine.url, wait_timeout=5)
    with pytest.raises(socketio.exceptions.ConnectionError):
        socketio.Client(reconnection=False).connect(engine.url, auth={'key': 'nope'},
                                                    wait_timeout=5)
    recorder = Recorder()
    client = socketio.Client(reconnection=False)
    client.on('job:update', lambda data: recorder('job:update', data))
    client.connect(engine.url, auth={'key': KEY}, wait_timeout=5)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(engine), timeout=5)
    assert refused.value.status_code == 401
    plain = websocket.create_connection(ws_url(engine, f'?key={KEY}'), timeout=5)
    try:
        job = engine.post('/api/jobs', json=sleep_job(0), headers={'X-API-Key': KEY}).json()
        recorder.until(lambda e, d: d['id'] == job['jobId'] and d['status'] == 'completed')
        assert json.loads(plain.recv())['event'] in ('job:update', 'log')
    finally:
        plain.close()
        client.disconnect()


def test_binding_beyond_loopback_needs_a_key(engines):
    refused = engines.start(expect_ready=False, HOST='0.0.0.0')
    assert refused.wait_exit() == 2 and 'POD_API_KEY' in refused.log()
    assert engines.start(HOST='0.0.0.0', POD_API_KEY=KEY).get('/health').status_code == 200
    assert engines.start(HOST='0.0.0.0', ALLOW_UNAUTHENTICATED='true') \
        .get('/health').status_code == 200


def test_cors_is_off_unless_origins_are_listed(engines):
    closed = engines.start()
    response = closed.get('/api/info', headers={'Origin': 'https://shop.example'})
    assert 'Access-Control-Allow-Origin' not in response.headers
    engine = engines.start(CORS_ORIGINS='https://shop.example, https://admin.example')
    allowed = engine.get('/api/info', headers={'Origin': 'https://shop.example'})
    assert allowed.headers['Access-Control-Allow-Origin'] == 'https://shop.example'
    other = engine.get('/api/info', headers={'Origin': 'https://evil.example'})
    assert 'Access-Control-Allow-Origin' not in other.headers
    preflight = engine.request('OPTIONS', '/api/generate', headers={
        'Origin': 'https://admin.example', 'Access-Control-Request-Method': 'POST'})
    assert preflight.status_code == 204
    assert 'X-API-Key' in preflight.headers['Access-Control-Allow-Headers']
    polling = '/socket.io/?EIO=4&transport=polling'
    assert engine.get(polling, headers={'Origin': 'https://evil.example'}).status_code == 400
    ok = engine.get(polling, headers={'Origin': 'https://shop.example'})
    assert ok.status_code == 200
    assert ok.headers['Access-Control-Allow-Origin'] == 'https://shop.example'


def test_secrets_never_appear_in_anything_the_engine_wrote(engines, fakes):
    printify = fakes.start('printify')
    printify_token = 'test-printify-token'
    engine = engines.start(POD_API_KEY=KEY, LOG_FORMAT='json', LOG_LEVEL='DEBUG',
                           CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='tiny',
                           MIN_SOURCE_PX=1000, PRINTIFY_API_URL=printify.url,
                           PRINTIFY_API_TOKEN=printify_token, LLM_BASE_URL='http://127.0.0.1:9/v1',
                           LLM_API_KEY='sk-llm-secret-value-42', RETRY_DELAY_MS=50)
    auth = {'X-API-Key': KEY}
    recorder = Recorder()
    client = socketio.Client(reconnection=False)
    client.on('*', lambda event, data: recorder(event, data))
    client.connect(engine.url, auth={'key': KEY}, wait_timeout=5)
    job = engine.post('/api/generate', json={'theme': 'ocean', 'productTypes': ['tshirt'],
                                             'maxRetries': 1}, headers=auth).json()['jobId']
    deadline = time.monotonic() + 30
    while (done := engine.get(f'/api/jobs/{job}', headers=auth).json())['status'] not in (
            'completed', 'failed'):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The unreachable LLM's error went into the log and the designs, key-free.
    assert {d['writer'] for d in done['result']['designs']} == {'template'}
    recorder.drain()
    client.disconnect()
    assert engine.stop() == 0
    written = [engine.log(), json.dumps(recorder.seen)]
    written += [path.read_text(errors='replace') for path in engine.data_dir.rglob('*')
                if path.is_file() and path.suffix in ('.json', '.jsonl')]
    for text in written:
        for secret in (KEY, printify_token, 'sk-llm-secret-value-42'):
            assert secret not in text


def test_json_logs_carry_the_job_id(engines):
    engine = engines.start(LOG_FORMAT='json', CUSTOM_HANDLERS='testkit')
    job_id = engine.submit(sleep_job(0))
    engine.wait_for(job_id, 'completed')
    engine.stop()
    lines = [json.loads(line) for line in engine.log().splitlines() if line.strip()]
    assert all({'time', 'level', 'logger', 'message'} <= set(line) for line in lines)
    mine = [line for line in lines if line.get('jobId') == job_id]
    assert any(line['message'].endswith('Job completed successfully') for line in mine)


# Shutdown, systemd ------------------------------------------------------------------

def test_sigterm_refuses_new_jobs_while_running_ones_finish(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', SHUTDOWN_GRACE_MS=3000)
    job_id = engine.submit(sleep_job(1.0))
    engine.wait_for(job_id, 'running')
    engine.proc.send_signal(15)
    time.sleep(0.3)
    refused = engine.post('/api/jobs', json=sleep_job(0))
    assert refused.status_code == 503 and 'shutting down' in refused.json()['error']
    assert engine.get(f'/api/jobs/{job_id}').status_code == 200
    assert engine.wait_exit(10) == 0
    assert 'Job completed successfully' in engine.log()


def test_the_watchdog_is_fed_from_the_event_loop(engines, notify_socket):
    path, listener = notify_socket
    engines.start(NOTIFY_SOCKET=path, WATCHDOG_USEC=200_000)
    messages = [listener.recv(256) for _ in range(4)]
    assert messages[0] == b'READY=1'
    assert messages.count(b'WATCHDOG=1') == 3


# A full disk ------------------------------------------------------------------------

def test_a_full_disk_refuses_jobs_and_keeps_the_good_state(engines, tmp_path):
    data = tmp_path / 'data'
    engine = engines.start(data, file_size_limit=48_000, CUSTOM_HANDLERS='testkit',
                           MAX_CONCURRENT_JOBS=1)
    blocker = engine.submit(sleep_job(60))
    accepted, refused = [blocker], 0
    for _ in range(200):
        response = engine.post('/api/jobs', json=sleep_job(0, priority='low'))
        if response.status_code == 201:
            accepted.append(response.json()['jobId'])
        else:
            assert response.status_code == 503 and 'disk' in response.json()['error']
            refused += 1
            if refused >= 3:
                break
    assert refused >= 3 and len(accepted) > 5
    health = engine.get('/health')  # still answering, and saying why it refuses
    assert health.status_code == 503, health.text
    assert any('could not write to disk' in reason for reason in health.json()['reasons'])
    engine.kill9()
    engines.allow_tracebacks = True  # logging itself hits the size limit
    after = engines.start(data, CUSTOM_HANDLERS='testkit')
    present = {job['id'] for job in after.get('/api/jobs').json()}
    assert set(accepted) <= present
    after.post(f'/api/jobs/{blocker}/cancel')


def test_the_log_stamp_made_once_a_second_reads_as_loggings_own():
    mine = podengine.StampFormatter('%(asctime)s %(message)s')
    theirs = logging.Formatter('%(asctime)s %(message)s')
    for created in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_001.0015, 1_800_000_061.5):
        record = logging.makeLogRecord({'msg': 'x', 'created': created,
                                        'msecs': (created - int(created)) * 1000})
        assert mine.format(record) == theirs.format(record)
