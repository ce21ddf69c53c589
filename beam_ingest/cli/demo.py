"""`demo`: a small dataset ingested into a Bigtable emulator of its own, end to end."""
from __future__ import annotations

import dataclasses
import os

from ..errors import CommandError
from ..launch.options import int_in
from ..shipped import shipped
from .args import graph_id_type
from .generate import left_out
from .tables import describe_cache_row, describe_chain, layer_summary, open_graph_table, some_sv


def cmd_demo(args):
    """Generate a small dataset, ingest it into an emulator, print the summary and one chain."""
    import time

    from ..launch import ingest as pipeline
    from ..ops.emulator import Emulator
    from ..synthetic.precomputed import SyntheticSpec, generate

    extra = []
    cache = f"{args.graph_id}-l2cache" if args.segmentation else None
    args.out = args.out or ("demo_segmentation" if args.segmentation else "demo_data")
    if args.segmentation:  # volumes in: relabelled, contacts as edges, then the same ingest
        from ..synthetic.segmentation import SegmentationSpec, generate_segmentation
        info = generate_segmentation(args.out, SegmentationSpec(chunks=tuple(args.chunks)))
        extra = ["--from_segmentation", f"--l2cache_table={cache}"]
        print(f"generated a {'x'.join(map(str, info['size']))}-voxel segmentation ({info['n_supervoxels']} "
              f"supervoxels, objects, affinities) under {args.out}")
    else:
        info = generate(args.out, SyntheticSpec(chunks=tuple(args.chunks), svs_per_chunk=args.svs_per_chunk))
        print(f"generated {info['svs']} SVs ({left_out(info)}) in {info['chunks']} chunks under {args.out}")
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
        from ..ops.report import format_summary
        print(format_summary(counters, plan.layout.layer_count, time.time() - start))
        args.project = args.instance = None
        table = open_graph_table(args)
        print("\n".join(layer_summary(table)))
        sv = some_sv(table, plan.layout)
        print(f"\nthe chain of SV {sv} up to its root:")
        print("\n".join(describe_chain(table, sv)))
        if cache:
            from ..store.reader import read_node
            node = read_node(table, sv)["parent"]
            print(f"\nthe L2 cache row of its layer-2 node {node} (table {cache}; {shipped('docs/l2cache.md')}):")
            from ..store import targets
            cache_table = targets.open_table(targets.resolve_target(None, None), cache, admin=True)
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

    from ..launch.config import load_config
    from ..store import admin, table_state, targets
    if not (os.environ.get("BIGTABLE_EMULATOR_HOST") or
            (os.environ.get("BIGTABLE_PROJECT") and os.environ.get("BIGTABLE_INSTANCE"))):
        raise CommandError("--use_configured_bigtable: no Bigtable configured (set BIGTABLE_EMULATOR_HOST, or "
                           "BIGTABLE_PROJECT and BIGTABLE_INSTANCE)")
    target = targets.resolve_target(os.environ.get("BIGTABLE_PROJECT"), os.environ.get("BIGTABLE_INSTANCE"))
    ours = dataclasses.asdict(load_config(config).data_source)
    existing = [t for t in (graph_id, cache) if t and admin.table_exists(targets.open_table(target, t, admin=True))]
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


def add_parser(sub) -> None:
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
