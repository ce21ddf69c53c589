"""A Dask cluster that cannot run the job, or stops running it, never leaves the launcher
waiting: real `dask scheduler` and `dask worker` processes, some of them broken on purpose."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from beam_ingest.launch import dask_cluster
from beam_ingest.ops.emulator import free_port
from beam_ingest.launch.ingest import main
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TS
from test_dask import DASK, _wait_for_workers, stop
from test_portable import worker_environment
from test_runs import cells_of
from test_progress import slow_writes  # noqa: F401 - a fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def cluster(folder, workers=(), scheduler=True):
    """A scheduler and workers, each `(name, environment, extra args)`; yields the address and
    the worker processes by name."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs, logs = {}, []

    def start(name, args, env):
        log = open(folder / f"{name}.log", "w")
        logs.append(log)
        procs[name] = subprocess.Popen([DASK, *args], env=env, cwd=str(folder), stdout=log, stderr=subprocess.STDOUT)

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
              worker_environment())
        for name, env, extra in workers:
            start(name, ["worker", address, "--nthreads", "1", "--no-dashboard", "--name", name,
                         "--memory-limit", "4GiB", "--local-directory", str(folder), *extra], env)
        yield address, procs
    finally:
        for proc in procs.values():  # a frozen worker must run again to end
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        stop(procs.values(), logs)


def without_package():
    env = worker_environment()
    env.pop("PYTHONPATH")
    return env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("dask-cluster") / "data"),
                    SyntheticSpec(chunks=(3, 3, 2), svs_per_chunk=20, seed=47))


def ingest(dataset, graph_id, address, *extra):
    return main(["--config", dataset["config"], "--graph_id", graph_id, f"--ingest_timestamp={TS}",
                 "--runner=DaskRunner", f"--dask_client_address={address}", *extra])


def test_a_scheduler_without_workers_is_named_within_a_minute(dataset, graph_id, tmp_path, capsys):
    with cluster(tmp_path) as (address, _):
        start = time.monotonic()
        assert ingest(dataset, graph_id, address) == 2
        elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --dask_client_address={address}: the Dask scheduler has no worker (waited 30 s); "
                   f"start some with `dask worker {address}`"]
    assert elapsed < 60


def test_a_worker_that_cannot_import_the_package_is_named(dataset, graph_id, tmp_path, capsys):
    with cluster(tmp_path, [("bare", without_package(), [])]) as (address, _):
        _wait_for_workers(address, 1, [])
        start = time.monotonic()
        assert ingest(dataset, graph_id, address) == 2
        elapsed = time.monotonic() - start
    [line] = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(rf"error: --dask_client_address={address}: Dask worker tcp://127\.0\.0\.1:\d+: cannot import "
                        r"beam_ingest \(ModuleNotFoundError: No module named 'beam_ingest'\); every worker needs this "
                        r"package, beam_ingest \S+ \(docs/scale\.md\)", line), line
    assert elapsed < 60
    from helpers import open_table
    assert not open_table(graph_id).exists()  # refused before anything was created


def _freeze_first_worker_once_the_job_starts(monkeypatch, frozen: list):
    """After the launcher set the liveness deadlines (the job starts next), SIGSTOP a worker."""
    real = dask_cluster.set_liveness

    def set_then_freeze(address, *args, **kwargs):
        got = real(address, *args, **kwargs)
        from distributed import Client
        with Client(address, timeout=10) as client:
            pids = client.run(os.getpid)
        worker, pid = sorted(pids.items())[0]
        os.kill(pid, signal.SIGSTOP)
        frozen.append((worker, pid))
        return got
    monkeypatch.setattr(dask_cluster, "set_liveness", set_then_freeze)


def test_a_frozen_worker_is_dropped_and_the_run_goes_on_exact(dataset, graph_id, tmp_path, monkeypatch):
    assert main(["--config", dataset["config"], "--graph_id", graph_id + "-clean", f"--ingest_timestamp={TS}"]) == 0
    monkeypatch.setattr(dask_cluster, "WORKER_TTL_S", 5.0)
    frozen = []
    _freeze_first_worker_once_the_job_starts(monkeypatch, frozen)
    env = worker_environment()
    with cluster(tmp_path, [("w0", env, ["--no-nanny"]), ("w1", env, ["--no-nanny"])]) as (address, procs):
        _wait_for_workers(address, 2, list(procs.values()))
        start = time.monotonic()
        assert ingest(dataset, graph_id, address) == 0
        elapsed = time.monotonic() - start
    assert frozen
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    assert elapsed < 240


def test_with_its_only_worker_frozen_the_run_fails_naming_it(dataset, graph_id, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dask_cluster, "WORKER_TTL_S", 5.0)
    monkeypatch.setattr(dask_cluster, "NO_WORKERS_S", 10.0)
    frozen = []
    _freeze_first_worker_once_the_job_starts(monkeypatch, frozen)
    with cluster(tmp_path, [("only", worker_environment(), ["--no-nanny"])]) as (address, procs):
        _wait_for_workers(address, 1, list(procs.values()))
        start = time.monotonic()
        assert ingest(dataset, graph_id, address) == 1
        elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert frozen and elapsed < 120
    worker = frozen[0][0]
    assert re.search(r"^error: Attempted to run task .* but timed out after 10\.00 s waiting without any running "
                     rf"workers\. \(the Dask scheduler dropped worker\(s\) {re.escape(worker)}: no heartbeat for 5 s\)$",
                     err, re.MULTILINE), err


def test_a_scheduler_lost_mid_run_ends_in_one_error_line(dataset, graph_id, tmp_path, slow_writes):
    """The launcher's stderr: our INFO lines, then one `error:` line; not distributed's
    tracebacks and reconnection messages before it."""
    env = dict(os.environ)
    with cluster(tmp_path, [("w0", worker_environment(), [])]) as (address, procs):
        _wait_for_workers(address, 1, list(procs.values()))
        run = subprocess.Popen([sys.executable, os.path.join(ROOT, "pipeline.py"), "--config", dataset["config"],
                                "--graph_id", graph_id, "--runner=DaskRunner", f"--dask_client_address={address}",
                                "--write_batch_rows=10"], env=env, stderr=subprocess.PIPE, text=True)
        lines = []
        for line in run.stderr:
            lines.append(line.rstrip("\n"))
            if "layer 2: started" in line:
                procs["scheduler"].kill()
                break
        lines += run.stderr.read().splitlines()
        assert run.wait(300) == 1
    assert any("layer 2: started" in line for line in lines), lines
    assert not any("Traceback" in line or line.startswith(" ") for line in lines), "\n".join(lines)
    lines = [line for line in lines if line.strip()]
    (first_error,) = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert all(" INFO " in line or " WARNING " in line for line in lines[:first_error]), "\n".join(lines)
    assert lines[first_error + 1:] == [lines[-1]] and "is partially written" in lines[-1], "\n".join(lines)
