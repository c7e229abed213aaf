"""The HTTP hot paths against the ceiling of the stack they run on (issue #16).

Three requests, each sent for a fixed time over many keep-alive connections:

  GET job      GET /api/jobs/{id} of a finished job
  GET metrics  GET /api/metrics
  POST job     POST /api/jobs of a custom job, persistence on: each 201
               answers only once its job is fsynced to the journal. The job
               waits in the queue (one worker, busy), as a seller's designs
               do: the figure is the submit's, not a no-op job's whole life

and each against two servers, one after the other:

  bare    the stack with no work: Bottle on gevent's WSGIServer with the
          engine's request handler (TCP_NODELAY), answering the very bodies
          the engine answered, from memory; its POST reads and parses the
          body and answers a canned 201
  engine  ``podengine.py`` as a subprocess, as ``start-pod-engine.sh`` runs it

Each figure is printed with its ratio to the bare server's. After the POST
run the engine is killed with SIGKILL and started again on its data: every
job that got a 201 must be there (the durability promise under load), and
the engine's own counters say how many journal fsyncs those submits cost.

The load comes from wrk (Debian's package) when it is installed, else from a
gevent client in this process (raw keep-alive sockets, one greenlet per
connection); ``--client`` picks one. wrk costs the box less, so the bare
server's ceiling is higher with it and the ratios are the honest ones; the
gevent client is what the suite's ``--quick`` run uses.

    .venv/bin/python bench/http_load.py [--quick] [--seconds S] [--connections N]
                                   [--client wrk|gevent]
"""

from gevent import monkey  # noqa: E402  first thing: before anything imports socket

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine_process import LISTENING, engine_env, start_engine, stop_engine  # noqa: E402

PLUGIN = 'bench_http_handlers'
POST_BODY = json.dumps({'type': 'custom', 'request': {'handler': 'wait'}}).encode()
FIRST_BODY = json.dumps({'type': 'custom', 'request': {'handler': 'noop'}}).encode()
CASES = ('GET job', 'GET metrics', 'POST job')
TARGETS = {'GET job': 0.85, 'GET metrics': 0.85, 'POST job': 0.6}


class BenchError(Exception):
    """A server never started or a run went wrong: the bench exits 1."""


# The bare server ------------------------------------------------------------

def serve_bare(bodies_path):
    """Run the stack with no work behind it until killed (a subprocess)."""
    import bottle
    import gevent.pywsgi

    import podengine

    bodies = json.loads(Path(bodies_path).read_text())
    app = bottle.Bottle()

    @app.get('/api/jobs/<job_id>')
    def job(job_id):
        return bottle.HTTPResponse(bodies['job'], 200, {'Content-Type': 'application/json'})

    @app.get('/api/metrics')
    def metrics():
        return bottle.HTTPResponse(bodies['metrics'], 200,
                                   {'Content-Type': 'application/json'})

    @app.post('/api/jobs')
    def submit():
        json.loads(bottle.request.body.read())
        return bottle.HTTPResponse(bodies['created'], 201,
                                   {'Content-Type': 'application/json'})

    server = gevent.pywsgi.WSGIServer(('127.0.0.1', 0), app, handler_class=podengine.Handler,
                                      log=None)
    server.start()
    print(f'listening on http://127.0.0.1:{server.server_port}', flush=True)
    server.serve_forever()


def start_bare(bodies, folder):
    path = Path(folder) / 'bodies.json'
    path.write_text(json.dumps(bodies))
    log_path = Path(folder) / 'bare.log'
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen([sys.executable, __file__, '--bare-server', str(path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        found = LISTENING.search(log_path.read_text(errors='replace'))
        if found:
            return proc, found.group(1)
        time.sleep(0.02)
    proc.kill()
    raise BenchError(f'the bare server did not start:\n{log_path.read_text()[-2000:]}')


# The engine -----------------------------------------------------------------

def write_plugin(folder):
    """Handlers ``noop`` (done at once) and ``wait`` (holds its worker)."""
    (Path(folder) / f'{PLUGIN}.py').write_text(
        '"""Handlers for bench/http_load.py."""\n\nimport gevent\n\n'
        "HANDLERS = {'noop': lambda request, ctx: {}, "
        "'wait': lambda request, ctx: gevent.sleep(3600)}\n")


def start(folder, data):
    env = engine_env(plugin_folder=folder, DATA_DIR=data, ENABLE_PERSISTENCE='true',
                     CUSTOM_HANDLERS=PLUGIN, MAX_CONCURRENT_JOBS=1, SHUTDOWN_GRACE_MS=100)
    return start_engine(env, Path(folder) / f'engine-{time.monotonic_ns()}.log')


def prepare(url):
    """A finished job to read, and the bodies the engine answers."""
    created = requests.post(url + '/api/jobs', data=FIRST_BODY,
                            headers={'Content-Type': 'application/json'}, timeout=10)
    if created.status_code != 201:
        raise BenchError(f'POST /api/jobs answered {created.status_code}: {created.text}')
    job_id = created.json()['jobId']
    deadline = time.monotonic() + 20
    while requests.get(f'{url}/api/jobs/{job_id}', timeout=10).json()['status'] != 'completed':
        if time.monotonic() > deadline:
            raise BenchError(f'{job_id} never completed')
        time.sleep(0.05)
    bodies = {'job': requests.get(f'{url}/api/jobs/{job_id}', timeout=10).text,
              'metrics': requests.get(url + '/api/metrics', timeout=10).text,
              'created': created.text}
    return job_id, bodies


def store_figures(url):
    """(stored jobs, journal fsyncs, changes made durable) from /metrics."""
    text = requests.get(url + '/metrics', timeout=10).text

    def total(pattern):
        return sum(float(v) for v in re.findall(rf'^{pattern}(?:{{[^}}]*}})? (\S+)$', text, re.M))
    return (int(total('pod_jobs')), int(total('pod_store_commits_total')),
            int(total('pod_store_changes_total')))


# The load --------------------------------------------------------------------

def request_bytes(url, case, job_id):
    host = urlsplit(url).netloc
    if case == 'POST job':
        return (f'POST /api/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json'
                f'\r\nContent-Length: {len(POST_BODY)}\r\n\r\n').encode() + POST_BODY
    path = f'/api/jobs/{job_id}' if case == 'GET job' else '/api/metrics'
    return f'GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode()


def gevent_load(url, case, job_id, connections, seconds):
    """Keep ``connections`` sockets busy for ``seconds``; returns
    (requests per second, latencies in seconds, status counts)."""
    parts = urlsplit(url)
    message = request_bytes(url, case, job_id)
    latencies, statuses = [], collections.Counter()
    deadline = time.monotonic() + seconds

    def connection():
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile('rb')
        try:
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                sock.sendall(message)
                statuses[read_response(reader)] += 1
                latencies.append(time.perf_counter() - sent)
        finally:
            reader.close()
            sock.close()

    began = time.monotonic()
    gevent.joinall([gevent.spawn(connection) for _ in range(connections)], raise_error=True)
    return len(latencies) / (time.monotonic() - began), latencies, statuses


def read_response(reader):
    """Read one response off a keep-alive connection; returns its status."""
    status_line = reader.readline()
    if not status_line:
        raise BenchError('the server closed a keep-alive connection')
    length, chunked = 0, False
    while True:
        line = reader.readline()
        if line in (b'\r\n', b'\n', b''):
            break
        name, _, value = line.partition(b':')
        name = name.strip().lower()
        if name == b'content-length':
            length = int(value)
        elif name == b'transfer-encoding' and b'chunked' in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int(reader.readline().split(b';')[0], 16)
            reader.read(size + 2)
            if size == 0:
                break
    else:
        reader.read(length)
    return int(status_line.split()[1])


WRK_LATENCY = re.compile(r'^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$', re.M)
UNITS = {'us': 1e-6, 'ms': 1e-3, 's': 1.0}


def wrk_load(url, case, job_id, connections, seconds, folder):
    script = Path(folder) / 'post.lua'
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.body = {json.dumps(POST_BODY.decode())}\n')
    path = f'/api/jobs/{job_id}' if case == 'GET job' else (
        '/api/metrics' if case == 'GET metrics' else '/api/jobs')
    command = ['wrk', '-t2', f'-c{connections}', f'-d{seconds}s', '--latency', url + path]
    if case == 'POST job':
        command[1:1] = ['-s', str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    done = re.search(r'^\s*(\d+) requests in ([\d.]+)(\w+)', out, re.M)
    if not done:
        raise BenchError(f'wrk printed no total:\n{out}')
    rate = float(re.search(r'^Requests/sec:\s+([\d.]+)', out, re.M).group(1))
    quantiles = {int(q): float(v) * UNITS[unit] for q, v, unit in WRK_LATENCY.findall(out)}
    bad = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', out)
    failed = int(bad.group(1)) if bad else 0
    errors = re.search(r'Socket errors: (.*)', out)
    if errors:
        raise BenchError(f'wrk saw socket errors: {errors.group(1)}')
    good = 201 if case == 'POST job' else 200
    return rate, quantiles, collections.Counter({good: int(done.group(1)) - failed,
                                                 'other': failed})


def measure(url, case, job_id, args, folder):
    """(requests/s, p50, p99, statuses) for one case against one server; the
    statuses count the warm-up's answers too."""
    if args.client == 'wrk':
        warm = wrk_load(url, case, job_id, args.connections, 1, folder)[2]
        rate, quantiles, statuses = wrk_load(url, case, job_id, args.connections,
                                             args.seconds, folder)
        return rate, quantiles[50], quantiles[99], warm + statuses
    warm = gevent_load(url, case, job_id, args.connections, min(1.0, args.seconds / 3))[2]
    rate, latencies, statuses = gevent_load(url, case, job_id, args.connections, args.seconds)
    latencies.sort()
    return (rate, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
            warm + statuses)


# The run ---------------------------------------------------------------------

def run(args):
    folder = tempfile.mkdtemp(prefix='pod-bench-http-')
    write_plugin(folder)
    data = Path(folder) / 'data'
    engine, url = start(folder, data)
    bare = None
    try:
        job_id, bodies = prepare(url)
        bare, bare_url = start_bare(bodies, folder)
        rows = {}
        for case in CASES:
            for name, target in (('bare', bare_url), ('engine', url)):
                rows[case, name] = measure(target, case, job_id, args, folder)
        stored, commits, changes = store_figures(url)
        engine.kill()  # SIGKILL: no shutdown, nothing flushed on the way out
        engine.wait(10)
        engine, url = start(folder, data)
        restored = store_figures(url)[0]
    finally:
        stop_engine(engine)
        if bare is not None:
            bare.kill()
            bare.wait(5)
    shutil.rmtree(folder, ignore_errors=True)
    report(rows, args, stored, restored, commits, changes)


def report(rows, args, stored, restored, commits, changes):
    client = ('wrk -t2' if args.client == 'wrk' else 'gevent client') + \
        f', {args.connections} keep-alive connections, {args.seconds:g} s a run'
    print(f'client: {client}')
    print(f'{"case":<13}{"server":<8}{"req/s":>9}{"p50":>10}{"p99":>10}{"ratio":>7}')
    for case in CASES:
        ceiling = rows[case, 'bare'][0]
        for name in ('bare', 'engine'):
            rate, p50, p99, statuses = rows[case, name]
            ratio = f'{rate / ceiling:7.2f}' if name == 'engine' else ''
            print(f'{case:<13}{name:<8}{rate:9.0f}{p50 * 1000:7.2f} ms{p99 * 1000:7.2f} ms'
                  f'{ratio}')
            other = sum(n for status, n in statuses.items() if status not in (200, 201))
            if other:
                raise BenchError(f'{case} on {name}: {other} answers were not 2xx: '
                                 f'{dict(statuses)}')
    for case in CASES:
        ratio = rows[case, 'engine'][0] / rows[case, 'bare'][0]
        print(f'ratio {case} / bare: {ratio:.2f} (target >= {TARGETS[case]})')
    accepted = 1 + rows['POST job', 'engine'][3][201]  # and the job read by GET job
    print(f'durable POST: {accepted} jobs got a 201, {stored} stored, {restored} after kill -9 '
          f'and a restart; {commits} journal fsyncs for {changes} changes: '
          f'{commits / accepted:.2f} fsyncs a submit')
    # wrk leaves its last requests unanswered when time is up: the engine may
    # have stored a few more jobs than wrk counted 201s.
    if not restored == stored >= accepted:
        raise BenchError(f'{accepted} jobs got a 201, {stored} were stored and {restored} '
                         f'were there after kill -9')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='1 s runs, 20 connections')
    parser.add_argument('--seconds', type=float, default=10)
    parser.add_argument('--connections', type=int, default=50)
    parser.add_argument('--client', choices=('wrk', 'gevent'),
                        default='wrk' if shutil.which('wrk') else 'gevent')
    parser.add_argument('--bare-server', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        serve_bare(args.bare_server)
        return 0
    if args.quick:
        args.seconds, args.connections, args.client = 1, 20, 'gevent'
    if args.client == 'wrk':
        args.seconds = max(1, round(args.seconds))
    try:
        run(args)
    except BenchError as exc:
        print(f'bench failed: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
