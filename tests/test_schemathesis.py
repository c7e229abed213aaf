"""Property-based API tests: schemathesis reads the engine's own
/api/openapi.json and throws generated requests (valid and invalid) at every
operation of a real engine; each answer must keep to that document.

Checks on every response: no 5xx, a documented status code, a documented
content type, a body that fits the documented schema, and every 4xx a JSON
``{"error": "<message>"}``. Afterwards /health must still answer promptly,
and the engine must not have logged a traceback other than a testkit
handler's (a fuzzed custom job).

Bounded and repeatable: a fixed seed, deterministic generation, at most
MAX_EXAMPLES fuzzed cases per operation and mode (the examples and coverage
phases add their own deterministic cases).
"""

import collections
import time

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from conftest import Engines

SETTINGS = {'CUSTOM_HANDLERS': 'testkit', 'IMAGE_BACKEND': 'tiny', 'MIN_SOURCE_PX': 1000,
            'ENABLE_PERSISTENCE': 'false', 'MAX_CONCURRENT_JOBS': 1}
SEED = 20260101
MAX_EXAMPLES = 25

EXPECTED_OPERATIONS = {
    'GET /health', 'GET /api/info', 'GET /api/metrics', 'GET /api/openapi.json',
    'GET /api/jobs', 'POST /api/jobs', 'GET /api/jobs/{id}', 'POST /api/jobs/{id}/cancel',
    'POST /api/jobs/{id}/retry', 'POST /api/jobs/cleanup', 'POST /api/generate',
    'POST /api/generate/batch', 'GET /metrics', 'GET /files/{path}', 'GET /thumbs/{path}'}
CASES = collections.Counter()  # operation label -> requests sent
STATUSES = collections.Counter()  # (operation label, status) -> responses


@schemathesis.check
def client_errors_are_json_with_a_message(ctx, response, case):
    """Every 4xx answers ``application/json`` ``{"error": "<message>"}``."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get('content-type', [''])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.split(';')[0].strip() == 'application/json', \
        f'{response.status_code} answered with Content-Type {content_type!r}'
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f'{response.status_code} body is not JSON: '
                             f'{response.text[:200]!r}') from None
    assert isinstance(body, dict) and isinstance(body.get('error'), str) and body['error'], \
        f'{response.status_code} body is not {{"error": <message>}}: {response.text[:200]!r}'
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, client_errors_are_json_with_a_message]


@pytest.fixture(scope='module')
def api_engine(tmp_path_factory):
    manager = Engines(tmp_path_factory.mktemp('schemathesis'))
    # Generated custom jobs can name testkit's `crash` handler or give a
    # testkit handler nonsense: the engine logs those handler errors with a
    # traceback, as it should. test_the_engine_is_healthy_afterwards checks
    # that every traceback in the log ends in testkit.
    manager.allow_tracebacks = True
    engine = manager.start(**SETTINGS)
    yield engine
    manager.close()


@pytest.fixture(scope='module')
def api_schema(api_engine):
    config = schemathesis.Config.from_dict({
        'seed': SEED,
        'generation': {'mode': 'all', 'max-examples': MAX_EXAMPLES, 'deterministic': True,
                       'database': 'none'},
        'phases': {'examples': {'enabled': True}, 'coverage': {'enabled': True},
                   'fuzzing': {'enabled': True}, 'stateful': {'enabled': False}},
        'cache': {'enabled': False},
        'request-timeout': 10,
    })
    schema = schemathesis.openapi.from_url(api_engine.url + '/api/openapi.json', config=config)
    # Schemathesis leaves out the operation that served the document unless a
    # filter names it; this one matches every path, so it is tested too.
    return schema.include(path_regex='^/')


def test_every_answer_keeps_to_the_api_document(api_engine, api_schema):
    """Each operation in turn, through the same per-operation Hypothesis test
    that ``schema.parametrize()`` builds (examples, coverage and fuzzing
    phases; positive and negative data); a failing operation does not stop
    the others, and every finding is reported at the end.

    Not ``schemathesis.pytest.from_fixture(...).parametrize()``: its wrapper
    renames ``request.node._nodeid``, which pytest 9.2 nodes no longer have
    (AttributeError); and the eager ``schema.parametrize()`` needs the
    document at collection time, before any engine runs."""

    def check_one(case):
        CASES[case.operation.label] += 1
        response = case.call(base_url=api_engine.url, timeout=10)
        STATUSES[case.operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    findings = []
    operations = set()
    for result in get_all_tests(schema=api_schema, test_func=check_one, settings=None,
                                given_kwargs=None):
        operation, run = result.ok()  # Err: the document itself is invalid
        operations.add(operation.label)
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
            # is a BaseExceptionGroup: collected here, all reported below.
            findings.append(f'{operation.label}: {exc}')
    assert not findings, '\n\n'.join(findings)
    assert operations == EXPECTED_OPERATIONS
    assert set(CASES) == EXPECTED_OPERATIONS, 'an operation got no case'


def tracebacks(log):
    """Each traceback in an engine log, as its lines."""
    found, current = [], None
    for line in log.splitlines():
        if 'Traceback (most recent call last)' in line:  # maybe after a log prefix
            current = [line]
            found.append(current)
        elif current is not None and (line.startswith((' ', 'During handling', 'The above'))
                                      or not line.strip() or len(current) < 2
                                      or current[-1].startswith('  ')):
            current.append(line)
        else:
            current = None
    return found


def raised_in_testkit(traceback):
    """The innermost frame is a testkit handler: a job given nonsense (or the
    `crash` handler), which the engine rightly logs; not an engine fault."""
    frames = [line for line in traceback if line.strip().startswith('File "')]
    return bool(frames) and 'plugins/testkit.py' in frames[-1]


def test_the_engine_is_healthy_afterwards(api_engine, capsys):
    assert CASES, 'no schemathesis case ran'
    started = time.monotonic()
    health = requests.get(api_engine.url + '/health', timeout=5)
    took = time.monotonic() - started
    assert took < 1, f'/health took {took:.2f}s after the run'
    assert health.status_code in (200, 503), health.text
    report = health.json()
    assert report['services']['tiny'] and report['services']['local'], report  # in use
    if report['status'] == 'unhealthy':
        # By design when half the recent jobs failed, as fuzzed custom jobs
        # naming testkit's `fail` or `crash` handler do; not a broken engine.
        assert health.status_code == 503 and report['metrics']['failedJobs'] > 0, report
    else:
        assert health.status_code == 200 and report['status'] == 'healthy', report
    assert requests.get(api_engine.url + '/api/info', timeout=5).status_code == 200
    # Tracebacks in the log may only be testkit handlers given nonsense.
    for traceback in tracebacks(api_engine.log()):
        assert raised_in_testkit(traceback), \
            'the engine logged a traceback:\n' + '\n'.join(traceback)
    assert 'unhandled error' not in api_engine.log()
    with capsys.disabled():
        print(f'\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations')
        for label, count in sorted(CASES.items()):
            seen = ', '.join(f'{status}x{n}' for (op, status), n in sorted(STATUSES.items())
                             if op == label)
            print(f'  {label}: {count} cases ({seen})')
