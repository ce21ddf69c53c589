"""Before the pipeline: validate the config, derive the layout, and prepare the table."""
from __future__ import annotations

import dataclasses
import logging

from .config import ConfigError, Settings, load_config
from .inputs.precomputed import InputError
from .inputs.watershed import read_watershed_info
from .layout import GraphLayout, LayoutError
from .store.meta import dumps_meta, loads_meta, meta_for

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


def plan_ingest(config_path: str, graph_id: str, raw: bool = False) -> IngestPlan:
    """Cheap checks first: config, watershed info, bit budget. Raises with a clear message."""
    from .options import check_graph_id
    check_graph_id(graph_id)
    settings = load_config(config_path)
    ds = settings.data_source
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


def layout_for(graph_config, data_source):
    """The layout from a graph config and the watershed info its data source names.

    Works with the config's settings and with a table's meta (same field names).
    Returns `(layout, watershed info)`.
    """
    ws = read_watershed_info(data_source.WATERSHED, data_source.CV_MIP)
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
    try:
        first = next(iter(CloudFiles(url, progress=False).list(prefix=prefix)), None)
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


def prepare_table(plan: IngestPlan, if_exists: str, ingest_ms: int | None, table_splits: int = 0) -> int:
    from .store import bigtable
    plan.project, plan.instance = bigtable.resolve_instance(plan.project, plan.instance)
    table = bigtable.open_table(plan.project, plan.instance, plan.graph_id, admin=True)
    meta_bytes = dumps_meta(meta_for(plan.graph_id, plan.settings))
    splits = bigtable.table_split_keys(plan.layout, table_splits)
    plan.ingest_ms = bigtable.prepare_table(table, if_exists, meta_bytes, ingest_ms, meta_mismatch(plan), splits)
    return plan.ingest_ms
