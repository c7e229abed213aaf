"""Test harness: real engines in subprocesses on 127.0.0.1:0, driven over HTTP.

``engines`` starts as many engines as a test needs, each in its own DATA_DIR
(or a shared one, for restart tests), and on teardown stops them and checks
that none logged a traceback: an unexpected exception in the engine fails the
test even when the HTTP answers looked fine.
"""

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
LISTENING = re.compile(r'listening on (http://[\d.]+:\d+)')
FINISHED = {'completed', 'failed', 'cancelled'}  # a job in one of these stays there

# Settings that keep tests quick; a test overrides any of them.
FAST = {
    'LOG_LEVEL': 'INFO',  # readiness is read from the INFO "listening on" line
    'RETRY_DELAY_MS': '100',
    'METRICS_INTERVAL_MS': '10000',
    'HEALTH_CHECK_INTERVAL_MS': '60000',
    'SHUTDOWN_GRACE_MS': '2000',
}


class EngineProcess:
    """One `python podengine.py` with its own log file."""

    def __init__(self, data_dir, log_path, env, file_size_limit=None):
        self.data_dir = Path(data_dir)
        self.log_path = log_path
        self.env = env
        self.file_size_limit = file_size_limit
        self.proc = None
        self.url = None

    def start(self, timeout=30, expect_ready=True):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(('POD_', 'PRINTIFY', 'SHOPIFY', 'COMFYUI', 'LLM_',
                                      'ANTHROPIC', 'OPENAI'))}
        env.update({'HOST': '127.0.0.1', 'PORT': '0', 'DATA_DIR': str(self.data_dir),
                    'ENV_FILE': str(self.data_dir.parent / 'no.env'),
                    'PYTHONPATH': str(TESTS / 'plugins'), 'PYTHONUNBUFFERED': '1',
                    **FAST, **self.env})
        self.log_file = open(self.log_path, 'ab')
        self.proc = subprocess.Popen([sys.executable, str(ROOT / 'podengine.py')], cwd=ROOT,
                                     env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=self._limits)
        if expect_ready:
            self._wait_ready(timeout)
        return self

    def _limits(self):
        if self.file_size_limit is not None:  # a disk that fills up
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit,) * 2)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log())
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                raise AssertionError(f'engine exited {self.proc.returncode}:\n{self.log()}')
            time.sleep(0.02)
        raise AssertionError(f'engine not ready in {timeout}s:\n{self.log()}')

    def log(self):
        return self.log_path.read_text(errors='replace')

    def wait_exit(self, timeout=20):
        return self.proc.wait(timeout)

    # HTTP ----------------------------------------------------------------

    def request(self, method, path, **kwargs):
        kwargs.setdefault('timeout', 10)
        return requests.request(method, self.url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request('GET', path, **kwargs)

    def post(self, path, json=None, **kwargs):
        return self.request('POST', path, json=json, **kwargs)

    def submit(self, body, path='/api/jobs'):
        response = self.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()['jobId']

    def job(self, job_id):
        response = self.get(f'/api/jobs/{job_id}')
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, job_id, *statuses, timeout=30, where=None):
        """Poll the job until its status is one of ``statuses`` (and ``where``);
        a job that finished otherwise fails at once, with its last log lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job['status'] in statuses and (where is None or where(job)):
                return job
            if job['status'] in FINISHED and job['status'] not in statuses:
                break
            time.sleep(0.03)
        logs = '\n'.join(f"  {line['type']} {line['message']}" for line in job['logs'][-15:])
        asked = f'{statuses}' + (' with the condition asked' if where else '')
        raise AssertionError(f'{job_id} is {job["status"]}, never reached {asked}:\n{logs}')

    # Stopping ------------------------------------------------------------

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f'engine ignored SIGTERM for {timeout}s')
        self.log_file.close()
        return self.proc.returncode

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log_file.close()


class Engines:
    """Starts engines for one test and cleans up after it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []
        self.allow_tracebacks = False
        self.defaults = {}  # settings every engine of the test starts with

    def start(self, data_dir=None, expect_ready=True, file_size_limit=None, **env):
        data_dir = Path(data_dir or self.tmp_path / f'data{len(self.started)}')
        log_path = self.tmp_path / f'engine{len(self.started)}.log'
        env = {**self.defaults, **env}
        engine = EngineProcess(data_dir, log_path, {k: str(v) for k, v in env.items()},
                               file_size_limit)
        self.started.append(engine)
        return engine.start(expect_ready=expect_ready)

    def close(self):
        problems = []
        for engine in self.started:
            if engine.proc.poll() is None:
                try:
                    engine.stop()
                except AssertionError as exc:
                    problems.append(str(exc))
            if 'Traceback' in engine.log() and not self.allow_tracebacks:
                problems.append(f'{engine.log_path.name} logged a traceback:\n{engine.log()}')
        assert not problems, '\n'.join(problems)


@pytest.fixture
def engines(tmp_path):
    manager = Engines(tmp_path)
    yield manager
    manager.close()


@pytest.fixture
def engine(engines):
    """A fresh engine with the test plugins loaded."""
    return engines.start(CUSTOM_HANDLERS='testkit')


@pytest.fixture
def notify_socket(tmp_path):
    """A stand-in for systemd's NOTIFY_SOCKET: ``(path, receiving socket)``."""
    path = str(tmp_path / 'notify.sock')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    yield path, listener
    listener.close()


@pytest.fixture
def fakes(tmp_path):
    """Starts fake upstream services: ``fakes.start('comfyui', **scenario)``."""
    from fakes import FakeService

    class Fakes:
        def __init__(self):
            self.started = []

        def start(self, name, **scenario):
            fake = FakeService(name, tmp_path / f'fake-{name}-{len(self.started)}.log',
                               **scenario)
            self.started.append(fake)
            return fake.start()

    manager = Fakes()
    yield manager
    for fake in manager.started:
        fake.stop()
