"""Does the engine's cost stay flat as the store grows? (issue 7, part 1)

For each store size (1k and 100k jobs by default) a DATA_DIR is preloaded with
realistic jobs, written through the engine's own JournalStore as the engine
would have written them: generate jobs with their briefs, images, products,
logs and checkpoints (about 6 KB of JSON each), 85 % completed, 10 % failed,
3 % cancelled, 2 % still pending (no-op custom jobs, so the
engine has no drawing to do when it starts). Then, against ``podengine.py`` started as a
subprocess on that folder:

  restart       from starting the process to /health answering
  RSS           the engine's resident memory after start and at its peak
  submit        POST /api/jobs (a no-op custom job) to its durable 201,
                one client, p50 / p99
  /health       p99 while idle, then while clients keep listing every job
                with GET /api/jobs (no limit: the whole store, streamed)

and, in this process on the same folder, the cost of one job state change
(``Engine._move``, journal fsync included). The baseline of each figure
is the same figure at the smallest size, measured in the same run.

    .venv/bin/python bench/store_scale.py [--quick] [--sizes N ...]
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine_process  # noqa: E402
import podengine  # noqa: E402
from engine_process import engine_env, stop_engine  # noqa: E402

PLUGIN = 'bench_store_plugin'
STATUS_MIX = ['completed'] * 85 + ['failed'] * 10 + ['cancelled'] * 3 + ['pending'] * 2
DESCRIPTION = ('Wear something truly different: {theme}, printed on a soft, lightweight '
               'garment. Made for everyday wear, it pairs with jeans or joggers and makes '
               'a thoughtful gift for just about anyone. Printed on demand in sharp, '
               'vibrant color that holds up wash after wash.')


class BenchError(Exception):
    """Something did not work: the bench exits 1 with this."""


# A realistic store ###########################################################

def realistic_job(number):
    """A generate job as the engine leaves it: one design, two products."""
    status = STATUS_MIX[number % len(STATUS_MIX)]
    theme = f'retro sunset cat number {number}'
    job = podengine.new_job('generate', {'prompt': theme, 'productTypes': ['tshirt', 'hoodie'],
                                         'count': 1, 'autoPublish': True}, 'normal', 3)
    created = 1_790_000_000_000 + number * 1000
    job.update(id=f'job_{created}_{number:09d}', status=status, createdAt=created)
    job['logs'] = [{'timestamp': created + step * 100, 'message': message, 'type': 'INFO'}
                   for step, message in enumerate(LOG_LINES)]
    if status == 'pending':  # queued work that finishes at once: nothing to draw
        job.update(type='custom', request={'handler': 'noop'})
        return job
    job.update(startedAt=created + 50, completedAt=created + 4000, progress=100)
    design = {'image_prompt': theme, 'title': f'{theme.title()} T-Shirt',
              'description': DESCRIPTION.format(theme=theme),
              'description_html': f'<p>{DESCRIPTION.format(theme=theme)}</p>',
              'tags': ['retro sunset', 'retro', 'sunset', 'cat', 'graphic tee', 'gift idea'],
              'negative_prompt': 'text artifacts, watermark, signature, blurry, low quality'}
    folder = f'designs/{job["id"]}'
    image = {'id': f'img_{number}_0', 'index': 0, 'url': f'/files/{folder}/design0_0.png',
             'path': f'{folder}/design0_0.png', 'prompt': theme, 'title': design['title'],
             'width': 4500, 'height': 5400, 'backend': 'local', 'seed': number,
             'printFiles': [{'path': f'{folder}/design0_0.png', 'width': 4500, 'height': 5400}]}
    products = [{'platform': 'local', 'productId': f'local_{number:06d}{kind[0]}',
                 'url': f'/files/products/local_{number:06d}{kind[0]}/product.json',
                 'mockupUrl': f'/files/products/local_{number:06d}{kind[0]}/mockup.png',
                 'type': kind, 'title': design['title'], 'published': True,
                 'imageId': image['id']} for kind in ('tshirt', 'hoodie')]
    job['checkpoints'] = {'prompts': [design], 'image:0': image,
                          **{f'local:product:0:{p["type"]}': p for p in products}}
    if status == 'failed':
        job.update(error='Printify: 503 Service Unavailable', retryCount=3)
    job['result'] = {'success': status == 'completed', 'generatedImages': [image],
                     'products': products if status == 'completed' else [],
                     'errors': [] if status == 'completed' else [job.get('error')],
                     'designs': [design]}
    return job


LOG_LINES = ['Job submitted', 'Job started (type: generate)', 'Writing 1 design brief',
             'Brief 1/1 written', 'Drawing design 1/1', 'Design 1/1 drawn (4500x5400)',
             'Print file ready', 'Creating t-shirt product', 'Created t-shirt product',
             'Creating hoodie product', 'Created hoodie product',
             'Job completed successfully']


def preload(data_dir, count):
    """Write ``count`` jobs through a JournalStore, compacting as the engine does."""
    store = podengine.JournalStore(data_dir)
    table, _ = store.open()
    meta = {'totalJobs': count, 'completedJobs': 0, 'failedJobs': 0, 'cancelledJobs': 0,
            'jobTimeTotal': 0, 'jobTimeCount': 0, 'lastActivity': None, 'recent': []}
    last = None
    for number in range(count):
        job = realistic_job(number)
        table[job['id']] = job
        last = store.save(job)
        if job['status'] != 'pending':
            meta[f'{job["status"]}Jobs'] += 1
        if number % 500 == 499:
            last.get()  # let the writer catch up (it compacts every 5000 lines)
    store.save_meta(meta).get()
    store.close()


# The engine as a subprocess ###################################################

def start_engine(data_dir, work_dir):
    """Start the engine; returns (process, base URL, seconds until /health answered)."""
    env = engine_env(work_dir, DATA_DIR=data_dir, CUSTOM_HANDLERS=PLUGIN)
    started = time.perf_counter()
    try:
        proc, url = engine_process.start_engine(
            env, Path(work_dir) / f'engine-{data_dir.name}.log', timeout=60,
            ready=lambda url: answers(url + '/health'))
    except engine_process.EngineError as exc:
        raise BenchError(str(exc)) from None
    return proc, url, time.perf_counter() - started


def answers(url):
    try:
        return requests.get(url, timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False


def memory_mb(proc):
    """(current, peak) resident memory of ``proc`` in MB."""
    fields = dict(line.split(':', 1) for line in
                  Path(f'/proc/{proc.pid}/status').read_text().splitlines())
    return tuple(int(fields[name].split()[0]) / 1024 for name in ('VmRSS', 'VmHWM'))


# Measurements ################################################################

def percentile(samples, share):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def time_submits(url, count):
    session = requests.Session()
    body = {'type': 'custom', 'request': {'handler': 'noop'}, 'maxRetries': 0}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.post(url + '/api/jobs', json=body, timeout=30)
        times.append(time.perf_counter() - started)
        if response.status_code != 201:
            raise BenchError(f'POST /api/jobs: {response.status_code} {response.text[:300]}')
    return times


def time_health(url, seconds, stop=None):
    """/health round trips, one every 10 ms, for ``seconds`` (or until ``stop``)."""
    session = requests.Session()
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        started = time.perf_counter()
        session.get(url + '/health', timeout=30)
        times.append(time.perf_counter() - started)
        time.sleep(0.01)
    return times


def list_everything(url, rounds, sizes):
    """GET /api/jobs with no limit ``rounds`` times, counting the bytes.

    Plain HTTP/1.0 on a socket, read into one buffer: decoding a chunked body
    in Python would hold this process's GIL and slow the /health timer that
    runs beside it, which would be charged to the engine.
    """
    host, port = url.rsplit('/', 1)[-1].split(':')
    buffer = bytearray(1 << 20)
    for _ in range(rounds):
        started = time.perf_counter()
        size = 0
        with socket.create_connection((host, int(port)), timeout=120) as sock:
            sock.sendall(b'GET /api/jobs HTTP/1.0\r\nHost: bench\r\n\r\n')
            while received := sock.recv_into(buffer):
                size += received
        sizes.append((size, time.perf_counter() - started))


def health_while_listing(url, listers, rounds):
    sizes = []
    threads = [threading.Thread(target=list_everything, args=(url, rounds, sizes))
               for _ in range(listers)]
    done = threading.Event()
    for thread in threads:
        thread.start()
    watcher = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
    watcher.start()
    times = time_health(url, 600, stop=done)
    watcher.join()
    return times, sizes


def state_change_ms(data_dir, samples=40):
    """Median cost of a move (``Engine._move``) on the preloaded store, in process."""
    settings = podengine.load_settings({'DATA_DIR': str(data_dir), 'ENV_FILE': os.devnull,
                                        'CUSTOM_HANDLERS': PLUGIN})
    engine = podengine.Engine(settings)
    engine.open()
    try:
        jobs = [job for job in engine.jobs.values() if job['status'] != podengine.COMPLETED]
        times = []
        for sample in range(samples):
            job = jobs[sample * len(jobs) // samples]
            if isinstance(job, podengine.ArchivedJob):  # as a manual retry does
                job = engine.jobs[job['id']] = job.load()
            move = next(name for name, (leaves, _) in podengine.MOVES.items()
                        if job['status'] in leaves)
            started = time.perf_counter()
            assert engine._move(job, move, 'state change (benchmark)')
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000
    finally:
        engine.stop(5)


def measure(size, work_dir, options):
    data_dir = Path(work_dir) / f'data-{size}'
    started = time.perf_counter()
    preload(data_dir, size)
    print(f'  ({size} jobs preloaded in {time.perf_counter() - started:.1f}s, '
          f'{disk_mb(data_dir):.0f} MB on disk)', flush=True)
    proc, url, restart = start_engine(data_dir, work_dir)
    try:
        rss_started, _ = memory_mb(proc)
        submits = time_submits(url, options.submits)
        idle = time_health(url, options.health_seconds)
        during, listings = health_while_listing(url, options.listers, options.rounds)
        rss, peak = memory_mb(proc)
    finally:
        stop_engine(proc)
    return {'size': size, 'restart': restart, 'rss_started': rss_started, 'rss': rss,
            'peak': peak, 'submit_p50': percentile(submits, 0.5),
            'submit_p99': percentile(submits, 0.99), 'health_idle': percentile(idle, 0.99),
            'health_listing': percentile(during, 0.99), 'listings': listings,
            'change': state_change_ms(data_dir)}


def disk_mb(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob('*') if path.is_file()) / 1e6


# Report ######################################################################

def report(rows):
    print(f'{"jobs":>7} {"restart":>8} {"RSS":>7} {"peak":>7} {"submit p50":>11} '
          f'{"p99":>8} {"change":>8} {"/health p99 idle":>17} {"listing":>8}')
    for row in rows:
        print(f'{row["size"]:>7} {row["restart"]:>7.2f}s {row["rss"]:>5.0f}MB '
              f'{row["peak"]:>5.0f}MB {row["submit_p50"]:>8.2f} ms {row["submit_p99"]:>5.2f} ms '
              f'{row["change"]:>5.2f} ms {row["health_idle"]:>14.2f} ms '
              f'{row["health_listing"]:>5.2f} ms')
    for row in rows:
        size, seconds = max(row['listings'])
        print(f'  listing all {row["size"]} jobs: {size / 1e6:.0f} MB in {seconds:.2f}s '
              f'({len(row["listings"])} listings)')
    base, top = rows[0], rows[-1]
    print(f'ratio submit p99 {top["size"]} / {base["size"]}: '
          f'{top["submit_p99"] / base["submit_p99"]:.2f} (target <= 2, and p99 <= 25 ms: '
          f'{top["submit_p99"]:.2f} ms)')
    print(f'ratio state change {top["size"]} / {base["size"]}: '
          f'{top["change"] / base["change"]:.2f}')
    print(f'restart with {top["size"]}: {top["restart"]:.2f}s (target <= 5 s; '
          f'{base["size"]}: {base["restart"]:.2f}s)')
    print(f'RSS with {top["size"]}: {top["rss"]:.0f} MB, peak {top["peak"]:.0f} MB '
          f'(target <= 600 MB; {base["size"]}: {base["rss"]:.0f} MB)')
    print(f'/health p99 while listing {top["size"]}: {top["health_listing"]:.2f} ms '
          f'(target <= 50 ms; idle: {top["health_idle"]:.2f} ms)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, a few seconds')
    parser.add_argument('--sizes', type=int, nargs='+')
    options = parser.parse_args()
    options.sizes = options.sizes or ([500, 3000] if options.quick else [1000, 100_000])
    options.submits = 100 if options.quick else 1000
    options.health_seconds = 1 if options.quick else 5
    options.listers, options.rounds = (1, 2) if options.quick else (2, 3)
    with tempfile.TemporaryDirectory() as work_dir:
        engine_process.write_noop_plugin(work_dir, PLUGIN)
        sys.path.insert(0, work_dir)
        try:
            rows = [measure(size, work_dir, options) for size in options.sizes]
        except BenchError as exc:
            print(f'store_scale: {exc}', file=sys.stderr)
            return 1
    report(rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
