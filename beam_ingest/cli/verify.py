"""`verify`: a table checked exactly against the inputs of sampled layer-2 chunks."""
from __future__ import annotations

from ..errors import CommandError
from ..launch.options import int_in
from .args import graph_id_type
from .tables import check_graph_table, foreign_columns, table_completion


class _PreviewReader:
    """`read(coord)` of a segmentation reader: the chunk's inputs computed from the volumes
    (the chunk and its face neighbours read), nothing written."""

    def __init__(self, reader):
        self.reader = reader

    def read(self, coord):
        return next(iter(self.reader.preview([coord])))[1]


def verify_reader(plan, raw: bool, fill_missing: bool = False):
    """A reader computing each chunk's inputs from what the run read (raw agglomeration or
    segmentation volumes), writing nothing."""
    ds, ic = plan.settings.data_source, plan.settings.ingest
    if raw:
        from ..inputs.raw import RawReader
        return RawReader(ic.AGGLOMERATION, plan.layout, ds.DATA_VERSION, plan.resolution)
    from ..inputs.volumes import SegmentationReader
    return _PreviewReader(SegmentationReader(plan.layout, ds.CV_MIP, ic.SUPERVOXELS, objects=ic.OBJECTS,
                                             affinities=ic.AFFINITIES, fill_missing=fill_missing))


def _cache_check(table_id, graph_id, target, plan, graph_identity=None):
    """The verify.CacheCheck of the L2 cache table, or the MISMATCH line saying why there is none."""
    from ..l2cache.chunks import WatershedVoxels
    from ..store import kinds, targets
    from ..ops.verify import CacheCheck
    found = kinds.classify(target, table_id)
    if found is None:
        return f"MISMATCH: L2 cache table {table_id!r} does not exist"
    if found.kind != kinds.L2CACHE or found.graph_id != graph_id:
        return f"MISMATCH: L2 cache table {table_id!r} is not the cache of {graph_id!r}: it is {found.detail}"
    if graph_identity is not None and found.identity != graph_identity:
        return (f"MISMATCH: L2 cache table {table_id!r} was written by another run of graph {graph_id!r} (its run "
                f"{found.identity}, the graph table's {graph_identity}): rerun the ingest with --if_exists=continue")
    ds = plan.settings.data_source
    return CacheCheck(targets.open_table(target, table_id, admin=True),
                      WatershedVoxels(ds.WATERSHED, ds.CV_MIP, plan.layout), tuple(plan.resolution), found.complete)


def _copy_check(meta_cell: bytes, plan):
    """With a meta that says supervoxels can be split (`--ocdbt`): WATERSHED's OCDBT copy, to
    compare with WATERSHED on the sampled chunks (None otherwise)."""
    from ..l2cache.chunks import WatershedVoxels
    from ..ops.verify import CopyCheck
    from ..store.meta import loads_meta
    if not loads_meta(meta_cell).custom_data.get("seg", {}).get("ocdbt"):
        return None
    from ..outputs.ocdbt import open_copy
    ds = plan.settings.data_source
    return CopyCheck(open_copy(ds.WATERSHED), WatershedVoxels(ds.WATERSHED, ds.CV_MIP, plan.layout))


def cmd_verify(args):
    from ..inputs.precomputed import PrecomputedReader
    from ..launch.plan import plan_ingest
    from ..launch.table import meta_mismatch
    from ..store import admin, cells, targets
    from ..store.admin import read_cell
    from ..ops.verify import verify
    if args.raw and args.from_segmentation:
        raise CommandError("--raw and --from_segmentation: choose the input the table was built from")
    if args.fill_missing and not args.from_segmentation:
        raise CommandError("--fill_missing: applies to --from_segmentation only")
    plan = plan_ingest(args.config, args.graph_id, raw=args.raw, segmentation=args.from_segmentation)
    target = targets.resolve_target(plan.project, plan.instance)
    table = targets.open_table(target, args.graph_id, admin=True)
    if not admin.table_exists(table):
        raise CommandError(f"table {args.graph_id!r} does not exist in {target.describe()}")
    graph = check_graph_table(target, args.graph_id)
    from ..store import kinds
    if graph is not None and graph.kind == kinds.EMPTY:
        print(f"MISMATCH: table {args.graph_id!r} is empty: created, but no ingest wrote into it (its launcher "
              "stopped before the first row); rerun the ingest with --if_exists=recreate")
        return 1
    found = read_cell(table, cells.META_ROW, cells.FAMILY_HIERARCHY, cells.META)
    problem = "it has no meta row" if found is None else meta_mismatch(plan)(found[0])
    if problem:
        print(f"MISMATCH: table {args.graph_id!r} does not describe this config: {problem}")
        return 1
    foreign = foreign_columns(table)
    if foreign:
        print(f"MISMATCH: table {args.graph_id!r} cannot be opened by PyChunkedGraph: {foreign}. Rerun the ingest "
              "with --if_exists=continue to move the ingest's own cells into their own row "
              f"({cells.BOOKKEEPING_ROW.decode()!r}); the graph's cells stay as they are")
        return 1
    completion = table_completion(args.graph_id, target.project, target.instance)
    print(completion.line.replace("table   : ", "completion: "))
    ds = plan.settings.data_source
    version = read_cell(table, cells.VERSION_ROW, cells.FAMILY_HIERARCHY, cells.VERSION)
    pcg_version = 3 if version is not None and version[0].startswith(b"3.") else 2
    print(f"table version: {version[0].decode(errors='replace') if version else '(none)'}")
    reader, files = PrecomputedReader(ds.EDGES, ds.COMPONENTS), None
    if args.raw or args.from_segmentation:  # the table and the files the run wrote, against the run's inputs
        reader = verify_reader(plan, args.raw, args.fill_missing)
        files = {"edges": ds.EDGES, "components": ds.COMPONENTS}
    copy = _copy_check(found[0], plan)
    cache = None
    if args.l2cache_table:
        cache = _cache_check(args.l2cache_table, args.graph_id, target, plan, graph.identity if graph else None)
        if isinstance(cache, str):
            print(cache)
            return 1
    report = verify(table, plan.layout, reader, args.sample, args.seed, pcg_version=pcg_version, files=files,
                    cache=cache, copy=copy)
    print(report.format())
    return 0 if report.ok and completion.state == "complete" else 1


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the table exactly against the inputs of N random layer-2 chunks")
    p.add_argument("--config", required=True, help="the ingest's config.yml")
    p.add_argument("--graph_id", required=True, type=graph_id_type)
    p.add_argument("--sample", type=int_in(1), default=10, help="layer-2 chunks to check (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample")
    p.add_argument("--raw", action="store_true", help="the table was built with --raw: check the sampled chunks "
                   "against the raw agglomeration, and their EDGES/COMPONENTS files too")
    p.add_argument("--from_segmentation", action="store_true", help="the table was built with --from_segmentation: "
                   "check the sampled chunks against the volumes, and their EDGES/COMPONENTS files too")
    p.add_argument("--fill_missing", action="store_true", help="with --from_segmentation: as the ingest's "
                   "--fill_missing (a missing storage file of the volumes reads as background)")
    p.add_argument("--l2cache_table", help="also check the L2 cache rows of the sampled chunks in this table "
                   "against a recomputation from WATERSHED (docs/l2cache.md)")
    p.set_defaults(func=cmd_verify)
