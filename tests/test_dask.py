"""Beam's DaskRunner on a real dask.distributed cluster: a scheduler and two worker processes
started with the `dask` command line, in an environment without any BIGTABLE_* or REDIS_*
variable (the job carries the target, as everywhere). Tables equal, cell for cell, those of
the in-process runner; exit 0 only with the completion mark."""
import os
import subprocess
import sys
import time

import pytest

from beam_ingest.errors import ConfigError
from beam_ingest.ops.emulator import free_port
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest
from test_progress import slow_writes  # noqa: F401 - a fixture
from test_end_to_end import check_against_reference
from test_portable import worker_environment
from test_runs import cells_of

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
WORKERS = 2


def _wait_for_workers(address: str, n: int, procs, timeout_s: float = 90):
    from distributed import Client
    deadline = time.time() + timeout_s
    while True:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a dask process exited while the cluster started")
        try:
            with Client(address, timeout=5) as client:
                client.wait_for_workers(n, timeout=max(1.0, deadline - time.time()))
                return
        except (OSError, TimeoutError):
            if time.time() > deadline:
                raise


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and WORKERS single-threaded `dask worker` processes; the address."""
    folder = tmp_path_factory.mktemp("dask")
    env = worker_environment()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs, procs = [], []

    def start(name, args):
        log = open(folder / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([DASK, *args], env=env, cwd=str(folder), stdout=log,
                                      stderr=subprocess.STDOUT))

    start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"])
    for i in range(WORKERS):
        start(f"worker{i}", ["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                             "--name", f"w{i}", "--memory-limit", "4GiB", "--local-directory", str(folder)])
    try:
        _wait_for_workers(address, WORKERS, procs)
        yield address
    finally:
        stop(reversed(procs), logs)


def stop(procs, logs):
    """Terminate the cluster's processes (killed after 15 s) and close their logs."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    for log in logs:
        log.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("dask") / "data"),
                    SyntheticSpec(chunks=(4, 4, 2), svs_per_chunk=30, seed=43))


def dask_args(address):
    return ["--runner=DaskRunner", f"--dask_client_address={address}"]


def in_process_layers(layout):
    from beam_ingest.pipeline.stages import chunk_totals
    return chunk_totals(layout)


def test_cluster_workers_know_no_target(dask_cluster):
    from distributed import Client
    with Client(dask_cluster, timeout=10) as client:
        envs = client.run(lambda: {k: v for k, v in os.environ.items() if k.startswith(("BIGTABLE_", "REDIS_"))})
        pids = client.run(os.getpid)
    assert len(envs) == WORKERS and not any(envs.values())
    assert os.getpid() not in pids.values() and len(set(pids.values())) == WORKERS


@pytest.mark.parametrize("pcg_version", [2, 3])
def test_dask_cluster_builds_the_same_table(dataset, graph_id, dask_cluster, pcg_version):
    clean = graph_id + "-inproc"
    _, in_process, _ = run_ingest(dataset["config"], clean, f"--pcg_version={pcg_version}")
    # the sink drains after every element there: each chunk's rows in many small requests
    _, counters, plan = run_ingest(dataset["config"], graph_id, f"--pcg_version={pcg_version}",
                                   "--write_batch_rows=7", "--max_inflight_writes=4", *dask_args(dask_cluster))
    assert counters["no_metrics"] == 1  # so the completion mark in the table is the only proof
    assert counters["mark"]["layers"] == {str(k): v for k, v in in_process_layers(plan.layout).items()}
    assert counters["proven_svs"] == in_process["proven_svs"] > 0
    assert cells_of(graph_id) == cells_of(clean)
    check_against_reference(dataset["config"], graph_id, plan.layout)


def _files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_raw_input_on_the_dask_cluster(tmp_path, graph_id, dask_cluster):
    """--raw on the cluster: the sharded reads and the EDGES/COMPONENTS files it writes on the
    way happen in the workers; table and files equal the in-process run's."""
    info = generate(str(tmp_path / "raw"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=25, seed=44, raw=True,
                                                         data_version=3))
    run_ingest(info["config"], graph_id + "-inproc", "--raw")
    root = str(tmp_path / "raw")
    before = {kind: _files(os.path.join(root, kind)) for kind in ("edges", "components")}
    for kind in before:  # the cluster run must write them again
        for name in before[kind]:
            os.remove(os.path.join(root, kind, name))
    _, counters, plan = run_ingest(info["config"], graph_id, "--raw", *dask_args(dask_cluster))
    assert cells_of(graph_id) == cells_of(graph_id + "-inproc")
    assert {kind: _files(os.path.join(root, kind)) for kind in before} == before
    check_against_reference(info["config"], graph_id, plan.layout)


def test_segmentation_input_on_the_dask_cluster(tmp_path, graph_id, dask_cluster):
    """--from_segmentation on the cluster: chunk parts cross between worker processes; the
    table, WATERSHED, EDGES and COMPONENTS equal the in-process run's."""
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    from test_segmentation import check_outputs
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=22))
    run_ingest(info["config"], graph_id + "-inproc", "--from_segmentation")
    _, counters, plan = run_ingest(info["config"], graph_id, "--from_segmentation", "--if_exists=recreate",
                                   *dask_args(dask_cluster))
    assert cells_of(graph_id) == cells_of(graph_id + "-inproc")
    check_outputs(info, plan)


def test_checkpoint_and_restart_on_the_dask_cluster(dataset, graph_id, dask_cluster, tmp_path):
    """The checkpoint markers are written on the cluster too, so a restart at a layer works."""
    ckpt = "file://" + str(tmp_path / "ckpt")
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=4",
                   *dask_args(dask_cluster))
    assert (tmp_path / "ckpt" / "layer3" / "_COMPLETE").exists()
    run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--start_layer=4", "--if_exists=continue",
               *dask_args(dask_cluster))
    assert cells_of(graph_id) == cells_of(clean)


def test_runner_names_and_dask_options_are_checked_before_anything_is_created(dataset, graph_id, capsys):
    import pipeline
    from beam_ingest.launch.runners import known_runner_names
    from helpers import open_table
    assert "DaskRunner" in known_runner_names()
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--runner=NoSuchRunner"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --runner=NoSuchRunner: unknown runner") and "DaskRunner" in err
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--runner=DaskRunner",
                          "--dask_client_adress=tcp://127.0.0.1:1"]) == 2
    assert "did you mean --dask_client_address?" in capsys.readouterr().err
    # a scheduler nobody runs: named, within --dask_connection_timeout, before the table exists
    dead = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--runner=DaskRunner",
                          f"--dask_client_address={dead}", "--dask_connection_timeout=3"]) == 2
    assert time.monotonic() - start < 15
    assert capsys.readouterr().err.startswith(f"error: --dask_client_address={dead}: cannot reach the Dask "
                                              "scheduler there")
    assert not open_table(graph_id).exists()


def test_every_option_of_every_runner_beam_ships_is_accepted():
    from beam_ingest.launch.options import parse_argv
    known = parse_argv(["--config=x", "--graph_id=g", "--runner=DaskRunner", "--dask_client_address=tcp://h:1",
                        "--dask_connection_timeout=5", "--dask_scheduler_file=/tmp/s.json", "--dask_client_name=n",
                        "--dask_connection_limit=64", "--dask_npartitions=8", "--flink_master=h:8081",
                        "--flink_version=1.19", "--spark_master_url=spark://h:7077", "--prism_location=/x",
                        "--job_endpoint=h:1"])
    assert known.address == "tcp://h:1" and known.npartitions == 8
    with pytest.raises(ConfigError, match="--dask_npartition: unknown option"):
        parse_argv(["--config=x", "--graph_id=g", "--dask_npartition=8"])


def test_without_dask_a_dask_option_says_what_to_install():
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"
            "from beam_ingest.launch.options import parse_argv\n"
            "from beam_ingest.errors import ConfigError\n"
            "try:\n    parse_argv(['--config=x', '--graph_id=g', '--dask_client_address=tcp://h:1'])\n"
            "except ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))
    assert "--dask_client_address: a DaskRunner option, and dask is not installed here" in out.stdout, out.stderr


def test_l2cache_on_the_dask_cluster(tmp_path, graph_id, dask_cluster):
    """--l2cache_table on the cluster: the cache rows go through their own sink and proof."""
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    from test_l2cache import cache_cells
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=23))
    run_ingest(info["config"], graph_id + "-inproc", "--from_segmentation", f"--l2cache_table={graph_id[:36]}-l2in")
    _, counters, _ = run_ingest(info["config"], graph_id, "--from_segmentation", f"--l2cache_table={graph_id[:36]}-l2",
                                "--if_exists=recreate", "--write_batch_rows=7", "--max_inflight_writes=4",
                                *dask_args(dask_cluster))
    assert counters["mark"]["l2cache_rows"] > 0
    assert cache_cells(f"{graph_id[:36]}-l2")[0] == cache_cells(f"{graph_id[:36]}-l2in")[0]


def test_progress_on_the_dask_cluster(dataset, graph_id, dask_cluster, slow_writes, caplog):
    """The workers report through the scheduler's events: layer 2 is seen part-way, every layer ends."""
    import logging

    from test_progress import check_layer2_moves, progress_lines
    caplog.set_level(logging.INFO, logger="beam_ingest.pipeline.progress")
    _, _, plan = run_ingest(dataset["config"], graph_id, "--write_batch_rows=20", *dask_args(dask_cluster))
    seen = progress_lines(caplog)
    check_layer2_moves(seen, plan.layout.chunk_count(2))
    assert seen["roots"][-1][:3] == (256, 256, "done")


def test_ocdbt_copy_on_the_dask_cluster(tmp_path, graph_id, dask_cluster):
    """Two worker processes write one OCDBT copy, no coordinator: it equals WATERSHED voxel
    for voxel, opened as PyChunkedGraph 3.x opens it."""
    import numpy as np

    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    from test_ocdbt import the_copy, watershed_voxels
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=23, voxel_offset=(0, 0, 0)))
    run_ingest(info["config"], graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt",
               "--write_batch_rows=50", *dask_args(dask_cluster))
    watershed = f"file://{tmp_path}/data/watershed"
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))
