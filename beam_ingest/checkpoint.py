"""Layer checkpoints: what each chunk hands upward, saved so a run can restart at a layer.

Layout under the checkpoint URL (any cloud-files path):
    layer<L>/<x>_<y>_<z>.npz        the summary chunk (x, y, z) of layer L sends its parent
    layer<L>/_COMPLETE              written once every chunk of layer L has saved its summary
    roots/layer<L>_<chunk id>.npz   components of layer-L chunks whose parent is a root
    roots/layer<L>_COMPLETE
A restart at layer L reads layer L-1's summaries and the root-bound components of layers
below L; the rows of layers below L are already in the table.
"""
from __future__ import annotations

import io
import json

import numpy as np

from .build.types import Groups, RootBound, Summary

COMPLETE = "_COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or incomplete."""


def _cloudfiles(url: str):
    from cloudfiles import CloudFiles
    return CloudFiles(url, progress=False)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def encode_summary(parent, summary: Summary) -> bytes:
    return _npz(parent=np.asarray(parent, np.int64), nodes=summary.nodes, edge_node=summary.edge_node,
                edge_own=summary.edge_own, edge_other=summary.edge_other, edge_layer=summary.edge_layer)


def decode_summary(data: bytes):
    with np.load(io.BytesIO(data)) as z:
        summary = Summary(z["nodes"], z["edge_node"], z["edge_own"], z["edge_other"], z["edge_layer"])
        return tuple(int(c) for c in z["parent"]), summary


def encode_root_bound(bucket: int, part: RootBound) -> bytes:
    return _npz(bucket=np.int64(bucket), source=np.uint64(part.source_chunk),
                values=part.components.values, offsets=part.components.offsets)


def decode_root_bound(data: bytes):
    with np.load(io.BytesIO(data)) as z:
        return int(z["bucket"]), RootBound(int(z["source"]), Groups(z["values"], z["offsets"]))


def summary_name(layer: int, coord) -> str:
    return f"layer{layer}/" + "_".join(str(int(c)) for c in coord) + ".npz"


def roots_name(layer: int, part: RootBound) -> str:
    return f"roots/layer{layer}_{int(part.source_chunk)}.npz"


def complete_name(kind: str, layer: int) -> str:
    return f"layer{layer}/{COMPLETE}" if kind == "summaries" else f"roots/layer{layer}{COMPLETE}"


def write_file(url: str, name: str, data: bytes) -> None:
    _cloudfiles(url).put(name, data, compress=None, raw=True)


def mark_complete(url: str, kind: str, layer: int, count: int) -> None:
    write_file(url, complete_name(kind, layer), json.dumps({"files": int(count)}).encode())


def list_layer(url: str, kind: str, layer: int) -> list[str]:
    """The files of a complete checkpoint of `layer`; raises CheckpointError otherwise."""
    cf = _cloudfiles(url)
    marker = cf.get(complete_name(kind, layer), raw=True)
    what = "summaries" if kind == "summaries" else "root-bound components"
    if marker is None:
        raise CheckpointError(f"checkpoint {url.rstrip('/')}/{complete_name(kind, layer)} not found: the "
                              f"layer-{layer} {what} were not (completely) saved; rerun from an earlier layer")
    expected = json.loads(marker)["files"]
    prefix = f"layer{layer}/" if kind == "summaries" else f"roots/layer{layer}_"
    names = sorted(n for n in cf.list(prefix=prefix) if n.endswith(".npz"))
    if len(names) != expected:
        raise CheckpointError(f"checkpoint {url.rstrip('/')}/{prefix}*: {len(names)} files, the marker says "
                              f"{expected}")
    return names


def saved_layer2(url: str, coords) -> tuple[list[str], list[str]]:
    """Of these layer-2 chunks, the summary files saved under `url`, and their root-bound files."""
    cf = _cloudfiles(url)
    wanted = {summary_name(2, c): c for c in coords}
    summaries = sorted(n for n in cf.list(prefix="layer2/") if n in wanted)
    return summaries, sorted(cf.list(prefix="roots/layer2_"))


def read_file(url: str, name: str) -> bytes:
    data = _cloudfiles(url).get(name, raw=True)
    if data is None:
        raise CheckpointError(f"checkpoint file {url.rstrip('/')}/{name} disappeared")
    return data
