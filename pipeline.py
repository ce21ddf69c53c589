#!/usr/bin/env python
"""Build a PyChunkedGraph table from precomputed EDGES/COMPONENTS with Apache Beam.

    python pipeline.py --config config.yml --graph_id my_graph

runs on the local runner (in process; add `--direct_running_mode=multi_processing
--direct_num_workers=N` for worker processes) and writes to the Bigtable instance named by
the config or the BIGTABLE_* environment variables (BIGTABLE_EMULATOR_HOST for an emulator).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions, TestOptions)

from beam_ingest.checkpoint import CheckpointError
from beam_ingest.config import ConfigError
from beam_ingest.inputs.precomputed import InputError, PrecomputedReader
from beam_ingest.inputs.raw import RawReader
from beam_ingest.launcher import plan_ingest, prepare_table
from beam_ingest.progress import ProgressCache, ProgressMonitor, RedisSettings, layer_totals
from beam_ingest.report import format_summary, ingest_counters
from beam_ingest.store.bigtable import TableError
from beam_ingest.transforms import BuildGraph, WriteToChunkedGraph

USER_ERRORS = (ConfigError, InputError, TableError, CheckpointError)


class IngestFailed(RuntimeError):
    """The pipeline failed after the table was created: says that it is partially written."""


def _flag(value) -> bool:
    """Boolean options accept `--flag`, `--flag=true` and `--flag=false` (Flex templates pass values)."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--config", help="Path or URL of the ingest config.yml (required).")
        parser.add_argument("--graph_id", help="Id of the graph = the Bigtable table id (required).")
        parser.add_argument(
            "--if_exists", default="fail", choices=("fail", "continue", "recreate"),
            help="What to do when the table exists: fail (default), continue an interrupted "
                 "ingest of the same graph (checked against its meta row; reuses its ingest "
                 "time so the result equals a clean run), or recreate (delete, start over).")
        parser.add_argument(
            "--ingest_timestamp", type=int, default=None,
            help="Timestamp of every cell, in ms since the epoch (default: now). Two runs with "
                 "the same value write identical cells.")
        parser.add_argument(
            "--skip_writes", type=_flag, nargs="?", const=True, default=False,
            help="Build the whole graph but drop the rows instead of writing them (no table is "
                 "touched); for benchmarks and dry checks of input.")
        parser.add_argument(
            "--write_batch_rows", type=int, default=2000,
            help="Rows per Bigtable mutate_rows call; bounds the in-flight mutations per worker.")
        parser.add_argument(
            "--max_inflight_writes", type=int, default=2,
            help="MutateRows requests in flight per worker (flow control; 1 = synchronous writes).")
        parser.add_argument(
            "--table_splits", type=int, default=0,
            help="Create the table pre-split into about this many tablets along the expected row-key "
                 "ranges (by layer and chunk slab), so a large ingest writes to many nodes from the start.")
        parser.add_argument(
            "--checkpoint_dir", default=None,
            help="Save what every chunk hands to its parent (its summary) under this URL (gs://, s3://, "
                 "file:// or a path), so that a failed run can restart at a layer with --start_layer.")
        parser.add_argument(
            "--start_layer", type=int, default=2,
            help="Start at this layer (3 .. layer count) from the checkpoint of the layer below, writing the "
                 "same cells a full run would; needs --checkpoint_dir and --if_exists=continue.")
        parser.add_argument(
            "--raw", type=_flag, nargs="?", const=True, default=False,
            help="Read the raw agglomeration (ingest_config.AGGLOMERATION: sharded chunked_rg/ and remap/ "
                 "files, DATA_VERSION 2/3/4) instead of EDGES/COMPONENTS, and write each chunk's EDGES and "
                 "COMPONENTS files on the way (unless those paths are unset).")
        parser.add_argument(
            "--test", type=_flag, nargs="?", const=True, default=False,
            help="A trial run: only the 8 layer-2 chunks at the centre of the dataset (the children of "
                 "the centre layer-3 chunk) and their layer-3 parent, into the table <graph_id>-test; "
                 "prints each chunk's edge counts first.")
        parser.add_argument(
            "--wait", type=_flag, nargs="?", const=True, default=None,
            help="Wait for the job to finish and print the summary (default: yes, except for a Dataflow "
                 "job launched from a Flex template, which must return at once).")
        parser.add_argument("--fail_at_layer", type=int, default=None, help="(testing) fail at this layer.")


def check_dataflow_options(options: PipelineOptions):
    """Clear errors for what a Dataflow job needs, before Beam's own checks."""
    gcp = options.view_as(GoogleCloudOptions)
    for name in ("project", "region", "temp_location"):
        if not getattr(gcp, name):
            raise ConfigError(f"--{name}: required with --runner=DataflowRunner")
    for name in ("temp_location", "staging_location"):
        value = getattr(gcp, name)
        if value and not value.startswith("gs://"):
            raise ConfigError(f"--{name}: must be a gs:// path for Dataflow, got {value!r}")
    setup = options.view_as(SetupOptions)
    if setup.setup_file and not os.path.exists(setup.setup_file):
        raise ConfigError(f"--setup_file: {setup.setup_file} does not exist")


def check_restart_options(opts, layout):
    if opts.start_layer == 2:
        return
    if not opts.checkpoint_dir:
        raise ConfigError("--start_layer: needs --checkpoint_dir (the checkpoint of the earlier run)")
    if not 3 <= opts.start_layer <= layout.layer_count:
        raise ConfigError(f"--start_layer: must be in 3..{layout.layer_count} for this graph, got {opts.start_layer}")
    if opts.if_exists != "continue" and not opts.skip_writes:
        raise ConfigError("--start_layer: continues an earlier run's table; pass --if_exists=continue")
    if opts.test:
        raise ConfigError("--start_layer: cannot be combined with --test")


def make_reader(plan, raw: bool):
    ds = plan.settings.data_source
    if raw:
        return RawReader(plan.settings.ingest.AGGLOMERATION, plan.layout, ds.DATA_VERSION, plan.resolution,
                         ds.EDGES, ds.COMPONENTS)
    return PrecomputedReader(ds.EDGES, ds.COMPONENTS)


def print_test_chunks(plan, coords, raw=False):
    """The per-chunk edge counts a `--test` run starts with (all and active, like the seed's)."""
    from beam_ingest.build.layer2 import build_layer2
    reader = make_reader(plan, raw)
    print(f"test run of {len(coords)} layer-2 chunks at the centre, into table {plan.graph_id}")
    for coord in coords:
        stats = build_layer2(reader.read(coord), plan.layout)[3]
        print(f"  chunk {coord}: {stats.edges} edges ({stats.active_edges} active), {stats.svs} SVs, "
              f"{stats.nodes} layer-2 nodes")


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return "dataflow" in str(runner).lower()


def run(argv=None):
    """Run the ingest; returns `(pipeline result, counters dict, plan)`.

    Counters are empty when the job was not waited for (a Dataflow template launch).
    """
    options = PipelineOptions(argv)
    opts = options.view_as(IngestOptions)
    if not opts.config:
        raise ConfigError("--config: required (path or URL of config.yml)")
    if not opts.graph_id:
        raise ConfigError("--graph_id: required (the table id of the graph)")
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "FnApiRunner"  # in process; no attempt to download the Prism runner
    dataflow = is_dataflow(options)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if dataflow:
        check_dataflow_options(options)
        options.view_as(SetupOptions).save_main_session = False  # DoFns live in the package

    graph_id = opts.graph_id + "-test" if opts.test else opts.graph_id
    plan = plan_ingest(opts.config, graph_id, raw=opts.raw)
    layout = plan.layout
    check_restart_options(opts, layout)
    coords = top_layer = None
    if opts.test:
        coords = layout.test_coords()
        top_layer = min(3, layout.layer_count)
        print_test_chunks(plan, coords, opts.raw)
    logging.info("graph %s: %d layers, %s layer-2 chunks (%d in all)", plan.graph_id, layout.layer_count,
                 "x".join(map(str, layout.n_chunks)), layout.chunk_count(2))
    if opts.skip_writes or dry_run:
        ingest_ms = opts.ingest_timestamp or int(time.time() * 1000)
        if not opts.skip_writes:
            from beam_ingest.store.bigtable import resolve_instance
            plan.project, plan.instance = resolve_instance(plan.project, plan.instance)
    else:
        ingest_ms = prepare_table(plan, opts.if_exists, opts.ingest_timestamp, opts.table_splits)

    redis = RedisSettings.from_env()
    totals = layer_totals(layout) if not opts.test else {2: len(coords), top_layer: 1}
    totals = {k: v for k, v in totals.items() if k == "roots" or k >= opts.start_layer}
    cache = ProgressCache(redis, plan.graph_id) if redis else None
    resuming = opts.if_exists == "continue" and opts.start_layer == 2 and not opts.test
    done_layer2 = set()
    if cache is not None and resuming and opts.checkpoint_dir:
        done_layer2 = cache.done_chunks(2)
    if cache is not None and not dry_run and cache.start(totals, reset=not resuming):
        logging.info("progress of %s recorded in Redis %s:%s (python -m beam_ingest status --graph_id %s)",
                     plan.graph_id, redis.host, redis.port, plan.graph_id)

    reader = make_reader(plan, opts.raw)
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | "BuildGraph" >> BuildGraph(layout, reader, coords=coords, fail_at_layer=opts.fail_at_layer,
                                      top_layer=top_layer, checkpoint_url=opts.checkpoint_dir,
                                      start_layer=opts.start_layer, done_layer2=done_layer2)
         | "WriteToBigtable" >> WriteToChunkedGraph(plan.project, plan.instance, plan.graph_id, ingest_ms,
                                                    skip_writes=opts.skip_writes,
                                                    batch_rows=opts.write_batch_rows,
                                                    max_inflight=opts.max_inflight_writes,
                                                    redis=redis))
    try:
        if dataflow:
            result = pipeline.run()
        else:
            with ProgressMonitor(plan.graph_id, totals, cache):
                result = pipeline.run()
                result.wait_until_finish()
    except Exception as exc:
        if opts.skip_writes or dry_run:
            raise
        raise IngestFailed(f"{exc}\nTable {plan.graph_id!r} is partially written. Fix the cause, then rerun with "
                           f"--if_exists=continue (same cells as a clean run) or --if_exists=recreate.") from exc
    wait = opts.wait
    if wait is None:
        wait = not (dataflow and os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE"))
    if not wait or dry_run:
        return result, {}, plan
    result.wait_until_finish()
    return result, ingest_counters(result), plan


def _causes(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        parser = argparse.ArgumentParser(
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Any Apache Beam pipeline option (--runner, --project, ...) is accepted too.")
        IngestOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    start = time.time()
    try:
        result, counters, plan = run(argv)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except IngestFailed as exc:
        cause = exc.__cause__
        user_error = next((e for e in _causes(cause) if isinstance(e, USER_ERRORS)), None)
        first = str(user_error) if user_error else str(cause).strip().splitlines()[-1]
        print(f"error: {first}\n{str(exc).splitlines()[-1]}", file=sys.stderr)
        return 2 if user_error else 1
    if counters:
        print(format_summary(counters, plan.layout.layer_count, time.time() - start))
    else:
        job = getattr(result, "job_id", None)
        print(f"submitted graph {plan.graph_id} ({plan.layout.layer_count} layers)"
              + (f" as Dataflow job {job()}" if callable(job) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
