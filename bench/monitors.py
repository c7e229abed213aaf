"""Many monitors at once: 500 Socket.IO clients and 20 HTTP pollers (issue #7).

``podengine.py`` runs as a subprocess (persistence on, a no-op custom
handler loaded through CUSTOM_HANDLERS, metrics broadcast every second) and
takes no-op jobs at a steady 20 per second over HTTP the whole time. Two
phases, in this order, on the same engine:

  baseline  no Socket.IO client; one HTTP prober (GET /api/jobs?limit=50&
            order=newest, /api/metrics, /health in rotation, 20 a second).
  monitors  500 Socket.IO clients connected, plus 20 HTTP pollers each
            sending the same rotation every 0.5 s.

Figures, each beside its target and its baseline:

  HTTP p50/p99      GET latency seen by the prober/pollers, request to body.
  event delivery    for every ``log`` event: receipt time minus the event's
                    ``timestamp``. The engine sets ``timestamp`` (epoch ms,
                    ``now_ms()``) when it creates the event, and client and
                    engine share this machine's clock, so the difference is
                    creation to receipt, including the engine's queueing
                    (resolution 1 ms: the timestamp is whole milliseconds).
  clients           connected at the start and at the end (as the clients
                    see it, and as the engine's /metrics gauge says);
                    dropped = closed by the engine or lost before the end.
  engine RSS peak   VmRSS of the engine from /proc/<pid>/status, sampled
                    every 0.25 s.

The Socket.IO clients run in a few worker processes (this script with
``--worker``), each holding many gevent greenlets that speak Engine.IO v4 /
Socket.IO over a raw WebSocket: just enough of RFC 6455 to read the server's
frames in bulk and answer pings. The machine has 2 cores shared by the engine
and the bench, so the clients must be cheap; their own CPU use and event-loop
lag are printed, so client-side lag is not mistaken for engine lag.

With ``--profile FILE`` the engine runs under cProfile (statistics in FILE).

    .venv/bin/python bench/monitors.py [--quick] [--clients N] [--pollers N]
                                       [--seconds S] [--workers N] [--profile FILE]
"""

from gevent import monkey  # noqa: E402  first thing: before anything imports socket

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.fileobject  # noqa: E402
import gevent.lock  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402

import engine_process  # noqa: E402
from engine_process import engine_env, stop_engine  # noqa: E402

PLUGIN = 'bench_monitors_plugin'
JOBS_PER_SECOND = 20
POLL_PATHS = ('/api/jobs?limit=50&order=newest', '/api/metrics', '/health')
POLL_INTERVAL = 0.5     # seconds between one poller's requests
PROBE_INTERVAL = 0.05   # the baseline's single prober
RSS_INTERVAL = 0.25
CLIENTS_PER_WORKER = 125
CONNECTS_AT_ONCE = 20   # per worker: a burst of handshakes is not what we measure
WARM_UP_SECONDS = 1.0
DRAIN_SECONDS = 2.0     # after the last submit, for the last events to arrive
TARGETS = {'http_p99': 50.0, 'event_p99': 100.0, 'rss_mb': 300.0}


class Scale:
    """How big one run is."""

    def __init__(self, clients, pollers, baseline_seconds, seconds):
        self.clients = clients
        self.pollers = pollers
        self.baseline_seconds = baseline_seconds
        self.seconds = seconds


FULL = Scale(clients=500, pollers=20, baseline_seconds=20, seconds=60)
QUICK = Scale(clients=50, pollers=4, baseline_seconds=3, seconds=5)


class BenchError(Exception):
    """Something never finished or failed: the bench exits 1 with this."""


# Small helpers ################################################################

def epoch_ms():
    return time.time() * 1000


def percentile(values, q):
    """Nearest-rank percentile of a list of numbers (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def histogram_percentile(counts, q):
    """Nearest-rank percentile of {value: count}."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


def cpu_seconds(pid):
    """User + system CPU seconds a process has used, from /proc/<pid>/stat."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def rss_mb(pid):
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


# The engine ###################################################################

def start_engine(work_dir, profile=None, timeout=30):
    """Start podengine.py on 127.0.0.1:0; returns (process, base URL, log path)."""
    env = engine_env(work_dir, DATA_DIR=Path(work_dir) / 'data', ENABLE_PERSISTENCE='true',
                     MAX_CONCURRENT_JOBS=4, CUSTOM_HANDLERS=PLUGIN, METRICS_INTERVAL_MS=1000)
    log_path = Path(work_dir) / 'engine.log'
    try:
        proc, url = engine_process.start_engine(env, log_path, timeout, sleep=gevent.sleep,
                                                profile=profile)
    except engine_process.EngineError as exc:
        raise BenchError(str(exc)) from None
    return proc, url, log_path


class EngineWatch:
    """Samples the engine's RSS; tracks its CPU seconds per phase."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_mb = 0.0
        self._sampler = gevent.spawn(self._sample)

    def _sample(self):
        while True:
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            except OSError:
                return  # the engine is gone
            gevent.sleep(RSS_INTERVAL)

    def reset_peak(self):
        self.peak_mb = rss_mb(self.pid)

    def stop(self):
        self._sampler.kill(block=False)


# HTTP load: submits and polls #################################################

class HttpLoad:
    """Submits jobs at a steady rate and polls the API, recording latencies."""

    def __init__(self, url):
        self.url = url
        self.get_ms = []
        self.submit_ms = []
        self.errors = []
        self.submitted = 0
        self._sessions = []
        self._submits = gevent.pool.Group()

    def _session(self):
        return self._sessions.pop() if self._sessions else requests.Session()

    def _timed(self, method, path, **kwargs):
        session = self._session()
        started = time.perf_counter()
        try:
            response = session.request(method, self.url + path, timeout=10, **kwargs)
            response.content  # noqa: B018  the latency includes the whole body
        except requests.RequestException as exc:
            self.errors.append(f'{method} {path}: {exc!r}')
            return None, None
        finally:
            self._sessions.append(session)
        return response, (time.perf_counter() - started) * 1000

    def submit_one(self):
        body = {'type': 'custom', 'request': {'handler': 'noop'}, 'maxRetries': 0}
        response, took = self._timed('POST', '/api/jobs', json=body)
        if response is None:
            return
        if response.status_code != 201:
            self.errors.append(f'POST /api/jobs: {response.status_code} {response.text[:200]}')
            return
        self.submitted += 1
        self.submit_ms.append(took)

    def submit_steadily(self, until):
        """Open loop: job i goes at start + i/rate, whatever earlier ones take."""
        start = time.monotonic()
        for index in range(math.ceil((until - start) * JOBS_PER_SECOND)):
            gevent.sleep(max(0.0, start + index / JOBS_PER_SECOND - time.monotonic()))
            self._submits.spawn(self.submit_one)

    def poll(self, offset, interval, until):
        """One poller: the rotation of GETs, one every ``interval`` seconds."""
        gevent.sleep(offset)
        next_at = time.monotonic()
        index = 0
        while next_at < until:
            path = POLL_PATHS[index % len(POLL_PATHS)]
            response, took = self._timed('GET', path)
            if response is not None and response.status_code == 200:
                self.get_ms.append(took)
            elif response is not None:
                self.errors.append(f'GET {path}: {response.status_code}')
            index += 1
            next_at += interval
            gevent.sleep(max(0.0, next_at - time.monotonic()))

    def run(self, pollers, interval, seconds):
        """Submits and ``pollers`` pollers for ``seconds``; returns when all are done."""
        until = time.monotonic() + seconds
        tasks = [gevent.spawn(self.submit_steadily, until)]
        tasks += [gevent.spawn(self.poll, interval * n / pollers, interval, until)
                  for n in range(pollers)]
        finished = gevent.joinall(tasks, timeout=seconds + 30)
        if len(finished) < len(tasks) or not self._submits.join(timeout=30):
            gevent.killall(tasks, block=False)
            self._submits.kill(block=False)
            raise BenchError('HTTP load did not finish in time')

    def close(self):
        for session in self._sessions:
            session.close()


def finished_jobs(url):
    metrics = requests.get(url + '/api/metrics', timeout=10).json()
    return metrics['completedJobs'] + metrics['failedJobs']


def wait_for_completion(url, before, submitted, timeout):
    """(jobs of ``submitted`` finished, seconds waited): how far the engine lags."""
    started = time.monotonic()
    done = finished_jobs(url) - before
    while done < submitted and time.monotonic() < started + timeout:
        gevent.sleep(0.05)
        done = finished_jobs(url) - before
    return done, time.monotonic() - started


def engine_client_count(url):
    """The engine's own count of Socket.IO clients, from its /metrics gauge."""
    text = requests.get(url + '/metrics', timeout=10).text
    found = re.search(r'^pod_websocket_clients\{transport="socketio"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else None


# Socket.IO clients: the worker process ########################################

LOG_EVENT = b'42["log",'
TIMESTAMP = re.compile(rb'"timestamp":\s*(\d+)')


def ws_frame(text):
    """A masked client text frame (RFC 6455 5.3: clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack('!BB', 0x81, 0x80 | len(payload)) + mask + masked


def split_frames(buffer):
    """Complete server frames off the front of ``buffer``: (frames, rest).

    Server frames are never masked; gevent-websocket does not fragment.
    """
    frames = []
    start = 0
    while len(buffer) - start >= 2:
        opcode, length = buffer[start] & 0x0F, buffer[start + 1] & 0x7F
        head = 2
        if length == 126:
            head, length = 4, struct.unpack_from('!H', buffer, start + 2)[0]
        elif length == 127:
            head, length = 10, struct.unpack_from('!Q', buffer, start + 2)[0]
        if len(buffer) - start < head + length:
            break
        frames.append((opcode, buffer[start + head:start + head + length]))
        start += head + length
    return frames, buffer[start:]


class Window:
    """The span of event creation times the figures count (epoch ms)."""

    def __init__(self):
        self.start = math.inf
        self.end = math.inf


class MonitorClient:
    """One Socket.IO client on the default namespace, counting ``log`` events."""

    def __init__(self, host, port, window, latencies):
        self.host, self.port = host, port
        self.window = window
        self.latencies = latencies   # shared by the worker's clients: {ms: count}
        self.logs_in_window = 0
        self.connected = False
        self.dropped = None          # why the connection ended, if it did
        self.sock = None
        self.buffer = b''

    def connect(self, timeout):
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n'
                           f'Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\n'
                           f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
                           f'Sec-WebSocket-Version: 13\r\n\r\n').encode())
        while b'\r\n\r\n' not in self.buffer:
            self._receive()
        head, self.buffer = self.buffer.split(b'\r\n\r\n', 1)
        if not head.startswith(b'HTTP/1.1 101'):
            raise ConnectionError(head.split(b'\r\n', 1)[0].decode(errors='replace'))
        self._handle_buffered(epoch_ms())  # the open packet may come with the 101
        while not self.connected:
            self._handle_frames()
        self.sock.settimeout(None)  # pings come every 25 s; silence is not an error

    def _receive(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError('closed by the engine')
        self.buffer += data

    def _handle_frames(self):
        self._receive()
        self._handle_buffered(epoch_ms())

    def _handle_buffered(self, received_ms):
        frames, self.buffer = split_frames(self.buffer)
        for opcode, payload in frames:
            if opcode == 0x8:
                raise ConnectionError('WebSocket close frame')
            if opcode == 0x1:
                self._handle_packet(payload, received_ms)

    def _handle_packet(self, payload, received_ms):
        if payload.startswith(LOG_EVENT):
            self._count_log(payload, received_ms)
        elif payload == b'2':
            self.sock.sendall(ws_frame('3'))        # Engine.IO ping -> pong
        elif payload.startswith(b'0'):
            self.sock.sendall(ws_frame('40'))       # open -> join namespace "/"
        elif payload.startswith(b'40'):
            self.connected = True
        elif payload.startswith((b'1', b'41', b'44')):
            raise ConnectionError(f'engine closed: {payload[:80]!r}')

    def _count_log(self, payload, received_ms):
        found = TIMESTAMP.search(payload)
        created = int(found.group(1)) if found else None
        if created is not None and self.window.start <= created <= self.window.end:
            self.logs_in_window += 1
            latency = max(0, int(received_ms - created))
            self.latencies[latency] = self.latencies.get(latency, 0) + 1

    def listen(self):
        """Read events until the connection ends (the worker kills us at the end)."""
        try:
            while True:
                self._handle_frames()
        except (OSError, ConnectionError) as exc:
            self.dropped = str(exc) or type(exc).__name__


class LoopLag:
    """How late this process's event loop wakes a 20 ms sleeper: client-side lag."""

    def __init__(self):
        self.lags = {}
        self.counting = False
        self._task = gevent.spawn(self._measure)

    def _measure(self):
        while True:
            started = time.perf_counter()
            gevent.sleep(0.02)
            late = int((time.perf_counter() - started - 0.02) * 1000)
            if self.counting:
                self.lags[late] = self.lags.get(late, 0) + 1


def connect_and_listen(client, gate, timeout):
    with gate:
        try:
            client.connect(timeout)
        except (OSError, ConnectionError) as exc:
            client.dropped = f'connect failed: {exc}'
            return
    client.listen()


def worker_main(url, count, max_seconds):
    """``--worker``: hold ``count`` clients; talk to the bench over stdin/stdout.

    Prints {"connected", "failed"} once every client connected or gave up;
    then ``go <start_ms> <end_ms>`` opens the counting window and ``stop``
    prints the results. After ``max_seconds`` it exits whatever happens.
    """
    gevent.spawn_later(max_seconds, os._exit, 3)  # the bench died or hung
    window, latencies, lag = Window(), {}, LoopLag()
    clients, tasks = connect_all(url, count, window, latencies)
    report({'connected': sum(c.connected for c in clients),
            'failed': [c.dropped for c in clients if c.dropped][:3]})
    cpu = follow_commands(window, lag)
    report(worker_results(clients, latencies, lag, cpu))
    gevent.killall(tasks, block=False)


def connect_all(url, count, window, latencies):
    """``count`` clients, each connected or given up on (20 s per try)."""
    host, port = url.split('//', 1)[1].rsplit(':', 1)
    clients = [MonitorClient(host, int(port), window, latencies) for _ in range(count)]
    gate = gevent.lock.BoundedSemaphore(CONNECTS_AT_ONCE)
    tasks = [gevent.spawn(connect_and_listen, client, gate, 20) for client in clients]
    while not all(client.connected or client.dropped for client in clients):
        gevent.sleep(0.05)
    return clients, tasks


def follow_commands(window, lag):
    """Obey the bench until ``stop`` (or its end of stdin); CPU seconds since ``go``."""
    cpu_at_go = None
    for line in gevent.fileobject.FileObject(sys.stdin.fileno(), 'r'):
        word, *args = line.split()
        if word == 'go':
            window.start, window.end = (int(arg) for arg in args)
            cpu_at_go, lag.counting = time.process_time(), True
        elif word == 'stop':
            break
    return time.process_time() - (cpu_at_go or 0)


def worker_results(clients, latencies, lag, cpu):
    counts = [c.logs_in_window for c in clients if c.connected and not c.dropped]
    return {'connected': sum(c.connected and not c.dropped for c in clients),
            'dropped': [c.dropped for c in clients if c.connected and c.dropped],
            'min_events': min(counts, default=0), 'max_events': max(counts, default=0),
            'latencies': latencies, 'lag': lag.lags, 'cpu': cpu}


def report(message):
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


# Socket.IO clients: the bench's side ##########################################

class ClientWorkers:
    """The worker processes holding the Socket.IO clients."""

    def __init__(self, url, clients, processes, max_seconds, log_dir):
        shares = [clients // processes + (n < clients % processes) for n in range(processes)]
        self.procs = []
        for number, share in enumerate(shares):
            with open(Path(log_dir) / f'worker-{number}.log', 'wb') as errors:
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, '--worker', url, str(share), str(max_seconds)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True))

    def _read_all(self, timeout, what):
        with gevent.Timeout(timeout, BenchError(f'client workers: no {what} in {timeout}s')):
            return [json.loads(proc.stdout.readline() or 'null') for proc in self.procs]

    def _tell_all(self, line):
        for proc in self.procs:
            proc.stdin.write(line + '\n')
            proc.stdin.flush()

    def wait_connected(self, timeout):
        """(clients connected, a few reasons for failed connects)."""
        answers = self._read_all(timeout, 'connect report')
        if None in answers:
            raise BenchError('a client worker exited before connecting')
        return (sum(a['connected'] for a in answers),
                [reason for a in answers for reason in a['failed']])

    def go(self, start_ms, end_ms):
        self._tell_all(f'go {int(start_ms)} {int(end_ms)}')

    def stop(self, timeout=30):
        self._tell_all('stop')
        answers = self._read_all(timeout, 'results')
        if None in answers:
            raise BenchError('a client worker exited before reporting')
        return merge_results(answers)

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


def merge_results(answers):
    merged = {'connected': sum(a['connected'] for a in answers),
              'dropped': [reason for a in answers for reason in a['dropped']],
              'min_events': min(a['min_events'] for a in answers),
              'max_events': max(a['max_events'] for a in answers),
              'cpu': [a['cpu'] for a in answers],
              'latencies': collections.Counter(), 'lag': collections.Counter()}
    for answer in answers:
        merged['latencies'].update({int(k): v for k, v in answer['latencies'].items()})
        merged['lag'].update({int(k): v for k, v in answer['lag'].items()})
    return merged


# The two phases ###############################################################

def warm_up(url, seconds):
    """Load the same way, uncounted: first requests pay for imports and caches."""
    load = HttpLoad(url)
    load.run(1, PROBE_INTERVAL, seconds)
    load.close()


def run_baseline(url, watch, scale):
    """Jobs at the steady rate, one prober, no Socket.IO client."""
    warm_up(url, WARM_UP_SECONDS)
    load = HttpLoad(url)
    watch.reset_peak()
    cpu = cpu_seconds(watch.pid)
    load.run(1, PROBE_INTERVAL, scale.baseline_seconds)
    result = {'get_ms': load.get_ms, 'submit_ms': load.submit_ms, 'errors': load.errors,
              'rss_mb': watch.peak_mb,
              'engine_cpu': (cpu_seconds(watch.pid) - cpu) / scale.baseline_seconds}
    load.close()
    return result


def run_monitors(url, watch, scale, workers_count, work_dir):
    """Connect the clients, then jobs + pollers + clients for scale.seconds."""
    workers = ClientWorkers(url, scale.clients, workers_count, scale.seconds + 120, work_dir)
    try:
        connected, failed = workers.wait_connected(60)
        result = {'connected_start': connected, 'connect_failures': failed,
                  'engine_count_start': engine_client_count(url)}
        result.update(measure_monitors(url, watch, scale, workers))
        result['engine_count_end'] = engine_client_count(url)
        result.update(workers.stop())
    finally:
        workers.kill()
    return result


def measure_monitors(url, watch, scale, workers):
    load = HttpLoad(url)
    finished_before = finished_jobs(url)
    watch.reset_peak()
    cpu, started = cpu_seconds(watch.pid), epoch_ms()
    workers.go(started, started + scale.seconds * 1000)
    load.run(scale.pollers, POLL_INTERVAL, scale.seconds)
    engine_cpu = (cpu_seconds(watch.pid) - cpu) / scale.seconds
    catch_up = wait_for_completion(url, finished_before, load.submitted, 30)
    gevent.sleep(DRAIN_SECONDS)
    load.close()
    return {'get_ms': load.get_ms, 'submit_ms': load.submit_ms, 'errors': load.errors,
            'submitted': load.submitted, 'catch_up': catch_up, 'rss_mb': watch.peak_mb,
            'engine_cpu': engine_cpu}


# Report #######################################################################

def ms(value):
    return '-' if value is None else f'{value:.1f} ms'


def verdict(value, target):
    return '' if value is None else ('ok' if value <= target else 'MISSED')


def figure_rows(scale, base, mon):
    """(name, measured, target, baseline, verdict) for the table."""
    http_p99 = percentile(mon['get_ms'], 99)
    event_p99 = histogram_percentile(mon['latencies'], 99)
    dropped = scale.clients - mon['connected']
    of_all = f'/{scale.clients}'
    return [
        ('HTTP GET p50', ms(percentile(mon['get_ms'], 50)), '',
         ms(percentile(base['get_ms'], 50)), ''),
        ('HTTP GET p99', ms(http_p99), '<= 50 ms', ms(percentile(base['get_ms'], 99)),
         verdict(http_p99, TARGETS['http_p99'])),
        ('event delivery p50', ms(histogram_percentile(mon['latencies'], 50)), '', '', ''),
        ('event delivery p99', ms(event_p99), '<= 100 ms', '',
         verdict(event_p99, TARGETS['event_p99'])),
        ('clients at start', f'{mon["connected_start"]}{of_all}', f'{scale.clients}', '', ''),
        ('clients at end', f'{mon["connected"]}{of_all}', f'{scale.clients}', '', ''),
        ('clients dropped', f'{dropped}', '0', '', verdict(dropped, 0)),
        ('engine RSS peak', f'{mon["rss_mb"]:.0f} MB', '<= 300 MB', f'{base["rss_mb"]:.0f} MB',
         verdict(mon['rss_mb'], TARGETS['rss_mb'])),
    ]


def print_report(scale, workers_count, base, mon):
    processes = 'process' if workers_count == 1 else 'processes'
    print(f'monitors bench: {scale.clients} Socket.IO clients in {workers_count} {processes}, '
          f'{scale.pollers} HTTP pollers (one GET each {POLL_INTERVAL} s), '
          f'{JOBS_PER_SECOND} jobs/s for {scale.seconds} s')
    print(f'{"":22} {"measured":>12} {"target":>10} {"baseline":>10}')
    for name, value, target, baseline, ok in figure_rows(scale, base, mon):
        print(f'{name:22} {value:>12} {target:>10} {baseline:>10}  {ok}'.rstrip())
    print_details(scale, base, mon)


def print_details(scale, base, mon):
    base_p99, http_p99 = percentile(base['get_ms'], 99), percentile(mon['get_ms'], 99)
    ratio = f'x{http_p99 / base_p99:.1f}' if base_p99 and http_p99 else '-'
    print(f'baseline: {scale.baseline_seconds} s, same job rate, no Socket.IO client, one '
          f'prober (one GET each {PROBE_INTERVAL} s); HTTP p99 with monitors / baseline: {ratio}')
    print(f'GET requests: {len(mon["get_ms"])} (baseline {len(base["get_ms"])}); '
          f'POST /api/jobs p99: {ms(percentile(mon["submit_ms"], 99))} '
          f'(baseline {ms(percentile(base["submit_ms"], 99))}); '
          f'HTTP errors: {len(mon["errors"]) + len(base["errors"])}')
    finished, waited = mon['catch_up']
    print(f'jobs submitted: {mon["submitted"]}, finished: {finished} '
          f'({waited:.1f} s after the last submit); log events per client: '
          f'{mon["min_events"]}..{mon["max_events"]}; '
          f'delivered: {sum(mon["latencies"].values())}')
    print(f'engine: {mon["engine_cpu"]:.0%} CPU (baseline {base["engine_cpu"]:.0%}); '
          f'it counts {mon["engine_count_start"]} Socket.IO clients at start, '
          f'{mon["engine_count_end"]} at end')
    print_client_side(scale, mon)
    for problem in (mon['errors'] + base['errors'] + mon['dropped'] + mon['connect_failures'])[:5]:
        print(f'  problem: {problem}')


def print_client_side(scale, mon):
    """The clients' own load: if they were starved, the delivery figures say little."""
    shares = [cpu / scale.seconds for cpu in mon['cpu']]
    lag = mon['lag']
    print(f'client processes: {sum(shares):.0%} CPU in all '
          f'({", ".join(f"{share:.0%}" for share in shares)}); their event-loop lag '
          f'p99 {ms(histogram_percentile(lag, 99))}, max {ms(max(lag, default=None))}')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help=f'{QUICK.clients} clients, {QUICK.pollers} pollers, '
                             f'{QUICK.seconds} s')
    parser.add_argument('--clients', type=int, help=f'Socket.IO clients (default {FULL.clients})')
    parser.add_argument('--pollers', type=int, help=f'HTTP pollers (default {FULL.pollers})')
    parser.add_argument('--seconds', type=int, help=f'measured seconds (default {FULL.seconds})')
    parser.add_argument('--workers', type=int,
                        help=f'client processes (default: one per {CLIENTS_PER_WORKER} clients)')
    parser.add_argument('--profile', metavar='FILE',
                        help='run the engine under cProfile; its statistics go to FILE')
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    scale = Scale(args.clients or base.clients, args.pollers or base.pollers,
                  base.baseline_seconds, args.seconds or base.seconds)
    if scale.clients < 1 or scale.pollers < 1 or scale.seconds < 1:
        parser.error('--clients, --pollers and --seconds must be at least 1')
    workers = args.workers or math.ceil(scale.clients / CLIENTS_PER_WORKER)
    return scale, max(1, min(workers, scale.clients)), args.profile


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--worker']:
        worker_main(argv[1], int(argv[2]), float(argv[3]))
        return 0
    scale, workers_count, profile = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix='podengine-monitors-') as work_dir:
            base, mon = run_bench(scale, workers_count, work_dir, profile)
    except BenchError as exc:
        print(f'monitors bench failed: {exc}', file=sys.stderr)
        return 1
    print_report(scale, workers_count, base, mon)
    return 0


def run_bench(scale, workers_count, work_dir, profile=None):
    engine_process.write_noop_plugin(work_dir, PLUGIN)
    proc, url, log_path = start_engine(work_dir, profile)
    watch = EngineWatch(proc.pid)
    try:
        base = run_baseline(url, watch, scale)
        mon = run_monitors(url, watch, scale, workers_count, work_dir)
    finally:
        watch.stop()
        stop_engine(proc, grace=10)
    if 'Traceback' in log_path.read_text(errors='replace'):
        raise BenchError(f'the engine logged a traceback:\n'
                         f'{log_path.read_text(errors="replace")[-3000:]}')
    return base, mon


if __name__ == '__main__':
    sys.exit(main())
