"""Workers as Dataflow runs them: Beam's portable runner, workers in processes of their own.

The EXTERNAL worker pool runs in an environment without any BIGTABLE_* or REDIS_* variable
(as a Dataflow worker knows nothing of the launcher's shell): the Bigtable target, the Redis
settings and the input paths reach the workers only with the job. The table must equal,
cell for cell, the one the in-process runner builds.
"""
import os
import subprocess
import sys
import time

import pytest

from beam_ingest.ops.emulator import free_port
from beam_ingest.pipeline.progress import ProgressCache, RedisSettings
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_environment() -> dict:
    """The launcher's environment minus everything that names a target; the venv's python first
    on PATH (the pool starts workers as plain `python`) and the package on PYTHONPATH (on
    Dataflow it comes staged with the job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGTABLE_", "REDIS_"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT
    return env


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("pool") / "worker_pool.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=worker_environment(), cwd=str(tmp_path_factory.mktemp("cwd")),
                            stdout=log, stderr=subprocess.STDOUT)
    import socket
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"worker pool did not start (see {log.name})")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("portable") / "data"),
                    SyntheticSpec(chunks=(4, 4, 2), svs_per_chunk=30, seed=41))


def test_worker_environment_names_no_target():
    env = worker_environment()
    assert not [k for k in env if k.startswith(("BIGTABLE_", "REDIS_"))]


def _done_chunks(graph_id, redis, identity_layer="2"):
    cache = ProgressCache(redis, graph_id, None)
    return cache._redis().scard(cache._key("done", identity_layer))


@pytest.mark.parametrize("environment", ["EXTERNAL", "LOOPBACK"])
def test_portable_runner_builds_the_same_table(dataset, graph_id, worker_pool, with_redis, environment):
    clean = graph_id + "-inproc"
    run_ingest(dataset["config"], clean)
    args = ["--runner=PortableRunner", "--job_endpoint=embed", f"--environment_type={environment}"]
    if environment == "EXTERNAL":
        args.append(f"--environment_config={worker_pool}")
    _, counters, plan = run_ingest(dataset["config"], graph_id, *args)
    assert counters["completion_proven"] == 1
    assert cells_of(graph_id) == cells_of(clean)
    check_against_reference(dataset["config"], graph_id, plan.layout)
    # the workers marked their chunks done in the launcher's Redis, which they only know from the job
    assert _done_chunks(graph_id, RedisSettings.from_env()) == plan.layout.chunk_count(2)


def test_a_worker_that_cannot_reach_the_target_names_it(monkeypatch):
    from beam_ingest.store import row_writer, targets
    monkeypatch.setattr(row_writer, "INITIAL_BACKOFF_S", 0.01)
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    writer = row_writer.RowWriter(targets.Target("proj-a", "inst-b", dead), "graph", 1_700_000_000_000,
                                max_attempts=2, max_inflight=1, timeout_s=5)
    writer.write([(b"row", [("0", b"q", b"v")])])
    with pytest.raises(row_writer.WriteError, match=rf"to emulator {dead} \(project proj-a, instance inst-b\)"):
        writer.drain()
    writer.close()


def test_segmentation_input_on_the_worker_pool(tmp_path, graph_id, worker_pool):
    """--from_segmentation on workers of their own: the reader and the chunk parts (with their
    zstd coder) cross the process boundary; table and files equal the in-process run's."""
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    from test_segmentation import check_outputs
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=21))
    run_ingest(info["config"], graph_id + "-inproc", "--from_segmentation")
    edges = info["config"].rsplit("/", 1)[0] + "/edges"
    before = {name: open(os.path.join(edges, name), "rb").read() for name in sorted(os.listdir(edges))}
    _, counters, plan = run_ingest(info["config"], graph_id, "--from_segmentation", "--if_exists=recreate",
                                   "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                                   f"--environment_config={worker_pool}")
    assert counters["completion_proven"] == 1 and counters["segmentation_chunks"] == plan.layout.chunk_count(2)
    assert cells_of(graph_id) == cells_of(graph_id + "-inproc")
    assert {name: open(os.path.join(edges, name), "rb").read() for name in sorted(os.listdir(edges))} == before
    check_outputs(info, plan)
