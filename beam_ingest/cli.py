"""The command line: `beam-ingest ingest ...` (the ingest) and the operator commands
(`generate`, `inspect`, `demo`, `status`, `verify`, ...); also `python -m beam_ingest`."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

import numpy as np

from .launch.options import int_in
from .shipped import shipped
from .errors import CommandError

def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def graph_id_type(text):
    """A graph id is a Bigtable table id: `*` or `?` are never a pattern over graphs."""
    from .errors import ConfigError
    from .launch.options import check_graph_id
    try:
        check_graph_id(text, option="--graph_id")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--graph_id: ")) from None
    return text


def count_type(limit: float):
    """A positive count, at most `limit` (beyond any dataset: a typo such as 1e30)."""
    def parse(text):
        value = positive_float(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text} is beyond any dataset (at most {limit:.0e})")
        return value
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one `error:` line (exit 2), not argparse's usage block."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


EXAMPLES = """examples:
  python -m beam_ingest generate --out demo_data --chunks 4 4 2 --svs_per_chunk 200
  python -m beam_ingest inspect --graph_id my_graph --sv 72620543991349249
  python -m beam_ingest inspect --graph_id my_graph --summary
  python -m beam_ingest demo
  python -m beam_ingest estimate --svs 1e9 --l2_chunks 1e5
  python -m beam_ingest estimate --svs 1e9 --config seg.yml --from_segmentation
  python -m beam_ingest estimate --svs 1e9 --config seg.yml --from_segmentation --l2cache
  python -m beam_ingest verify --config config.yml --graph_id my_graph --sample 20
  REDIS_HOST=localhost REDIS_PASSWORD=dev python -m beam_ingest status --graph_id my_graph --watch
  REDIS_HOST=localhost REDIS_PASSWORD=dev python -m beam_ingest flush-redis --graph_id my_graph
"""


def _table(args):
    from .store import bigtable
    target = bigtable.resolve_target(args.project or os.environ.get("BIGTABLE_PROJECT"),
                                     args.instance or os.environ.get("BIGTABLE_INSTANCE"))
    table = bigtable.open_table(target, args.graph_id, admin=True)
    if not bigtable.table_exists(table):
        raise CommandError(f"table {args.graph_id!r} does not exist in {target.describe()}")
    check_graph_table(target, args.graph_id)
    return table


def check_graph_table(target, table_id: str, option: str = "--graph_id"):
    """An existing table that is not a graph's (an L2 cache, a user's table) -> CommandError."""
    from .store import kinds
    found = kinds.classify(target, table_id)
    if found is not None and found.kind not in (kinds.GRAPH, kinds.EMPTY):
        hint = " (verify --l2cache_table checks an L2 cache against its graph)" if found.kind == kinds.L2CACHE else ""
        raise CommandError(f"{option}: table {table_id!r} is {found.detail}, not a graph table{hint}")
    return found


def _layout_of(table):
    from .launch.plan import layout_for
    from .store import cells
    from .store.bigtable import read_cell
    from .store.meta import loads_meta
    found = read_cell(table, cells.META_ROW, cells.FAMILY_HIERARCHY, cells.META)
    if found is None:
        raise CommandError(f"table {table.table_id!r} has no meta row")
    meta = loads_meta(found[0])
    return layout_for(meta.graph_config, meta.data_source)[0]


def describe_cache_row(table, node_id: int) -> list[str]:
    """One line per cell of a layer-2 node's L2 cache row, decoded with its dtype."""
    from .l2cache.features import decode_cells
    row = table.read_row(b"%020d" % node_id)
    if row is None:
        return ["  (no row: the node has no voxel)"]
    found = decode_cells({q: columns[q][0].value for columns in row.cells.values() for q in columns})
    return [f"  {q.decode():<22} "
            + (str(v) if np.isscalar(v) else " ".join(np.array2string(v, precision=4, separator=", ").split()))
            for q, v in sorted(found.items())]


def describe_chain(table, sv: int) -> list[str]:
    """One line per node from `sv` up to its root: layer, id, children count."""
    from .store.reader import read_node
    layout = _layout_of(table)
    lines = []
    node_id = sv
    seen = set()
    while node_id is not None and node_id not in seen:
        seen.add(node_id)
        layer = int(layout.layer_of(np.uint64(node_id)))
        node = read_node(table, node_id)
        if node is None and not lines:
            raise CommandError(f"--sv: node {node_id} has no row in table {table.table_id!r} (not a supervoxel "
                               "of this graph)")
        if node is None:
            raise CommandError(f"node {node_id} (layer {layer}, the parent named on the line above) has no row in "
                               f"table {table.table_id!r}: the table is incomplete", code=1)
        kids = "" if node["children"] is None else f"  children: {len(node['children'])}"
        edges = "".join(f"  atomic_cross_edges_{k}: {len(v)}" for k, v in sorted(node["cross_edges"].items()))
        edges += "".join(f"  4:cross_edges_{k}: {len(v)}" for k, v in sorted(node["lifted"].items()))
        coord = tuple(int(v) for v in layout.coords_of(np.uint64(node_id), max(layer, 1))[0])
        lines.append(f"layer {layer:>2}  {node_id}  chunk {coord}{kids}{edges}")
        node_id = node["parent"]
    return lines


def layer_summary(table) -> list[str]:
    """Nodes per layer (a full scan of the hierarchy family; for small and test graphs)."""
    from google.cloud.bigtable import row_filters
    layout = _layout_of(table)
    counts = {}
    for row in table.read_rows(filter_=row_filters.FamilyNameRegexFilter("0")):
        if not row.row_key[:1].isdigit():  # meta, version, the ingest's own row
            continue
        layer = int(layout.layer_of(np.uint64(int(row.row_key))))
        counts[layer] = counts.get(layer, 0) + 1
    names = {1: "supervoxels"}
    return [f"layer {layer:>2}: {counts[layer]:>9} {names.get(layer, 'nodes')}"
            + ("  (roots)" if layer == layout.layer_count else "") for layer in sorted(counts)]


def cmd_inspect(args):
    """What the table holds; a table that is not complete says so in its last line."""
    if args.sv is None and not args.summary:
        raise CommandError("inspect needs --sv ID and/or --summary")
    table = _table(args)
    status = table_completion(args.graph_id, args.project, args.instance)
    if status.state == "empty":
        raise CommandError(status.line.replace("table   : EMPTY: ", f"table {args.graph_id!r} is empty: "), code=1)
    if args.summary:
        lines = layer_summary(table)
        print("\n".join(lines) if lines else "no node rows yet")
    if args.sv is not None:
        print("\n".join(describe_chain(table, args.sv)))
    if status.state != "complete":
        print(status.line)
    return 0


def cmd_generate(args):
    if args.segmentation:
        return cmd_generate_segmentation(args)
    seg_only = [flag for flag, value in (("--chunk_size", args.chunk_size), ("--voxels_per_sv", args.voxels_per_sv),
                                         ("--dtype", args.dtype), ("--[no-]objects", args.objects),
                                         ("--[no-]affinities", args.affinities)) if value is not None]
    if seg_only:
        raise CommandError(f"{seg_only[0]} applies to --segmentation only")
    from .synthetic.precomputed import SyntheticSpec, generate
    spec = SyntheticSpec(chunks=tuple(args.chunks), svs_per_chunk=args.svs_per_chunk, seed=args.seed,
                         raw=args.raw, data_version=args.data_version)
    info = generate(args.out, spec)
    print(f"wrote {info['svs']} SVs ({_left_out(info)}), {info['edges']} edges in {info['chunks']} chunks "
          f"({info['layer_count']} layers); config: {info['config']}")
    return 0


def _left_out(info) -> str:
    """The generated SVs the graph will not hold: those in no edge (docs/hierarchy.md)."""
    return f"{info['svs'] - info['svs_in_graph']} of them in no edge, so not in the graph"


def cmd_generate_segmentation(args):
    """generate --segmentation: supervoxels/ (+ objects/, affinities/) volumes and a config.yml."""
    from .synthetic.segmentation import SegmentationSpec, generate_segmentation
    if args.raw:
        raise CommandError("--raw and --segmentation do not go together")
    fields = {"chunks": tuple(args.chunks), "seed": args.seed}
    for key in ("chunk_size", "voxels_per_sv", "dtype", "objects", "affinities"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = tuple(value) if isinstance(value, list) else value
    info = generate_segmentation(args.out, SegmentationSpec(**fields))
    inputs = ", ".join(k for k in ("supervoxels", "objects", "affinities") if info[k])
    print(f"wrote {inputs}: {info['n_supervoxels']} SVs, {'x'.join(map(str, info['size']))} voxels, "
          f"{'x'.join(map(str, info['n_chunks']))} chunks of {'x'.join(map(str, info['chunk_size']))}; "
          f"config: {info['config']}")
    return 0


def cmd_demo(args):
    """Generate a small dataset, ingest it into an emulator, print the summary and one chain."""
    import time

    from .launch import ingest as pipeline
    from .ops.emulator import Emulator
    from .synthetic.precomputed import SyntheticSpec, generate

    extra = []
    cache = f"{args.graph_id}-l2cache" if args.segmentation else None
    args.out = args.out or ("demo_segmentation" if args.segmentation else "demo_data")
    if args.segmentation:  # volumes in: relabelled, contacts as edges, then the same ingest
        from .synthetic.segmentation import SegmentationSpec, generate_segmentation
        info = generate_segmentation(args.out, SegmentationSpec(chunks=tuple(args.chunks)))
        extra = ["--from_segmentation", f"--l2cache_table={cache}"]
        print(f"generated a {'x'.join(map(str, info['size']))}-voxel segmentation ({info['n_supervoxels']} "
              f"supervoxels, objects, affinities) under {args.out}")
    else:
        info = generate(args.out, SyntheticSpec(chunks=tuple(args.chunks), svs_per_chunk=args.svs_per_chunk))
        print(f"generated {info['svs']} SVs ({_left_out(info)}) in {info['chunks']} chunks under {args.out}")
    emulator, configured = None, os.environ.get("BIGTABLE_EMULATOR_HOST")
    if args.use_configured_bigtable:
        if_exists = _demo_if_exists(args.graph_id, info["config"], cache)
    else:
        emulator = Emulator()
        os.environ["BIGTABLE_EMULATOR_HOST"] = emulator.host
        if_exists = "fail"
        print(f"started a Bigtable emulator for the demo at {emulator.host}; it stops, and its tables are gone, "
              f"when the demo ends (to keep them: --use_configured_bigtable, {shipped('docs/pychunkedgraph.md')})")
    try:
        start = time.time()
        _, counters, plan = pipeline.run(["--config", info["config"], "--graph_id", args.graph_id,
                                          f"--if_exists={if_exists}"] + extra)
        from .ops.report import format_summary
        print(format_summary(counters, plan.layout.layer_count, time.time() - start))
        args.project = args.instance = None
        table = _table(args)
        print("\n".join(layer_summary(table)))
        sv = _some_sv(table, plan.layout)
        print(f"\nthe chain of SV {sv} up to its root:")
        print("\n".join(describe_chain(table, sv)))
        if cache:
            from .store.reader import read_node
            node = read_node(table, sv)["parent"]
            print(f"\nthe L2 cache row of its layer-2 node {node} (table {cache}; {shipped('docs/l2cache.md')}):")
            from .store import bigtable
            cache_table = bigtable.open_table(bigtable.resolve_target(None, None), cache, admin=True)
            print("\n".join(describe_cache_row(cache_table, node)))
    finally:
        if emulator:
            emulator.stop()
            if configured is None:
                os.environ.pop("BIGTABLE_EMULATOR_HOST", None)
            else:
                os.environ["BIGTABLE_EMULATOR_HOST"] = configured
            print("\nstopped the demo's Bigtable emulator (its tables went with it)")
    return 0


def _demo_if_exists(graph_id: str, config: str, cache: str | None) -> str:
    """With --use_configured_bigtable: `recreate` only for a table an earlier demo wrote from
    this same dataset; any other existing table (or L2 cache table) is refused, never deleted."""
    import json

    from .launch.config import load_config
    from .store import bigtable, table_state
    if not (os.environ.get("BIGTABLE_EMULATOR_HOST") or
            (os.environ.get("BIGTABLE_PROJECT") and os.environ.get("BIGTABLE_INSTANCE"))):
        raise CommandError("--use_configured_bigtable: no Bigtable configured (set BIGTABLE_EMULATOR_HOST, or "
                           "BIGTABLE_PROJECT and BIGTABLE_INSTANCE)")
    target = bigtable.resolve_target(os.environ.get("BIGTABLE_PROJECT"), os.environ.get("BIGTABLE_INSTANCE"))
    ours = dataclasses.asdict(load_config(config).data_source)
    existing = [t for t in (graph_id, cache) if t and bigtable.table_exists(bigtable.open_table(target, t, admin=True))]
    if not existing:
        return "fail"
    if graph_id in existing:
        state = table_state.StateRows(target, graph_id).read()
        record = json.loads(state[table_state.RUN][0]) if table_state.RUN in state else {}
        if record.get("inputs", {}).get("data_source") == ours:
            return "recreate"  # an earlier demo's table of this dataset
    raise CommandError(f"table {existing[0]} exists on {target.describe()} and was not written by this demo: the demo never "
                       "deletes a table it did not create; pass --graph_id with another name, or delete the table "
                       "yourself")


def _some_sv(table, layout):
    """An SV whose root is several layers up (the most interesting chain), from a short scan."""
    from .store.reader import read_node
    best, best_len = None, -1
    for row in table.read_rows(limit=400):
        if not row.row_key[:1].isdigit():  # counters, meta, version, the ingest's own row
            continue
        node_id = int(row.row_key)
        if int(layout.layer_of(np.uint64(node_id))) != 1:
            continue
        n, length = node_id, 0
        while n is not None:
            n = read_node(table, n)["parent"]
            length += 1
        if length > best_len:
            best, best_len = node_id, length
    return best


class TableStatus(typing.NamedTuple):
    line: str | None  # `table   : ...`, one line saying what the table is
    identity: str | None  # the run identity in the table
    state: str | None = None  # missing, empty, partial, old (complete, written by an earlier version), complete


def table_completion(graph_id: str, project=None, instance=None) -> TableStatus:
    """What the table is (missing, empty, partial, complete but of an earlier version, complete),
    in one line; all None when no Bigtable is configured."""
    import datetime
    import json

    from .store import bigtable, table_state
    project = project or os.environ.get("BIGTABLE_PROJECT")
    instance = instance or os.environ.get("BIGTABLE_INSTANCE")
    if not (os.environ.get("BIGTABLE_EMULATOR_HOST") or (project and instance)):
        return TableStatus(None, None)
    target = bigtable.resolve_target(project, instance)
    table = bigtable.open_table(target, graph_id, admin=True)
    if not bigtable.table_exists(table):
        return TableStatus(f"table   : {graph_id!r} does not exist in {target.describe()}", None, "missing")
    from .store import kinds
    if check_graph_table(target, graph_id).kind == kinds.EMPTY:
        return TableStatus("table   : EMPTY: created, but no ingest wrote into it (its launcher stopped before the "
                           "first row); rerun the ingest with --if_exists=recreate", None, "empty")
    rows = table_state.StateRows(target, graph_id)
    state = rows.read()
    legacy = rows.legacy_cells()
    for qualifier in (table_state.RUN, table_state.COMPLETE):  # a table of an earlier version
        if qualifier in legacy and qualifier not in state:
            state[qualifier] = legacy[qualifier]
    record = json.loads(state[table_state.RUN][0]) if table_state.RUN in state else {}
    identity = record.get("identity")
    mark = json.loads(state[table_state.COMPLETE][0]) if table_state.COMPLETE in state else None
    if mark is None or mark.get("identity") != identity:
        return TableStatus("table   : NOT complete (no completion mark: the ingest is running, failed, or was "
                           "stopped; rerun with --if_exists=continue)", identity, "partial")
    cache = (record.get("inputs") or {}).get("l2cache")
    if cache:  # the run wrote an L2 cache: complete only with the cache's own mark of this run
        from .l2cache.table import completion_mark
        cache_mark = completion_mark(target, cache["table"])
        if (cache_mark or {}).get("identity") != identity:
            return TableStatus(f"table   : NOT complete: its L2 cache table {cache['table']!r} is missing or holds no "
                               "completion mark of this run (rerun with --if_exists=continue, which writes the cache "
                               "again)", identity, "partial")
    when = datetime.datetime.fromtimestamp(mark["finished_ms"] / 1000, tz=datetime.timezone.utc)
    scope = " (--test scope)" if mark.get("scope") == "test" else ""
    if legacy:
        return TableStatus(f"table   : complete{scope}, but written by an earlier version of this ingest: PyChunkedGraph "
                           "cannot open it until a rerun with --if_exists=continue moves the ingest's own cells out "
                           "of its meta row (nothing else is rewritten)", identity, "old")
    return TableStatus(f"table   : complete{scope}: every chunk proven written ({mark['chunks']} chunks, "
                       f"{mark['rows']} rows, finished {when:%Y-%m-%d %H:%M:%S} UTC)", identity, "complete")


def cmd_status(args):
    from .pipeline.progress import RedisSettings
    settings = RedisSettings.from_env()
    table_line, identity, _ = table_completion(args.graph_id)
    if settings is None and table_line is None:
        raise CommandError("status needs the Redis progress cache (REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD "
                           "as for the ingest) or the Bigtable settings (BIGTABLE_PROJECT/BIGTABLE_INSTANCE or "
                           "BIGTABLE_EMULATOR_HOST) to read the table's completion mark")
    if settings is None and "does not exist" in table_line:
        raise CommandError(table_line.replace("table   : ", "table "))
    try:
        return _print_status(args, settings, table_line, identity)
    except KeyboardInterrupt:  # how --watch ends, wherever in a refresh it lands
        if args.watch is None:
            raise
        return 0


def _print_status(args, settings, table_line, identity):
    import time
    from .pipeline.progress import ProgressCache, format_status
    while True:
        lines = []
        if settings is not None:
            cache = ProgressCache(settings, args.graph_id)
            try:
                status = cache.settings.client().ping() and cache.status()
                stored = cache.settings.client().get(cache._key("identity"))
            except Exception as exc:
                raise CommandError(f"Redis {settings.host}:{settings.port} unavailable: {exc}", code=1)
            if status is None and (table_line is None or "does not exist" in table_line):
                raise CommandError(f"no progress recorded for graph {args.graph_id!r} in Redis "
                                   f"{settings.host}:{settings.port} db {settings.db}")
            if status is not None:
                lines.append(format_status(status))
                if identity and stored and stored.decode() != identity:
                    lines.append("(this progress belongs to another run of the graph id, not to the table's)")
        if table_line is not None:
            lines.append(table_line)
        text = "\n".join(lines)
        if args.watch is None:
            print(text)
            return 0
        print("\033[2J\033[H" + f"Every {args.watch:g}s: graph {args.graph_id}\n\n" + text, flush=True)
        time.sleep(args.watch)
        table_line, identity, _ = table_completion(args.graph_id)


def cmd_flush_redis(args):
    from .pipeline.progress import ProgressCache, RedisSettings
    settings = RedisSettings.from_env()
    if settings is None:
        raise CommandError("flush-redis needs REDIS_HOST (and REDIS_PORT, REDIS_DB, REDIS_PASSWORD)")
    if args.graph_id:
        table_completion(args.graph_id)  # a table of that name that is not a graph's: refused
    try:
        settings.client().ping()
        if args.graph_id:
            print(f"removed {ProgressCache(settings, args.graph_id).flush()} key(s) of graph {args.graph_id}")
        else:
            settings.client().flushdb()
            print(f"flushed Redis {settings.host}:{settings.port} db {settings.db}")
    except Exception as exc:
        raise CommandError(f"Redis {settings.host}:{settings.port} unavailable: {exc}", code=1)
    return 0


def foreign_columns(table) -> str | None:
    """Columns outside PyChunkedGraph's registry in its `meta` and `version` rows (which it
    reads whole), as `row 'meta': 0:a, 0:b`; None when there are none. Earlier versions of
    this tool kept their own cells in the meta row."""
    from .store import cells
    found = []
    for key in (cells.META_ROW, cells.VERSION_ROW):
        row = table.read_row(key)
        if row is None:
            continue
        bad = [f"{family}:{qualifier.decode(errors='replace')}" for family, columns in sorted(row.cells.items())
               for qualifier in sorted(columns) if not cells.is_pcg_column(family, qualifier)]
        if bad:
            found.append(f"row {key.decode()!r} holds column(s) it does not know: {', '.join(bad)}")
    return "; ".join(found) or None


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
        from .inputs.raw import RawReader
        return RawReader(ic.AGGLOMERATION, plan.layout, ds.DATA_VERSION, plan.resolution)
    from .inputs.volumes import SegmentationReader
    return _PreviewReader(SegmentationReader(
        plan.layout, ds.CV_MIP, ic.SUPERVOXELS, ds.WATERSHED, ds.EDGES, ds.COMPONENTS, objects=ic.OBJECTS,
        affinities=ic.AFFINITIES, in_place=plan.segmentation.in_place, fill_missing=fill_missing))


def _cache_check(table_id, graph_id, target, plan, graph_identity=None):
    """The verify.CacheCheck of the L2 cache table, or the MISMATCH line saying why there is none."""
    from .l2cache.chunks import WatershedVoxels
    from .store import bigtable, kinds
    from .ops.verify import CacheCheck
    found = kinds.classify(target, table_id)
    if found is None:
        return f"MISMATCH: L2 cache table {table_id!r} does not exist"
    if found.kind != kinds.L2CACHE or found.graph_id != graph_id:
        return f"MISMATCH: L2 cache table {table_id!r} is not the cache of {graph_id!r}: it is {found.detail}"
    if graph_identity is not None and found.identity != graph_identity:
        return (f"MISMATCH: L2 cache table {table_id!r} was written by another run of graph {graph_id!r} (its run "
                f"{found.identity}, the graph table's {graph_identity}): rerun the ingest with --if_exists=continue")
    ds = plan.settings.data_source
    return CacheCheck(bigtable.open_table(target, table_id, admin=True),
                      WatershedVoxels(ds.WATERSHED, ds.CV_MIP, plan.layout), tuple(plan.resolution), found.complete)


def cmd_verify(args):
    from .inputs.precomputed import PrecomputedReader
    from .launch.plan import plan_ingest
    from .launch.table import meta_mismatch
    from .store import bigtable, cells
    from .store.bigtable import read_cell
    from .ops.verify import verify
    if args.raw and args.from_segmentation:
        raise CommandError("--raw and --from_segmentation: choose the input the table was built from")
    if args.fill_missing and not args.from_segmentation:
        raise CommandError("--fill_missing: applies to --from_segmentation only")
    plan = plan_ingest(args.config, args.graph_id, raw=args.raw, segmentation=args.from_segmentation)
    target = bigtable.resolve_target(plan.project, plan.instance)
    table = bigtable.open_table(target, args.graph_id, admin=True)
    if not bigtable.table_exists(table):
        raise CommandError(f"table {args.graph_id!r} does not exist in {target.describe()}")
    graph = check_graph_table(target, args.graph_id)
    from .store import kinds
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
    cache = None
    if args.l2cache_table:
        cache = _cache_check(args.l2cache_table, args.graph_id, target, plan, graph.identity if graph else None)
        if isinstance(cache, str):
            print(cache)
            return 1
    report = verify(table, plan.layout, reader, args.sample, args.seed, pcg_version=pcg_version, files=files,
                    cache=cache)
    print(report.format())
    return 0 if report.ok and completion.state == "complete" else 1


def cmd_estimate(args):
    from .ops.sizing import format_estimates
    l2_chunks, voxels = args.l2_chunks, args.voxels or 0
    if args.config:
        from .launch.config import load_config
        from .launch.plan import layout_for
        settings = load_config(args.config)
        geometry = None
        if args.from_segmentation:  # the grid is SUPERVOXELS', WATERSHED is an output
            from .inputs.volumes import check_segmentation_volumes
            geometry = check_segmentation_volumes(settings, settings.data_source.CV_MIP,
                                                  settings.graph_config.CHUNK_SIZE).geometry
        layout = layout_for(settings.graph_config, settings.data_source, geometry)[0]
        l2_chunks = layout.chunk_count(2)
        config_voxels = float(np.prod(np.asarray(layout.voxel_counts, np.float64)))
        if not voxels and (geometry is not None or args.l2cache):
            voxels = config_voxels
        print(f"{args.config}: {layout.layer_count} layers, {'x'.join(map(str, layout.n_chunks))} layer-2 chunks, "
              f"{config_voxels:.3g} voxels")
        if args.svs > config_voxels:
            raise CommandError(f"--svs {args.svs:.3g}: more supervoxels than the {config_voxels:.3g} voxels of "
                               f"{args.config}; check --svs, or the config's volume")
    if not l2_chunks:
        raise CommandError("estimate needs --l2_chunks N or --config config.yml")
    for flag, wanted in (("--from_segmentation", args.from_segmentation), ("--l2cache", args.l2cache)):
        if wanted and not voxels:
            raise CommandError(f"estimate {flag} needs --voxels N or --config config.yml")
    if voxels and not (args.from_segmentation or args.l2cache):
        raise CommandError("estimate --voxels: the voxels count only with --from_segmentation or --l2cache")
    if voxels and args.svs > voxels:
        raise CommandError(f"--svs {args.svs:.3g}: more supervoxels than --voxels {voxels:.3g}")
    for note in _estimate_notes(args.svs, l2_chunks, voxels):
        print(f"note: {note}")
    print(format_estimates(args.svs, l2_chunks, tuple(args.nodes), voxels if args.from_segmentation else 0,
                           voxels if args.l2cache else 0))
    return 0


def _estimate_notes(svs: float, l2_chunks: float, voxels: float) -> list[str]:
    """Inputs that are possible but unlike any segmented brain: said, not refused."""
    notes = []
    if voxels and voxels / svs < 100:
        notes.append(f"{voxels / svs:.3g} voxels per supervoxel (segmentations have thousands); the voxel figures "
                     "below are for that volume")
    if svs / l2_chunks > 1e7:
        notes.append(f"{svs / l2_chunks:.3g} supervoxels per layer-2 chunk (typical: 1e3 to 1e5); check --l2_chunks")
    if svs / l2_chunks < 1:
        notes.append(f"{svs / l2_chunks:.3g} supervoxels per layer-2 chunk: most chunks would be empty")
    return notes


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # at once, before Beam's import
        from . import __version__
        print(f"beam-ingest {__version__}")
        return 0
    if argv[:1] == ["ingest"]:  # the ingest itself, with its own strict options (as pipeline.py)
        from .launch.ingest import main as ingest_main
        return ingest_main(argv[1:])
    parser = OneLineParser(prog="beam-ingest", epilog=EXAMPLES + f"\ndocumentation: {shipped('docs')}\n",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="The Beam ChunkedGraph ingest (`ingest`) and its operator commands. "
                                                 "Also runs as `python -m beam_ingest`.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"beam-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest", help="run an ingest: the options of `python pipeline.py` (beam-ingest ingest --help)")

    p = sub.add_parser("inspect", help="print an SV's ancestors up to its root, read from Bigtable")
    p.add_argument("--graph_id", required=True, type=graph_id_type, help="table id of the graph")
    p.add_argument("--sv", type=int_in(0, (1 << 64) - 1), help="supervoxel id to follow to its root")
    p.add_argument("--summary", action="store_true", help="count rows per layer (scans the table)")
    p.add_argument("--project", help="Bigtable project (default: $BIGTABLE_PROJECT)")
    p.add_argument("--instance", help="Bigtable instance (default: $BIGTABLE_INSTANCE)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("generate", help="write a synthetic dataset in the real input formats")
    p.add_argument("--out", required=True, help="output folder (edges/, components/, watershed/, config.yml)")
    p.add_argument("--chunks", type=int_in(1, 1 << 16), nargs=3, default=[4, 4, 2], metavar=("X", "Y", "Z"),
                   help="layer-2 chunks per axis (default 4 4 2)")
    p.add_argument("--svs_per_chunk", type=int_in(1), default=200, help="mean SVs per chunk (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true",
                   help="write the raw agglomeration (agg/chunked_rg, agg/remap) instead of edges/ and components/; "
                        "ingest it with pipeline.py --raw")
    p.add_argument("--data_version", type=int, default=4, choices=(2, 3, 4), help="raw edge record format")
    p.add_argument("--segmentation", action="store_true",
                   help="write segmentation input instead (docs/segmentation-input.md): supervoxels/, objects/, "
                        "affinities/ precomputed volumes and a config.yml naming them under ingest_config; "
                        "uses --chunks and --seed, not --svs_per_chunk")
    p.add_argument("--chunk_size", type=int_in(1, 1 << 16), nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="with --segmentation: CHUNK_SIZE in voxels (default 8 8 4)")
    p.add_argument("--voxels_per_sv", type=positive_float, default=None,
                   help="with --segmentation: mean supervoxel volume in voxels (default 24)")
    p.add_argument("--dtype", choices=("uint64", "uint32"), default=None,
                   help="with --segmentation: data type of supervoxels/ (default uint64)")
    p.add_argument("--objects", action=argparse.BooleanOptionalAction, default=None,
                   help="with --segmentation: write objects/ (default: yes)")
    p.add_argument("--affinities", action=argparse.BooleanOptionalAction, default=None,
                   help="with --segmentation: write affinities/ (default: yes)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="generate a small dataset, ingest it into a Bigtable emulator the demo starts "
                                    "and stops, print a summary and one SV's chain")
    p.add_argument("--out", help="folder of the generated dataset (default: demo_data, or demo_segmentation with "
                                  "--segmentation, so that the two demos do not write over each other)")
    p.add_argument("--graph_id", default="demo_graph", type=graph_id_type)
    p.add_argument("--chunks", type=int_in(1, 1 << 16), nargs=3, default=[4, 4, 2], metavar=("X", "Y", "Z"))
    p.add_argument("--svs_per_chunk", type=int_in(1), default=200)
    p.add_argument("--segmentation", action="store_true",
                   help="start from segmentation volumes instead (pipeline.py --from_segmentation): supervoxels, "
                        "objects and affinities are relabelled, their contacts become the edges, then the ingest; "
                        "also writes the L2 cache (table <graph_id>-l2cache) and prints the chain's cache row")
    p.add_argument("--use_configured_bigtable", action="store_true",
                   help="write into the Bigtable of BIGTABLE_EMULATOR_HOST (or BIGTABLE_PROJECT/INSTANCE) instead, "
                        "to keep the table; an existing table is replaced only if an earlier demo wrote it from the "
                        "same dataset, and refused otherwise")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="per-layer progress of an ingest (completed / total chunks), from Redis")
    p.add_argument("--graph_id", required=True, type=graph_id_type)
    p.add_argument("--watch", type=positive_float, nargs="?", const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until interrupted")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("flush-redis", help="clear the Redis progress cache (all of it, or one graph's keys)")
    p.add_argument("--graph_id", type=graph_id_type, help="only this graph's progress (a table id, never a pattern)")
    p.set_defaults(func=cmd_flush_redis)

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

    p = sub.add_parser("estimate", help="estimate workers, Bigtable nodes, wall time and cost of an ingest")
    p.add_argument("--svs", type=count_type(1e13), required=True, help="number of supervoxels, e.g. 1e9")
    p.add_argument("--l2_chunks", type=count_type(1e10), help="number of layer-2 chunks, e.g. 1e5")
    p.add_argument("--config", help="or: read the chunk grid from this config.yml and its watershed info "
                   "(with --from_segmentation: SUPERVOXELS' info, and the voxels from it)")
    p.add_argument("--from_segmentation", action="store_true",
                   help="the ingest reads segmentation volumes: their voxels' work, shuffle and WATERSHED are added")
    p.add_argument("--voxels", type=count_type(1e16), help="with --from_segmentation or --l2cache and no --config: "
                   "voxels of the volumes, e.g. 1e12")
    p.add_argument("--l2cache", action="store_true",
                   help="the ingest also writes the L2 cache (--l2cache_table): its CPU, rows and storage are added")
    p.add_argument("--nodes", type=int_in(1), nargs="+", default=[10, 20, 40], help="Bigtable node counts to compare")
    p.set_defaults(func=cmd_estimate)

    args = parser.parse_args(argv)
    import logging
    import warnings
    from .errors import UserError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
