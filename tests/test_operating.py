"""Operating an ingest: the Redis progress cache, status and flush commands."""
import logging
import os

import pytest
import redis

from beam_ingest.cli import main as cli
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("ops") / "data"), SyntheticSpec(chunks=(5, 3, 2), svs_per_chunk=20))


def test_progress_is_recorded_and_status_prints_the_table(dataset, graph_id, with_redis, capsys):
    _, _, plan = run_ingest(dataset["config"], graph_id)
    capsys.readouterr()
    assert cli(["status", "--graph_id", graph_id]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    layout = plan.layout
    expected = [f"{layer:<8}: {n} / {n}" for layer, n in
                [(layer, layout.chunk_count(layer)) for layer in range(2, layout.layer_count + 1)]]
    assert lines[:-1] == expected + ["roots   : 256 / 256"]
    assert lines[-1].startswith("table   : complete: every chunk proven written")
    assert lines[0] == "2       : 30 / 30"


def test_status_counts_only_chunks_whose_rows_landed(dataset, graph_id, with_redis, capsys):
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=4")
    capsys.readouterr()
    cli(["status", "--graph_id", graph_id])
    *lines, table_line = capsys.readouterr().out.strip().splitlines()
    assert table_line.startswith("table   : NOT complete")
    status = dict(line.split(":") for line in lines)
    assert status["2       "].strip() == "30 / 30" and status["3       "].strip() == "6 / 6"
    assert status["4       "].strip() == "0 / 2" and status["roots   "].strip() == "0 / 256"


def test_flush_one_graph_then_everything(dataset, graph_id, with_redis, capsys):
    run_ingest(dataset["config"], graph_id + "-a", "--skip_writes")
    run_ingest(dataset["config"], graph_id + "-b", "--skip_writes")
    assert cli(["flush-redis", "--graph_id", graph_id + "-a"]) == 0
    assert cli(["status", "--graph_id", graph_id + "-a"]) == 2
    assert "no progress recorded" in capsys.readouterr().err
    assert cli(["status", "--graph_id", graph_id + "-b"]) == 0
    client = redis.Redis(host="127.0.0.1", port=int(with_redis["REDIS_PORT"]), password="testpw")
    client.set("unrelated", 1)
    assert cli(["flush-redis"]) == 0
    assert client.dbsize() == 0


def test_redis_down_does_not_fail_the_ingest(dataset, graph_id, monkeypatch, caplog, capsys):
    from beam_ingest.ops.emulator import free_port
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(free_port()))  # nothing listens there
    with caplog.at_level(logging.WARNING):
        _, counters, _ = run_ingest(dataset["config"], graph_id)
    assert counters["rows_written"] > 0
    assert "progress cache (Redis" in caplog.text and "the ingest goes on" in caplog.text
    assert cli(["status", "--graph_id", graph_id]) == 1
    assert "unavailable" in capsys.readouterr().err


def test_status_without_redis_or_bigtable_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_HOST", raising=False)
    monkeypatch.delenv("BIGTABLE_EMULATOR_HOST", raising=False)
    assert cli(["status", "--graph_id", "g"]) == 2
    assert "status needs the Redis progress cache" in capsys.readouterr().err


def test_marks_made_while_redis_was_away_are_sent_later(with_redis, monkeypatch):
    from beam_ingest.pipeline.progress import ProgressCache, RedisSettings
    settings = RedisSettings.from_env()
    cache = ProgressCache(settings, "away")
    assert cache.start({2: 3})
    good_client = cache._redis()
    cache._client = RedisSettings("127.0.0.1", 1).client()  # a dead address
    cache.mark_done(2, [(0, 0, 0)])
    cache._client, cache._skip_until = good_client, 0.0  # Redis is back
    cache.mark_done(2, [(1, 0, 0)])
    assert cache.status() == {"2": (2, 3)}


def test_marks_kept_during_an_outage_are_sent_by_the_teardown_flush(with_redis):
    """A worker's last marks, made while Redis was away, go out in its teardown's flush."""
    from beam_ingest.pipeline.progress import ProgressCache, RedisSettings
    settings = RedisSettings.from_env()
    cache = ProgressCache(settings, "teardown")
    assert cache.start({2: 4, 3: 1})
    good_client = cache._redis()
    cache._client = RedisSettings("127.0.0.1", 1).client()  # a dead address
    cache.mark_done(2, [(0, 0, 0), (1, 0, 0)])
    cache.mark_done(3, [(0, 0, 0)])
    cache._client = good_client  # back, but still within the back-off: only the flush sends
    reader = ProgressCache(settings, "teardown")
    assert reader.status() == {"2": (0, 4), "3": (0, 1)}
    cache.flush_pending()
    assert reader.status() == {"2": (2, 4), "3": (1, 1)}


def test_test_run_builds_the_centre_chunks_into_its_own_table(dataset, graph_id, capsys):
    import numpy as np
    from helpers import open_table
    from beam_ingest.store.reader import read_all
    from reference import Reference
    _, counters, plan = run_ingest(dataset["config"], graph_id, "--test")
    layout = plan.layout
    assert plan.graph_id == graph_id + "-test" and not open_table(graph_id).exists()
    coords = layout.test_coords()
    assert coords == [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1)]  # 5x3x2: centre layer-3 chunk (1, 1, 0)
    out = capsys.readouterr().out
    assert all(f"chunk {c}:" in out and "active)" in out for c in coords)
    rows = read_all(open_table(graph_id + "-test"))
    ids = [int(k) for k in rows if k[:1].isdigit()]
    layers = layout.layer_of(np.array(ids, np.uint64))
    assert set(layers.tolist()) == {1, 2, 3}  # no higher layers, no roots
    sv_coords = {tuple(c) for c in layout.coords_of(np.array(ids, np.uint64)[layers == 1], 1).tolist()}
    assert sv_coords == set(coords)
    ref = Reference(dataset["config"])
    ref_svs = {sv for sv in ref.svs if ref.coord(sv) in set(coords)}
    assert {i for i, layer in zip(ids, layers) if layer == 1} == ref_svs
    assert counters["layer2_chunks"] == 4 and counters["layer3_chunks"] == 1 and "roots_us" not in counters


def test_resume_skips_layer2_chunks_that_are_done_and_checkpointed(dataset, graph_id, with_redis, tmp_path):
    from test_runs import cells_of
    run_ingest(dataset["config"], graph_id + "-clean")
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=3")
    # one done chunk lost its checkpoint: it must be rebuilt, the other 29 are read back
    (ckpt / "layer2" / "0_0_0.npz").unlink()
    _, counters, _ = run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--if_exists=continue",
                                timestamp=None)
    assert counters["layer2_chunks"] == 1
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    import json
    assert json.loads((ckpt / "layer2" / "_COMPLETE").read_text())["files"] == 30


def test_both_demos_run_one_after_the_other_in_one_folder(bigtable_emulator, graph_id, tmp_path, monkeypatch,
                                                           capsys):
    """The README's demo, then its segmentation variant, from the same working folder: each
    writes its own dataset folder (the segmentation one's WATERSHED output would otherwise land
    on the first demo's watershed volume and be refused), ingests it and prints a root chain."""
    monkeypatch.chdir(tmp_path)
    assert cli(["demo", "--graph_id", f"{graph_id}-a", "--chunks", "2", "2", "1"]) == 0
    first = capsys.readouterr().out
    assert cli(["demo", "--segmentation", "--graph_id", f"{graph_id}-b", "--chunks", "2", "2", "1"]) == 0
    second = capsys.readouterr().out
    assert "under demo_data" in first and "under demo_segmentation" in second
    for out in (first, second):
        assert "up to its root:" in out and "layer  2 " in out
    assert (tmp_path / "demo_segmentation" / "watershed" / "info").exists()


def test_the_demo_never_touches_the_configured_bigtable(bigtable_emulator, graph_id, tmp_path, monkeypatch,
                                                        capsys):
    """With BIGTABLE_EMULATOR_HOST set (here: the session's), the demo still writes into an
    emulator of its own, says that it stops it, and leaves the environment as it was."""
    from helpers import open_table
    from beam_ingest.store import admin
    monkeypatch.chdir(tmp_path)
    before = os.environ["BIGTABLE_EMULATOR_HOST"]
    assert cli(["demo", "--graph_id", graph_id, "--chunks", "2", "2", "1"]) == 0
    out = capsys.readouterr().out
    assert "started a Bigtable emulator for the demo at" in out and "its tables are gone" in out
    assert out.rstrip().endswith("stopped the demo's Bigtable emulator (its tables went with it)")
    assert os.environ["BIGTABLE_EMULATOR_HOST"] == before
    assert not admin.table_exists(open_table(graph_id))


def test_the_demo_refuses_to_replace_a_table_it_did_not_write(bigtable_emulator, dataset, graph_id, tmp_path,
                                                              monkeypatch, capsys):
    """--use_configured_bigtable: someone's table of the same name is refused (exit 2, intact);
    the demo's own table of the same dataset is replaced on a second run."""
    from test_runs import cells_of
    monkeypatch.chdir(tmp_path)
    run_ingest(dataset["config"], graph_id)
    before = cells_of(graph_id)
    assert cli(["demo", "--graph_id", graph_id, "--chunks", "2", "2", "1", "--use_configured_bigtable"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: table {graph_id} exists on emulator {os.environ['BIGTABLE_EMULATOR_HOST']} (project "
                   "emulator, instance emulator) and was not written by this demo: the demo never deletes a table "
                   "it did not create; pass --graph_id with another name, or delete the table yourself")
    assert cells_of(graph_id) == before
    mine = graph_id + "-d"
    for _ in range(2):
        assert cli(["demo", "--graph_id", mine, "--chunks", "2", "2", "1", "--use_configured_bigtable"]) == 0
    assert "up to its root:" in capsys.readouterr().out


def test_a_failed_run_with_a_checkpoint_names_the_layer_to_restart_at(dataset, graph_id, tmp_path, capsys):
    """The error says which --start_layer the checkpoint allows; the command it gives then
    finishes the table (exit 0)."""
    import pipeline
    ckpt = tmp_path / "ckpt"
    argv = ["--config", dataset["config"], "--graph_id", graph_id, f"--checkpoint_dir={ckpt}"]
    assert pipeline.main(argv + ["--fail_at_layer=4"]) == 1
    err = capsys.readouterr().err
    assert ("The checkpoint holds layers 2..3: add --start_layer 4 (with the same --checkpoint_dir and "
            "--if_exists=continue) to restart at layer 4.") in err
    assert pipeline.main(argv + ["--start_layer", "4", "--if_exists=continue"]) == 0
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id + "-b",
                          f"--checkpoint_dir={tmp_path}/b", "--fail_at_layer=3"]) == 1
    assert "The checkpoint holds layer 2: add --start_layer 3" in capsys.readouterr().err
    # failing in layer 2: no layer is checkpointed whole, so no --start_layer is offered
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id + "-c",
                          f"--checkpoint_dir={tmp_path}/c", "--fail_at_layer=2"]) == 1
    err = capsys.readouterr().err
    assert "--start_layer" not in err and "continue reads back the layer-2 chunks already acknowledged" in err


def test_inspect_and_status_say_what_an_empty_or_partial_table_is(dataset, graph_id, capsys):
    """Empty: one error line, exit 1 (inspect) / the state line (status). Partial: the counts,
    then one line saying it is not complete; never a blank line and exit 0 alone."""
    from helpers import open_table
    empty = graph_id + "-e"
    open_table(empty).create()
    assert cli(["inspect", "--graph_id", empty, "--summary"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (
        f"error: table {empty!r} is empty: created, but no ingest wrote into it (its launcher stopped before the "
        "first row); rerun the ingest with --if_exists=recreate")
    assert cli(["status", "--graph_id", empty]) == 0
    assert capsys.readouterr().out.startswith("table   : EMPTY: created, but no ingest wrote into it")
    assert cli(["verify", "--config", dataset["config"], "--graph_id", empty]) == 1
    assert capsys.readouterr().out.startswith(f"MISMATCH: table {empty!r} is empty: created, but no ingest wrote")

    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=3")
    capsys.readouterr()
    assert cli(["inspect", "--graph_id", graph_id, "--summary"]) == 0
    *counts, last = capsys.readouterr().out.strip().splitlines()
    assert counts and all(line.startswith("layer ") for line in counts)
    assert last.startswith("table   : NOT complete (no completion mark")


def test_flush_of_one_graph_leaves_a_graph_with_glob_characters_alone(redis_server, with_redis, capsys):
    """Keys are matched with the id's glob characters escaped: `a*` never flushes `ab`."""
    from beam_ingest.pipeline.progress import ProgressCache, RedisSettings
    settings = RedisSettings.from_env()
    for graph in ("ab", "a*"):
        assert ProgressCache(settings, graph, "id").start({2: 4}) is True
    ProgressCache(settings, "a*").flush()
    assert ProgressCache(settings, "ab").status() == {"2": (0, 4)}
    assert ProgressCache(settings, "a*").status() is None


def test_an_interrupt_anywhere_in_a_watch_refresh_ends_it_quietly(dataset, graph_id, with_redis, monkeypatch,
                                                                   capsys):
    run_ingest(dataset["config"], graph_id, "--skip_writes")
    import beam_ingest.cli.status as cli_module
    reads = []
    real = cli_module.table_completion

    def interrupted_on_the_second_read(graph):
        reads.append(graph)
        if len(reads) == 2:  # Ctrl-C while a refresh reads the table, not while it sleeps
            raise KeyboardInterrupt
        return real(graph)

    monkeypatch.setattr(cli_module, "table_completion", interrupted_on_the_second_read)
    assert cli(["status", "--graph_id", graph_id, "--watch", "0.01"]) == 0
    assert len(reads) == 2 and "2       : 30 / 30" in capsys.readouterr().out
