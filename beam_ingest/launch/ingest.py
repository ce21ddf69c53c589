"""The ingest: build a PyChunkedGraph table with Apache Beam (`run(argv)`, `main(argv)`).

    python pipeline.py --config config.yml --graph_id my_graph
    beam-ingest ingest --config config.yml --graph_id my_graph      (installed package)

runs on the local runner (in process; add `--direct_running_mode=multi_processing
--direct_num_workers=N` for worker processes) and writes to the Bigtable instance named by
the config or the BIGTABLE_* environment variables (BIGTABLE_EMULATOR_HOST for an emulator).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions, TestOptions)

from beam_ingest.errors import ConfigError, IncompleteError, IngestFailed, UserError, WorkersLost, user_error_in
from beam_ingest.inputs.precomputed import PrecomputedReader
from beam_ingest.inputs.raw import RawReader
from beam_ingest.launch.credentials import require_google_credentials
from beam_ingest.launch.plan import check_paths_reach_workers, plan_ingest, prepare_table, probe_outputs
from beam_ingest.launch.options import IngestOptions, check_graph_id, check_l2cache_options, parse_argv
from beam_ingest.pipeline import stages
from beam_ingest.pipeline.progress import ProgressCache, ProgressMonitor, RedisSettings
from beam_ingest.ops.report import format_summary, ingest_counters
from beam_ingest.launch.runners import (check_runner, close_runner_client, dask_address, dask_connect_s,
                                        drops_finish_bundle_outputs, final_outputs, is_dask, needs_trial,
                                        runner_name, trial_run)
from beam_ingest.pipeline.build import BuildGraph, FileChunks, FromCheckpoint, FromInputs, VolumeChunks
from beam_ingest.pipeline.sink import SinkSpec

# The objects of the imports above (~230k) live as long as the process: moved out of the
# collector's reach, full collections (cloud-volume's import alone runs two) no longer walk
# them, 0.2 s of a run's CPU.
gc.freeze()

log = logging.getLogger(__name__)
DASK_TRIAL_TIMEOUT_S = 60.0  # after check_cluster saw workers import the package, a trial takes seconds


def check_dataflow_options(options: PipelineOptions):
    """Clear errors for what a Dataflow job needs, before Beam's own checks."""
    gcp = options.view_as(GoogleCloudOptions)
    for name in ("project", "region", "temp_location"):
        if not getattr(gcp, name):
            raise ConfigError(f"--{name}: required with --runner=DataflowRunner")
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    validator = PipelineOptionsValidator(options, None)
    for name in ("temp_location", "staging_location"):
        value = getattr(gcp, name)
        if value and not value.startswith("gs://"):
            raise ConfigError(f"--{name}: must be a gs:// path for Dataflow, got {value!r}")
        # Beam, given no valid gs:// path, creates a default bucket (network, minutes offline)
        errors = validator.validate_gcs_path(gcp, name) if value else []
        if errors:
            raise ConfigError(f"--{name}: {value!r} is not a valid gs://bucket/path ({errors[0]})")
    if not dry_run_of(options):  # a dry run stages nothing
        require_google_credentials("--temp_location", gcp.temp_location)
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
    if plan.segmentation is not None:
        from beam_ingest.inputs.volumes import SegmentationReader
        ic = plan.settings.ingest
        return SegmentationReader(plan.layout, ds.CV_MIP, ic.SUPERVOXELS, ds.WATERSHED, ds.EDGES, ds.COMPONENTS,
                                  objects=ic.OBJECTS, affinities=ic.AFFINITIES, sv_map=ic.SV_MAP,
                                  in_place=plan.segmentation["in_place"],
                                  fill_missing=plan.segmentation.get("fill_missing", False),
                                  with_voxels=plan.l2cache is not None)
    if raw:
        return RawReader(plan.settings.ingest.AGGLOMERATION, plan.layout, ds.DATA_VERSION, plan.resolution,
                         ds.EDGES, ds.COMPONENTS)
    return PrecomputedReader(ds.EDGES, ds.COMPONENTS)


def starting_point(plan, opts, coords, identity: str, resuming: bool):
    """Where the build starts, with what an earlier run left in the checkpoint (read here,
    before the job is built)."""
    from beam_ingest.pipeline import restart
    if opts.start_layer > 2:
        return FromCheckpoint(opts.start_layer, restart.restart_at(opts.checkpoint_dir, identity, opts.start_layer))
    saved = restart.NOTHING
    if resuming and opts.checkpoint_dir and plan.l2cache is None:  # the cache is written by layer 2: all of it again
        saved = restart.resume_layer2(opts.checkpoint_dir, identity, plan.layout)
    reader = make_reader(plan, opts.raw)
    layer2 = VolumeChunks(reader) if plan.segmentation is not None else FileChunks(reader)
    return FromInputs(layer2, coords, saved)


def cache_spec(plan):
    """The L2 cache's CacheSpec for the workers (None without --l2cache_table): the voxels come
    with each chunk from segmentation volumes, else from WATERSHED."""
    if plan.l2cache is None:
        return None
    from beam_ingest.l2cache.chunks import CacheSpec
    ds = plan.settings.data_source
    return CacheSpec(plan.l2cache["table"], tuple(float(r) for r in plan.resolution),
                     None if plan.segmentation is not None else ds.WATERSHED, int(ds.CV_MIP),
                     accept_mismatch=plan.l2cache_accept_mismatch)


def check_cache_voxels(plan, coords) -> None:
    """Precomputed and raw input: WATERSHED readable at the first chunk the run builds, before
    anything is created (the cache reads every chunk of it)."""
    if plan.l2cache is None or plan.segmentation is not None:
        return
    from beam_ingest.l2cache.chunks import WatershedVoxels
    ds = plan.settings.data_source
    first = tuple(coords[0]) if coords is not None else (0, 0, 0)
    WatershedVoxels(ds.WATERSHED, ds.CV_MIP, plan.layout).read(first)


def print_test_chunks(plan, coords, raw=False):
    """The per-chunk edge counts a `--test` run starts with (all and active, as the Redis/rq ingest printed them)."""
    from beam_ingest.hierarchy.layer2 import build_layer2
    print(f"test run of {len(coords)} layer-2 chunks at the centre, into table {plan.graph_id}")
    reader = make_reader(plan, raw)
    if plan.segmentation is not None:  # computed from the volumes here (read again by the run, which writes)
        chunks = reader.preview(coords)
    else:
        chunks = ((coord, reader.read(coord)) for coord in coords)
    for coord, inputs in chunks:
        stats = build_layer2(inputs, plan.layout)[3]
        print(f"  chunk {coord}: {stats.edges} edges ({stats.active_edges} active), {stats.svs} SVs, "
              f"{stats.nodes} layer-2 nodes")


def dry_run_of(options: PipelineOptions) -> bool:
    """`--dry_run`: Beam reads any value as "dry run" (it is a string option), so only
    true/false spellings are accepted, and false means false."""
    value = options.view_as(TestOptions).dry_run
    if value in (None, False):
        return False
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        options.view_as(TestOptions).dry_run = False  # Beam would take the string "false" as a dry run
        return False
    raise ConfigError(f"--dry_run: expected true or false, got {value!r}")


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return "dataflow" in str(runner).lower()


def run(argv=None):
    """Run the ingest; returns `(pipeline result, counters dict, plan)`.

    Counters are empty when the job was not waited for (a Dataflow template launch).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parse_argv(argv)  # unknown options and bad values stop here, before anything is created
    options = PipelineOptions(argv)
    opts = options.view_as(IngestOptions)
    if not opts.config:
        raise ConfigError("--config: required (path or URL of config.yml)")
    if not opts.graph_id:
        raise ConfigError("--graph_id: required (the table id of the graph)")
    check_graph_id(opts.graph_id, opts.test)
    check_l2cache_options(opts)
    if opts.checkpoint_dir:
        from beam_ingest.locations import check_output
        check_output("--checkpoint_dir", opts.checkpoint_dir)
    redis = RedisSettings.from_env()
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "FnApiRunner"  # in process; no attempt to download the Prism runner
    dataflow = is_dataflow(options)
    dry_run = dry_run_of(options)
    check_runner(options)
    dask_only = [a.split("=", 1)[0] for a in argv if a.startswith("--dask_")]
    if dask_only and not is_dask(options):
        raise ConfigError(f"{dask_only[0]}: applies to --runner=DaskRunner only (this run's runner is "
                          f"{runner_name(options)}); add --runner=DaskRunner or drop it")
    if dataflow:
        check_dataflow_options(options)
        options.view_as(SetupOptions).save_main_session = False  # DoFns live in the package

    graph_id = opts.graph_id + "-test" if opts.test else opts.graph_id
    if opts.raw and opts.from_segmentation:
        raise ConfigError("--raw and --from_segmentation: choose one input")
    if opts.fill_missing and not opts.from_segmentation:
        raise ConfigError("--fill_missing: applies to --from_segmentation only")
    plan = plan_ingest(opts.config, graph_id, raw=opts.raw, segmentation=opts.from_segmentation)
    if dataflow:
        check_paths_reach_workers(plan.settings, opts.raw, opts.from_segmentation, bool(opts.l2cache_table),
                                  opts.checkpoint_dir)
    if plan.segmentation is not None:
        plan.segmentation["fill_missing"] = bool(opts.fill_missing)
    if opts.l2cache_table:
        if opts.start_layer > 2:
            raise ConfigError("--start_layer: a restart above layer 2 cannot write the L2 cache (it is written by the "
                              "layer-2 stage); continue with --if_exists=continue instead, which rebuilds layer 2")
        plan.l2cache = {"table": opts.l2cache_table + ("-test" if opts.test else ""),
                        "cv_path": opts.l2cache_cv_path or ""}
        plan.l2cache_accept_mismatch = bool(opts.l2cache_accept_mismatch)
    layout = plan.layout
    check_restart_options(opts, layout)
    coords = top_layer = None
    if opts.test:
        coords = layout.test_coords()
        top_layer = min(3, layout.layer_count)
        print_test_chunks(plan, coords, opts.raw)
    logging.info("graph %s: %d layers, %s layer-2 chunks (%d in all)", plan.graph_id, layout.layer_count,
                 "x".join(map(str, layout.n_chunks)), layout.chunk_count(2))
    if not dry_run:  # a dry run writes nothing, not even a probe, and runs no job
        probe_outputs(plan, opts.raw, opts.checkpoint_dir)
        if needs_trial(options):
            address = dask_address(options)
            if address:  # a cluster of its own: workers that can run the job, liveness deadlines set
                from beam_ingest.launch.dask_cluster import check_cluster, set_liveness
                check_cluster(address, dask_connect_s(options))
                trial_run(options, timeout_s=DASK_TRIAL_TIMEOUT_S)
                set_liveness(address)
            else:
                trial_run(options)
    check_cache_voxels(plan, coords)
    state = None
    if opts.skip_writes or dry_run:
        ingest_ms = opts.ingest_timestamp if opts.ingest_timestamp is not None else int(time.time() * 1000)
        if not opts.skip_writes:
            from beam_ingest.store.bigtable import resolve_target
            plan.target = resolve_target(plan.project, plan.instance)
        from beam_ingest.store.table_state import RunRecord, run_inputs
        identity = RunRecord(plan.graph_id, ingest_ms, "none", run_inputs(
            plan.settings, opts.raw, opts.pcg_version, plan.segmentation, plan.l2cache)).identity
    else:
        cache_action = None
        if plan.l2cache:  # checked before the graph's table is created (l2cache/table.py)
            from beam_ingest.l2cache import table as l2cache_table
            from beam_ingest.store.bigtable import resolve_target
            cache_action = l2cache_table.check(resolve_target(plan.project, plan.instance), plan.l2cache["table"],
                                               plan.graph_id, opts.if_exists)
        state = prepare_table(plan, opts.if_exists, opts.ingest_timestamp, opts.table_splits, opts.raw,
                              restart_layer=opts.start_layer if opts.start_layer > 2 else None,
                              pcg_version=opts.pcg_version)
        ingest_ms, identity = plan.ingest_ms, state.record.identity
        if plan.l2cache and state.complete is not None and cache_action != l2cache_table.COMPLETE:
            log.info("table %s is complete but its L2 cache %s is not: building again (the graph's cells are "
                     "identical) to write the cache", plan.graph_id, plan.l2cache["table"])
            state.complete = None
        if plan.l2cache and state.complete is None:
            try:
                l2cache_table.prepare(plan.target, plan.l2cache["table"], plan.graph_id, plan.l2cache["cv_path"],
                                      ingest_ms, opts.if_exists, identity)
            except BaseException:
                state.claim.release()
                raise
    if plan.segmentation is not None and plan.segmentation["watershed_info"] is not None and not dry_run:
        from beam_ingest.inputs.volumes import create_watershed
        create_watershed(plan.settings.data_source.WATERSHED, plan.segmentation["watershed_info"])
    try:
        if state is not None and state.complete is not None:
            log.info("table %s is complete already (proven by an earlier run of this graph): nothing to do",
                     plan.graph_id)
            return None, {"already_complete": 1, **state.complete}, plan
        return _run_pipeline(options, opts, plan, layout, coords, top_layer, redis, ingest_ms, identity, state,
                             dataflow, dry_run)
    finally:
        if state is not None:
            state.claim.release()


def _run_pipeline(options, opts, plan, layout, coords, top_layer, redis, ingest_ms, identity, state, dataflow,
                  dry_run):
    totals = stages.chunk_totals(layout, opts.start_layer, coords if opts.test else None, top_layer,
                                 cache=plan.l2cache is not None)
    cache = ProgressCache(redis, plan.graph_id, identity) if redis else None
    resuming = state is not None and not state.fresh and opts.start_layer == 2 and not opts.test
    if cache is not None and not dry_run and cache.start(totals, reset=not resuming):
        logging.info("progress of %s recorded in Redis %s:%s (python -m beam_ingest status --graph_id %s)",
                     plan.graph_id, redis.host, redis.port, plan.graph_id)

    sink = SinkSpec(plan.target, plan.graph_id, ingest_ms, identity=identity,
                    skip_writes=opts.skip_writes or dry_run, batch_rows=opts.write_batch_rows,
                    max_inflight=opts.max_inflight_writes, redis=redis, checkpoint_url=opts.checkpoint_dir,
                    ack_each_element=drops_finish_bundle_outputs(options))
    start = starting_point(plan, opts, coords, identity, resuming)

    def build(progress_channel=None):
        pipeline = beam.Pipeline(options=options)
        _ = (pipeline
             | "BuildGraph" >> BuildGraph(layout, start, dataclasses.replace(sink, progress_channel=progress_channel),
                                          top_layer=top_layer, fail_at_layer=opts.fail_at_layer,
                                          checkpoint_url=opts.checkpoint_dir, pcg_version=opts.pcg_version,
                                          cache=cache_spec(plan)))
        return pipeline

    def partial():
        return _partial_advice(plan.graph_id, opts, identity, top_layer or layout.layer_count)

    if dry_run and not dataflow:
        # Only DataflowRunner knows --dry_run; any other runner would run the job. Build and
        # translate it (what a Dataflow dry run checks), run nothing.
        transforms = len(build().to_runner_api().components.transforms)
        return None, {"dry_run": 1, "transforms": transforms}, plan
    outputs = None  # the completion proof, where the runner hands it back
    try:
        if dataflow:
            if not dry_run:
                _say_where_progress_is(options, cache)
            result = build().run()
        else:
            with _progress_listener(options, cache) as listener:
                pipeline = build(listener.channel if listener is not None else None)
                with ProgressMonitor(totals, listener, cache):
                    result = pipeline.run()
                    try:
                        result.wait_until_finish()
                        outputs = final_outputs(result)
                    finally:
                        close_runner_client(result)
    except Exception as exc:
        if opts.skip_writes or dry_run:
            raise
        raise IngestFailed(f"{exc}\n{partial()}") from _with_dropped_workers(exc, options)
    wait = opts.wait
    if wait is None:
        wait = not (dataflow and os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE"))
    if dry_run:
        return result, {"dry_run": 1, "transforms": len(result.job.proto_pipeline.components.transforms)}, plan
    if not wait:
        return result, {}, plan
    if dataflow:
        result.wait_until_finish()
    counters = ingest_counters(result)
    if counters is None:  # a runner without metrics (DaskRunner): the completion mark is the proof
        marks = [m for m in outputs or [] if isinstance(m, dict) and m.get("identity") == identity]
        counters = {"no_metrics": 1, **({"mark": marks[0]} if marks else {})}
    try:
        check_completion(plan, counters, identity, state)
    except IncompleteError as exc:
        raise IngestFailed(f"{exc}\n{partial()}") from exc
    if cache is not None:
        cache.finish()
    return result, counters, plan


def _partial_advice(graph_id, opts, identity, top_layer) -> str:
    """What to do after a failed run: continue (from the layer the checkpoint allows), or start over."""
    advice = (f"Table {graph_id!r} is partially written. Fix the cause, then rerun with --if_exists=continue "
              "(same cells as a clean run) or --if_exists=recreate.")
    if not opts.checkpoint_dir or opts.test:
        return advice
    from beam_ingest.pipeline.restart import restartable_layer
    layer = restartable_layer(opts.checkpoint_dir, identity, top_layer)
    if layer is None or layer <= opts.start_layer:
        return advice + (" With the same --checkpoint_dir, continue reads back the layer-2 chunks already "
                         "acknowledged instead of rebuilding them.")
    held = "layer 2" if layer == 3 else f"layers 2..{layer - 1}"
    return advice + (f" The checkpoint holds {held}: add --start_layer {layer} (with the same "
                     f"--checkpoint_dir and --if_exists=continue) to restart at layer {layer}.")


@contextlib.contextmanager
def _progress_listener(options, cache):
    """The channel this runner's workers report progress on (None where they cannot: said once)."""
    from beam_ingest.pipeline.progress import ProgressListener
    from beam_ingest.launch.runners import dask_address, progress_kind
    kind = progress_kind(options)
    if kind is None:
        _say_where_progress_is(options, cache)
        yield None
        return
    with ProgressListener(kind, dask_address(options)) as listener:
        yield listener


def _say_where_progress_is(options, cache):
    from beam_ingest.launch.runners import runner_name
    where = ("follow it with `status`, from the Redis progress cache" if cache is not None
             else "set REDIS_HOST to follow it with `status`")
    extra = " or in the Dataflow console" if "dataflow" in runner_name(options).lower() else ""
    log.info("progress: %s workers do not report to this launcher: %s%s", runner_name(options), where, extra)


def check_completion(plan, counters, identity, state):
    """Exit 0 only on proof: this run's proof stage ran, and the table holds its completion mark."""
    if counters.get("unacknowledged_chunks"):
        raise IncompleteError(f"{counters['unacknowledged_chunks']} chunk(s) had rows that Bigtable did not "
                              "acknowledge")
    no_metrics = counters.get("no_metrics")
    if not counters.get("completion_proven") and not no_metrics:
        raise IncompleteError("the run finished without proving every chunk written (no completion proof)")
    if state is None:
        if no_metrics and not counters.get("mark"):
            raise IncompleteError("the run finished without handing back its completion proof")
        return  # --skip_writes: the proof covers the build; no table
    state.claim.check()
    from beam_ingest.store.table_state import StateRows
    mark = StateRows(plan.target, plan.graph_id).completion_mark()
    if mark is None or mark.get("identity") != identity:
        raise IncompleteError(f"table {plan.graph_id!r} holds no completion mark of this run")
    if plan.l2cache is not None:
        from beam_ingest.l2cache.table import completion_mark
        cache = completion_mark(plan.target, plan.l2cache["table"])
        if cache is None or cache.get("identity") != identity or cache.get("rows") != mark.get("l2cache_rows"):
            raise IncompleteError(f"L2 cache table {plan.l2cache['table']!r} holds no completion mark of this run")
    # the whole graph's totals, chunks carried from an earlier run's checkpoint included
    counters["proven_svs"], counters["proven_rows"] = int(mark.get("svs", 0)), int(mark.get("rows", 0))
    if no_metrics:
        counters["mark"] = mark
    return mark


def configure_logging(verbose: bool, dask: bool = False) -> None:
    """Our progress lines at INFO; Beam's own messages (and the long traceback it logs when a
    step fails) only with --verbose, where everything goes to the log at DEBUG. On Dask the
    same for distributed's (a lost scheduler's traceback): our `error:` line says what failed."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    if dask:
        try:
            import distributed  # noqa: F401 - it sets its loggers' levels when imported: first, then ours
        except ImportError:
            return  # the runner check says how to install it
        names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
        for name in names + ["distributed", "tornado", "asyncio"]:  # distributed sets some children's levels
            logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def print_help() -> None:
    parser = argparse.ArgumentParser(
        prog="python pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option (--runner, --project, ...) is accepted too; anything else "
               "is an error.")
    IngestOptions._add_argparse_args(parser)
    parser.print_help()


def _with_dropped_workers(exc: Exception, options) -> Exception:
    """`exc`, or on a Dask cluster that dropped workers for silence, the same naming them."""
    address = dask_address(options)
    if not address:
        return exc
    from beam_ingest.launch.dask_cluster import WORKER_TTL_S, dropped_workers
    dropped = dropped_workers(address)
    if not dropped:
        return exc
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    lost = WorkersLost(f"{lines[-1] if lines else type(exc).__name__} (the Dask scheduler dropped worker(s) "
                       f"{', '.join(dropped)}: no heartbeat for {WORKER_TTL_S:.0f} s)")
    lost.__cause__ = exc
    return lost


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    try:
        verbose = parse_argv(argv).verbose
    except ConfigError:
        verbose = False  # run() reports it
    runners = ([a.split("=", 1)[1] for a in argv if a.startswith("--runner=")]
               + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--runner"])
    configure_logging(verbose, dask=any(r.rsplit(".", 1)[-1].lower() in ("dask", "daskrunner") for r in runners))
    start = time.time()
    try:
        result, counters, plan = run(argv)
    except UserError as exc:
        log.debug("stopped", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except IngestFailed as exc:
        log.debug("the pipeline failed", exc_info=True)
        mistake = user_error_in(exc.__cause__)
        first = str(mistake) if mistake else _last_line(exc.__cause__)
        print(f"error: {first}\n{str(exc).splitlines()[-1]}", file=sys.stderr)
        return mistake.exit_status if mistake else exc.exit_status
    except Exception as exc:  # a failure we did not foresee: still one line, details with --verbose
        log.debug("unexpected failure", exc_info=True)
        print(f"error: {type(exc).__name__}: {_last_line(exc)} (rerun with --verbose for details)", file=sys.stderr)
        return 1
    if counters.get("dry_run"):
        print(f"dry run of graph {plan.graph_id} ({plan.layout.layer_count} layers, {plan.layout.chunk_count(2)} "
              f"layer-2 chunks): options, config and inputs checked, a job of {counters['transforms']} transforms "
              "built; nothing was created, written or run")
    elif counters.get("already_complete"):
        print(f"table {plan.graph_id} is complete already: an earlier run of the same graph proved every chunk "
              f"written ({counters.get('chunks', '?')} chunks, {counters.get('rows', '?')} rows); nothing to do")
    elif counters:
        print(format_summary(counters, plan.layout.layer_count, time.time() - start))
    else:
        job = getattr(result, "job_id", None)
        print(f"submitted graph {plan.graph_id} ({plan.layout.layer_count} layers)"
              + (f" as Dataflow job {job()}" if callable(job) else ""))
    return 0


def _last_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
