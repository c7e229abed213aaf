"""Live events over Socket.IO (Python and Node clients) and the plain /ws stream."""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import socketio
import websocket

from test_jobs import sleep_job

NODE_CLIENT = Path(__file__).parent / 'node'
EVENTS = ('job:update', 'job:progress', 'job:removed', 'metrics', 'log')


class Recorder:
    """Collects (event, data) pairs from any client, thread-safely."""

    def __init__(self):
        self.events = queue.Queue()
        self.seen = []

    def __call__(self, event, data):
        self.events.put((event, data))

    def until(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(*item):
                return item
        raise AssertionError(f'event never came; saw {[e for e, _ in self.seen]}')

    def drain(self, settle=0.3):
        """Take in everything received so far (after a short settle)."""
        time.sleep(settle)
        while not self.events.empty():
            self.seen.append(self.events.get())
        return self

    def of(self, name, job_id=None):
        return [data for event, data in self.seen if event == name and
                (job_id is None or data.get('id', data.get('jobId')) == job_id)]


def socketio_client(engine, recorder, transports=None):
    client = socketio.Client(reconnection=False)
    for name in EVENTS:
        client.on(name, lambda data, name=name: recorder(name, data))
    client.connect(engine.url, transports=transports, wait_timeout=10)
    return client


def follow_one_job(engine, recorder):
    job_id = engine.submit(sleep_job(0.2))
    recorder.until(lambda event, data: event == 'job:update' and data['id'] == job_id
                   and data['status'] == 'completed')
    return job_id


def check_job_events(recorder, job_id):
    statuses = [data['status'] for data in recorder.of('job:update', job_id)]
    assert statuses == ['pending', 'running', 'completed']
    updates = recorder.of('job:update', job_id)
    assert all('logs' not in data for data in updates)
    assert updates[-1]['progress'] == 100 and updates[-1]['completedAt']
    progress = [data['progress'] for data in recorder.of('job:progress', job_id)]
    assert progress == sorted(progress) and progress[-1] == 100 and len(progress) >= 5
    logs = recorder.of('log', job_id)
    assert {'jobId', 'message', 'type', 'timestamp'} <= set(logs[0])
    assert any(line['message'] == 'Job completed successfully' for line in logs)


@pytest.mark.parametrize('transports', [None, ['websocket']], ids=['default', 'websocket'])
def test_python_socketio_client_sees_a_job_live(engines, transports):
    engine = engines.start(CUSTOM_HANDLERS='testkit', METRICS_INTERVAL_MS=200)
    recorder = Recorder()
    client = socketio_client(engine, recorder, transports)
    try:
        job_id = follow_one_job(engine, recorder)
        check_job_events(recorder, job_id)
        _, metrics = recorder.until(lambda event, data: event == 'metrics'
                                    and data['completedJobs'] == 1)
        assert {'totalJobs', 'runningJobs', 'successRate'} <= set(metrics)
    finally:
        client.disconnect()


def test_cleanup_announces_the_removed_jobs(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    recorder = Recorder()
    client = socketio_client(engine, recorder)
    try:
        job_id = engine.submit(sleep_job(0))
        engine.wait_for(job_id, 'completed')
        engine.post('/api/jobs/cleanup', json={'maxAge': 0})
        _, data = recorder.until(lambda event, data: event == 'job:removed')
        assert data == {'ids': [job_id]}
    finally:
        client.disconnect()


def test_cancel_and_retry_emit_job_updates(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    recorder = Recorder()
    client = socketio_client(engine, recorder)
    try:
        engine.submit(sleep_job(0.5))
        job_id = engine.submit(sleep_job(0))
        engine.post(f'/api/jobs/{job_id}/cancel')
        recorder.until(lambda e, d: e == 'job:update' and d['id'] == job_id
                       and d['status'] == 'cancelled')
        engine.post(f'/api/jobs/{job_id}/retry')
        recorder.until(lambda e, d: e == 'job:update' and d['id'] == job_id
                       and d['status'] == 'completed')
        statuses = [d['status'] for d in recorder.of('job:update', job_id)]
        assert statuses == ['pending', 'cancelled', 'pending', 'running', 'completed']
    finally:
        client.disconnect()


def test_plain_websocket_stream(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    recorder = Recorder()
    ws = websocket.create_connection(engine.url.replace('http', 'ws') + '/ws', timeout=10)

    def read():
        while True:
            try:
                frame = json.loads(ws.recv())
            except Exception:
                return
            recorder(frame['event'], frame['data'])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        job_id = follow_one_job(engine, recorder)
        check_job_events(recorder, job_id)
    finally:
        ws.close()
        reader.join(5)
    assert engine.get('/ws').status_code == 400


def test_many_clients_and_a_silent_one_do_not_stall_the_engine(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    recorders = [Recorder() for _ in range(5)]
    clients = [socketio_client(engine, recorder, ['websocket']) for recorder in recorders]
    idle = websocket.create_connection(engine.url.replace('http', 'ws') + '/ws', timeout=10)
    try:
        job_id = follow_one_job(engine, recorders[0])
        for recorder in recorders[1:]:
            recorder.until(lambda e, d: e == 'job:update' and d['id'] == job_id
                           and d['status'] == 'completed')
        assert engine.get('/health').status_code == 200
    finally:
        idle.close()
        for client in clients:
            client.disconnect()


NODE_SCRIPT = r"""
const { io } = require('socket.io-client');
const socket = io(process.argv[2]);   // default options, as in the spec's Example 3
socket.on('connect', () => console.log(JSON.stringify({event: 'connect'})));
for (const name of ['job:update', 'job:progress', 'log']) {
  socket.on(name, (data) => console.log(JSON.stringify({event: name, data})));
}
setTimeout(() => process.exit(3), 20000);
socket.on('job:update', (job) => {
  if (job.status === 'completed') { socket.close(); process.exit(0); }
});
"""


@pytest.mark.skipif(not shutil.which('node'), reason='node is not installed')
def test_node_socketio_client_with_default_options(engines, tmp_path):
    if not (NODE_CLIENT / 'node_modules' / 'socket.io-client').exists():
        pytest.skip('socket.io-client not installed (run ./run-tests.sh, which runs npm ci)')
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    script = tmp_path / 'follow.js'
    script.write_text(NODE_SCRIPT)
    node = subprocess.Popen(['node', str(script), engine.url], stdout=subprocess.PIPE,
                            text=True, env={**os.environ,
                                            'NODE_PATH': str(NODE_CLIENT / 'node_modules')})
    try:
        assert json.loads(node.stdout.readline()) == {'event': 'connect'}
        time.sleep(0.3)  # let the client finish its upgrade to WebSocket
        job_id = engine.submit(sleep_job(0.2))
        assert node.wait(25) == 0
        events = [json.loads(line) for line in node.stdout.read().splitlines()]
    finally:
        node.kill()
    mine = [e for e in events if e['data'].get('id', e['data'].get('jobId')) == job_id]
    statuses = [e['data']['status'] for e in mine if e['event'] == 'job:update']
    assert statuses == ['pending', 'running', 'completed']
    assert any(e['event'] == 'job:progress' for e in mine)


def test_sigterm_with_clients_connected_exits_promptly(engines):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    client = socketio_client(engine, Recorder())
    ws = websocket.create_connection(engine.url.replace('http', 'ws') + '/ws', timeout=10)
    try:
        started = time.monotonic()
        assert engine.stop(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        ws.close()
        client.disconnect()
