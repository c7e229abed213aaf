"""Packaging: the systemd unit, the Dockerfile and the compose file.

Docker cannot run here, so the image files are checked statically (and the
image's HEALTHCHECK command is run against a real engine). The unit is parsed,
checked with `systemd-analyze verify` and `security` when systemd-analyze is
installed, and the engine is run the way the unit runs it: with
MemoryDenyWriteExecute (the kernel's PR_SET_MDWE), a notify socket and a
watchdog.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

import podengine

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / 'pod-engine.service'
DOCKERFILE = ROOT / 'Dockerfile'
DOCKERIGNORE = ROOT / '.dockerignore'
COMPOSE = ROOT / 'docker-compose.pod-engine.yml'
INSTALL_PYTHON = '/opt/pod-engine/.venv/bin/python'


def setting_default(name):
    return next(s.default for s in podengine.SETTINGS if s.name == name)


# --- systemd unit ------------------------------------------------------------

def parse_unit(text):
    """{section: {key: [values, in order]}}; keys may repeat (Environment=)."""
    sections, current = {}, None
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith('\\'):
            line = line[:-1] + ' ' + next(lines, '')
        line = line.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('[') and line.endswith(']'):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and '=' in line, f'not a unit line: {line!r}'
        key, _, value = line.partition('=')
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope='module')
def unit():
    return parse_unit(UNIT.read_text())


def one(section, key):
    values = section.get(key)
    assert values, f'{key}= missing'
    return values[-1]


def test_unit_has_the_three_sections(unit):
    assert {'Unit', 'Service', 'Install'} <= set(unit)
    assert one(unit['Install'], 'WantedBy') == 'multi-user.target'
    assert 'network-online.target' in one(unit['Unit'], 'After')


def test_unit_runs_the_installed_engine_as_a_notify_service(unit):
    service = unit['Service']
    assert one(service, 'Type') == 'notify'
    assert one(service, 'NotifyAccess') == 'main'
    assert one(service, 'ExecStart') == f'{INSTALL_PYTHON} /opt/pod-engine/podengine.py'
    assert one(service, 'WorkingDirectory') == '/opt/pod-engine'
    assert int(one(service, 'WatchdogSec')) == 30
    assert one(service, 'Restart') == 'on-failure'
    assert int(one(service, 'RestartSec')) > 0


def test_unit_stop_outlasts_the_shutdown_grace(unit):
    service = unit['Service']
    assert one(service, 'KillMode') == 'mixed'
    grace_s = int(setting_default('SHUTDOWN_GRACE_MS')) / 1000
    assert int(one(service, 'TimeoutStopSec')) >= grace_s + 30


def test_unit_environment_state_and_secrets(unit):
    service = unit['Service']
    environment = dict(item.split('=', 1) for item in service.get('Environment', []))
    assert one(service, 'StateDirectory') == 'pod-engine'
    assert environment.get('DATA_DIR') == '%S/pod-engine'
    assert environment.get('PYTHONUNBUFFERED') == '1'
    assert one(service, 'EnvironmentFile') == '-/etc/pod-engine/pod-engine.env'


def test_unit_is_sandboxed(unit):
    service = unit['Service']
    assert one(service, 'DynamicUser') == 'yes' or one(service, 'User') not in ('', 'root', '0')
    expected = {
        'ProtectSystem': 'strict', 'ProtectHome': 'yes', 'PrivateTmp': 'yes',
        'PrivateDevices': 'yes', 'NoNewPrivileges': 'yes', 'ProtectKernelTunables': 'yes',
        'ProtectKernelModules': 'yes', 'ProtectKernelLogs': 'yes',
        'ProtectControlGroups': 'yes', 'ProtectClock': 'yes', 'ProtectHostname': 'yes',
        'RestrictNamespaces': 'yes', 'RestrictRealtime': 'yes', 'RestrictSUIDSGID': 'yes',
        'ProtectProc': 'invisible', 'LockPersonality': 'yes', 'MemoryDenyWriteExecute': 'yes',
        'SystemCallArchitectures': 'native', 'CapabilityBoundingSet': '', 'UMask': '0077',
    }
    wrong = {key: service.get(key) for key, value in expected.items()
             if service.get(key, [None])[-1] != value}
    assert not wrong, f'expected {expected}'
    assert set(one(service, 'RestrictAddressFamilies').split()) == {
        'AF_UNIX', 'AF_INET', 'AF_INET6'}
    assert service['SystemCallFilter'][0] == '@system-service'


def systemd_analyze():
    path = shutil.which('systemd-analyze')
    if path is None:
        pytest.skip('systemd-analyze not installed')
    return path


def runnable_unit_copy(directory):
    """The unit with ExecStart's interpreter replaced by one that exists here
    (verify checks that the command is executable)."""
    copy = Path(directory) / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALL_PYTHON, sys.executable))
    return copy


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    analyze = systemd_analyze()
    run = subprocess.run([analyze, 'verify', str(runnable_unit_copy(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout + run.stderr) == (0, '')


def test_systemd_analyze_verify_of_the_unit_itself_only_misses_the_install():
    analyze = systemd_analyze()
    run = subprocess.run([analyze, 'verify', str(UNIT)], capture_output=True, text=True,
                         timeout=60)
    output = (run.stdout + run.stderr).strip()
    if Path(INSTALL_PYTHON).exists():
        assert (run.returncode, output) == (0, '')
    else:
        assert output.splitlines() == [
            f'pod-engine.service: Command {INSTALL_PYTHON} is not executable: '
            'No such file or directory']


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    analyze = systemd_analyze()
    run = subprocess.run([analyze, 'security', '--offline=yes', '--no-pager',
                          str(runnable_unit_copy(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 and 'offline' in run.stderr:
        pytest.skip(f'systemd-analyze security --offline unsupported: {run.stderr.strip()}')
    found = re.search(r'Overall exposure level for pod-engine\.service: ([\d.]+)', run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found.group(1)) <= 2.0, run.stdout


# --- the engine as the unit runs it -----------------------------------------

# Runs a command with the kernel's "memory deny write execute" set (inherited
# across exec): what MemoryDenyWriteExecute=yes enforces. Exit 77: unsupported.
MDWE_EXEC = '''
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
try:
    refused = ctypes.CDLL(None).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)
except AttributeError:  # not Linux
    refused = True
if refused:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
'''

WX_PROBE = '''
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print('refused')
else:
    print('allowed')
'''


def under_mdwe(*argv):
    return [sys.executable, '-c', MDWE_EXEC, sys.executable, *argv]


@pytest.fixture
def mdwe():
    probe = subprocess.run(under_mdwe('-c', WX_PROBE), capture_output=True, text=True,
                           timeout=30)
    if probe.returncode == 77:
        pytest.skip('kernel without PR_SET_MDWE (Linux 6.3+)')
    assert probe.stdout.strip() == 'refused', probe  # the sandbox really bites
    return under_mdwe


class NotifySocket:
    """A systemd-style notify socket (abstract namespace) that collects messages."""

    def __init__(self):
        self.name = f'@pod-engine-test-{os.getpid()}-{time.monotonic_ns()}'
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind('\0' + self.name[1:])
        self.messages = []

    def wait_for(self, message, timeout, count=1):
        """Wait until ``message`` has arrived ``count`` times in all."""
        deadline = time.monotonic() + timeout
        while self.messages.count(message) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f'{message} not seen {count} times in {timeout}s; '
                                     f'got {self.messages}')
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.extend(data.decode().split('\n'))

    def close(self):
        self.sock.close()


def test_engine_runs_under_the_units_constraints(mdwe, tmp_path):
    """MemoryDenyWriteExecute, ENV_FILE=/dev/null, the notify protocol and the
    watchdog: READY=1, WATCHDOG=1 pings, a generate job (Pillow on gevent's
    thread pool) completes, SIGTERM gives STOPPING=1 and exit 0."""
    notify = NotifySocket()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(('POD_', 'PRINTIFY', 'SHOPIFY', 'COMFYUI', 'LLM_',
                                  'ANTHROPIC', 'OPENAI', 'WATCHDOG_', 'NOTIFY_'))}
    environment = dict(item.split('=', 1) for item in
                       parse_unit(UNIT.read_text())['Service'].get('Environment', []))
    env.update(environment)
    env.update({'HOST': '127.0.0.1', 'PORT': '0', 'DATA_DIR': str(tmp_path / 'data'),
                'NOTIFY_SOCKET': notify.name, 'WATCHDOG_USEC': '400000'})
    log_path = tmp_path / 'engine.log'
    with open(log_path, 'wb') as log_file:
        proc = subprocess.Popen(mdwe(str(ROOT / 'podengine.py')), cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        try:
            notify.wait_for('READY=1', 60)
        except AssertionError:
            proc.poll()
            raise AssertionError(f'exit {proc.returncode}:\n{log_path.read_text()}')
        url = re.search(r'listening on (http://[\d.]+:\d+)', log_path.read_text()).group(1)
        assert requests.get(url + '/health', timeout=10).status_code == 200
        answer = requests.post(url + '/api/generate', timeout=10, json={
            'prompt': 'A lighthouse in a storm', 'productTypes': ['tshirt'],
            'autoPublish': True})
        assert answer.status_code == 201, answer.text
        job_id = answer.json()['jobId']
        deadline = time.monotonic() + 120
        while True:
            job = requests.get(f'{url}/api/jobs/{job_id}', timeout=10).json()
            if job['status'] in ('completed', 'failed', 'cancelled') or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert job['status'] == 'completed', json.dumps(job, indent=1)[:4000]
        # The pings go on (every 0.2 s here) while jobs run and after.
        notify.wait_for('WATCHDOG=1', 5, count=notify.messages.count('WATCHDOG=1') + 3)
        proc.send_signal(signal.SIGTERM)
        notify.wait_for('STOPPING=1', 30)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    log = log_path.read_text()
    assert 'Traceback' not in log, log


# --- Dockerfile --------------------------------------------------------------

def dockerfile_instructions(text=None):
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    instructions, pending = [], ''
    for line in (DOCKERFILE.read_text() if text is None else text).splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith('#')):
            continue
        if pending and stripped.startswith('#'):
            continue
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        whole = (pending + stripped).strip()
        pending = ''
        if whole:
            word, _, rest = whole.partition(' ')
            instructions.append((word.upper(), rest.strip()))
    assert not pending, 'Dockerfile ends inside a continued line'
    return instructions


def instruction(name, instructions=None):
    found = [args for word, args in (instructions or dockerfile_instructions()) if word == name]
    assert found, f'no {name} in the Dockerfile'
    return found


def test_dockerfile_base_and_layer_order():
    steps = dockerfile_instructions()
    assert steps[0] == ('FROM', 'python:3.11-slim')
    words = [f'{word} {args}' for word, args in steps]
    copy_requirements = next(i for i, s in enumerate(words)
                             if re.match(r'COPY (--\S+ )*requirements\.txt ', s))
    pip = next(i for i, s in enumerate(words) if s.startswith('RUN') and 'pip install' in s)
    copy_app = next(i for i, s in enumerate(words) if re.match(r'COPY (--\S+ )*\. ', s))
    assert copy_requirements < pip < copy_app, words
    assert re.search(r'pip install --no-cache-dir -r requirements\.txt', words[pip])


def test_dockerfile_runs_the_engine_as_a_non_root_user():
    steps = dockerfile_instructions()
    cmd = json.loads(instruction('CMD', steps)[-1])
    assert cmd == ['python', 'podengine.py']
    user = instruction('USER', steps)[-1].split(':')[0]
    assert user and user not in ('root', '0')
    last_user = max(i for i, (word, _) in enumerate(steps) if word == 'USER')
    assert last_user > max(i for i, (word, _) in enumerate(steps) if word in ('RUN', 'COPY'))


def test_dockerfile_environment_volume_and_port():
    steps = dockerfile_instructions()
    env = {}
    for args in instruction('ENV', steps):
        env.update(dict(re.findall(r'(\w+)=(\S+)', args)))
    assert (env.get('HOST'), env.get('PORT'), env.get('DATA_DIR')) == ('0.0.0.0', '3000', '/data')
    assert any(args in ('/data', '["/data"]') for args in instruction('VOLUME', steps))
    assert '3000' in instruction('EXPOSE', steps)


def healthcheck_command():
    args = instruction('HEALTHCHECK')[-1]
    assert ' CMD ' in f' {args}'
    command = json.loads(args.split('CMD', 1)[1])
    assert command[:2] == ['python', '-c'] and '/health' in command[2]
    return [sys.executable, *command[1:]]


def test_dockerfile_healthcheck_passes_on_a_keyed_public_engine(engines):
    """The container's situation: HOST=0.0.0.0, so POD_API_KEY is required, and
    /health (which the HEALTHCHECK asks without a key) stays open."""
    refused = engines.start(HOST='0.0.0.0', expect_ready=False)
    assert refused.wait_exit() != 0
    assert 'POD_API_KEY' in refused.log()
    engine = engines.start(HOST='0.0.0.0', POD_API_KEY='packaging-test-key')
    port = engine.url.rsplit(':', 1)[1]
    assert engine.get('/api/jobs').status_code == 401
    check = subprocess.run(healthcheck_command(), env={**os.environ, 'PORT': port},
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_dockerfile_healthcheck_fails_when_nothing_answers():
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    check = subprocess.run(healthcheck_command(), env={**os.environ, 'PORT': str(port)},
                           capture_output=True, text=True, timeout=30)
    assert check.returncode != 0


def test_dockerignore_keeps_local_state_and_secrets_out():
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith('#')}
    assert {'.venv', 'data', '.git', '.env', 'tests/node/node_modules', '__pycache__'} <= patterns


def test_hadolint_accepts_the_dockerfile():
    hadolint = shutil.which('hadolint')
    if hadolint is None:
        pytest.skip('hadolint not installed')
    run = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# --- compose -----------------------------------------------------------------

def test_compose_file_defines_the_engine_service():
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose['services']['pod-engine']
    assert service['build'] == '.'
    env_files = service['env_file']
    assert '.env' in ([env_files] if isinstance(env_files, str) else env_files)
    assert '3000:3000' in service['ports']
    assert 'pod-data:/data' in service['volumes']
    assert 'pod-data' in compose['volumes']
    assert service['restart'] == 'unless-stopped'
    # environment wins over env_file: a .env copied from .env.example must not
    # move the engine to loopback or out of the volume.
    assert service['environment'] == {'HOST': '0.0.0.0', 'PORT': '3000', 'DATA_DIR': '/data'}
    grace = int(setting_default('SHUTDOWN_GRACE_MS')) / 1000
    assert int(service['stop_grace_period'].rstrip('s')) > grace


def test_compose_comfyui_is_an_optional_commented_service():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose['services']) == {'pod-engine'}
    text = COMPOSE.read_text()
    assert '# comfyui:' in text and 'COMFYUI_URL=http://comfyui:8188' in text
    assert 'POD_API_KEY' in text


# --- README ------------------------------------------------------------------

def test_readme_has_the_production_section_before_development():
    readme = (ROOT / 'README.md').read_text()
    production = readme.index('\n## Running in production\n')
    assert production < readme.index('\n## Development\n')
    section = readme[production:readme.index('\n## Development\n')]
    for needle in ('/etc/pod-engine/pod-engine.env', 'systemctl enable --now pod-engine',
                   'journalctl -u pod-engine -f', 'systemctl restart pod-engine',
                   'docker compose -f docker-compose.pod-engine.yml up -d'):
        assert needle in section, needle
