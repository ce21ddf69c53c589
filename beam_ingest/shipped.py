"""Where the files shipped beside the package are: the documentation (`docs/`) and the
examples (`examples/`), in a checkout or where an installed wheel put them
(`<prefix>/share/beam-chunkedgraph-ingest/`), so that messages name a path that exists."""
from __future__ import annotations

import os
import sys

SHARE = os.path.join("share", "beam-chunkedgraph-ingest")


def shipped(relative: str) -> str:
    """`relative` (`docs/l2cache.md`, `examples/open_in_pcg.py`) in this checkout, else in the
    installed data folder, else as given (a source tree without them)."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for base in (checkout, os.path.join(sys.prefix, SHARE)):
        path = os.path.join(base, relative)
        if os.path.exists(path):
            return path if base != checkout or os.getcwd() != checkout else relative
    return relative
