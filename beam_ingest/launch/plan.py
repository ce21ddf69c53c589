"""Before the pipeline: validate the config and every path, read the watershed info and
derive the layout; the result is a frozen `IngestPlan`."""
from __future__ import annotations

import dataclasses
import typing

from ..errors import ConfigError, InputError
from ..inputs.watershed import read_watershed_info
from ..layout import GraphLayout, LayoutError
from .config import Settings, load_config

if typing.TYPE_CHECKING:
    from ..inputs.volumes import CheckedVolumes


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """`--l2cache_table`: the cache's table, the cv_path its meta names, and whether a
    disagreement of WATERSHED and the graph is accepted (not part of the run identity)."""
    table: str
    cv_path: str = ""
    accept_mismatch: bool = False

    def identity(self) -> dict:
        """What of the cache defines the run (`table_state.run_inputs`)."""
        return {"table": self.table, "cv_path": self.cv_path}


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """What the run builds, from the options and the config; nothing in it changes after."""
    graph_id: str
    settings: Settings
    layout: GraphLayout
    project: str | None
    instance: str | None
    resolution: tuple = (1.0, 1.0, 1.0)
    raw: bool = False  # --raw: the raw agglomeration
    segmentation: CheckedVolumes | None = None  # --from_segmentation: what the volumes' check found
    fill_missing: bool = False  # --fill_missing (with --from_segmentation)
    pcg_version: int = 2  # the PyChunkedGraph table version written (2 or 3)
    cache: CachePlan | None = None  # --l2cache_table
    sv_split_threshold: int | None = None  # --ocdbt: the meta's threshold (None without --ocdbt)

    @property
    def ocdbt(self) -> bool:
        return self.sv_split_threshold is not None

    def custom_data(self) -> dict | None:
        """The graph meta's `custom_data` (None: none)."""
        if not self.ocdbt:
            return None
        from ..outputs.ocdbt import custom_data
        return custom_data(self.sv_split_threshold)

    def run_inputs(self) -> dict:
        """What defines the graph's content and outputs (the run identity)."""
        from ..store.table_state import run_inputs
        segmentation = {"fill_missing": self.fill_missing} if self.segmentation is not None else None
        inputs = run_inputs(self.settings, self.raw, self.pcg_version, segmentation,
                            self.cache.identity() if self.cache is not None else None)
        if self.ocdbt:  # absent without: earlier runs' identities stay as they were
            inputs["ocdbt"] = {"sv_split_threshold": self.sv_split_threshold}
        return inputs


def plan_ingest(config_path: str, graph_id: str, raw: bool = False, segmentation: bool = False,
                fill_missing: bool = False, pcg_version: int = 2, cache: CachePlan | None = None,
                sv_split_threshold: int | None = None) -> IngestPlan:
    """Cheap checks first: config, watershed info, bit budget. Raises with a clear message.
    (`graph_id` is checked where it is given: `IngestOptions.validate`, the commands' parsers.)"""
    settings = load_config(config_path)
    output_keys(settings, raw, segmentation)  # every path's scheme, before anything is read
    ds = settings.data_source
    volumes = None
    if segmentation:
        from ..inputs.volumes import check_segmentation_volumes
        volumes = check_segmentation_volumes(settings, ds.CV_MIP, settings.graph_config.CHUNK_SIZE)
    else:
        _check_graph_inputs(settings, raw)
    layout, ws = layout_for(settings.graph_config, ds, volumes.geometry if volumes is not None else None)
    if sv_split_threshold is not None:
        _check_ocdbt(ds, ws)
    if raw:
        _check_not_empty("ingest_config.AGGLOMERATION", settings.ingest.AGGLOMERATION.rstrip("/") + "/chunked_rg",
                         "in_chunk_0_", "in_chunk_0_<x>_<y>_<z>.data files under")
    elif not segmentation:
        _check_not_empty("data_source.EDGES", ds.EDGES, "edges_", "edges_<x>_<y>_<z>.proto.zst files under")
    return IngestPlan(graph_id, settings, layout, settings.backend.PROJECT, settings.backend.INSTANCE,
                      ws.resolution, raw=raw, segmentation=volumes, fill_missing=fill_missing,
                      pcg_version=pcg_version, cache=cache, sv_split_threshold=sv_split_threshold)


def _check_ocdbt(data_source, watershed_info) -> None:
    """`--ocdbt`: tensorstore installed, and a WATERSHED whose copy PyChunkedGraph 3.x opens."""
    from ..outputs.ocdbt import check_watershed
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        raise ConfigError("--ocdbt: needs tensorstore (pip install tensorstore)") from None
    if int(data_source.CV_MIP) != 0:
        raise ConfigError(f"--ocdbt: data_source.CV_MIP is {data_source.CV_MIP}; the OCDBT copy is of WATERSHED's "
                          "base scale, which PyChunkedGraph 3.x reads at the graph's own voxels: build at CV_MIP 0")
    check_watershed(data_source.WATERSHED, watershed_info.voxel_offset)


def _check_graph_inputs(settings, raw: bool) -> None:
    ds = settings.data_source
    if raw and not settings.ingest.AGGLOMERATION:
        raise ConfigError("ingest_config.AGGLOMERATION: required key is missing (--raw reads the raw agglomeration)")
    if not raw and (not ds.EDGES or not ds.COMPONENTS):
        missing = "EDGES" if not ds.EDGES else "COMPONENTS"
        raise ConfigError(f"data_source.{missing}: required key is missing (precomputed input needs "
                          "both EDGES and COMPONENTS)")


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


def probe_outputs(plan: IngestPlan, checkpoint_dir: str | None = None) -> None:
    """Every output location writable (a file written and removed), before the table is created."""
    from .. import locations
    outputs = output_keys(plan.settings, plan.raw, plan.segmentation is not None)
    if checkpoint_dir:
        outputs["--checkpoint_dir"] = checkpoint_dir
    for key, url in outputs.items():
        locations.probe_writable(key, url)


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
