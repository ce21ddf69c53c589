"""The package a user installs: a wheel, in a fresh virtual environment outside the checkout."""
import ast
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_names():
    with open(os.path.join(ROOT, "requirements.txt")) as fh:
        return {re.split(r"[\[=<>]", line.strip())[0].lower().replace("_", "-")
                for line in fh if line.strip() and not line.startswith("#")}


def test_every_module_the_package_imports_is_pinned():
    """Each third-party module imported anywhere in beam_ingest/ comes from a pinned requirement."""
    found = set()
    for base, _, names in os.walk(os.path.join(ROOT, "beam_ingest")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(base, name)) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found |= {alias.name.split(".")[0] for alias in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    providers = importlib.metadata.packages_distributions()
    pinned = requirement_names()
    missing = {}
    for module in sorted(found):
        if module in sys.stdlib_module_names or module in ("beam_ingest", "__future__"):
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"module {module} is imported but installed by no distribution"
        if not dists & pinned and not any(d.startswith("apache-beam") for d in dists):
            missing[module] = sorted(dists)
    assert not missing, f"imported but not pinned in requirements.txt: {missing}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed with its pinned requirements into a new
    virtual environment in a temporary folder (uv: seconds, where pip takes minutes)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), ROOT], check=True,
                   capture_output=True, text=True, cwd=str(out))
    wheel = next(str(out / n) for n in os.listdir(out) if n.endswith(".whl"))
    venv = out / "venv"
    uv = os.path.join(os.path.dirname(sys.executable), "uv")
    subprocess.run([uv, "venv", "-q", str(venv), "--python", sys._base_executable], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), wheel], check=True)
    return venv


def run_outside(venv, cwd, *args, env=None, timeout=600):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(env or {})
    return subprocess.run(list(args), cwd=str(cwd), env=environment, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_runs_the_demo_and_the_ingest_outside_the_checkout(installed, tmp_path, bigtable_emulator):
    from beam_ingest import __version__
    work = tmp_path / "elsewhere"
    work.mkdir()
    bin_ = installed / "bin"
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "--version")
    assert done.stdout.strip() == f"beam-ingest {__version__}", done.stderr
    done = run_outside(installed, work, str(bin_ / "python"), "-m", "beam_ingest", "--version")
    assert done.stdout.strip() == f"beam-ingest {__version__}", done.stderr
    done = run_outside(installed, work, str(bin_ / "python"), "-c", "import beam_ingest; print(beam_ingest.__file__)")
    assert str(installed) in done.stdout and ROOT not in done.stdout  # the installed copy, not the checkout
    env = {"BIGTABLE_EMULATOR_HOST": bigtable_emulator.host}
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "demo", "--chunks", "2", "2", "1",
                       "--graph_id", "wheel-demo", env=env)
    assert done.returncode == 0 and "the chain of SV" in done.stdout, done.stdout + done.stderr
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "ingest", "--config",
                       str(work / "demo_data" / "config.yml"), "--graph_id", "wheel-ingest", "--pcg_version=3", env=env)
    assert done.returncode == 0 and "SVs " in done.stdout, done.stdout + done.stderr
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "verify", "--config",
                       str(work / "demo_data" / "config.yml"), "--graph_id", "wheel-ingest", env=env)
    assert done.returncode == 0 and "OK: the table matches" in done.stdout, done.stdout + done.stderr
