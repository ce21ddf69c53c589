"""The job of a prepared run: `build(pipeline, ctx)` composes it, `execute(ctx)` runs it,
watches its progress and checks the completion mark it must leave in the table."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

import apache_beam as beam

from ..errors import IncompleteError, IngestFailed, WorkersLost
from ..ops.report import ingest_counters
from ..pipeline import stages
from ..pipeline.build import BuildGraph
from ..pipeline.progress import ProgressCache, ProgressMonitor
from .context import RunContext
from .runners import close_runner_client, dask_address, final_outputs, progress_kind, runner_name

log = logging.getLogger(__name__)


def build(pipeline: beam.Pipeline, ctx: RunContext, progress_channel=None):
    """The whole build on `pipeline`: every layer, the roots, their sinks and the completion
    proof; `progress_channel`: where the workers report to the launcher (if it listens)."""
    opts = ctx.options
    sink = dataclasses.replace(ctx.sink, progress_channel=progress_channel)
    return pipeline | "BuildGraph" >> BuildGraph(ctx.plan.layout, ctx.start, sink, top_layer=ctx.top_layer,
                                                 fail_at_layer=opts.fail_at_layer, checkpoint_url=opts.checkpoint_dir,
                                                 pcg_version=opts.pcg_version, cache=cache_spec(ctx.plan))


def cache_spec(plan):
    """The L2 cache's CacheSpec for the workers (None without --l2cache_table): the voxels come
    with each chunk from segmentation volumes, else from WATERSHED."""
    if plan.cache is None:
        return None
    from ..l2cache.chunks import CacheSpec
    ds = plan.settings.data_source
    return CacheSpec(plan.cache.table, tuple(float(r) for r in plan.resolution),
                     None if plan.segmentation is not None else ds.WATERSHED, int(ds.CV_MIP),
                     accept_mismatch=plan.cache.accept_mismatch)


def execute(ctx: RunContext):
    """Run the job; returns `(pipeline result, counters, plan)` once the table holds this
    run's completion mark (counters are empty when the job is not waited for: a Dataflow
    template launch). A failure after the table was created is an IngestFailed that says
    the table is partially written and how to go on."""
    opts = ctx.options
    totals = stages.chunk_totals(ctx.plan.layout, opts.start_layer, ctx.test_coords, ctx.top_layer,
                                 cache=ctx.plan.cache is not None)
    cache = ProgressCache(ctx.redis, ctx.plan.graph_id, ctx.identity) if ctx.redis else None
    if cache is not None and not ctx.dry_run and cache.start(totals, reset=not ctx.resuming):
        logging.info("progress of %s recorded in Redis %s:%s (python -m beam_ingest status --graph_id %s)",
                     ctx.plan.graph_id, ctx.redis.host, ctx.redis.port, ctx.plan.graph_id)
    if ctx.dry_run and not ctx.dataflow:
        # Only DataflowRunner knows --dry_run; any other runner would run the job. Build and
        # translate it (what a Dataflow dry run checks), run nothing.
        pipeline = beam.Pipeline(options=opts)
        build(pipeline, ctx)
        return None, {"dry_run": 1, "transforms": len(pipeline.to_runner_api().components.transforms)}, ctx.plan
    try:
        result, outputs = _run(ctx, totals, cache)
    except Exception as exc:
        if opts.skip_writes or ctx.dry_run:
            raise
        raise IngestFailed(f"{exc}\n{partial_advice(ctx)}") from _with_dropped_workers(exc, opts)
    if ctx.dry_run:
        return result, {"dry_run": 1, "transforms": len(result.job.proto_pipeline.components.transforms)}, ctx.plan
    wait = opts.wait
    if wait is None:
        wait = not (ctx.dataflow and os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE"))
    if not wait:
        return result, {}, ctx.plan
    if ctx.dataflow:
        result.wait_until_finish()
    counters = ingest_counters(result)
    if counters is None:  # a runner without metrics (DaskRunner): the completion mark is the proof
        marks = [m for m in outputs or [] if isinstance(m, dict) and m.get("identity") == ctx.identity]
        counters = {"no_metrics": 1, **({"mark": marks[0]} if marks else {})}
    try:
        check_completion(ctx, counters)
    except IncompleteError as exc:
        raise IngestFailed(f"{exc}\n{partial_advice(ctx)}") from exc
    if cache is not None:
        cache.finish()
    return result, counters, ctx.plan


def _run(ctx: RunContext, totals: dict, cache):
    """The job, run: on Dataflow submitted (the caller waits); elsewhere waited for here while
    the launcher shows its progress. Returns `(result, the proof's outputs or None)`."""
    if ctx.dataflow:
        if not ctx.dry_run:
            _say_where_progress_is(ctx.options, cache)
        pipeline = beam.Pipeline(options=ctx.options)
        build(pipeline, ctx)
        return pipeline.run(), None
    with _progress_listener(ctx.options, cache) as listener:
        pipeline = beam.Pipeline(options=ctx.options)
        build(pipeline, ctx, listener.channel if listener is not None else None)
        with ProgressMonitor(totals, listener, cache):
            result = pipeline.run()
            try:
                result.wait_until_finish()
                return result, final_outputs(result)
            finally:
                close_runner_client(result)


def check_completion(ctx: RunContext, counters: dict):
    """Exit 0 only on proof: this run's proof stage ran, and the table holds its completion mark."""
    if counters.get("unacknowledged_chunks"):
        raise IncompleteError(f"{counters['unacknowledged_chunks']} chunk(s) had rows that Bigtable did not "
                              "acknowledge")
    no_metrics = counters.get("no_metrics")
    if not counters.get("completion_proven") and not no_metrics:
        raise IncompleteError("the run finished without proving every chunk written (no completion proof)")
    if ctx.table is None:
        if no_metrics and not counters.get("mark"):
            raise IncompleteError("the run finished without handing back its completion proof")
        return  # --skip_writes: the proof covers the build; no table
    ctx.table.claim.check()
    from ..store.table_state import StateRows
    plan = ctx.plan
    mark = StateRows(ctx.target, plan.graph_id).completion_mark()
    if mark is None or mark.get("identity") != ctx.identity:
        raise IncompleteError(f"table {plan.graph_id!r} holds no completion mark of this run")
    if plan.cache is not None:
        from ..l2cache.table import completion_mark
        cache = completion_mark(ctx.target, plan.cache.table)
        if cache is None or cache.get("identity") != ctx.identity or cache.get("rows") != mark.get("l2cache_rows"):
            raise IncompleteError(f"L2 cache table {plan.cache.table!r} holds no completion mark of this run")
    # the whole graph's totals, chunks carried from an earlier run's checkpoint included
    counters["proven_svs"], counters["proven_rows"] = int(mark.get("svs", 0)), int(mark.get("rows", 0))
    if no_metrics:
        counters["mark"] = mark
    return mark


def partial_advice(ctx: RunContext) -> str:
    """What to do after a failed run: continue (from the layer the checkpoint allows), or start over."""
    opts = ctx.options
    advice = (f"Table {ctx.plan.graph_id!r} is partially written. Fix the cause, then rerun with "
              "--if_exists=continue (same cells as a clean run) or --if_exists=recreate.")
    if not opts.checkpoint_dir or opts.test:
        return advice
    from ..pipeline.restart import restartable_layer
    layer = restartable_layer(opts.checkpoint_dir, ctx.identity, ctx.top_layer or ctx.plan.layout.layer_count)
    if layer is None or layer <= opts.start_layer:
        return advice + (" With the same --checkpoint_dir, continue reads back the layer-2 chunks already "
                         "acknowledged instead of rebuilding them.")
    held = "layer 2" if layer == 3 else f"layers 2..{layer - 1}"
    return advice + (f" The checkpoint holds {held}: add --start_layer {layer} (with the same "
                     f"--checkpoint_dir and --if_exists=continue) to restart at layer {layer}.")


@contextlib.contextmanager
def _progress_listener(options, cache):
    """The channel this runner's workers report progress on (None where they cannot: said once)."""
    from ..pipeline.progress import ProgressListener
    kind = progress_kind(options)
    if kind is None:
        _say_where_progress_is(options, cache)
        yield None
        return
    with ProgressListener(kind, dask_address(options)) as listener:
        yield listener


def _say_where_progress_is(options, cache):
    where = ("follow it with `status`, from the Redis progress cache" if cache is not None
             else "set REDIS_HOST to follow it with `status`")
    extra = " or in the Dataflow console" if "dataflow" in runner_name(options).lower() else ""
    log.info("progress: %s workers do not report to this launcher: %s%s", runner_name(options), where, extra)


def _with_dropped_workers(exc: Exception, options) -> Exception:
    """`exc`, or on a Dask cluster that dropped workers for silence, the same naming them."""
    address = dask_address(options)
    if not address:
        return exc
    from .dask_cluster import WORKER_TTL_S, dropped_workers
    dropped = dropped_workers(address)
    if not dropped:
        return exc
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    lost = WorkersLost(f"{lines[-1] if lines else type(exc).__name__} (the Dask scheduler dropped worker(s) "
                       f"{', '.join(dropped)}: no heartbeat for {WORKER_TTL_S:.0f} s)")
    lost.__cause__ = exc
    return lost
