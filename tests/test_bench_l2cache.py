"""The L2 cache benchmark commands docs/performance.md shows, run as written."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("command", [
    ".venv/bin/python benchmarks/bench_l2cache.py",
    ".venv/bin/python benchmarks/bench_l2cache.py --shape irregular --labels 30",
])
def test_documented_l2cache_benchmark_commands_run(command):
    with open(os.path.join(ROOT, "docs", "performance.md")) as fh:
        assert command + "\n" in fh.read()
    argv = command.split()
    argv[0] = sys.executable  # the venv's python, wherever the checkout lives
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for path in ("chunk_features", "pipeline path"):
        assert f"beyond edt, {path}: " in out.stdout, out.stdout
    assert "against a target of 15.0 ms" in out.stdout

