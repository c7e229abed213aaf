"""A job's life in one process: the moves table, saves before changes, the
retry timers, on a clock the test moves.

These tests build the Engine itself (no HTTP): a store that refuses writes
on demand is the only way to see what a full disk does to a job, and a
backoff of minutes has to pass in a millisecond.
"""

import os

import gevent
import gevent.event
import pytest

import podengine

START = 1_800_000_000_000


class MovedClock:
    """Time that passes only when the test says so."""

    def __init__(self):
        self.t = START
        self._moved = gevent.event.Event()

    def now_ms(self):
        return self.t

    def wait(self, event, seconds):
        deadline = None if seconds is None else self.t + seconds * 1000
        while not event.is_set() and (deadline is None or self.t < deadline):
            gevent.wait([event, self._moved], count=1)

    def sleep(self, seconds):
        self.wait(gevent.event.Event(), seconds)

    def advance(self, ms):
        self.t += ms
        moved, self._moved = self._moved, gevent.event.Event()
        moved.set()
        gevent.sleep(0.01)


class RefusingStore(podengine.JournalStore):
    """The durable store, with a disk that refuses the next ``refuse`` saves
    of a job (or of its checkpoints), or the first one ``refuse_if(job)``
    picks (as a full disk does: its batch fails, nothing of it is on disk)."""

    refuse = 0
    refused = 0
    refuse_if = None

    def save(self, job, public=None):
        return self._refused(job) or super().save(job, public)

    def save_checkpoint(self, job, key):
        return self._refused(job) or super().save_checkpoint(job, key)

    def _refused(self, job):
        picked = self.refuse_if is not None and self.refuse_if(job)
        if picked:
            self.refuse_if = None
        if not (self.refuse or picked):
            return None
        self.refuse = max(0, self.refuse - 1)
        self.refused += 1
        failed = gevent.event.AsyncResult()
        failed.set_exception(podengine.StoreError('could not save to disk: [Errno 28] '
                                                  'No space left on device'))
        return failed


def make_engine(data_dir, clock, store=None, **settings):
    environ = {'DATA_DIR': str(data_dir), 'ENABLE_PERSISTENCE': 'true', 'ENV_FILE': os.devnull,
               'MAX_CONCURRENT_JOBS': '2', 'RETRY_DELAY_MS': '60000', 'LOG_LEVEL': 'INFO',
               **{key: str(value) for key, value in settings.items()}}
    engine = podengine.Engine(podengine.load_settings(environ),
                              store=store or RefusingStore(data_dir), clock=clock)
    engine.handlers.update(HANDLERS)
    engine.open()
    engine.start()
    return engine


def wait_until(condition, seconds=5):
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        gevent.sleep(0.005)
    raise AssertionError('timed out')


GATES = {}


def gated(request, ctx):
    """Waits for the test to open its gate, then fails or succeeds as asked."""
    GATES.setdefault(ctx.job_id, gevent.event.Event()).wait()
    if request.get('fail'):
        raise podengine.JobFailure('it failed', retryable=True)
    return {'done': True}


def stepped(request, ctx):
    return {'steps': [ctx.checkpoint(f'step:{n}', lambda n=n: n) for n in range(3)]}


HANDLERS = {'gated': gated, 'stepped': stepped}


def open_gate(job_id):
    GATES.setdefault(job_id, gevent.event.Event()).set()


def on_disk(data_dir, job_id):
    """The job as a fresh engine reads it from ``data_dir`` (this one stopped)."""
    store = podengine.JournalStore(data_dir)
    jobs, _ = store.open()
    try:
        job = jobs[job_id]
        return job if isinstance(job, dict) else job.load()  # an ArchivedJob
    finally:
        store.close()


@pytest.fixture
def clock():
    return MovedClock()


@pytest.fixture
def engine(tmp_path, clock):
    made = make_engine(tmp_path, clock)
    yield made
    if not made.stopping:
        made.stop(timeout=1)


def test_every_move_leaves_the_statuses_the_table_names(engine):
    job, _ = engine.submit('custom', {'handler': 'gated'})
    wait_until(lambda: job['status'] == 'running')
    open_gate(job['id'])
    wait_until(lambda: job['status'] == 'completed')
    with pytest.raises(podengine.Conflict):
        engine.cancel(job['id'])  # 'cancel' leaves pending and running only
    with pytest.raises(podengine.Conflict):
        engine.retry(job['id'])   # 'retry' leaves failed and cancelled only
    assert not engine._move(job, 'start', 'again')
    assert job['status'] == 'completed'
    assert set(podengine.MOVES) == {'start', 'complete', 'fail', 'back off', 'interrupt',
                                    'cancel', 'retry'}
    statuses = {status for leaves, enters in podengine.MOVES.values()
                for status in (*leaves, enters)}
    assert statuses == set(podengine.STATUSES)


def test_a_refused_start_leaves_the_job_pending_and_it_starts_later(engine, clock, tmp_path):
    job, _ = engine.submit('custom', {'handler': 'stepped'})
    engine.store.refuse = 1  # the start's save: the job is queued, no worker has it yet
    wait_until(lambda: engine.store.refused == 1 and len(engine.timers) == 1)
    assert job['status'] == 'pending' and job['startedAt'] is None
    assert engine.counts['running'] == 0 and engine.counts['pending'] == 1
    assert [entry['message'] for entry in job['logs']] == [f'Job {job["id"]} submitted']
    clock.advance(podengine.STORE_RETRY_MS)
    wait_until(lambda: job['status'] == 'completed')
    assert job['result'] == {'steps': [0, 1, 2]} and engine.counts['completed'] == 1
    engine.stop(timeout=1)
    assert on_disk(tmp_path, job['id'])['status'] == 'completed'


def test_a_refused_end_is_saved_again_until_the_disk_takes_it(engine, clock, tmp_path):
    job, _ = engine.submit('custom', {'handler': 'gated'})
    wait_until(lambda: job['status'] == 'running')
    engine.store.refuse = 3
    open_gate(job['id'])
    wait_until(lambda: engine.store.refused == 1)
    assert job['status'] == 'running' and engine.meta['completedJobs'] == 0
    # The pauses: 1 s, 2 s, 4 s, each +-20 % (the store's RetryPolicy).
    clock.advance(1200)
    wait_until(lambda: engine.store.refused == 2)
    clock.advance(1500)
    gevent.sleep(0.05)
    assert engine.store.refused == 2, 'tried again before its pause was over'
    clock.advance(1000)
    wait_until(lambda: engine.store.refused == 3)
    assert job['status'] == 'running'
    clock.advance(4800)
    wait_until(lambda: job['status'] == 'completed')
    assert engine.meta['completedJobs'] == 1 and engine.counts['running'] == 0
    assert [e['message'] for e in job['logs']].count('Job completed successfully') == 1
    engine.stop(timeout=1)
    saved = on_disk(tmp_path, job['id'])
    assert saved['status'] == 'completed' and saved['result'] == {'done': True}


def test_a_refused_checkpoint_is_a_retryable_failure(engine, clock):
    engine.store.refuse_if = lambda job: 'step:0' in job['checkpoints']
    job, _ = engine.submit('custom', {'handler': 'stepped'}, max_retries=2)
    wait_until(lambda: job['status'] == 'pending' and job['retryCount'] == 1)
    assert 'StoreError' in job['error'] and 'No space left' in job['error']
    assert START + 0.8 * 60_000 <= job['nextRetryAt'] <= START + 1.2 * 60_000
    clock.advance(72_000)
    wait_until(lambda: job['status'] == 'completed')
    assert job['result'] == {'steps': [0, 1, 2]} and job['retryCount'] == 1


def test_a_cancel_while_the_end_is_saved_makes_one_move(engine):
    job, _ = engine.submit('custom', {'handler': 'gated'})
    wait_until(lambda: job['status'] == 'running')
    open_gate(job['id'])
    gevent.sleep(0)  # the attempt ends and its 'complete' is on its way to disk
    try:
        engine.cancel(job['id'])
    except podengine.Conflict:
        pass  # the complete came first
    wait_until(lambda: job['status'] in ('completed', 'cancelled') and
               not engine._attempts)
    ended = [e['message'] for e in job['logs']
             if e['message'] in ('Job completed successfully', 'Job cancelled')]
    assert len(ended) == 1
    assert engine.meta['completedJobs'] + engine.meta['cancelledJobs'] == 1
    assert engine.counts[job['status']] == 1 and engine.counts['running'] == 0


def test_backoffs_wait_in_one_timer_heap(engine, clock):
    jobs = [engine.submit('custom', {'handler': 'gated', 'fail': True}, max_retries=3)[0]
            for _ in range(40)]
    for job in jobs:
        open_gate(job['id'])
    wait_until(lambda: all(job['status'] == 'pending' and job['retryCount'] == 1
                           for job in jobs))
    assert len(engine.timers) == 40
    before = engine.timers._runner
    assert before is not None and not before.dead
    engine.cancel(jobs[0]['id'])
    last = max(jobs[1:], key=lambda job: job['nextRetryAt'])
    latest = last['nextRetryAt']
    assert 0.8 * 60_000 <= latest - START <= 1.2 * 60_000  # RETRY_DELAY_MS with its jitter
    clock.advance(latest - clock.t - 1)
    wait_until(lambda: sum(job['retryCount'] == 2 for job in jobs) >= 38)
    assert last['retryCount'] == 1, 'retried before its time'
    clock.advance(1)
    wait_until(lambda: all(job['retryCount'] == 2 for job in jobs[1:]))
    assert jobs[0]['status'] == 'cancelled' and jobs[0]['retryCount'] == 1
    assert engine.timers._runner is before  # the same one greenlet all along
    assert all('Retrying job (attempt 1/3)' in [e['message'] for e in job['logs']]
               for job in jobs[1:])
