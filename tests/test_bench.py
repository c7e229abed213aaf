"""The benchmarks in bench/ still run: each in a subprocess, in its quick mode."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_bench_quick():
    result = subprocess.run([sys.executable, str(ROOT / 'bench' / 'throughput.py'), '--quick'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r'jobs\s+seconds\s+jobs/s', out), out
    for name in ('in-process', 'HTTP', r'Huey \(SqliteHuey\)'):
        assert re.search(rf'^{name}\s+300\s+[\d.]+\s+\d+$', out, re.M), out
    assert re.search(r'^ratio in-process / Huey: \d+\.\d\d .*HTTP / Huey: \d+\.\d\d$', out,
                     re.M), out


def test_pipeline_bench_quick():
    """bench/pipeline.py --quick runs end to end and reports both cases."""
    done = subprocess.run([sys.executable, str(ROOT / 'bench' / 'pipeline.py'), '--quick'],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(('GPU-bound', 'rate-bound'))}
    assert set(rows) == {'GPU-bound', 'rate-bound'}
    for row in rows.values():
        assert row[-1] == '0'  # no 429s
        assert float(row[3]) < 3  # wall within 3x the physical bound even at this size


def test_store_scale_bench_quick():
    result = subprocess.run([sys.executable, str(ROOT / 'bench' / 'store_scale.py'), '--quick'],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = re.findall(r'^\s+(500|3000)\s+([\d.]+)s\s+(\d+)MB\s+(\d+)MB\s+([\d.]+) ms', out, re.M)
    assert [row[0] for row in rows] == ['500', '3000'], out
    assert re.search(r'^  listing all 3000 jobs: \d+ MB in [\d.]+s', out, re.M), out
    for name in ('submit p99', 'state change'):
        assert re.search(rf'^ratio {name} 3000 / 500: \d+\.\d\d', out, re.M), out
    for figure in ('restart with 3000', 'RSS with 3000', r'/health p99 while listing 3000'):
        assert re.search(rf'^{figure}: ', out, re.M), out


MS = r'\d+\.\d ms'  # as monitors.py prints its times


def test_monitors_bench_quick():
    result = subprocess.run([sys.executable, str(ROOT / 'bench' / 'monitors.py'), '--quick'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r'measured\s+target\s+baseline', out), out
    for row in (rf'HTTP GET p50\s+{MS}\s+{MS}', rf'event delivery p50\s+{MS}'):
        assert re.search(rf'^{row}$', out, re.M), f'{row}\n{out}'
    for row in (rf'HTTP GET p99\s+{MS}\s+<= 50 ms\s+{MS}',
                rf'event delivery p99\s+{MS}\s+<= 100 ms',
                r'engine RSS peak\s+\d+ MB\s+<= 300 MB\s+\d+ MB'):
        assert re.search(rf'^{row}\s+ok$', out, re.M), f'{row} missed its target\n{out}'
    assert re.search(r'^clients at start\s+50/50\s+50$', out, re.M), out
    assert re.search(r'^clients at end\s+50/50\s+50$', out, re.M), out
    assert re.search(r'^clients dropped\s+0\s+0\s+ok$', out, re.M), out
    # Every client got every log event of the measured window.
    events = re.search(r'log events per client: (\d+)\.\.(\d+)', out)
    assert events and events.group(1) == events.group(2) != '0', out
    assert 'HTTP errors: 0' in out, out


def test_http_bench_quick():
    """bench/http_load.py --quick: each hot path beside the bare stack, and
    every 201 still there after kill -9."""
    result = subprocess.run([sys.executable, str(ROOT / 'bench' / 'http_load.py'), '--quick'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for case in ('GET job', 'GET metrics', 'POST job'):
        assert re.search(rf'^{case}\s+bare\s+\d+\s+[\d.]+ ms\s+[\d.]+ ms$', out, re.M), out
        assert re.search(rf'^{case}\s+engine\s+\d+\s+[\d.]+ ms\s+[\d.]+ ms\s+\d+\.\d\d$', out,
                         re.M), out
        assert re.search(rf'^ratio {case} / bare: \d+\.\d\d \(target >= [\d.]+\)$', out,
                         re.M), out
    durable = re.search(r'^durable POST: (\d+) jobs got a 201, (\d+) stored, (\d+) after kill -9'
                        r'.*: (\d+\.\d\d) fsyncs a submit$', out, re.M)
    assert durable, out
    accepted, stored, restored, per_submit = durable.groups()
    assert int(accepted) > 1 and accepted == stored == restored  # the gevent client counts all
    assert float(per_submit) < 1, 'concurrent submits did not share fsyncs'
