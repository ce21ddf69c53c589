"""The throttling benchmark command docs/performance.md shows, run as written."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_documented_throttling_benchmark_command_runs():
    """The quick throttling benchmark performance.md shows: both runs write the same rows, and
    the throttled one reports refusals and time backing off."""
    command = ".venv/bin/python benchmarks/bench_throttling.py --size 1e4"
    with open(os.path.join(ROOT, "docs", "performance.md")) as fh:
        assert command in fh.read()
    argv = command.split()
    argv[0] = sys.executable
    out = subprocess.run(argv + ["--data", os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench-throttling-data")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.startswith(("unthrottled ", "throttled ")) and line.split()[1][0].isdigit()}
    assert int(rows["throttled"][4]) > 0 and float(rows["throttled"][5]) > 0, out.stdout
    assert "throttled / unthrottled wall time:" in out.stdout
