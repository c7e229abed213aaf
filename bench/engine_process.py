"""The engine as a subprocess, for the benchmarks: start it, find it, stop it.

The engine listens on 127.0.0.1 port 0 and logs ``listening on <url>``; that
line is how a bench finds it. Settings from the caller's environment that
would reach a real platform (tokens, URLs) are left out.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r'listening on (http://[\d.]+:\d+)')
OUTSIDE_SETTINGS = ('POD_', 'PRINTIFY', 'SHOPIFY', 'COMFYUI', 'LLM_', 'ANTHROPIC', 'OPENAI')


class EngineError(Exception):
    """The engine exited or never said where it listens."""


def write_noop_plugin(folder, module):
    """A CUSTOM_HANDLERS module in ``folder`` with one handler, ``noop``."""
    (Path(folder) / f'{module}.py').write_text(
        '"""A no-op custom handler for the benchmarks."""\n\n'
        "HANDLERS = {'noop': lambda request, ctx: {}}\n")


def engine_env(plugin_folder=None, **settings):
    """The environment for the engine: this one minus platform settings, plus
    ``settings``; ``plugin_folder`` goes on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(OUTSIDE_SETTINGS)}
    # INFO and text: the "listening on" line is how a bench finds the port.
    env.update({'HOST': '127.0.0.1', 'PORT': '0', 'PYTHONUNBUFFERED': '1',
                'LOG_LEVEL': 'INFO', 'LOG_FORMAT': 'text', 'ENV_FILE': os.devnull})
    if plugin_folder is not None:
        env['PYTHONPATH'] = os.pathsep.join([str(plugin_folder), env.get('PYTHONPATH', '')])
    env.update({key: str(value) for key, value in settings.items()})
    return env


def start_engine(env, log_path, timeout=30, ready=None, sleep=time.sleep, profile=None):
    """Start podengine.py; returns ``(process, base URL)`` once it listens and
    ``ready(url)`` (when given) is true.

    ``sleep`` is how to wait between looks (gevent.sleep in a gevent bench).
    With ``profile`` (a file name) the engine runs under cProfile, which
    writes its statistics there when the engine exits.
    """
    profiler = ['-m', 'cProfile', '-o', str(Path(profile).resolve())] if profile else []
    with open(log_path, 'wb') as log_file:
        proc = subprocess.Popen([sys.executable, *profiler, str(ROOT / 'podengine.py')],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = LISTENING.search(Path(log_path).read_text(errors='replace'))
        if found and (ready is None or ready(found.group(1))):
            return proc, found.group(1)
        sleep(0.01)
    stop_engine(proc)
    raise EngineError(f'the engine did not start (exit code {proc.returncode}):\n'
                      f'{Path(log_path).read_text(errors="replace")[-3000:]}')


def stop_engine(proc, grace=20):
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
