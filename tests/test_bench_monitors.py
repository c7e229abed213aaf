"""bench/monitors.py still runs: in a subprocess, in its quick mode."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MS = r'\d+\.\d ms'


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
        assert re.search(rf'^{row}\s+(ok|MISSED)$', out, re.M), f'{row}\n{out}'
    assert re.search(r'^clients at start\s+50/50\s+50$', out, re.M), out
    assert re.search(r'^clients at end\s+50/50\s+50$', out, re.M), out
    assert re.search(r'^clients dropped\s+0\s+0\s+ok$', out, re.M), out
    # Every client got every log event of the measured window.
    events = re.search(r'log events per client: (\d+)\.\.(\d+)', out)
    assert events and events.group(1) == events.group(2) != '0', out
    assert 'HTTP errors: 0' in out, out
