"""bench/store_scale.py still runs: in a subprocess, in its quick mode."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
