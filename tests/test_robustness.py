"""Robustness over real HTTP: hostile request bodies, hundreds of slow or idle
clients, and SIGKILL at random moments while jobs run."""

import base64
import json
import math
import os
import random
import re
import resource
import socket
import time

import pytest
import requests

from conftest import Engines

JSON = {'Content-Type': 'application/json'}
LIMIT = 1 << 20  # MAX_BODY_BYTES' default
BODY_ROUTES = ('/api/jobs', '/api/generate', '/api/generate/batch', '/api/jobs/cleanup')


def assert_json_error(response, *statuses):
    """A 4xx of one of ``statuses`` with a JSON ``{"error": "<message>"}``."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers.get('Content-Type', '').split(';')[0] == 'application/json', \
        response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get('error'), str) and body['error']
    return body['error']


def assert_healthy(engine, within=0.5):
    started = time.monotonic()
    response = engine.get('/health', timeout=5)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took < within, f'/health took {took:.3f}s'


def port_of(engine):
    return int(engine.url.rsplit(':', 1)[1])


def strict_json(text):
    """JSON as RFC 8259 has it (and JavaScript's JSON.parse): no NaN/Infinity."""
    def refuse(constant):
        raise ValueError(f'{constant} is not JSON')
    return json.loads(text, parse_constant=refuse)


# Hostile input ------------------------------------------------------------------

@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    """One engine for all the hostile-input tests; the last test checks it is
    still healthy, and teardown that it logged no traceback."""
    manager = Engines(tmp_path_factory.mktemp('hostile'))
    engine = manager.start(CUSTOM_HANDLERS='testkit', IMAGE_BACKEND='tiny', MIN_SOURCE_PX=1000)
    yield engine
    manager.close()


def post(engine, path, data, headers=JSON, **kwargs):
    return engine.request('POST', path, data=data, headers=headers, **kwargs)


def padded(body, size):
    """``body`` (a JSON object) padded with trailing spaces to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    return raw + b' ' * (size - len(raw))


GOOD_GENERATE = {'prompt': 'a lighthouse at dusk', 'productTypes': ['tshirt'],
                 'autoPublish': False}
SLEEP_0 = {'type': 'custom', 'request': {'handler': 'sleep', 'seconds': 0}}


def test_bodies_over_max_body_bytes_get_413(hostile):
    for path in BODY_ROUTES:
        over = padded({'pad': 'a' * 1000}, LIMIT + 1)
        assert 'larger than' in assert_json_error(post(hostile, path, over), 413)
        way_over = b'{"pad": "' + b'a' * (3 * LIMIT) + b'"}'
        assert_json_error(post(hostile, path, way_over), 413)
    # The limit is inclusive: exactly MAX_BODY_BYTES is read and judged.
    assert post(hostile, '/api/generate', padded(GOOD_GENERATE, LIMIT)).status_code == 201
    assert_json_error(post(hostile, '/api/generate', padded(GOOD_GENERATE, LIMIT + 1)), 413)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives(hostile):
    with socket.create_connection(('127.0.0.1', port_of(hostile)), timeout=5) as sock:
        sock.sendall(b'POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"ty')
        started = time.monotonic()
        answer = b''
        while b'\r\n\r\n' not in answer:
            chunk = sock.recv(4096)
            assert chunk, f'closed without an answer: {answer!r}'
            answer += chunk
        assert time.monotonic() - started < 2
    assert answer.startswith(b'HTTP/1.1 413'), answer[:200]


@pytest.mark.parametrize('nested', [
    b'[' * 100_000 + b']' * 100_000,
    b'{"a":' * 100_000 + b'1' + b'}' * 100_000,
    b'{"prompt": "x", "productTypes": ["tshirt"], "seed": ' + b'[' * 100_000 + b']' * 100_000
    + b'}',
], ids=['arrays', 'objects', 'inside-a-field'])
def test_deeply_nested_json_gets_400(hostile, nested):
    assert len(nested) < LIMIT
    for path in BODY_ROUTES:
        assert_json_error(post(hostile, path, nested), 400)


@pytest.mark.parametrize('content_type', [
    'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
    'application/jsonp', 'text/json', None])
def test_a_body_that_is_not_declared_json_gets_415(hostile, content_type):
    headers = {} if content_type is None else {'Content-Type': content_type}
    body = json.dumps(GOOD_GENERATE).encode()
    for path in BODY_ROUTES:
        response = post(hostile, path, body, headers=headers)
        assert 'application/json' in assert_json_error(response, 415)


def test_json_with_parameters_in_its_content_type_is_accepted(hostile):
    response = post(hostile, '/api/generate', json.dumps(GOOD_GENERATE).encode(),
                    headers={'Content-Type': 'Application/JSON; charset=utf-8'})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize('body', [
    b'{"prompt": "caf\xe9", "productTypes": ["tshirt"]}',  # Latin-1
    '{"prompt": "x", "productTypes": ["tshirt"]}'.encode('utf-16'),  # with a BOM
    b'{"prompt": "\xc0\xaf", "productTypes": ["tshirt"]}',  # overlong
    b'{"prompt": "\xed\xa0\x80", "productTypes": ["tshirt"]}',  # an encoded surrogate
    b'{"prompt": "\xf0\x9f\x98", "productTypes": ["tshirt"]}',  # cut short
    b'\xff\xfe\x00\x00',
], ids=['latin-1', 'utf-16', 'overlong', 'surrogate', 'truncated', 'garbage'])
def test_a_body_that_is_not_utf8_gets_400(hostile, body):
    for path in BODY_ROUTES:
        assert 'UTF-8' in assert_json_error(post(hostile, path, body), 400)


@pytest.mark.parametrize('path, body, field', [
    ('/api/generate', {**GOOD_GENERATE, 'colour': 'red'}, 'colour'),
    ('/api/generate/batch', {'items': [GOOD_GENERATE], 'urgent': True}, 'urgent'),
    ('/api/generate/batch', {'items': [{**GOOD_GENERATE, 'sizes': ['XL']}]}, 'sizes'),
    ('/api/jobs', {**SLEEP_0, 'callback': 'http://x'}, 'callback'),
    ('/api/jobs', {'type': 'generate', 'request': {**GOOD_GENERATE, 'bogus': 1}}, 'bogus'),
    ('/api/jobs/cleanup', {'maxAge': 1, 'force': True}, 'force'),
])
def test_unknown_fields_get_400_naming_the_field(hostile, path, body, field):
    assert field in assert_json_error(hostile.post(path, json=body), 400)


@pytest.mark.parametrize('path, body', [
    ('/api/generate', {**GOOD_GENERATE, 'count': 10**9}),
    ('/api/generate', {**GOOD_GENERATE, 'count': 10**100}),
    ('/api/generate', {**GOOD_GENERATE, 'count': 1e9}),
    ('/api/generate', {**GOOD_GENERATE, 'count': -1}),
    ('/api/generate', {**GOOD_GENERATE, 'productTypes': ['tshirt'] * 10_000}),
    ('/api/generate/batch', {'items': [GOOD_GENERATE] * 10_000}),
    ('/api/generate/batch', {'items': [{**GOOD_GENERATE, 'count': 10**9}]}),
    ('/api/jobs', {'type': 'batch', 'request': {'items': [GOOD_GENERATE] * 10_000}}),
    ('/api/jobs', {'type': 'generate', 'request': {**GOOD_GENERATE, 'count': 10**9}}),
    ('/api/jobs', {**SLEEP_0, 'maxRetries': 10**9}),
], ids=['count-1e9', 'count-1e100', 'count-float', 'count-negative', '10k-product-types',
        'batch-10k-items', 'batch-item-count-1e9', 'jobs-batch-10k-items', 'jobs-count-1e9',
        'maxRetries-1e9'])
def test_absurd_sizes_get_400(hostile, path, body):
    raw = json.dumps(body).encode()
    assert len(raw) < LIMIT
    assert_json_error(post(hostile, path, raw), 400)


def test_numbers_python_cannot_even_parse_get_400(hostile):
    huge = b'{"prompt": "x", "productTypes": ["tshirt"], "count": ' + b'9' * 100_000 + b'}'
    assert_json_error(post(hostile, '/api/generate', huge), 400)


def chunks(total, size=64 * 1024, head=b'{"type": "custom", "request": {"handler": "sleep", '
           b'"pad": "', tail=b'"}}'):
    yield head
    for _ in range(total // size):
        yield b'a' * size
    yield tail


def test_chunked_bodies_over_the_limit_are_refused_without_a_5xx(hostile):
    for path in BODY_ROUTES:
        response = post(hostile, path, chunks(3 * LIMIT), timeout=30)
        assert response.request.headers.get('Transfer-Encoding') == 'chunked'
        assert_json_error(response, 413, 400)
    response = post(hostile, '/api/jobs', chunks(50 * LIMIT), timeout=30)
    assert_json_error(response, 413, 400)


def test_a_small_chunked_body_is_accepted(hostile):
    body = json.dumps(SLEEP_0).encode()
    response = post(hostile, '/api/jobs', iter([body[:10], body[10:]]))
    assert response.request.headers.get('Transfer-Encoding') == 'chunked'
    assert response.status_code == 201, response.text


@pytest.mark.parametrize('constant', ['NaN', 'Infinity', '-Infinity'])
def test_non_json_constants_are_refused(hostile, constant):
    body = '{"type": "custom", "request": {"handler": "sleep", "seconds": 0, "note": %s}}'
    response = post(hostile, '/api/jobs', (body % constant).encode())
    strict_json(response.text)
    assert_json_error(response, 400)


@pytest.fixture(scope='module')
def paths_engine(tmp_path_factory):
    manager = Engines(tmp_path_factory.mktemp('paths'))
    manager.allow_tracebacks = True  # each test checks its own part of the log
    yield manager.start()
    manager.close()


LONG_NAME = 'a' * 300  # over NAME_MAX (255)


@pytest.mark.parametrize('path, statuses', [
    (f'/files/{LONG_NAME}', (404,)),
    (f'/thumbs/{LONG_NAME}', (400, 404)),
    (f'/web/{LONG_NAME}', (400, 404)),
    ('/files/a%00b', (404,)),
    ('/thumbs/a%00b.png', (400, 404)),
    ('/web/a%00b', (400, 404)),
    ('/files/' + 'a/' * 3000 + 'x', (404,)),
], ids=['files-long-name', 'thumbs-long-name', 'web-long-name', 'files-nul', 'thumbs-nul',
        'web-nul', 'files-path-over-path-max'])
def test_file_names_the_os_refuses_get_a_4xx_not_a_500(paths_engine, path, statuses):
    before = len(paths_engine.log())
    assert_json_error(paths_engine.get(path), *statuses)
    time.sleep(0.05)
    assert 'Traceback' not in paths_engine.log()[before:]


def test_the_engine_is_healthy_after_the_hostile_input(hostile):
    assert_healthy(hostile)
    listed = hostile.get('/api/jobs')
    assert listed.status_code == 200
    for job in listed.json():  # the jobs that were rightly accepted
        if job['type'] == 'generate':
            hostile.wait_for(job['id'], 'completed', timeout=60)
    assert 'unhandled error' not in hostile.log()


# Slow and many clients ------------------------------------------------------------

SLOW_STARTS = (
    b'GET /heal',  # a request line, cut short
    b'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ',  # headers, cut short
    b'POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
    b'Content-Length: 1000\r\n\r\n{"type": ',  # a body, cut short
)


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f'needs {needed} file descriptors; the hard limit is {hard}')
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return soft


def websocket_handshake(port):
    key = base64.b64encode(os.urandom(16))
    return (b'GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n'
            b'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
            b'\r\n' % (port, key))


def read_head(sock):
    head = b''
    while b'\r\n\r\n' not in head:
        chunk = sock.recv(4096)
        assert chunk, f'closed during the handshake: {head!r}'
        head += chunk
    return head


def ws_clients(engine):
    found = re.search(r'^pod_websocket_clients\{transport="ws"\} (\S+)$',
                      engine.get('/metrics').text, re.M)
    return int(float(found.group(1)))


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(engines):
    engines.allow_tracebacks = True  # this test reads the log itself
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    with socket.create_connection(('127.0.0.1', port_of(engine)), timeout=5) as sock:
        sock.sendall(SLOW_STARTS[2])
    time.sleep(0.5)  # the engine notices the hang-up
    assert_healthy(engine)
    assert 'unhandled error' not in engine.log()
    assert 'Traceback' not in engine.log()


def test_slowloris_and_idle_websockets_do_not_starve_health(engines, capsys):
    slow_count, ws_count, calls = 200, 500, 50
    # Sockets on both ends live in this process and the engine (which inherits it).
    previous = raise_fd_limit(4096)
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    port = port_of(engine)
    deadline = time.monotonic() + 60
    sockets = []
    try:
        for number in range(slow_count):
            sock = socket.create_connection(('127.0.0.1', port), timeout=10)
            sockets.append(sock)
            sock.sendall(SLOW_STARTS[number % len(SLOW_STARTS)])
        websockets = []
        for _ in range(ws_count):
            sock = socket.create_connection(('127.0.0.1', port), timeout=10)
            sockets.append(sock)
            websockets.append(sock)
            sock.sendall(websocket_handshake(port))
        for sock in websockets:
            assert read_head(sock).startswith(b'HTTP/1.1 101'), 'a /ws upgrade was refused'
        assert time.monotonic() < deadline, 'opening the connections took over 60 s'
        assert ws_clients(engine) == ws_count

        timings = []
        for _ in range(calls):
            started = time.monotonic()
            response = requests.get(engine.url + '/health', timeout=5)
            timings.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
        timings.sort()
        p99 = timings[math.ceil(0.99 * calls) - 1]
        p50 = timings[calls // 2]
        with capsys.disabled():
            print(f'\n/health with {slow_count} slowloris + {ws_count} idle /ws connections '
                  f'open: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {calls} calls')
        assert p99 < 0.2, f'p99 {p99 * 1000:.0f} ms: {timings}'
        # The slow ones are still waiting, not answered or dropped.
        for sock in sockets[:slow_count]:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in sockets:
            sock.close()
    # The engine lets go of every connection we closed.
    while ws_clients(engine) and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    assert ws_clients(engine) == 0
    assert_healthy(engine)
    engine.stop()  # the fixture then fails the test on any traceback in the log
    if previous < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (previous, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


# SIGKILL at random moments ----------------------------------------------------------

def read_trace(data, name):
    path = data / 'trace' / name
    return path.read_text().split() if path.exists() else []


def test_jobs_survive_sigkill_at_random_moments(engines, tmp_path, capsys):
    rng = random.Random(20260101)
    kills_wanted = 8
    data = tmp_path / 'data'
    settings = {'CUSTOM_HANDLERS': 'testkit', 'IMAGE_BACKEND': 'tiny', 'MIN_SOURCE_PX': 1000,
                'MAX_CONCURRENT_JOBS': 2, 'RETRY_DELAY_MS': 50,
                'MAX_INTERRUPTIONS': kills_wanted}  # every kill may land on one job
    started = time.monotonic()
    engine = engines.start(data, **settings)
    accepted = {}  # job id -> what it should end with

    def submit_steps(sleep_at):
        job_id = engine.submit({'type': 'custom', 'maxRetries': 10, 'request': {
            'handler': 'steps', 'steps': 5, 'sleepAt': sleep_at, 'seconds': 0.3}})
        accepted[job_id] = ('steps', {'steps': [0, 10, 20, 30, 40]})

    def submit_sleep(seconds):
        job_id = engine.submit({'type': 'custom', 'maxRetries': 10, 'request': {
            'handler': 'sleep', 'seconds': seconds}})
        accepted[job_id] = ('sleep', {'slept': seconds})

    for number in range(6):
        submit_steps(number % 5)
    for seconds in (0.4, 0.7, 1.0):
        submit_sleep(seconds)
    batch = engine.post('/api/generate/batch', json={'maxRetries': 10, 'items': [
        {'prompt': f'crash test design {n}', 'productTypes': ['tshirt'], 'autoPublish': False}
        for n in range(2)]})
    assert batch.status_code == 201, batch.text
    accepted[batch.json()['jobId']] = ('batch', None)

    completed = {}  # job id -> result, as seen before a kill
    kills = 0
    for round_ in range(kills_wanted):
        if round_:  # jobs accepted just before a kill count too
            submit_steps(rng.randrange(5))
            submit_sleep(round(rng.uniform(0.2, 0.8), 2))
        time.sleep(rng.uniform(0.2, 1.5))
        for job in engine.get('/api/jobs').json():
            if job['status'] == 'completed':
                completed[job['id']] = job['result']
        engine.kill9()
        kills += 1

        engine = engines.start(data, **settings)
        assert 'unreadable' not in engine.log()
        jobs = {job['id']: job for job in engine.get('/api/jobs').json()}
        assert set(accepted) <= set(jobs), f'lost after kill {kills}: {set(accepted) - set(jobs)}'
        for job_id, result in completed.items():
            job = jobs[job_id]
            assert (job['status'], job['result']) == ('completed', result), \
                f'{job_id} was completed before kill {kills}, now: {job}'
        failed = [job for job in jobs.values() if job['status'] == 'failed']
        assert not failed, failed

    reruns = interruptions = 0
    for job_id, (kind, result) in accepted.items():
        job = engine.wait_for(job_id, 'completed', 'failed', timeout=60)
        assert job['status'] == 'completed', job
        if kind == 'batch':
            assert job['result']['total'] == 2 and job['result']['errors'] == [], job['result']
        else:
            assert job['result'] == result
        if kind == 'steps':
            # A step runs again only when a kill landed while it ran: the trace
            # never goes back, and each kill adds at most one repeat.
            trace = [int(step) for step in read_trace(data, f'steps-{job_id}')]
            assert trace == sorted(trace) and set(trace) == set(range(5)), trace
            repeats = len(trace) - 5
            assert repeats <= kills and max(map(trace.count, trace)) <= kills + 1, trace
            assert repeats <= job['interruptions'], (trace, job['interruptions'])
            reruns += repeats
        assert job['retryCount'] == 0, job  # a crash spends no retry
        interruptions += job['interruptions']
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f'\nsurvived {kills} SIGKILLs at random moments: {len(accepted)} jobs accepted '
              f'and completed, {len(completed)} seen completed before a kill kept their '
              f'result; {interruptions} job interruptions, {reruns} steps run again '
              f'({elapsed:.1f} s)')
    assert kills >= 5
