"""Before the pipeline: validate the config, derive the layout, and prepare the table."""
from __future__ import annotations

import dataclasses
import json
import logging
import time

from ..errors import ConfigError, InputError, TableError
from .config import Settings, load_config
from ..inputs.watershed import read_watershed_info
from ..layout import GraphLayout, LayoutError
from ..store import cells
from ..store.meta import dumps_meta, loads_meta, meta_for

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestPlan:
    graph_id: str
    settings: Settings
    layout: GraphLayout
    project: str | None
    instance: str | None
    resolution: tuple = (1.0, 1.0, 1.0)
    ingest_ms: int | None = None
    pcg_version: int = 2  # the PyChunkedGraph table version written (2 or 3)
    segmentation: dict | None = None  # --from_segmentation: volumes.check_segmentation_volumes' plan
    target: object = None  # the bigtable.Target, resolved once by the launcher
    l2cache: dict | None = None  # --l2cache_table: {"table": its id, "cv_path": the meta's cv_path}
    l2cache_accept_mismatch: bool = False  # --l2cache_accept_mismatch (not in the run identity)


def plan_ingest(config_path: str, graph_id: str, raw: bool = False, segmentation: bool = False) -> IngestPlan:
    """Cheap checks first: config, watershed info, bit budget. Raises with a clear message."""
    from .options import check_graph_id
    check_graph_id(graph_id)
    settings = load_config(config_path)
    output_keys(settings, raw, segmentation)  # every path's scheme, before anything is read
    ds = settings.data_source
    if segmentation:
        return _plan_segmentation(graph_id, settings)
    if raw and not settings.ingest.AGGLOMERATION:
        raise ConfigError("ingest_config.AGGLOMERATION: required key is missing (--raw reads the raw agglomeration)")
    if not raw and (not ds.EDGES or not ds.COMPONENTS):
        missing = "EDGES" if not ds.EDGES else "COMPONENTS"
        raise ConfigError(f"data_source.{missing}: required key is missing (precomputed input needs "
                          "both EDGES and COMPONENTS)")
    layout, ws = layout_for(settings.graph_config, ds)
    if raw:
        _check_not_empty("ingest_config.AGGLOMERATION", settings.ingest.AGGLOMERATION.rstrip("/") + "/chunked_rg",
                         "in_chunk_0_", "in_chunk_0_<x>_<y>_<z>.data files under")
    else:
        _check_not_empty("data_source.EDGES", ds.EDGES, "edges_", "edges_<x>_<y>_<z>.proto.zst files under")
    return IngestPlan(graph_id, settings, layout, settings.backend.PROJECT, settings.backend.INSTANCE,
                      ws.resolution)


def output_keys(settings, raw: bool, segmentation: bool) -> dict:
    """Check every path of the config (scheme, outputs not being inputs); returns the outputs
    this run writes, `{config key: url}` (probed for writability by `probe_outputs`)."""
    from .. import locations
    ds, ic = settings.data_source, settings.ingest
    inputs = {"data_source.WATERSHED": ds.WATERSHED}
    outputs = {}
    if segmentation:
        inputs = {f"ingest_config.{k}": getattr(ic, k) for k in ("SUPERVOXELS", "OBJECTS", "AFFINITIES")}
        outputs = {"data_source.EDGES": ds.EDGES, "data_source.COMPONENTS": ds.COMPONENTS,
                   "ingest_config.SV_MAP": ic.SV_MAP}
        if ic.SUPERVOXELS and ds.WATERSHED and locations.location(
                "data_source.WATERSHED", ds.WATERSHED) != locations.location("ingest_config.SUPERVOXELS",
                                                                            ic.SUPERVOXELS):
            outputs["data_source.WATERSHED"] = ds.WATERSHED  # else: in place, checked, never rewritten
    elif raw:
        inputs["ingest_config.AGGLOMERATION"] = ic.AGGLOMERATION
        outputs = {"data_source.EDGES": ds.EDGES, "data_source.COMPONENTS": ds.COMPONENTS}
    else:
        inputs.update({"data_source.EDGES": ds.EDGES, "data_source.COMPONENTS": ds.COMPONENTS})
    from .credentials import require_google_credentials
    for key, url in inputs.items():
        if url:
            locations.location(key, url)
            require_google_credentials(key, url)
    outputs = {k: v for k, v in outputs.items() if v}
    for key, url in outputs.items():
        locations.check_output(key, url)
        locations.check_not_an_input(key, url, inputs)
        require_google_credentials(key, url)
    return outputs


def check_paths_reach_workers(settings, raw: bool, segmentation: bool, l2cache: bool,
                              checkpoint_dir: str | None) -> None:
    """For a runner whose workers are other machines (Dataflow): no path the workers read or
    write may be on the launcher's disk (the config and WATERSHED's info are read here)."""
    from .. import locations
    ds, ic = settings.data_source, settings.ingest
    paths = {"data_source.EDGES": ds.EDGES, "data_source.COMPONENTS": ds.COMPONENTS,
             "--checkpoint_dir": checkpoint_dir}
    if segmentation or l2cache:  # written, or read for the cache's voxels
        paths["data_source.WATERSHED"] = ds.WATERSHED
    if raw:
        paths["ingest_config.AGGLOMERATION"] = ic.AGGLOMERATION
    if segmentation:
        paths.update({f"ingest_config.{k}": getattr(ic, k) for k in ("SUPERVOXELS", "OBJECTS", "AFFINITIES",
                                                                      "SV_MAP")})
    for key, url in paths.items():
        if url and locations.location(key, url).protocol == "file":
            raise ConfigError(f"{key}: {url} is on this machine's disk, which Dataflow's workers cannot read or "
                              "write; put it on gs:// (or run on a local runner)")


def probe_outputs(plan: IngestPlan, raw: bool, checkpoint_dir: str | None = None) -> None:
    """Every output location writable (a file written and removed), before the table is created."""
    from .. import locations
    outputs = output_keys(plan.settings, raw, plan.segmentation is not None)
    if checkpoint_dir:
        outputs["--checkpoint_dir"] = checkpoint_dir
    for key, url in outputs.items():
        locations.probe_writable(key, url)


def _plan_segmentation(graph_id, settings) -> IngestPlan:
    from ..inputs.volumes import check_segmentation_volumes
    ds = settings.data_source
    checked = check_segmentation_volumes(settings, ds.CV_MIP, settings.graph_config.CHUNK_SIZE)
    layout, ws = layout_for(settings.graph_config, ds, checked["geometry"])
    plan = IngestPlan(graph_id, settings, layout, settings.backend.PROJECT, settings.backend.INSTANCE, ws.resolution)
    plan.segmentation = checked
    return plan


def layout_for(graph_config, data_source, geometry=None):
    """The layout from a graph config and the watershed info its data source names (or
    `geometry`, a WatershedInfo read already).

    Works with the config's settings and with a table's meta (same field names).
    Returns `(layout, watershed info)`.
    """
    ws = geometry or read_watershed_info(data_source.WATERSHED, data_source.CV_MIP)
    gc = graph_config
    try:
        layout = GraphLayout(chunk_size=tuple(gc.CHUNK_SIZE), voxel_offset=ws.voxel_offset, voxel_counts=ws.size,
                             layer_id_bits=gc.LAYER_ID_BITS, spatial_bits=gc.SPATIAL_BITS, fanout=gc.FANOUT)
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None
    return layout, ws


def _check_not_empty(key: str, url: str, prefix: str, what: str):
    """A folder without a single input file is a wrong path, not an empty brain."""
    from cloudfiles import CloudFiles
    from ..errors import StorageTimeout
    from ..deadline import within
    try:
        first = within(f"{key}: {url}", lambda: next(iter(CloudFiles(url, progress=False).list(prefix=prefix)), None))
    except StorageTimeout:
        raise
    except Exception as exc:  # storage errors vary by backend
        raise InputError(f"{key}: {url} cannot be listed ({exc})") from None
    if first is None:
        raise InputError(f"{key}: no {what} {url} (empty dataset or wrong path)")


def meta_mismatch(plan: IngestPlan):
    """A function telling why a table's meta cell describes another graph (or None)."""
    ours = meta_for(plan.graph_id, plan.settings)

    def compare(existing: bytes):
        try:
            theirs = loads_meta(existing)
        except Exception as exc:  # any unpickling failure means "not ours"
            return f"its meta row cannot be read ({exc})"
        for name in ("graph_config", "data_source"):
            a, b = getattr(theirs, name), getattr(ours, name)
            if tuple(a) != tuple(b):
                diffs = [f"{f}: table {x!r} vs config {y!r}" for f, x, y in zip(a._fields, a, b) if x != y]
                return f"{name} differs: " + "; ".join(diffs)
        return None

    return compare


@dataclasses.dataclass
class TableState:
    """The table this run writes: whose it is (`record`), our claim on it, and the completion
    mark an earlier run of the same identity left (None if it never finished)."""
    record: "object"
    claim: "object"
    complete: dict | None = None
    fresh: bool = True


def prepare_table(plan: IngestPlan, if_exists: str, ingest_ms: int | None, table_splits: int = 0,
                  raw: bool = False, restart_layer: int | None = None, pcg_version: int = 2) -> TableState:
    """Create or check the table, take this launcher's claim on it, write meta/version and the
    run record. Every refusal is a TableError; the claim is released on any failure."""
    from ..store import bigtable, table_state
    plan.target = bigtable.resolve_target(plan.project, plan.instance)
    table = bigtable.open_table(plan.target, plan.graph_id, admin=True)
    meta = table_state.StateRows(plan.target, plan.graph_id)
    exists = bigtable.table_exists(table)
    if exists:
        from ..store import kinds
        found = kinds.classify(plan.target, plan.graph_id)
        if found is not None and found.kind in (kinds.L2CACHE, kinds.FOREIGN):
            raise TableError(f"--graph_id: table {meta.table_id!r} is {found.detail}, not a graph table; refusing to "
                             "write into it or delete it, whatever --if_exists says (choose another graph id)")
    if exists and if_exists == "fail":
        raise TableError(
            f"table {meta.table_id!r} already exists; pass --if_exists=continue to resume an "
            "interrupted ingest into it, or --if_exists=recreate to delete it and start over")
    if restart_layer and not exists:
        raise TableError(f"--start_layer={restart_layer}: table {meta.table_id!r} does not exist; a restart at a "
                         "layer continues the earlier run's table (its lower layers are already in it)")
    inputs = table_state.run_inputs(plan.settings, raw, pcg_version, plan.segmentation, plan.l2cache)
    plan.pcg_version = pcg_version
    claim = None
    try:
        if exists:
            claim = _take_claim(meta)
            if if_exists == "recreate" and _empty_as_created(found, pcg_version):
                # another launcher may have created it a moment ago and not claimed it yet:
                # deleting it would let both run; taking it as it is leaves one claim, one run
                log.info("table %s is empty, with the families this run needs: writing into it", meta.table_id)
            elif if_exists == "recreate":
                log.warning("deleting existing table %s on %s (--if_exists=recreate)", meta.table_id,
                            plan.target.describe())
                table.delete()  # still claimed: no other launcher can be writing into it
                claim.forget()
                claim, exists = None, False
        if not exists:
            log.info("creating table %s on %s", meta.table_id, plan.target.describe())
            bigtable.create_table(table, bigtable.table_split_keys(plan.layout, table_splits), pcg_version)
            claim = _take_claim(meta)
            return _start_fresh(plan, meta, claim, ingest_ms, inputs)
        _move_legacy_cells(meta)
        state = meta.read()
        if cells.META not in meta.read(cells.META_ROW):
            if meta.has_node_rows():
                raise TableError(f"table {meta.table_id!r} exists but has no meta row and holds rows: not an "
                                 "ingest of this tool; refusing to continue into it")
            log.info("table %s has no meta row and no rows (a run stopped right after creating it): "
                     "starting it afresh", meta.table_id)
            return _start_fresh(plan, meta, claim, ingest_ms, inputs)
        return _continue(plan, meta, claim, ingest_ms, inputs, state)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def _empty_as_created(found, pcg_version: int) -> bool:
    """An empty table with exactly the column families `create_table` would give it."""
    from ..store import bigtable, kinds
    return (found is not None and found.kind == kinds.EMPTY
            and set(found.families) == set(bigtable.family_rules(pcg_version)))


def _move_legacy_cells(meta):
    from ..store.table_state import ClaimLost
    try:
        meta.move_legacy_cells()
    except ClaimLost as exc:
        raise TableError(str(exc)) from None


def _take_claim(meta):
    from ..store.table_state import Claim, ClaimLost
    from google.api_core.exceptions import NotFound
    claim = Claim(meta)
    try:
        claim.acquire()
    except ClaimLost as exc:
        raise TableError(str(exc)) from None
    except NotFound:
        raise TableError(f"table {meta.table_id!r} was deleted by another launcher at the same moment: one "
                         "launcher per graph") from None
    return claim


def _start_fresh(plan, meta, claim, ingest_ms, inputs) -> TableState:
    from ..store import table_state
    if ingest_ms is None:
        ingest_ms = int(time.time() * 1000)
    record = table_state.RunRecord.new(plan.graph_id, ingest_ms, inputs)
    meta_bytes = dumps_meta(meta_for(plan.graph_id, plan.settings))
    meta.write({table_state.RUN: record.to_json()}, ingest_ms)
    meta.write({cells.META: meta_bytes}, ingest_ms, row_key=cells.META_ROW)
    meta.write({cells.VERSION: cells.VERSION_STRINGS[plan.pcg_version].encode()}, ingest_ms,
               row_key=cells.VERSION_ROW)
    plan.ingest_ms = ingest_ms
    return TableState(record, claim, None, fresh=True)


def _continue(plan, meta, claim, ingest_ms, inputs, state) -> TableState:
    from ..store import table_state
    existing_meta, table_ms = meta.read(cells.META_ROW)[cells.META]
    reason = meta_mismatch(plan)(existing_meta)
    if reason:
        raise TableError(f"table {meta.table_id!r} holds a different graph ({reason}); refusing to continue into it")
    found = meta.read(row_key=cells.VERSION_ROW).get(cells.VERSION)
    ours = cells.VERSION_STRINGS[plan.pcg_version]
    if found is not None and found[0].decode(errors="replace").split(".")[0] != ours.split(".")[0]:
        theirs = found[0].decode(errors="replace")
        raise TableError(f"--pcg_version={plan.pcg_version}: table {meta.table_id!r} is a version {theirs} table "
                         f"(this run writes {ours}); continue it with --pcg_version={theirs.split('.')[0]}, or "
                         "--if_exists=recreate to rebuild it as version " + ours.split(".")[0])
    if ingest_ms is not None and ingest_ms != table_ms:
        raise TableError(f"--ingest_timestamp={ingest_ms} differs from the table's ingest time "
                         f"{table_ms}; leave it unset to continue the earlier run")
    if table_state.RUN in state:
        record = table_state.RunRecord.from_json(state[table_state.RUN][0])
        diffs = table_state.input_differences(record.inputs, inputs)
        if diffs:
            raise TableError(f"table {meta.table_id!r} was ingested from other inputs ({'; '.join(diffs)}); "
                             "refusing to continue into it")
    else:  # a table of an earlier version of this tool: give it a record now
        record = table_state.RunRecord.new(plan.graph_id, table_ms, inputs)
        meta.write({table_state.RUN: record.to_json()}, table_ms)
    complete = None
    if table_state.COMPLETE in state:
        mark = json.loads(state[table_state.COMPLETE][0])
        if mark.get("identity") == record.identity:
            complete = mark
    log.info("continuing into existing table %s on %s (ingest time %d)", meta.table_id, plan.target.describe(),
             table_ms)
    plan.ingest_ms = table_ms
    return TableState(record, claim, complete, fresh=False)
