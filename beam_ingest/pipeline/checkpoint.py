"""Layer checkpoints: what each chunk hands upward, saved so a run can restart at a layer.

Layout under the checkpoint URL (any cloud-files path):
    layer<L>/<x>_<y>_<z>.npz        the summary chunk (x, y, z) of layer L sends its parent
    layer<L>/_COMPLETE              written once every chunk of layer L has saved its summary
    roots/layer<L>_<chunk id>.npz   components of layer-L chunks whose parent is a root
    roots/layer<L>_COMPLETE
    acks/layer2/<uuid>.json         layer-2 chunks whose rows Bigtable acknowledged (one file per
                                    sink bundle), so a resumed run rebuilds only the others
Markers and ack files carry the run identity of the table they belong to (see
store/table_state.py); a restart trusts them only when it equals the table's. A layer's
summary marker also holds that layer's completion proof (every chunk acknowledged), so a
restart at layer L reads layer L-1's summaries, the root-bound components of layers below
L, and the proofs that the rows of layers below L are in the table.
"""
from __future__ import annotations

import io
import json

import numpy as np

from ..hierarchy.types import Groups, RootBound, Summary
from ..errors import CheckpointError

COMPLETE = "_COMPLETE"


def _cloudfiles(url: str):
    from cloudfiles import CloudFiles
    return CloudFiles(url, progress=False)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _check_identity(z, identity, name):
    found = str(z["identity"]) if "identity" in z else None
    if identity is not None and found != identity:
        raise CheckpointError(f"checkpoint file {name} belongs to another run (identity {found}, this run's is "
                              f"{identity})")


def encode_summary(parent, summary: Summary, identity: str = "") -> bytes:
    return _npz(parent=np.asarray(parent, np.int64), nodes=summary.nodes, edge_node=summary.edge_node,
                edge_own=summary.edge_own, edge_other=summary.edge_other, edge_layer=summary.edge_layer,
                edge_chain=summary.edge_chain, identity=np.str_(identity))


def decode_summary(data: bytes, identity: str | None = None, name: str = ""):
    with np.load(io.BytesIO(data)) as z:
        _check_identity(z, identity, name)
        summary = Summary(z["nodes"], z["edge_node"], z["edge_own"], z["edge_other"], z["edge_layer"])
        if "edge_chain" in z.files:
            summary.edge_chain = z["edge_chain"]
        return tuple(int(c) for c in z["parent"]), summary


def encode_root_bound(bucket: int, part: RootBound, identity: str = "") -> bytes:
    return _npz(bucket=np.int64(bucket), source=np.uint64(part.source_chunk),
                values=part.components.values, offsets=part.components.offsets, identity=np.str_(identity))


def decode_root_bound(data: bytes, identity: str | None = None, name: str = ""):
    with np.load(io.BytesIO(data)) as z:
        _check_identity(z, identity, name)
        return int(z["bucket"]), RootBound(int(z["source"]), Groups(z["values"], z["offsets"]))


def summary_name(layer: int, coord) -> str:
    return f"layer{layer}/" + "_".join(str(int(c)) for c in coord) + ".npz"


def roots_name(layer: int, part: RootBound) -> str:
    return roots_file(layer, part.source_chunk)


def roots_file(layer: int, source_chunk: int) -> str:
    """The root-bound components of the layer-`layer` chunk with id `source_chunk`."""
    return f"roots/layer{layer}_{int(source_chunk)}.npz"


def complete_name(kind: str, layer: int) -> str:
    return f"layer{layer}/{COMPLETE}" if kind == "summaries" else f"roots/layer{layer}{COMPLETE}"


def write_file(url: str, name: str, data: bytes) -> None:
    _cloudfiles(url).put(name, data, compress=None, raw=True)


def mark_complete(url: str, kind: str, layer: int, count: int, identity: str, proof: dict | None = None) -> None:
    write_file(url, complete_name(kind, layer),
               json.dumps({"files": int(count), "identity": identity, "proof": proof}).encode())


def read_marker(url: str, kind: str, layer: int, identity: str) -> dict:
    """A layer's marker, checked to belong to the run `identity`; raises CheckpointError otherwise."""
    cf = _cloudfiles(url)
    marker = cf.get(complete_name(kind, layer), raw=True)
    what = "summaries" if kind == "summaries" else "root-bound components"
    where = f"{url.rstrip('/')}/{complete_name(kind, layer)}"
    if marker is None:
        raise CheckpointError(f"checkpoint {where} not found: the layer-{layer} {what} were not (completely) saved; "
                              "rerun from an earlier layer")
    try:
        marker = json.loads(marker)
    except ValueError:
        raise CheckpointError(f"checkpoint {where} is not a marker of this tool") from None
    if marker.get("identity") != identity:
        raise CheckpointError(f"checkpoint {where} belongs to another run (identity {marker.get('identity')}, the "
                              f"table's is {identity}): it was saved for another graph or an earlier table of "
                              "this one; restart with --start_layer=2 or point --checkpoint_dir at this run's")
    return marker


def list_layer(url: str, kind: str, layer: int, identity: str) -> list[str]:
    """The files of a complete checkpoint of `layer` of run `identity`; raises CheckpointError otherwise."""
    cf = _cloudfiles(url)
    expected = read_marker(url, kind, layer, identity)["files"]
    prefix = f"layer{layer}/" if kind == "summaries" else f"roots/layer{layer}_"
    names = sorted(n for n in cf.list(prefix=prefix) if n.endswith(".npz"))
    if len(names) != expected:
        raise CheckpointError(f"checkpoint {url.rstrip('/')}/{prefix}*: {len(names)} files, the marker says "
                              f"{expected}")
    return names


def write_acks(url: str, identity: str, coords, counts) -> None:
    """Record layer-2 chunks whose rows were all acknowledged (one file per sink bundle)."""
    import uuid
    write_file(url, f"acks/layer2/{uuid.uuid4().hex}.json",
               json.dumps({"identity": identity, "coords": np.asarray(coords).tolist(),
                           "counts": np.asarray(counts).tolist()}).encode())


def acknowledged_layer2(url: str, identity: str) -> tuple[np.ndarray, np.ndarray]:
    """Layer-2 chunks recorded as acknowledged for run `identity`: `(coords (k, 3), counts (k, 4))`."""
    cf = _cloudfiles(url)
    names = [n for n in cf.list(prefix="acks/layer2/") if n.endswith(".json")]
    coords, counts = [np.empty((0, 3), np.int64)], [np.empty((0, 4), np.int64)]
    for item in cf.get(names, raw=True):
        record = json.loads(item["content"]) if item.get("content") else {}
        if record.get("identity") == identity and record.get("coords"):
            coords.append(np.asarray(record["coords"], np.int64).reshape(-1, 3))
            counts.append(np.asarray(record["counts"], np.int64).reshape(-1, 4))
    return np.concatenate(coords), np.concatenate(counts)


def saved_summaries(url: str, layer: int, coords) -> dict:
    """Of these chunks of `layer`, those whose summary file is saved under `url`: {coord: file name}."""
    wanted = {summary_name(layer, c): tuple(int(v) for v in c) for c in coords}
    return {wanted[n]: n for n in _cloudfiles(url).list(prefix=f"layer{layer}/") if n in wanted}


def list_roots(url: str, layer: int) -> list[str]:
    """Every root-bound file saved for `layer` (complete or not)."""
    return sorted(_cloudfiles(url).list(prefix=f"roots/layer{layer}_"))


def read_file(url: str, name: str) -> bytes:
    data = _cloudfiles(url).get(name, raw=True)
    if data is None:
        raise CheckpointError(f"checkpoint file {url.rstrip('/')}/{name} disappeared")
    return data
