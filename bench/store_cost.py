"""What one job state change costs, at 1k and at 20k stored jobs.

Measures ``Engine._move`` (the one place that changes a job's status:
record, log line, journal line, group-commit fsync, event) on a real
JournalStore in a temporary DATA_DIR, against the baseline of updating one
document with TinyDB's own JSONStorage at the same number of documents.

    .venv/bin/python bench/store_cost.py [N ...]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import podengine  # noqa: E402
from tinydb import TinyDB, where  # noqa: E402

SAMPLES = 40


def finished_job(index):
    job = podengine.new_job('generate', {'prompt': f'design {index}', 'productTypes': ['tshirt'],
                                         'count': 1, 'autoPublish': True}, 'normal', 3)
    job['id'] = f'{job["id"]}{index}'
    job.update(status='failed', progress=100, startedAt=job['createdAt'],
               completedAt=job['createdAt'] + 4000,
               result={'success': True, 'products': [{'platform': 'local', 'type': 'tshirt',
                                                      'productId': f'local_{index}'}]})
    job['logs'] = [{'timestamp': job['createdAt'], 'message': f'step {n}', 'type': 'INFO'}
                   for n in range(8)]
    return job


def engine_with(count, data_dir):
    settings = podengine.load_settings({'DATA_DIR': data_dir, 'ENV_FILE': os.devnull})
    engine = podengine.Engine(settings)
    engine.open()
    last = None
    for index in range(count):
        job = finished_job(index)
        engine.jobs[job['id']] = job
        engine.counts[job['status']] += 1
        last = engine.store.save(job)
    last.get()
    return engine


def time_state_changes(engine):
    jobs = list(engine.jobs.values())
    times = []
    for sample in range(SAMPLES):
        job = jobs[sample * len(jobs) // SAMPLES]
        started = time.perf_counter()
        engine._move(job, 'retry', 'Manual retry (benchmark)')
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def time_tinydb_updates(count, data_dir):
    path = Path(data_dir) / 'baseline.json'
    with TinyDB(path) as db:
        db.table('jobs').insert_multiple(finished_job(i) for i in range(count))
        ids = [job['id'] for job in db.table('jobs').all()]
        samples = min(SAMPLES, 10 if count > 5000 else SAMPLES)
        times = []
        for sample in range(samples):
            started = time.perf_counter()
            db.table('jobs').update({'status': 'pending'}, where('id') == ids[sample])
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def time_compaction(engine):
    started = time.perf_counter()
    engine.store._compact()
    return (time.perf_counter() - started) * 1000


def main(counts):
    print(f'{"jobs":>7} {"state change":>14} {"TinyDB update":>14} {"ratio":>7} '
          f'{"compaction":>11}')
    for count in counts:
        with tempfile.TemporaryDirectory() as data_dir:
            engine = engine_with(count, data_dir)
            change = time_state_changes(engine)
            compaction = time_compaction(engine)
            engine.store.close()
            baseline = time_tinydb_updates(count, data_dir)
        print(f'{count:>7} {change:>11.2f} ms {baseline:>11.2f} ms {baseline / change:>6.0f}x '
              f'{compaction:>8.0f} ms')
    print(f'(medians of {SAMPLES} changes; the state change includes its fsync; '
          f'compaction runs once per {podengine.JournalStore(".").compact_every} changes)')


if __name__ == '__main__':
    main([int(n) for n in sys.argv[1:]] or [1000, 20000])
