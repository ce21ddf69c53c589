"""The smallest pipelines showing what Beam 2.77's DaskRunner does differently from the
other runners (each case prints what the in-process runner gives and what Dask gives).

    python tools/dask_gaps.py tcp://127.0.0.1:8786     (a running dask scheduler; no argument: a LocalCluster)

Each DoFn appends what it sees to a file under a temp folder (all on one machine), so the
client can read back what ran on the workers."""
import json
import os
import sys
import tempfile

import apache_beam as beam
import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers --dask_* options)
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

OUT = tempfile.mkdtemp(prefix="dask-gaps-")


def record(name):
    def f(x):
        with open(os.path.join(OUT, name), "a") as fh:
            fh.write(json.dumps([x, os.getpid()]) + "\n")
        return x
    return f


def seen(name):
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return [], set()
    rows = [json.loads(line) for line in open(path)]
    os.remove(path)
    return sorted(r[0] for r in rows), {r[1] for r in rows}


class Tagged(beam.DoFn):
    def process(self, x):
        yield beam.pvalue.TaggedOutput("odd" if x % 2 else "even", x)


class FromFinishBundle(beam.DoFn):
    def process(self, x):
        yield x

    def finish_bundle(self):
        yield WindowedValue(-1, 0, [GlobalWindow()])


def case_tags(p, src):
    tags = src | "Tag" >> beam.ParDo(Tagged()).with_outputs("odd", "even")
    _ = tags.odd | "Odd" >> beam.Map(record("out"))


def case_finish_bundle(p, src):
    _ = src | "FB" >> beam.ParDo(FromFinishBundle()) | "Out" >> beam.Map(record("out"))


def case_side_input(p, src):
    side = p | "Side" >> beam.Create([10]) | "SideRun" >> beam.Map(record("upstream"))
    used = src | "UseSide" >> beam.Map(lambda x, s: x + s, beam.pvalue.AsSingleton(side))
    # the side input's upstream also feeds the main output, as a layer's proof does in the ingest
    _ = (used, side) | beam.Flatten() | "Out" >> beam.Map(record("out"))


def case_two_leaves(p, src):
    _ = src | "FirstLeaf" >> beam.Map(record("out"))  # not consumed by the last transform
    _ = src | "LastLeaf" >> beam.Map(lambda x: x * 100) | "LastOut" >> beam.Map(record("out"))


CASES = {"odd tag only (with_outputs)": case_tags, "finish_bundle output": case_finish_bundle,
         "side input (AsSingleton)": case_side_input, "two leaves": case_two_leaves}


def run(case, runner_args):
    p = beam.Pipeline(options=PipelineOptions(runner_args))
    src = p | "Src" >> beam.Create([1, 2, 3, 4])
    case(p, src)
    result = p.run()
    result.wait_until_finish()
    try:
        metrics = f"{len(result.metrics().query()['counters'])} counters"
    except NotImplementedError as exc:
        metrics = f"NotImplementedError({exc})"
    out, pids = seen("out")
    upstream = len(seen("upstream")[0])
    return out, pids, upstream, metrics


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else ""
    dask = ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"] + (
        [f"--dask_client_address={address}"] if address else [])
    print(f"client pid {os.getpid()}")
    for name, case in CASES.items():
        ref = run(case, ["--runner=FnApiRunner"])
        got = run(case, dask)
        print(f"{name}:\n  FnApiRunner: output {ref[0]}\n  DaskRunner:  output {got[0]} (worker pids {sorted(got[1])})"
              + ("" if ref[0] == got[0] else "  <-- DIFFERENT"))
        if case is case_side_input:
            print(f"  side input's upstream ran: FnApiRunner {ref[2]}x, DaskRunner {got[2]}x (DaskRunner: once in the job, again inside each consuming task)")
    print(f"metrics(): FnApiRunner {ref[3]}; DaskRunner {got[3]}")
