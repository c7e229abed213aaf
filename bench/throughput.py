"""Jobs per second for no-op jobs, persistence on, 8 workers (issue #7).

Three measurements in one run, each from the first submit to the last
completion, on a fresh temporary directory:

  in-process  an Engine built in this process; ``engine.submit`` from a pool
              of greenlets (so submits share group-commit fsyncs); completions
              counted from the JOB_UPDATE events.
  HTTP        ``podengine.py`` as a subprocess; POST /api/jobs from a pool of
              HTTP clients; /api/metrics polled until completedJobs == N.
  Huey        the baseline: SqliteHuey (fsync on) with 8 greenlet workers run
              in this process; the same no-op task, counted on its
              "complete" signal (its result is stored by then).

The no-op handler is a tiny module written to a temporary folder and loaded
through CUSTOM_HANDLERS, as any plugin would be.

    .venv/bin/python bench/throughput.py [--quick] [--jobs N] [--timeout S]
"""

from gevent import monkey  # noqa: E402  first thing: before anything imports socket

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine_process  # noqa: E402
import podengine  # noqa: E402
from engine_process import engine_env, stop_engine  # noqa: E402

WORKERS = 8
SUBMITTERS = 50       # greenlets submitting in-process
HTTP_CLIENTS = 32     # greenlets, each with its own requests.Session
FULL_JOBS = 5000
QUICK_JOBS = 300
PLUGIN = 'bench_noop_plugin'


class BenchError(Exception):
    """Something never finished or failed: the bench exits 1 with this."""


def engine_settings(data_dir):
    return {'DATA_DIR': str(data_dir), 'ENV_FILE': os.devnull, 'ENABLE_PERSISTENCE': 'true',
            'MAX_CONCURRENT_JOBS': str(WORKERS), 'CUSTOM_HANDLERS': PLUGIN}


def wait_until(event, deadline, what, progress):
    """Block on ``event`` until ``deadline``; a clear error if it never comes."""
    if not event.wait(timeout=max(deadline - time.monotonic(), 0)):
        raise BenchError(f'{what}: not finished in time ({progress()})')


def submit_all(pool, submit, count, deadline, what):
    """Run ``submit(i)`` for each i on ``pool``; the first failure aborts."""
    failures = []

    def one(index):
        if failures or time.monotonic() > deadline:
            return
        try:
            submit(index)
        except Exception as exc:  # reported below, with the first cause
            failures.append(exc)

    for index in range(count):
        if failures:
            break
        pool.spawn(one, index)
    if not pool.join(timeout=max(deadline - time.monotonic(), 0)):
        pool.kill()
        raise BenchError(f'{what}: submits not finished in time')
    if failures:
        raise BenchError(f'{what}: submit failed: {failures[0]!r}')


# In-process ###################################################################

def run_in_process(count, work_dir, timeout):
    settings = podengine.load_settings(engine_settings(Path(work_dir) / 'data-inprocess'))
    engine = podengine.Engine(settings)
    engine.open()
    engine.start()
    done = gevent.event.Event()
    completed = set()
    failed = []

    def listener(event, data):
        if event != podengine.JOB_UPDATE:
            return
        if data['status'] == podengine.COMPLETED:
            completed.add(data['id'])
            if len(completed) >= count:
                done.set()
        elif data['status'] in (podengine.FAILED, podengine.CANCELLED):
            failed.append(data)
            done.set()

    engine.events.add_listener(listener)
    deadline = time.monotonic() + timeout
    try:
        started = time.perf_counter()
        submit_all(gevent.pool.Pool(SUBMITTERS),
                   lambda i: engine.submit('custom', {'handler': 'noop'}, 'normal', 0),
                   count, deadline, 'in-process')
        wait_until(done, deadline, 'in-process',
                   lambda: f'{len(completed)}/{count} completed')
        elapsed = time.perf_counter() - started
        if failed:
            raise BenchError(f'in-process: a job did not complete: {failed[0]}')
    finally:
        engine.events.remove_listener(listener)
        engine.stop(5)
    return elapsed


# Over HTTP ####################################################################

def start_engine(work_dir, timeout):
    log_path = Path(work_dir) / 'engine-http.log'
    env = engine_env(work_dir, **engine_settings(Path(work_dir) / 'data-http'))
    try:
        proc, url = engine_process.start_engine(env, log_path, timeout, sleep=gevent.sleep)
    except engine_process.EngineError as exc:
        raise BenchError(f'HTTP: {exc}') from None
    return proc, url, log_path


def run_http(count, work_dir, timeout):
    proc, url, log_path = start_engine(work_dir, 30)
    sessions = {}
    body = {'type': 'custom', 'request': {'handler': 'noop'}, 'maxRetries': 0}

    def submit(index):
        session = sessions.setdefault(gevent.getcurrent(), requests.Session())
        response = session.post(url + '/api/jobs', json=body, timeout=30)
        if response.status_code != 201:
            raise BenchError(f'POST /api/jobs: {response.status_code} {response.text[:300]}')

    deadline = time.monotonic() + timeout
    try:
        started = time.perf_counter()
        submit_all(gevent.pool.Pool(HTTP_CLIENTS), submit, count, deadline, 'HTTP')
        poller = requests.Session()
        metrics = {}
        while True:
            metrics = poller.get(url + '/api/metrics', timeout=10).json()
            if metrics['completedJobs'] >= count:
                break
            if metrics['failedJobs'] or metrics['cancelledJobs']:
                raise BenchError(f'HTTP: jobs did not complete: {metrics}')
            if time.monotonic() > deadline:
                raise BenchError(f'HTTP: not finished in time ({metrics["completedJobs"]}/'
                                 f'{count} completed)')
            gevent.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for session in sessions.values():
            session.close()
        stop_engine(proc)
    if 'Traceback' in log_path.read_text(errors='replace'):
        raise BenchError(f'HTTP: the engine logged a traceback:\n'
                         f'{log_path.read_text(errors="replace")[-3000:]}')
    return elapsed


# Huey: the baseline ###########################################################

def run_huey(count, work_dir, timeout):
    from huey import SqliteHuey, signals
    from huey.consumer import Consumer

    huey = SqliteHuey('bench', filename=str(Path(work_dir) / 'huey.db'), fsync=True)

    @huey.task()
    def noop():
        return {}

    done = gevent.event.Event()
    finished = {'complete': 0, 'other': []}

    @huey.signal(signals.SIGNAL_COMPLETE)
    def on_complete(signal_name, task, *args, **kwargs):
        finished['complete'] += 1
        if finished['complete'] >= count:
            done.set()

    @huey.signal(signals.SIGNAL_ERROR, signals.SIGNAL_CANCELED, signals.SIGNAL_EXPIRED)
    def on_failure(signal_name, task, *args, **kwargs):
        finished['other'].append(signal_name)
        done.set()

    # Short poll intervals: SqliteHuey is not a blocking queue, so idle
    # workers sleep between polls; this keeps that from costing the baseline.
    consumer = Consumer(huey, workers=WORKERS, worker_type='greenlet', periodic=False,
                        initial_delay=0.005, max_delay=0.05, check_worker_health=False,
                        shutdown_timeout=5)
    consumer.start()
    deadline = time.monotonic() + timeout
    try:
        started = time.perf_counter()
        submit_all(gevent.pool.Pool(SUBMITTERS), lambda i: noop(), count, deadline, 'Huey')
        wait_until(done, deadline, 'Huey',
                   lambda: f'{finished["complete"]}/{count} completed')
        elapsed = time.perf_counter() - started
        if finished['other']:
            raise BenchError(f'Huey: a task did not complete: {finished["other"][0]}')
    finally:
        consumer.stop(graceful=True)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # the consumer set its own
        huey.storage.close()
    return elapsed


# Report #######################################################################

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help=f'{QUICK_JOBS} jobs')
    parser.add_argument('--jobs', type=int, help=f'number of jobs (default {FULL_JOBS})')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds each measurement may take (default: scales with jobs)')
    args = parser.parse_args(argv)
    count = args.jobs or (QUICK_JOBS if args.quick else FULL_JOBS)
    if count < 1:
        parser.error('--jobs must be at least 1')
    timeout = args.timeout or max(60.0, count / 20)

    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix='podengine-bench-') as work_dir:
            engine_process.write_noop_plugin(work_dir, PLUGIN)
            sys.path.insert(0, work_dir)
            for name, run in (('in-process', run_in_process), ('HTTP', run_http),
                              ('Huey (SqliteHuey)', run_huey)):
                rows.append((name, run(count, work_dir, timeout)))
    except BenchError as exc:
        print(f'throughput bench failed: {exc}', file=sys.stderr)
        return 1

    print(f'{"":18} {"jobs":>6} {"seconds":>8} {"jobs/s":>8}')
    for name, seconds in rows:
        print(f'{name:18} {count:>6} {seconds:>8.2f} {count / seconds:>8.0f}')
    rate = {name: count / seconds for name, seconds in rows}
    huey_rate = rate['Huey (SqliteHuey)']
    print(f'ratio in-process / Huey: {rate["in-process"] / huey_rate:.2f} (target >= 1.0); '
          f'HTTP / Huey: {rate["HTTP"] / huey_rate:.2f}')
    print(f'(no-op jobs, persistence on, {WORKERS} workers; first submit to last completion; '
          f'{SUBMITTERS} submitting greenlets in-process, {HTTP_CLIENTS} HTTP clients)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
