"""Progress while a run runs: the launcher's per-layer lines advance as Bigtable acknowledges
chunks, and each layer's time is its own, on the in-process runner, on worker processes and
on a Dask cluster (no Redis anywhere). Writes are slowed by the strict front so a layer
lasts long enough to be watched."""
import dataclasses
import logging
import re

import pytest

from beam_ingest.pipeline import progress
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest

LINE = re.compile(r"^(layer \d+|roots|L2 cache): (\d+) / (\d+) chunks done(?: \((\d+)%\) after ([\d.]+) s| in ([\d.]+) s)$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("progress") / "data"),
                    SyntheticSpec(chunks=(4, 4, 2), svs_per_chunk=60, seed=61))


@pytest.fixture
def slow_writes(strict_front, monkeypatch):
    """Each MutateRows request waits up to 40 ms; a progress line every 0.1 s."""
    strict_front.set_faults(dataclasses.replace(strict_front.faults, latency_s=0.04))
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.1)
    monkeypatch.setattr(progress, "POLL_S", 0.05)
    return strict_front


def progress_lines(caplog):
    """Per label: [(done, total, kind, seconds)] in the order the launcher logged them."""
    seen = {}
    for record in caplog.records:
        if record.name != "beam_ingest.pipeline.progress":
            continue
        match = LINE.match(record.getMessage())
        if match:
            label, done, total, _, after, took = match.groups()
            seen.setdefault(label, []).append((int(done), int(total), "done" if took else "running",
                                               float(took or after)))
    return seen


def check_layer2_moves(seen, total):
    lines = seen["layer 2"]
    running = [done for done, _, kind, _ in lines if kind == "running"]
    assert any(0 < done < total for done in running), lines  # seen part-way, not only at the end
    assert running == sorted(running)
    done, got_total, kind, took = lines[-1]
    assert (done, got_total, kind) == (total, total, "done")
    # the layer's own time: at least as long as it was seen running
    assert took >= max(after for _, _, k, after in lines if k == "running") > 0


@pytest.mark.parametrize("runner", ["in_process", "multi_processing"])
def test_progress_advances_as_chunks_are_acknowledged(dataset, graph_id, slow_writes, caplog, runner):
    caplog.set_level(logging.INFO, logger="beam_ingest.pipeline.progress")
    extra = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"] if runner != "in_process" else []
    _, _, plan = run_ingest(dataset["config"], graph_id, "--write_batch_rows=20", "--max_inflight_writes=1", *extra)
    seen = progress_lines(caplog)
    check_layer2_moves(seen, plan.layout.chunk_count(2))
    for layer in range(3, plan.layout.layer_count + 1):  # every layer ends with its own line
        assert seen[f"layer {layer}"][-1][:3] == (plan.layout.chunk_count(layer),) * 2 + ("done",)
    assert seen["roots"][-1][:3] == (256, 256, "done")
    # each layer's own time: layer 2, most of the rows, takes longest (not "0.0 s" for all)
    assert seen["layer 2"][-1][3] > 0.5 and seen["layer 2"][-1][3] > seen["layer 3"][-1][3]


def test_a_runner_without_a_channel_says_so_once(dataset, graph_id, caplog):
    """Dataflow, Flink, Spark and portable runners: one line at the start says where progress is."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_ingest.launch.job import _progress_listener
    caplog.set_level(logging.INFO, logger="beam_ingest.launch.job")
    with _progress_listener(PipelineOptions(["--runner=FlinkRunner"]), None) as listener:
        assert listener is None
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert "FlinkRunner workers do not report to this launcher" in line and "REDIS_HOST" in line
