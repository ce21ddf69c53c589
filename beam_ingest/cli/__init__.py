"""The command line: `beam-ingest ingest ...` (the ingest) and the operator commands
(`generate`, `inspect`, `demo`, `status`, `verify`, ...); also `python -m beam_ingest`.

One module per command: each adds its parser (`add_parser`) and runs it (`cmd_*`)."""
from __future__ import annotations

import argparse
import sys

from ..shipped import shipped
from . import demo, estimate, generate, inspect, status, verify
from .args import OneLineParser

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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # at once, before Beam's import
        from .. import __version__
        print(f"beam-ingest {__version__}")
        return 0
    if argv[:1] == ["ingest"]:  # the ingest itself, with its own strict options (as pipeline.py)
        from ..launch.ingest import main as ingest_main
        return ingest_main(argv[1:])
    parser = OneLineParser(prog="beam-ingest", epilog=EXAMPLES + f"\ndocumentation: {shipped('docs')}\n",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="The Beam ChunkedGraph ingest (`ingest`) and its operator commands. "
                                                 "Also runs as `python -m beam_ingest`.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"beam-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest", help="run an ingest: the options of `python pipeline.py` (beam-ingest ingest --help)")

    for command in (inspect, generate, demo, status, verify, estimate):  # the order --help lists them in
        (getattr(command, "add_parsers", None) or command.add_parser)(sub)

    args = parser.parse_args(argv)
    import logging
    import warnings
    from ..errors import UserError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
