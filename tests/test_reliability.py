"""Exit 0 means a complete, exact table: the completion proof, run identity, one launcher per
graph, a kill between create and meta, Redis stalls, clean errors."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import pipeline
from beam_ingest.cli import main as cli
from beam_ingest.launch.config import load_config
from beam_ingest.launch.plan import layout_for
from beam_ingest.store import admin, cells, row_writer, table_state
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TS, TableStructure, state_rows, open_table, run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 4 x 3 x 2 chunks: 4 layers
    return generate(str(tmp_path_factory.mktemp("reliability") / "data"),
                    SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=25, seed=5))


@pytest.fixture(scope="module")
def clean_cells(dataset, bigtable_emulator):
    graph = "reliability-clean"
    run_ingest(dataset["config"], graph)
    return cells_of(graph)


def _layout(dataset):
    settings = load_config(dataset["config"])
    return layout_for(settings.graph_config, settings.data_source)[0]


def _mark(graph_id):
    return state_rows(graph_id).completion_mark()


def test_clean_run_writes_a_completion_mark_of_its_identity(dataset, graph_id):
    _, counters, plan = run_ingest(dataset["config"], graph_id)
    layout = plan.layout
    state = state_rows(graph_id).read()
    record = json.loads(state[table_state.RUN][0])
    mark = json.loads(state[table_state.COMPLETE][0])
    assert mark["identity"] == record["identity"] and mark["scope"] == "full"
    assert mark["layers"] == {**{str(layer): layout.chunk_count(layer) for layer in range(2, layout.layer_count + 1)},
                              "roots": 256}
    assert mark["rows"] == counters["rows_written"] and mark["svs"] == counters["layer2_svs"]
    assert counters["completion_proven"] == 1
    # the ingest's own cells carry the ingest timestamp; the claim is gone
    assert state[table_state.RUN][1] == TS and state[table_state.COMPLETE][1] == TS
    assert table_state.CLAIM not in state and table_state.CLAIM_BY not in state
    TableStructure(graph_id, layout)  # every cell of the table, meta row included, at the one timestamp


def test_completion_proof_names_the_chunk_whose_rows_were_not_acknowledged(dataset, graph_id, monkeypatch, capsys):
    """A sink double drops one chunk's counter row from its batch but reports success."""
    layout = _layout(dataset)
    lost = cells.counter_key(layout.chunk_id(2, 1, 0, 1))
    real_send = row_writer.RowWriter._send
    dropped = []

    def send(self, entries):
        keys = entries.keys.tolist()
        if lost in keys:  # that one row is neither written nor acknowledged, and no error is raised
            dropped.append(lost)
            entries = entries.take([i for i, k in enumerate(keys) if k != lost])
        return real_send(self, entries)

    monkeypatch.setattr(row_writer.RowWriter, "_send", send)
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--write_batch_rows=50",
                          f"--ingest_timestamp={TS}"])
    err = capsys.readouterr().err
    assert dropped and code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "layer 2: 1 of 24 chunks were not built and acknowledged" in errors[0], err
    assert "layer-2 chunk (1, 0, 1)" in errors[0], err
    assert f"Table '{graph_id}' is partially written" in err and "Traceback" not in err
    assert _mark(graph_id) is None
    # the same chunk's acknowledgement is missing from a rerun's point of view too: continue completes it
    monkeypatch.setattr(row_writer.RowWriter, "_send", real_send)
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--if_exists=continue"]) == 0
    assert _mark(graph_id) is not None


def test_failure_inside_the_pipeline_is_one_line_without_beams_traceback(dataset, graph_id):
    out = subprocess.run([PY, "pipeline.py", "--config", dataset["config"], "--graph_id", graph_id,
                          "--fail_at_layer=3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and "ERROR" not in out.stderr, out.stderr[-3000:]
    assert [line for line in lines if line.startswith("error: ")] == lines[-2:-1]
    assert "injected failure at layer 3" in lines[-2] and "is partially written" in lines[-1]
    verbose = subprocess.run([PY, "pipeline.py", "--config", dataset["config"], "--graph_id", graph_id + "-v",
                              "--fail_at_layer=3", "--verbose"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_stale_redis_and_checkpoint_after_the_table_was_deleted(dataset, graph_id, with_redis, tmp_path,
                                                                clean_cells):
    ckpt = f"file://{tmp_path}/ckpt"
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=3")
    assert list((tmp_path / "ckpt" / "acks" / "layer2").iterdir())  # every layer-2 chunk acknowledged there
    open_table(graph_id).delete()
    # Redis says layer 2 is done and the checkpoint has it: neither belongs to the new table
    _, counters, plan = run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--if_exists=continue")
    assert counters["layer2_chunks"] == plan.layout.chunk_count(2)  # all rebuilt
    assert cells_of(graph_id) == clean_cells
    check_against_reference(dataset["config"], graph_id, plan.layout)


def test_resume_rebuilds_only_chunks_not_acknowledged(dataset, graph_id, tmp_path, clean_cells):
    ckpt = f"file://{tmp_path}/ckpt"
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=3")
    # one bundle's acknowledgements lost: exactly those chunks are rebuilt, without Redis
    acks = sorted((tmp_path / "ckpt" / "acks" / "layer2").iterdir())
    lost = sum(len(json.loads(a.read_text())["coords"]) for a in acks[:1])
    acks[0].unlink()
    _, counters, _ = run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--if_exists=continue",
                                timestamp=None)
    assert counters["layer2_chunks"] == lost
    assert cells_of(graph_id) == clean_cells


def test_acknowledgements_of_many_bundles_are_merged_and_other_runs_ignored(tmp_path):
    """A run with many sink bundles leaves one acks file per bundle: a resume merges them all,
    and files another run left in the same folder count for nothing."""
    import numpy as np
    from beam_ingest.pipeline import checkpoint
    url = f"file://{tmp_path}/ckpt"
    bundles = [([(0, 0, 0), (1, 0, 0)], [[5, 1, 2, 3], [6, 1, 2, 3]]), ([(0, 1, 0)], [[7, 1, 2, 3]]),
               ([(1, 1, 0), (2, 1, 0), (0, 0, 1)], [[1, 0, 0, 1], [2, 0, 0, 2], [3, 0, 0, 3]])]
    for coords, counts in bundles:
        checkpoint.write_acks(url, "ours", coords, counts)
    checkpoint.write_acks(url, "another run", [(9, 9, 9)], [[1, 1, 1, 1]])
    checkpoint.write_acks(url, "ours", np.empty((0, 3)), np.empty((0, 4)))  # a bundle of no chunk
    coords, counts = checkpoint.acknowledged_layer2(url, "ours")
    got = sorted(zip(map(tuple, coords.tolist()), map(tuple, counts.tolist())))
    assert got == sorted((tuple(c), tuple(n)) for cs, ns in bundles for c, n in zip(cs, ns))


def test_checkpoint_of_another_graph_is_refused(dataset, graph_id, tmp_path, capsys):
    ckpt = f"file://{tmp_path}/ckpt"
    run_ingest(dataset["config"], graph_id + "-a", f"--checkpoint_dir={ckpt}")
    argv = ["--config", dataset["config"], "--checkpoint_dir", ckpt, "--start_layer=3", "--if_exists=continue"]
    # into a table that does not exist: refused before anything is created
    assert pipeline.main(argv + ["--graph_id", graph_id + "-b"]) == 2
    assert "--start_layer=3: table" in capsys.readouterr().err
    assert not open_table(graph_id + "-b").exists()
    # into another graph's (partial) table: the checkpoint's identity is not the table's
    with pytest.raises(Exception, match="injected failure at layer 2"):
        run_ingest(dataset["config"], graph_id + "-b", "--fail_at_layer=2")
    assert pipeline.main(argv + ["--graph_id", graph_id + "-b"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "layer2/_COMPLETE" in err
    # and the same graph after --if_exists=recreate: a new table, a new identity
    run_ingest(dataset["config"], graph_id + "-a", "--if_exists=recreate")
    assert pipeline.main(argv + ["--graph_id", graph_id + "-a"]) == 0  # complete already: nothing to do
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id + "-a", "--if_exists=recreate", "--fail_at_layer=4")
    assert pipeline.main(argv + ["--graph_id", graph_id + "-a"]) == 2
    assert "belongs to another run" in capsys.readouterr().err


def test_continue_into_a_complete_table_does_nothing(dataset, graph_id, capsys):
    run_ingest(dataset["config"], graph_id)
    before = cells_of(graph_id)
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--if_exists=continue"]) == 0
    assert "is complete already" in capsys.readouterr().out
    assert cells_of(graph_id) == before


def test_kill_between_create_and_meta(dataset, graph_id, clean_cells, capsys):
    args = ["--config", dataset["config"], "--graph_id", graph_id, f"--ingest_timestamp={TS}"]
    killed = subprocess.run([PY, "tests/launch_patched.py", "kill-before-meta", "--"] + args, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    rows = state_rows(graph_id)
    assert cells.META not in rows.read(cells.META_ROW) and table_state.CLAIM in rows.read()  # created, claimed
    assert pipeline.main(args) == 2
    assert "already exists; pass --if_exists=continue" in capsys.readouterr().err
    # the claim's process is gone: taken over at once; no meta and no rows: started afresh
    assert pipeline.main(args + ["--if_exists=continue"]) == 0
    assert cells_of(graph_id) == clean_cells


def _race(modes, args, tmp_path):
    folder = tmp_path / f"barrier-{time.time_ns()}"
    folder.mkdir()
    procs = [subprocess.Popen([PY, "tests/launch_patched.py", "barrier", str(folder), str(len(modes)), "--"]
                              + args + [f"--if_exists={mode}"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for mode in modes]
    return [(p.wait(300), p.stderr.read()) for p in procs]


@pytest.mark.parametrize("modes,existing", [
    (("fail", "fail"), False), (("continue", "continue"), False), (("fail", "recreate"), False),
    (("continue", "continue"), True), (("recreate", "recreate"), True), (("recreate", "continue"), True),
])
def test_exactly_one_of_two_concurrent_launchers_proceeds(dataset, graph_id, tmp_path, modes, existing, clean_cells):
    args = ["--config", dataset["config"], f"--ingest_timestamp={TS}"]
    for attempt in range(2):
        graph = f"{graph_id}-{attempt}"
        if existing:
            with pytest.raises(Exception, match="injected failure"):
                run_ingest(dataset["config"], graph, "--fail_at_layer=3")
        results = _race(modes, args + ["--graph_id", graph], tmp_path)
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        loser = next(err for code, err in results if code == 2)
        errors = [line for line in loser.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and ("another launcher" in errors[0] or "already exists" in errors[0]), loser
        assert _mark(graph) is not None
        assert cells_of(graph) == clean_cells


def test_status_after_a_redis_stall_shows_the_finished_ingest(dataset, graph_id, with_redis, capsys):
    pid = int(subprocess.run(["pgrep", "-f", f"redis-server 127.0.0.1:{with_redis['REDIS_PORT']}"],
                             capture_output=True, text=True).stdout.split()[0])
    os.kill(pid, signal.SIGSTOP)  # Redis hangs: every call times out
    timer = threading.Timer(4.0, os.kill, (pid, signal.SIGCONT))
    timer.start()
    try:
        _, _, plan = run_ingest(dataset["config"], graph_id)
    finally:
        timer.join()
        os.kill(pid, signal.SIGCONT)
    capsys.readouterr()
    assert cli(["status", "--graph_id", graph_id]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    layout = plan.layout
    assert lines[:-1] == [f"{layer:<8}: {layout.chunk_count(layer)} / {layout.chunk_count(layer)}"
                          for layer in range(2, layout.layer_count + 1)] + ["roots   : 256 / 256"]
    assert lines[-1].startswith("table   : complete")


def test_unreachable_bigtable_is_an_error_within_seconds(dataset, graph_id, monkeypatch, capsys):
    from beam_ingest.ops.emulator import free_port
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setattr(admin, "REACH_DEADLINE_S", 3.0)
    start = time.time()
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert time.time() - start < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unreachable while looking up table" in err[0], err
    assert admin.REACH_DEADLINE_S <= 30


def test_verify_reports_the_completion_mark(dataset, graph_id, capsys):
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=4")
    capsys.readouterr()
    assert cli(["verify", "--config", dataset["config"], "--graph_id", graph_id, "--sample", "3"]) == 1
    assert "completion: NOT complete" in capsys.readouterr().out
    run_ingest(dataset["config"], graph_id, "--if_exists=continue", timestamp=None)
    assert cli(["verify", "--config", dataset["config"], "--graph_id", graph_id, "--sample", "3"]) == 0
    assert "completion: complete" in capsys.readouterr().out


def test_claim_is_exclusive_and_stale_claims_are_taken_over(graph_id):
    table = open_table(graph_id)
    admin.create_table(table)
    meta = state_rows(graph_id)
    first, second = table_state.Claim(meta), table_state.Claim(meta)
    first.acquire()
    with pytest.raises(table_state.ClaimLost, match="being ingested by another launcher"):
        second.acquire()
    first._stop.set()  # its heartbeat stops, as if the launcher hung
    quick = table_state.Claim(meta, ttl_s=0.5)
    time.sleep(1.0)
    quick.acquire()  # no heartbeat for longer than the ttl: taken over
    first.release()  # the old holder cannot remove the new claim
    assert meta.read()[table_state.CLAIM][0] == quick.nonce
    quick.release()
    assert table_state.CLAIM not in meta.read()


def test_recreate_takes_an_empty_table_it_could_have_created_instead_of_deleting_it(dataset, graph_id, caplog,
                                                                                     clean_cells):
    """An empty table with this run's families may be another launcher's, created a moment ago
    and not claimed yet: deleting it would let both launchers run. recreate writes into it
    (whoever claims it first runs); an empty table with other families is deleted as before."""
    import logging
    caplog.set_level(logging.INFO)
    admin.create_table(open_table(graph_id), pcg_version=2)
    run_ingest(dataset["config"], graph_id, "--if_exists=recreate")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"table {graph_id} is empty, with the families this run needs") for m in messages)
    assert not any(m.startswith("deleting existing table") for m in messages)
    assert cells_of(graph_id) == clean_cells
    other = graph_id + "-v3"
    admin.create_table(open_table(other), pcg_version=3)
    caplog.clear()
    run_ingest(dataset["config"], other, "--if_exists=recreate")
    assert any(r.getMessage().startswith(f"deleting existing table {other}") for r in caplog.records)
