"""Does a batch keep the GPU and the rate limits busy? (issue 7, part 3)

Runs the real engine against the fake ComfyUI (one image at a time, a fixed
time per image) and the fake Printify (a fixed latency per call and scaled
rate limits), makes one batch job of N designs x 2 product types, and
compares its wall time with the physical bound: the larger of the time the
GPU actually worked (summed from the fake's history) and the time the rate
limit allows for the requests the job needed, each plus the platform calls
that must still wait for an answer after it (see ``physical_bound``).

    .venv/bin/python bench/pipeline.py [--quick] [--designs N]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / 'tests'), str(ROOT)]

import engine_process  # noqa: E402
from engine_process import engine_env, stop_engine  # noqa: E402
from fakes import FakeService  # noqa: E402

TOKEN = 'test-printify-token'
PRINT_SIZE = [1024, 1229]  # the print area equals the drawn size: no resize cost
# After the last image, its products still need upload -> create -> publish ->
# read back, each call waiting for the one before (the product types go side
# by side): nothing can overlap that chain with the GPU.
CALLS_AFTER_LAST_IMAGE = 4


def start_engine(tmp, fakes, limit):
    comfy, printify = fakes
    env = engine_env(DATA_DIR=tmp / 'data', COMFYUI_URL=comfy.url, COMFYUI_STEPS=5,
                     MIN_SOURCE_PX=1000, PRINTIFY_API_URL=printify.url,
                     PRINTIFY_API_TOKEN=TOKEN, PRINTIFY_RATE_LIMIT=limit,
                     PRINTIFY_CATALOG_RATE_LIMIT=limit,
                     METRICS_INTERVAL_MS=60000)
    try:
        return engine_process.start_engine(env, tmp / 'engine.log')
    except engine_process.EngineError as exc:
        raise SystemExit(str(exc)) from None


def run_case(name, designs, image_seconds, limit_count, window, latency):
    """One scenario; returns (wall seconds, bound seconds, requests, 429s)."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        comfy = FakeService('comfyui', tmp / 'comfy.log', step_seconds=image_seconds / 5,
                            image_size=PRINT_SIZE).start()
        printify = FakeService('printify', tmp / 'printify.log', front_size=PRINT_SIZE,
                               shops=[{'id': 1001, 'title': 'Etsy', 'sales_channel': 'etsy'}],
                               sync_seconds=0, rate_global_per_min=limit_count,
                               rate_catalog_per_min=limit_count,
                               rate_window_scale=window / 60,
                               slow={'path_contains': '/v1/', 'seconds': latency}).start()
        proc, url = start_engine(tmp, (comfy, printify), f'{limit_count}/{window}')
        try:
            wall, sent, limited = measure(url, printify, designs)
            bound = physical_bound(gpu_busy_seconds(comfy), sent, limit_count, window, latency)
            return wall, bound, sent, limited
        finally:
            stop_engine(proc, grace=30)
            comfy.stop()
            printify.stop()


def gpu_busy_seconds(comfy):
    """How long the fake GPU actually worked: execution_start to the end,
    summed over every prompt in its history."""
    history = requests.get(f'{comfy.url}/history', params={'max_items': 10000},
                           timeout=10).json()
    busy = 0.0
    for entry in history.values():
        stamps = {kind: data['timestamp'] for kind, data in entry['status']['messages']}
        busy += (stamps['execution_success'] - stamps['execution_start']) / 1000
    return busy


def physical_bound(gpu_busy, sent, limit_count, window, latency):
    """No engine can finish sooner: the GPU's work, then the calls that need
    the last image; or, as a sliding window lets request i go no sooner than
    floor(i / limit) windows after the first, those windows, then the last
    request's answer."""
    rate_bound = ((sent - 1) // limit_count) * window
    return max(gpu_busy + CALLS_AFTER_LAST_IMAGE * latency, rate_bound + latency)


def measure(url, printify, designs):
    """Run the batch; returns (wall seconds, Printify requests, 429s)."""
    items = [{'prompt': f'bench design {n}', 'productTypes': ['tshirt', 'hoodie']}
             for n in range(designs)]
    response = requests.post(f'{url}/api/generate/batch', timeout=10,
                             json={'items': items, 'maxRetries': 0})
    if response.status_code != 201:
        raise SystemExit(f'the batch was refused: {response.text}')
    job = response.json()['jobId']
    deadline = time.monotonic() + 600
    while True:
        state = requests.get(f'{url}/api/jobs/{job}', timeout=10).json()
        if state['status'] in ('completed', 'failed'):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f'the job did not finish: {state["status"]}')
        time.sleep(0.1)
    if state['status'] != 'completed':
        raise SystemExit(f'the job failed: {state["error"]}')
    wall = (state['completedAt'] - state['startedAt']) / 1000
    upstream = requests.get(f'{printify.url}/_fake/state', timeout=10).json()
    return wall, upstream['total_requests'], upstream['rate_limited']


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='a small run for the test suite')
    parser.add_argument('--designs', type=int, default=60)
    args = parser.parse_args()
    designs = 8 if args.quick else args.designs
    cases = [  # name, seconds per image, requests per window, window seconds, latency
        ('GPU-bound', 0.25, 200, 2.0, 0.02),
        ('rate-bound', 0.02, 20, 1.0 if args.quick else 2.0, 0.02),
    ]
    print(f'{designs} designs x 2 product types, ComfyUI (fake GPU) + Printify (fake)')
    print(f'{"case":<11} {"wall":>8} {"bound":>8} {"ratio":>6} {"requests":>9} {"429s":>5}')
    for name, image_seconds, limit_count, window, latency in cases:
        wall, bound, sent, limited = run_case(name, designs, image_seconds, limit_count,
                                              window, latency)
        print(f'{name:<11} {wall:>7.2f}s {bound:>7.2f}s {wall / bound:>6.3f} {sent:>9} '
              f'{limited:>5}')
    print('target: wall <= 1.05 x bound, zero 429s')


if __name__ == '__main__':
    main()
