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
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / 'bench' / 'pipeline.py'), '--quick'],
                          capture_output=True, text=True, timeout=180, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(('GPU-bound', 'rate-bound'))}
    assert set(rows) == {'GPU-bound', 'rate-bound'}
    for row in rows.values():
        assert row[-1] == '0'  # no 429s
        assert float(row[3]) < 3  # wall within 3x the physical bound even at this size
