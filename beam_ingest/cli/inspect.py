"""`inspect`: one supervoxel's chain up to its root, and rows per layer."""
from __future__ import annotations

from ..errors import CommandError
from ..launch.options import int_in
from .args import graph_id_type
from .tables import describe_chain, layer_summary, open_graph_table, table_completion


def cmd_inspect(args):
    """What the table holds; a table that is not complete says so in its last line."""
    if args.sv is None and not args.summary:
        raise CommandError("inspect needs --sv ID and/or --summary")
    table = open_graph_table(args)
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


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="print an SV's ancestors up to its root, read from Bigtable")
    p.add_argument("--graph_id", required=True, type=graph_id_type, help="table id of the graph")
    p.add_argument("--sv", type=int_in(0, (1 << 64) - 1), help="supervoxel id to follow to its root")
    p.add_argument("--summary", action="store_true", help="count rows per layer (scans the table)")
    p.add_argument("--project", help="Bigtable project (default: $BIGTABLE_PROJECT)")
    p.add_argument("--instance", help="Bigtable instance (default: $BIGTABLE_INSTANCE)")
    p.set_defaults(func=cmd_inspect)
