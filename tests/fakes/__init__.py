"""Fake upstream services (ComfyUI, Printify, Shopify, LLMs) for the tests.

Each fake is a module here with ``create_app()`` returning a WSGI app that
enforces the documented contract of the real service. ``run.py`` serves one
in its own process on 127.0.0.1:0 (gevent, WebSocket capable); tests drive it
through ``FakeService`` and its ``/_fake/`` control routes:

    POST /_fake/config     merge a JSON object into the fake's scenario
    GET  /_fake/requests   the requests it received, oldest first
    POST /_fake/reset      forget requests and state, back to the default scenario
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
LISTENING = re.compile(r'fake \w+ listening on (http://127\.0\.0\.1:\d+)')


class FakeService:
    """One fake in a subprocess, with its output in ``log_path``."""

    def __init__(self, name, log_path, **scenario):
        self.name = name
        self.log_path = Path(log_path)
        self.scenario = scenario
        self.proc = None
        self.url = None

    def start(self, timeout=20):
        self.log_file = open(self.log_path, 'ab')
        paths = [str(HERE.parent.parent), str(HERE.parent)]
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(paths)}
        self.proc = subprocess.Popen([sys.executable, str(HERE / 'run.py'), self.name],
                                     env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_path.read_text(errors='replace'))
            if found:
                self.url = found.group(1)
                if self.scenario:
                    self.configure(**self.scenario)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.log_file.close()
        raise AssertionError(f'fake {self.name} did not start:\n{self.log()}')

    def log(self):
        return self.log_path.read_text(errors='replace')

    def configure(self, **scenario):
        response = requests.post(f'{self.url}/_fake/config', json=scenario, timeout=5)
        response.raise_for_status()

    def requests(self, path_prefix=''):
        recorded = requests.get(f'{self.url}/_fake/requests', timeout=5).json()
        return [r for r in recorded if r['path'].startswith(path_prefix)]

    def reset(self):
        requests.post(f'{self.url}/_fake/reset', timeout=5).raise_for_status()

    def stop(self):
        if self.log_file.closed:
            return
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.log_file.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)
        self.log_file.close()
