"""A run's context: everything the job needs, settled on the launcher before it is built.

`prepare(options)` checks the config and every path, proves the runner can run, prepares
the graph's table (and the L2 cache's) and returns a frozen `RunContext`; used as a context
manager, it releases the launcher's claim on the table however the run ends.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import typing

from ..pipeline.build import FileChunks, FromCheckpoint, FromInputs, VolumeChunks
from ..pipeline.progress import RedisSettings
from ..pipeline.sink import SinkSpec
from .options import IngestOptions
from .plan import CachePlan, IngestPlan, check_paths_reach_workers, plan_ingest, probe_outputs
from .runners import dask_address, dask_connect_s, drops_finish_bundle_outputs, needs_trial, trial_run
from .table import TableState, prepare_table

if typing.TYPE_CHECKING:
    from ..store.targets import Target

log = logging.getLogger(__name__)
DASK_TRIAL_TIMEOUT_S = 60.0  # after check_cluster saw workers import the package, a trial takes seconds


@dataclasses.dataclass(frozen=True)
class RunContext:
    """One run, settled: nothing in it changes once `prepare` returned it."""
    options: IngestOptions  # the whole command line (Beam's options too)
    plan: IngestPlan
    target: Target | None  # None with --skip_writes
    ingest_ms: int  # every cell's timestamp
    identity: str  # the run identity (store.table_state.RunRecord)
    table: TableState | None  # the prepared table and the launcher's claim; None when nothing is written
    start: FromInputs | FromCheckpoint | None  # where the build starts (with what a checkpoint holds)
    sink: SinkSpec  # where and how the workers write (the progress channel is added when built)
    redis: RedisSettings | None
    test_coords: list | None = None  # --test: the layer-2 chunks built
    top_layer: int | None = None  # --test: the layer it stops at (else the top)

    @property
    def dry_run(self) -> bool:
        return self.options.is_dry_run()

    @property
    def dataflow(self) -> bool:
        return self.options.is_dataflow()

    @property
    def complete(self) -> dict | None:
        """The completion mark an earlier run of this identity left: nothing to do."""
        return self.table.complete if self.table is not None else None

    @property
    def resuming(self) -> bool:
        return _resuming(self.table, self.options)

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc) -> None:
        if self.table is not None:
            self.table.claim.release()


def prepare(options: IngestOptions) -> RunContext:
    """Everything before the job, in order, each step before anything is created that it
    could prevent: plan, runner, outputs, then the tables and WATERSHED."""
    redis = RedisSettings.from_env()  # a bad REDIS_* value stops the run here
    plan = _plan(options)
    test_coords, top_layer = _test_chunks(plan, options)
    layout = plan.layout
    logging.info("graph %s: %d layers, %s layer-2 chunks (%d in all)", plan.graph_id, layout.layer_count,
                 "x".join(map(str, layout.n_chunks)), layout.chunk_count(2))
    if not options.is_dry_run():  # a dry run writes nothing, not even a probe, and runs no job
        probe_outputs(plan, options.checkpoint_dir)
        _prove_runner(options)
    check_cache_voxels(plan, test_coords)
    if plan.ocdbt:  # another graph's copy is refused before anything is created
        from ..outputs.ocdbt import check_owner
        check_owner(plan.settings.data_source.WATERSHED, plan.graph_id)
    target = None
    if not options.skip_writes:
        from ..store.targets import resolve_target
        target = resolve_target(plan.project, plan.instance)
    table = None
    if not (options.skip_writes or options.is_dry_run()):
        table = _prepare_tables(plan, options, target)
    with contextlib.ExitStack() as undo:  # the claim is released if anything below fails
        if table is not None:
            undo.callback(table.claim.release)
        ingest_ms, identity = _identity(plan, options, table)
        _create_watershed(plan, options)
        if plan.ocdbt and not options.is_dry_run() and (table is None or table.complete is None):
            from ..outputs.ocdbt import prepare_copy
            prepare_copy(plan.settings.data_source.WATERSHED, plan.graph_id, fresh=table is None or table.fresh)
        start = None  # an earlier run proved the table complete: nothing to build
        if table is None or table.complete is None:
            start = _starting_point(plan, options, test_coords, identity, table)
        sink = SinkSpec(target, plan.graph_id, ingest_ms, identity=identity,
                        skip_writes=options.skip_writes or options.is_dry_run(), batch_rows=options.write_batch_rows,
                        max_inflight=options.max_inflight_writes, redis=redis, checkpoint_url=options.checkpoint_dir,
                        ack_each_element=drops_finish_bundle_outputs(options))
        context = RunContext(options, plan, target, ingest_ms, identity, table, start, sink, redis, test_coords,
                             top_layer)
        undo.pop_all()
    return context


def _plan(options: IngestOptions) -> IngestPlan:
    cache = None
    if options.l2cache_table:
        cache = CachePlan(options.cache_table_id(), options.l2cache_cv_path or "",
                          bool(options.l2cache_accept_mismatch))
    threshold = None
    if options.ocdbt:
        from ..outputs.ocdbt import DEFAULT_SV_SPLIT_THRESHOLD
        threshold = options.sv_split_threshold or DEFAULT_SV_SPLIT_THRESHOLD
    plan = plan_ingest(options.config, options.table_id(), raw=options.raw, segmentation=options.from_segmentation,
                       fill_missing=bool(options.fill_missing), pcg_version=options.pcg_version, cache=cache,
                       sv_split_threshold=threshold)
    if options.is_dataflow():
        check_paths_reach_workers(plan.settings, options.raw, options.from_segmentation, cache is not None,
                                  options.checkpoint_dir)
    options.validate_for(plan.layout.layer_count)
    return plan


def _test_chunks(plan: IngestPlan, options: IngestOptions):
    """`--test`: the layer-2 chunks at the centre and the layer the run stops at; their edge
    counts are printed first."""
    if not options.test:
        return None, None
    coords = plan.layout.test_coords()
    print_test_chunks(plan, coords)
    return coords, min(3, plan.layout.layer_count)


def _prove_runner(options: IngestOptions) -> None:
    """A runner other than Dataflow and the in-process ones runs a one-element job first."""
    if not needs_trial(options):
        return
    address = dask_address(options)
    if address:  # a cluster of its own: workers that can run the job, liveness deadlines set
        from .dask_cluster import check_cluster, set_liveness
        check_cluster(address, dask_connect_s(options))
        trial_run(options, timeout_s=DASK_TRIAL_TIMEOUT_S)
        set_liveness(address)
    else:
        trial_run(options)


def _prepare_tables(plan: IngestPlan, options: IngestOptions, target) -> TableState:
    """The graph's table, and the L2 cache's (checked before the graph's is created)."""
    from ..l2cache import table as l2cache_table
    cache_action = None
    if plan.cache is not None:
        cache_action = l2cache_table.check(target, plan.cache.table, plan.graph_id, options.if_exists)
    state = prepare_table(plan, target, options.if_exists, options.ingest_timestamp, options.table_splits,
                          restart_layer=options.start_layer if options.start_layer > 2 else None)
    if plan.cache is None:
        return state
    with contextlib.ExitStack() as undo:
        undo.callback(state.claim.release)
        if state.complete is not None and cache_action != l2cache_table.COMPLETE:
            log.info("table %s is complete but its L2 cache %s is not: building again (the graph's cells are "
                     "identical) to write the cache", plan.graph_id, plan.cache.table)
            state = dataclasses.replace(state, complete=None)
        if state.complete is None:
            l2cache_table.prepare(target, plan.cache.table, plan.graph_id, plan.cache.cv_path, state.ingest_ms,
                                  options.if_exists, state.record.identity)
        undo.pop_all()
    return state


def _identity(plan: IngestPlan, options: IngestOptions, table: TableState | None) -> tuple[int, str]:
    """The run's ingest time and identity: the table's, or (nothing written) this run's own."""
    if table is not None:
        return table.ingest_ms, table.record.identity
    from ..store.table_state import RunRecord
    ingest_ms = options.ingest_timestamp if options.ingest_timestamp is not None else int(time.time() * 1000)
    return ingest_ms, RunRecord(plan.graph_id, ingest_ms, "none", plan.run_inputs()).identity


def _create_watershed(plan: IngestPlan, options: IngestOptions) -> None:
    """`--from_segmentation` into a WATERSHED that does not exist yet: its info, before the job."""
    volumes = plan.segmentation
    if volumes is not None and volumes.watershed_info is not None and not options.is_dry_run():
        from ..outputs.watershed import create_watershed
        create_watershed(plan.settings.data_source.WATERSHED, volumes.watershed_info)


def make_reader(plan: IngestPlan):
    """The layer-2 reader of the plan's input."""
    ds = plan.settings.data_source
    if plan.segmentation is not None:
        from ..inputs.volumes import SegmentationReader
        ic = plan.settings.ingest
        return SegmentationReader(plan.layout, ds.CV_MIP, ic.SUPERVOXELS, objects=ic.OBJECTS,
                                  affinities=ic.AFFINITIES, fill_missing=plan.fill_missing,
                                  with_voxels=plan.cache is not None)
    if plan.raw:
        from ..inputs.raw import RawReader
        return RawReader(plan.settings.ingest.AGGLOMERATION, plan.layout, ds.DATA_VERSION, plan.resolution)
    from ..inputs.precomputed import PrecomputedReader
    return PrecomputedReader(ds.EDGES, ds.COMPONENTS)


def _starting_point(plan, options, coords, identity: str, table: TableState | None):
    """Where the build starts, with what an earlier run left in the checkpoint (read here,
    before the job is built)."""
    from ..pipeline import restart
    if options.start_layer > 2:
        return FromCheckpoint(options.start_layer,
                              restart.restart_at(options.checkpoint_dir, identity, options.start_layer))
    saved = restart.NOTHING
    if _resuming(table, options) and options.checkpoint_dir and plan.cache is None:  # the cache is written by layer 2: all again
        saved = restart.resume_layer2(options.checkpoint_dir, identity, plan.layout)
    reader, files = make_reader(plan), chunk_files(plan)
    layer2 = VolumeChunks(reader, files) if plan.segmentation is not None else FileChunks(reader, files)
    return FromInputs(layer2, coords, saved)


def chunk_files(plan: IngestPlan):
    """What the run writes per layer-2 chunk besides the table (None: nothing, for
    precomputed input): EDGES and COMPONENTS from raw or segmentation input, and WATERSHED's
    regions and SV_MAP from segmentation input."""
    from ..outputs.chunk_files import ChunkFiles
    ds, ic = plan.settings.data_source, plan.settings.ingest
    ocdbt = ds.WATERSHED if plan.ocdbt else None
    if plan.segmentation is not None:
        return ChunkFiles(ds.EDGES, ds.COMPONENTS, ic.SV_MAP, ds.WATERSHED, int(ds.CV_MIP),
                          watershed_in_place=plan.segmentation.in_place, ocdbt=ocdbt)
    if plan.raw or ocdbt:
        return ChunkFiles(ds.EDGES if plan.raw else None, ds.COMPONENTS if plan.raw else None, ocdbt=ocdbt,
                          watershed_mip=int(ds.CV_MIP), ocdbt_from_watershed=ocdbt is not None)
    return None


def _resuming(table: TableState | None, options: IngestOptions) -> bool:
    """A continued table of an earlier, unfinished run of the same identity, from layer 2."""
    return table is not None and not table.fresh and options.start_layer == 2 and not options.test


def check_cache_voxels(plan: IngestPlan, coords) -> None:
    """Precomputed and raw input: WATERSHED readable at the first chunk the run builds, before
    anything is created (the cache reads every chunk of it)."""
    if plan.cache is None or plan.segmentation is not None:
        return
    from ..l2cache.chunks import WatershedVoxels
    ds = plan.settings.data_source
    first = tuple(coords[0]) if coords is not None else (0, 0, 0)
    WatershedVoxels(ds.WATERSHED, ds.CV_MIP, plan.layout).read(first)


def print_test_chunks(plan: IngestPlan, coords) -> None:
    """The per-chunk edge counts a `--test` run starts with (all and active, as the Redis/rq ingest printed them)."""
    from ..hierarchy.layer2 import build_layer2
    print(f"test run of {len(coords)} layer-2 chunks at the centre, into table {plan.graph_id}")
    reader = make_reader(plan)
    if plan.segmentation is not None:  # computed from the volumes here (read again by the run, which writes)
        chunks = reader.preview(coords)
    else:
        chunks = ((coord, reader.read(coord)) for coord in coords)
    for coord, inputs in chunks:
        stats = build_layer2(inputs, plan.layout)[3]
        print(f"  chunk {coord}: {stats.edges} edges ({stats.active_edges} active), {stats.svs} SVs, "
              f"{stats.nodes} layer-2 nodes")
