"""The job store on its own: the journal, the TinyDB file and the archive.

These drive a real JournalStore in a temporary folder, in this process (the
store is plain gevent code); the engine-level behaviour over HTTP is in
test_durability.py.
"""

import json

import gevent
import pytest

import podengine
from podengine import ArchivedJob, JournalStore, StoreError


def finished(number, status='completed', **fields):
    job = podengine.new_job('custom', {'handler': 'sleep', 'seconds': number}, 'normal', 3)
    job.update({'id': f'job_{number:05d}', 'createdAt': 1_000 + number, 'status': status,
                'completedAt': 2_000 + number, 'result': {'n': number},
                'checkpoints': {'step': number}, **fields})
    job['logs'].append({'timestamp': 1, 'message': f'line {number}\twith a tab', 'type': 'INFO'})
    return job


def opened(folder, **options):
    store = JournalStore(folder, **options)
    jobs, meta = store.open()
    return store, jobs, meta


def save_all(store, jobs, table):
    for job in jobs:
        table[job['id']] = job
        last = store.save(job)
    last.get()


def test_finished_jobs_move_to_the_archive_and_read_back_whole(tmp_path):
    store, table, _ = opened(tmp_path)
    jobs = [finished(n) for n in range(3)] + [finished(3, status='pending')]
    save_all(store, jobs, table)
    store._compact()
    assert [type(job).__name__ for job in table.values()] == ['ArchivedJob'] * 3 + ['dict']
    archived = table['job_00001']
    assert archived['status'] == 'completed' and archived['completedAt'] == 2_001
    assert json.loads(archived.public_text()) == podengine.public_job(jobs[1])
    assert archived.load() == jobs[1]
    with pytest.raises(KeyError):
        archived['result']  # not in memory: read it with load()
    store.close()

    store, table, _ = opened(tmp_path)
    assert list(table) == [job['id'] for job in jobs]
    assert [podengine.public_job(job) for job in table.values()] == [
        podengine.public_job(job) for job in jobs]
    assert isinstance(table['job_00003'], dict)  # still pending: in memory
    store.close()


def test_a_retried_job_lives_again_and_its_new_end_wins(tmp_path):
    store, table, _ = opened(tmp_path)
    save_all(store, [finished(1, status='failed')], table)
    store._compact()
    job = table['job_00001'] = table['job_00001'].load()
    job.update(status='pending', completedAt=None)
    store.save(job).get()
    store.close()

    store, table, _ = opened(tmp_path)
    assert table['job_00001']['status'] == 'pending'
    job = table['job_00001']
    job.update(status='completed', completedAt=9_999)
    store.save(job).get()
    store.close()

    store, table, _ = opened(tmp_path)
    assert isinstance(table['job_00001'], ArchivedJob)
    assert table['job_00001'].load()['completedAt'] == 9_999
    store.close()


def test_deleted_jobs_stay_deleted_and_dead_segments_go(tmp_path):
    store = JournalStore(tmp_path)
    store.archive.segment_bytes = 1  # one segment per compaction
    table, _ = store.open()
    for number in range(4):
        save_all(store, [finished(number)], table)
        store._compact()
    segments = store.archive.segments()
    assert len(segments) == 4
    for job_id in ('job_00000', 'job_00001', 'job_00003'):
        del table[job_id]
        store.delete(job_id).get()
    store._compact()
    # The two oldest hold nothing live any more. The fourth does not either,
    # but the third, older, still holds a job: segments go oldest first.
    assert store.archive.segments() == segments[2:] + [segments[-1] + 1]
    store.close()

    store, table, _ = opened(tmp_path)
    assert list(table) == ['job_00002']
    store.close()


def test_a_job_changed_while_being_archived_stays_live(tmp_path):
    store, table, _ = opened(tmp_path)
    job = finished(1, status='failed')
    save_all(store, [job], table)
    compaction = gevent.spawn(store._compact)
    gevent.sleep(0)  # the compaction is now writing, in a thread
    job.update(status='pending', completedAt=None)
    store.save(job).get()
    compaction.join()
    assert table['job_00001'] is job
    store.close()

    store, table, _ = opened(tmp_path)
    assert table['job_00001']['status'] == 'pending'
    store.close()


def archived_segment(folder):
    """The archive segment of two finished jobs, stored and closed."""
    store, table, _ = opened(folder)
    save_all(store, [finished(1), finished(2)], table)
    store.close()
    return folder / 'archive' / '000001.jsonl'


def test_a_torn_last_archive_line_is_dropped(tmp_path, caplog):
    segment = archived_segment(tmp_path)
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-40])  # the second line cut short
    store, table, _ = opened(tmp_path)
    assert list(table) == ['job_00001']
    assert 'torn last line' in caplog.text
    store.close()


def test_shown_is_the_job_as_last_on_disk_while_a_change_is_on_its_way(tmp_path):
    store, table, _ = opened(tmp_path)
    job = finished(1, status='running')
    table[job['id']] = job
    saving = store.save(job)
    assert store.shown(job['id']) == ''  # never on disk yet: not to be shown
    saving.get()
    assert store.shown(job['id']) is None  # memory is on disk: show memory
    job.update(status='completed')
    saving = store.save(job)
    shown = json.loads(store.shown(job['id']))
    assert shown['status'] == 'running' and 'checkpoints' not in shown
    saving.get()
    # a finished job changes only through a save: its saved text is served as it is
    assert json.loads(store.shown(job['id'])) == podengine.public_job(job)
    store.close()


def test_an_archived_job_that_changes_is_shown_as_archived_until_on_disk(tmp_path):
    store, table, _ = opened(tmp_path)
    save_all(store, [finished(1)], table)
    store._compact()
    job = table['job_00001'] = table['job_00001'].load()
    job['result'] = {'n': 'published'}
    saving = store.save(job)
    shown = store.shown(job['id'])  # a late change must not hide the job (no 404)
    assert shown and json.loads(shown)['result'] == {'n': 1}
    saving.get()
    assert json.loads(store.shown(job['id']))['result'] == {'n': 'published'}
    store.close()


def cut_checkpoints(first, second):
    return first[:first.rindex(b'\t')] + b'\n' + second


@pytest.mark.parametrize('damage', [
    lambda first, second: b'not json\n' + first + second,  # line 1 unreadable
    cut_checkpoints,  # line 1 misses a part
])
def test_a_damaged_archive_line_stops_the_start_and_is_left_alone(tmp_path, damage):
    segment = archived_segment(tmp_path)
    damaged = damage(*segment.read_bytes().splitlines(keepends=True))
    segment.write_bytes(damaged)
    segment.with_suffix('.idx').unlink()  # as if a crash came before its index
    with pytest.raises(StoreError, match='000001.jsonl line 1 from byte 0 is unreadable'):
        JournalStore(tmp_path).open()
    assert segment.read_bytes() == damaged


def test_start_reads_the_archive_index_not_its_segments(tmp_path):
    segment = archived_segment(tmp_path)
    # Same length, other bytes: only a read of the segment would see them.
    segment.write_bytes(segment.read_bytes().replace(b'"status": "completed"',
                                                     b'"status": "Completed"'))
    store, table, _ = opened(tmp_path)
    assert [job['status'] for job in table.values()] == ['completed', 'completed']
    store.close()


@pytest.mark.parametrize('damage', [
    lambda index: index.unlink(),                                   # a folder from before
    lambda index: index.write_bytes(index.read_bytes()[:-7]),       # torn last line
    lambda index: index.write_bytes(b'{not json\n'),                # unreadable
    lambda index: index.write_bytes(index.read_bytes() + b'["x", 99999]\n'),  # past its end
])
def test_a_missing_or_damaged_index_is_rebuilt_from_its_segment(tmp_path, damage):
    segment = archived_segment(tmp_path)
    index = segment.with_suffix('.idx')
    whole = index.read_bytes()
    damage(index)
    store, table, _ = opened(tmp_path)
    assert [job.load()['result'] for job in table.values()] == [{'n': 1}, {'n': 2}]
    store.close()
    assert index.read_bytes() == whole


def test_an_archive_append_that_does_not_fit_leaves_no_partial_line(tmp_path):
    """A full disk (here: a file size limit) mid-append: the segment is cut
    back to whole lines, and the store still opens with what it held."""
    import subprocess
    import sys
    script = '''
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
from podengine import Archive
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
archive = Archive(sys.argv[1])
archive.open()
line = lambda job_id, public: (b'{"id": "%s", "type": "custom", "status": "completed", '
    b'"priority": "normal", "createdAt": 1, "completedAt": 2}\\t%s\\t{}\\n' % (job_id, public))
archive.append([line(b'a', b'x')], [])
resource.setrlimit(resource.RLIMIT_FSIZE, (400, resource.RLIM_INFINITY))
try:
    archive.append([line(b'b', b'y' * 500)], [])
except OSError as exc:
    print('refused:', exc.errno)
'''
    from pathlib import Path
    root = Path(podengine.__file__).resolve().parent
    done = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'archive'), str(root)],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.startswith('refused:'), done.stdout + done.stderr
    segment = (tmp_path / 'archive' / '000001.jsonl').read_bytes()
    assert segment.count(b'\n') == 1 and segment.startswith(b'{"id": "a"') and b'yyy' not in segment
    archive = podengine.Archive(tmp_path / 'archive')
    assert list(archive.open()) == ['a']


def test_find_pages_archived_and_live_jobs_alike(tmp_path):
    store, table, _ = opened(tmp_path)
    statuses = ['completed', 'pending', 'failed', 'completed', 'running', 'completed']
    save_all(store, [finished(n, status=s) for n, s in enumerate(statuses)], table)
    store._compact()  # 0, 2, 3, 5 are archived now; 1 and 4 live
    ids = lambda jobs: [int(job['id'][-5:]) for job in jobs]  # noqa: E731
    assert ids(table.find()) == [0, 1, 2, 3, 4, 5]
    assert ids(table.find(newest=True, offset=1, limit=3)) == [4, 3, 2]
    assert ids(table.find('completed', newest=True, limit=2)) == [5, 3]
    assert ids(table.find('completed', offset=1)) == [3, 5]
    assert ids(table.find('running')) == [4]
    assert ids(table.find(limit=0)) == []
    store.close()


def test_a_long_queue_is_compacted_once_per_as_many_changes_as_it_holds(tmp_path):
    store, table, _ = opened(tmp_path, compact_every=10)
    compactions = []
    store.storage.restart_journal = wrapped(store.storage.restart_journal, compactions)
    pending = [finished(number, status='pending', checkpoints={}) for number in range(40)]
    save_all(store, pending, table)
    gevent.sleep(0.05)
    assert len(compactions) == 1  # 40 lines for 40 documents
    for _ in range(2):
        save_all(store, pending[:20], table)
        gevent.sleep(0.05)
    assert len(compactions) == 2  # not after 10 or 20 changes: after 40
    assert len(json.loads((tmp_path / 'jobs.json').read_text())['jobs']) == 40
    store.close()


def wrapped(fn, calls):
    def counted(*args):
        calls.append(args)
        return fn(*args)
    return counted


def test_a_folder_from_before_the_checkpoints_table_opens_whole(tmp_path):
    """jobs.json under TinyDB's numbers with checkpoints inside each job, and
    journal lines of whole jobs: what earlier versions wrote."""
    older, newer = finished(1, status='running'), finished(2, status='pending')
    (tmp_path / 'jobs.json').write_text(json.dumps(
        {'jobs': {'1': older}, 'meta': {'1': {'totalJobs': 1}}}))
    (tmp_path / 'journal.jsonl').write_text(
        json.dumps({'put': newer}) + '\n' + json.dumps({'meta': {'totalJobs': 2}}) + '\n')
    store, table, meta = opened(tmp_path)
    assert meta == {'totalJobs': 2}
    assert [table[job['id']] for job in (older, newer)] == [older, newer]
    store.close()
    store, table, meta = opened(tmp_path)
    assert [table[job['id']] for job in (older, newer)] == [older, newer]
    assert meta == {'totalJobs': 2}
    store.close()


def test_a_checkpoint_writes_itself_not_the_job(tmp_path):
    store, table, _ = opened(tmp_path)
    job = finished(1, status='running', logs=[{'message': 'x' * 100_000}])
    save_all(store, [job], table)
    journal = tmp_path / 'journal.jsonl'
    before = journal.stat().st_size
    job['checkpoints']['image:0'] = {'path': 'designs/a.png'}
    store.save_checkpoint(job, 'image:0').get()
    assert journal.stat().st_size - before < 200
    del job['checkpoints']['step']
    store.save_checkpoint(job, 'step').get()
    store.close()
    store, table, _ = opened(tmp_path)
    assert table['job_00001']['checkpoints'] == {'image:0': {'path': 'designs/a.png'}}
    store.close()


def test_a_save_given_the_jobs_json_writes_that_text(tmp_path):
    store, table, _ = opened(tmp_path)
    job = finished(1, status='pending', checkpoints={})
    table[job['id']] = job
    public = podengine.public_json(job).decode()
    store.save(job, public).get()
    assert store.storage.texts['jobs'][job['id']] is public and not store.storage.encoded
    store.close()
    store, table, _ = opened(tmp_path)
    assert table[job['id']] == job
    store.close()
