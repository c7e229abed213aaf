"""Durability: kill -9, restarts, torn and corrupt files, memory-only mode."""

import json
import time

import podengine
from test_jobs import sleep_job, trace


def test_accepted_jobs_survive_kill_9_right_after_201(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    blocker = first.submit(sleep_job(30))
    accepted = [first.submit(sleep_job(0, priority='low')) for _ in range(20)]
    first.kill9()
    second = engines.start(data, CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=4)
    ids = {job['id'] for job in second.get('/api/jobs').json()}
    assert set(accepted) | {blocker} <= ids
    for job_id in accepted:
        assert second.wait_for(job_id, 'completed')['retryCount'] == 0
    assert second.get('/api/metrics').json()['totalJobs'] == 21
    second.post(f'/api/jobs/{blocker}/cancel')


def test_running_job_resumes_from_its_checkpoints_after_kill_9(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit')
    job_id = first.submit({'type': 'custom', 'request': {
        'handler': 'steps', 'steps': 4, 'sleepAt': 2, 'seconds': 30}})
    first.wait_for(job_id, 'running', where=lambda j: j['progress'] >= 50)
    time.sleep(0.1)
    first.kill9()
    assert trace(first, f'steps-{job_id}') == ['0', '1', '2']
    (data / 'trace' / f'steps-{job_id}').unlink()

    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    job = second.wait_for(job_id, 'running')
    assert any('Interrupted by a crash or restart' in line['message'] for line in job['logs'])
    assert (job['interruptions'], job['retryCount']) == (1, 0)
    deadline = time.monotonic() + 10
    while not trace(second, f'steps-{job_id}'):
        assert time.monotonic() < deadline, 'the job did not resume'
        time.sleep(0.05)
    # Steps 0 and 1 were checkpointed and are not run again; step 2 is.
    assert trace(second, f'steps-{job_id}') == ['2']
    second.post(f'/api/jobs/{job_id}/cancel')


def test_steps_resume_after_a_retryable_failure(engine):
    job_id = engine.submit({'type': 'custom', 'request': {
        'handler': 'steps', 'steps': 4, 'failAt': 2}})
    job = engine.wait_for(job_id, 'completed')
    assert job['retryCount'] == 1 and job['result'] == {'steps': [0, 10, 20, 30]}
    # Steps 0 and 1 ran once; step 2 twice (it failed once); step 3 once.
    assert trace(engine, f'steps-{job_id}') == ['0', '1', '2', '2', '3']


def test_graceful_stop_requeues_running_jobs_and_counters_survive(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', SHUTDOWN_GRACE_MS=200)
    done = first.submit(sleep_job(0))
    first.wait_for(done, 'completed')
    long = first.submit(sleep_job(5))
    first.wait_for(long, 'running')
    started = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - started < 5
    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    job = second.wait_for(long, 'running', 'completed')
    assert any('Interrupted by shutdown' in line['message'] for line in job['logs'])
    metrics = second.get('/api/metrics').json()
    assert metrics['totalJobs'] == 2 and metrics['completedJobs'] == 1
    second.post(f'/api/jobs/{long}/cancel')


def test_a_pending_retry_keeps_its_delay_across_a_restart(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', RETRY_DELAY_MS=1500)
    job_id = first.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 1}})
    due = first.wait_for(job_id, 'pending', where=lambda j: j['retryCount'] == 1)['nextRetryAt']
    first.kill9()
    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    job = second.wait_for(job_id, 'completed', timeout=10)
    assert job['startedAt'] >= due - 5


def test_corrupt_store_stops_start_up_and_is_left_untouched(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit')
    first.submit(sleep_job(0))
    assert first.stop() == 0
    snapshot = data / 'jobs.json'
    snapshot.write_text('{"jobs": {"1": {"id": "job_1_x"')
    broken = snapshot.read_bytes()
    second = engines.start(data, expect_ready=False)
    assert second.wait_exit() == 2
    assert 'jobs.json' in second.log() and 'unreadable' in second.log()
    assert snapshot.read_bytes() == broken


def test_corrupt_journal_line_stops_start_up(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit')
    first.kill9()
    journal = data / 'journal.jsonl'
    journal.write_text('garbage\n{"meta": {}}\n')
    second = engines.start(data, expect_ready=False)
    assert second.wait_exit() == 2
    assert 'journal.jsonl line 1' in second.log()
    assert journal.read_text() == 'garbage\n{"meta": {}}\n'


def test_a_torn_last_journal_line_is_ignored(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=1)
    blocker = first.submit(sleep_job(30))
    kept = first.submit(sleep_job(0))
    first.kill9()
    with open(data / 'journal.jsonl', 'a') as journal:
        journal.write('{"put": {"id": "job_torn", "sta')
    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    assert second.wait_for(kept, 'completed')
    assert second.get('/api/jobs/job_torn').status_code == 404
    assert 'torn' in second.log()
    second.post(f'/api/jobs/{blocker}/cancel')


def test_only_one_engine_per_data_dir(engines, tmp_path):
    data = tmp_path / 'data'
    engines.start(data)
    second = engines.start(data, expect_ready=False)
    assert second.wait_exit() == 2
    assert 'in use by another POD Engine' in second.log()


def test_live_jobs_in_tinydb_and_finished_ones_in_the_archive(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS='1')
    done_id = first.submit(sleep_job(0))
    first.wait_for(done_id, 'completed')
    shown = first.get(f'/api/jobs/{done_id}').json()
    waiting_id = first.submit(sleep_job(60))
    queued_id = first.submit(sleep_job(0))
    first.wait_for(waiting_id, 'running')
    assert first.stop() == 0
    # TinyDB reads it: jobs by their ids, their checkpoints apart, the counters.
    with podengine.JobDatabase(data / 'jobs.json', access_mode='r') as db:
        assert {job.doc_id: job['status'] for job in db.table('jobs').all()} == {
            waiting_id: 'pending', queued_id: 'pending'}
        assert db.table('meta').get(doc_id='engine')['completedJobs'] == 1
        assert {step['job'] for step in db.table('checkpoints').all()} <= {waiting_id}
    assert (data / 'journal.jsonl').read_text() == ''
    [line] = (data / 'archive' / '000001.jsonl').read_text().splitlines()
    summary, public, checkpoints = (json.loads(part) for part in line.split('\t'))
    assert summary['id'] == done_id and summary['status'] == 'completed'
    assert public == shown and isinstance(checkpoints, dict)
    second = engines.start(data, CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS='1')
    assert second.get(f'/api/jobs/{done_id}').json() == shown
    assert [job['id'] for job in second.get('/api/jobs').json()] == [
        done_id, waiting_id, queued_id]


def test_memory_only_mode_writes_no_store(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit', ENABLE_PERSISTENCE='false')
    job_id = first.submit(sleep_job(0))
    first.wait_for(job_id, 'completed')
    assert first.get('/api/info').json()['config']['persistenceEnabled'] is False
    assert first.stop() == 0
    assert not (data / 'jobs.json').exists() and not (data / 'journal.jsonl').exists()
    second = engines.start(data, CUSTOM_HANDLERS='testkit', ENABLE_PERSISTENCE='false')
    assert second.get('/api/jobs').json() == []


def test_the_journal_holds_one_line_per_change_not_per_progress_tick(engines, tmp_path):
    data = tmp_path / 'data'
    engine = engines.start(data, CUSTOM_HANDLERS='testkit')
    job_id = engine.submit(sleep_job(0.3))  # ten progress ticks
    engine.wait_for(job_id, 'completed')
    lines = [json.loads(line) for line in (data / 'journal.jsonl').read_text().splitlines()]
    puts = [line for line in lines if 'put' in line]
    assert 2 <= len(puts) <= 5, [p['put']['status'] for p in puts]


def test_systemd_is_told_ready_and_stopping(engines, notify_socket):
    path, listener = notify_socket
    engine = engines.start(NOTIFY_SOCKET=path)
    assert listener.recv(256) == b'READY=1'
    assert engine.get('/health').status_code == 200
    engine.stop()
    assert listener.recv(256) == b'STOPPING=1'


def test_a_crash_spends_no_retry_and_a_max_retries_0_job_completes(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit')
    job_id = first.submit({'type': 'custom', 'maxRetries': 0, 'request': {
        'handler': 'steps', 'steps': 3, 'sleepAt': 1, 'seconds': 2}})
    first.wait_for(job_id, 'running', where=lambda j: j['progress'] >= 30)
    time.sleep(0.3)  # step 0's checkpoint on disk; step 1 sleeping
    first.kill9()
    (data / 'trace' / f'steps-{job_id}').unlink()

    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    job = second.wait_for(job_id, 'completed', timeout=30)
    assert job['result'] == {'steps': [0, 10, 20]}
    assert (job['interruptions'], job['retryCount'], job['maxRetries']) == (1, 0, 0)
    assert trace(second, f'steps-{job_id}') == ['1', '2']  # resumed, not started over


def test_three_crashes_in_a_row_exhaust_max_interruptions(engines, tmp_path):
    data = tmp_path / 'data'
    job_id = None
    for round_ in range(3):  # MAX_INTERRUPTIONS 2: the third interruption fails it
        engine = engines.start(data, CUSTOM_HANDLERS='testkit')
        if job_id is None:
            job_id = engine.submit(sleep_job(30, maxRetries=5))
        job = engine.wait_for(job_id, 'running')
        assert job['interruptions'] == round_
        time.sleep(0.3)  # shown as running at once; on disk a moment later
        engine.kill9()
    engine = engines.start(data, CUSTOM_HANDLERS='testkit')
    job = engine.wait_for(job_id, 'failed')
    assert 'too many times' in job['error']
    assert (job['interruptions'], job['retryCount']) == (3, 0)


def test_an_archived_job_retries_from_its_checkpoints_and_cleanup_forgets_it(engines, tmp_path):
    data = tmp_path / 'data'
    first = engines.start(data, CUSTOM_HANDLERS='testkit')
    failed_id = first.submit({'type': 'custom', 'maxRetries': 0,
                              'request': {'handler': 'steps', 'steps': 3, 'failAt': 1}})
    first.wait_for(failed_id, 'failed')
    done_id = first.submit(sleep_job(0))
    first.wait_for(done_id, 'completed')
    assert first.stop() == 0
    assert len((data / 'archive' / '000001.jsonl').read_text().splitlines()) == 2

    second = engines.start(data, CUSTOM_HANDLERS='testkit')
    assert second.post(f'/api/jobs/{failed_id}/retry').status_code == 200
    job = second.wait_for(failed_id, 'completed')
    assert job['result'] == {'steps': [0, 10, 20]}
    assert trace(second, f'steps-{failed_id}') == ['0', '1', '1', '2']  # step 0 ran once
    assert second.post('/api/jobs/cleanup', json={'maxAge': 0}).json() == {'cleared': 2}
    assert second.stop() == 0

    third = engines.start(data, CUSTOM_HANDLERS='testkit')
    assert third.get('/api/jobs').json() == []
    assert third.get(f'/api/jobs/{done_id}').status_code == 404
    assert third.get('/api/metrics').json()['completedJobs'] == 2
