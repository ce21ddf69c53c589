"""The throttling benchmark commands docs/performance.md shows, run as written (with the
benchmark's dataset cache in a temporary folder)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bench-throttling-data"))


@pytest.mark.parametrize("command", [
    ".venv/bin/python benchmarks/bench_throttling.py",
    ".venv/bin/python benchmarks/bench_throttling.py --bursts 0",
    ".venv/bin/python benchmarks/bench_throttling.py --exhausted 0.05 --bursts 0",
    ".venv/bin/python benchmarks/bench_throttling.py --size 1e4",
])
def test_documented_throttling_benchmark_commands_run(command, data_dir):
    """Both runs write the same rows (the benchmark exits non-zero otherwise), and the
    throttled one reports refusals and time backing off."""
    with open(os.path.join(ROOT, "docs", "performance.md")) as fh:
        assert any(line.split("#")[0].strip() == command for line in fh), command
    argv = command.split()
    argv[0] = sys.executable
    out = subprocess.run(argv + ["--data", data_dir], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.startswith(("unthrottled ", "throttled ")) and line.split()[1][0].isdigit()}
    assert int(rows["throttled"][4]) > 0 and float(rows["throttled"][5]) > 0, out.stdout
    assert "throttled / unthrottled wall time:" in out.stdout
