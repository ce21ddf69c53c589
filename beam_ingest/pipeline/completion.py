"""The completion proof: every chunk of every layer built and all its rows acknowledged.

The sink reports, per chunk, how many entries it queued and how many Bigtable acknowledged
(`Acks`); a chunk counts only when the two are equal. Per layer, the acknowledged chunks
must be exactly the layer's chunks (`check_layer`); over the whole run, the cell totals
must agree: every supervoxel and every non-root node has a parent cell
(`check_totals`). Pure functions on numpy arrays; the Beam wiring is in sink.py and build.py.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ..errors import IncompleteError

ROOTS = "roots"
L2CACHE = "l2cache"  # the L2 cache's rows, one proof per layer-2 chunk (a table of their own)
# columns of Acks.counts
ROWS, PARENTS, CHILDREN, SVS = range(4)
# and of the L2 cache's: its rows, the chunk's layer-2 nodes without a voxel in WATERSHED, and
# the supervoxels of its WATERSHED block that the graph does not know
NO_VOXELS, UNKNOWN_SVS = PARENTS, CHILDREN
SHOWN = 5  # missing chunks named in a message


@dataclasses.dataclass
class Acks:
    """Chunks of one layer (or root buckets) whose every row was acknowledged."""
    layer: object  # int, or ROOTS
    coords: np.ndarray  # (k, 3) chunk coordinates; (k, 1) bucket numbers for ROOTS
    counts: np.ndarray  # (k, 4): rows, parent cells, children cells, supervoxels

    @classmethod
    def empty(cls, layer):
        width = 1 if layer == ROOTS else 3
        return cls(layer, np.empty((0, width), np.int64), np.empty((0, 4), np.int64))

    @classmethod
    def concat(cls, layer, parts) -> "Acks":
        parts = [p for p in parts if len(p.coords)]
        if not parts:
            return cls.empty(layer)
        return cls(layer, np.concatenate([p.coords for p in parts]), np.concatenate([p.counts for p in parts]))


def layer_label(layer) -> str:
    return {ROOTS: "root buckets", L2CACHE: "L2 cache"}.get(layer, f"layer {layer}")


def describe(layer, coord) -> str:
    if layer == ROOTS:
        return f"root bucket {int(coord[0])}"
    if layer == L2CACHE:
        return f"the L2 cache of layer-2 chunk {tuple(int(c) for c in coord)}"
    return f"layer-{layer} chunk {tuple(int(c) for c in coord)}"


def expected_chunks(layout, layer, coords=None) -> np.ndarray:
    """The chunks a run must acknowledge for `layer`: the whole grid, or the given ones."""
    if layer == ROOTS:
        from ..layout import ROOT_COUNTER_BUCKETS
        return np.arange(ROOT_COUNTER_BUCKETS, dtype=np.int64).reshape(-1, 1)
    if coords is not None:
        return np.asarray(coords, np.int64).reshape(-1, 3)
    shape = layout.chunks_per_axis(layer)
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1).astype(np.int64)


def _keys(coords: np.ndarray) -> np.ndarray:
    """One integer per coordinate (21 bits per axis)."""
    c = coords.astype(np.int64)
    if c.shape[1] == 1:
        return c[:, 0]
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def check_layer(acks: Acks, expected: np.ndarray) -> dict:
    """The proof of one layer, `{"layer", "chunks", "rows", "parents", "children", "svs"}`;
    raises IncompleteError naming the chunks without acknowledgement (or unexpected ones)."""
    keys = _keys(acks.coords)
    # a retried bundle acknowledges a chunk twice, with the same counts: count it once
    keys, first = np.unique(keys, return_index=True)
    counts = acks.counts[first]
    want = _keys(expected)
    missing = np.flatnonzero(~np.isin(want, keys))
    if len(missing):
        names = ", ".join(describe(acks.layer, expected[i]) for i in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise IncompleteError(f"{layer_label(acks.layer)}: {len(missing)} of {len(want)} chunks were not built "
                              f"and acknowledged by Bigtable: {names}{more}")
    stray = np.flatnonzero(~np.isin(keys, want))
    if len(stray):
        coords = acks.coords[first][stray[0]]
        raise IncompleteError(f"{layer_label(acks.layer)}: acknowledged {describe(acks.layer, coords)}, which this "
                              "run does not build")
    total = counts.sum(axis=0)
    return {"layer": acks.layer, "chunks": int(len(keys)), "rows": int(total[ROWS]),
            "parents": int(total[PARENTS]), "children": int(total[CHILDREN]), "svs": int(total[SVS])}


def check_cache(acks: Acks, expected: np.ndarray, accept_mismatch: bool = False) -> dict:
    """The L2 cache's proof (`check_layer`), `{"layer", "chunks", "rows", "nodes_without_voxels",
    "unknown_svs"}`. Unless `accept_mismatch`, a chunk whose WATERSHED block and layer-2 build
    disagree fails it (InputError naming the first such chunks and their counts)."""
    proof = check_layer(acks, expected)
    proof = {"layer": proof["layer"], "chunks": proof["chunks"], "rows": proof["rows"],
             "nodes_without_voxels": proof["parents"], "unknown_svs": proof["children"]}
    if accept_mismatch or not (proof["nodes_without_voxels"] or proof["unknown_svs"]):
        return proof
    from ..errors import InputError
    keys, first = np.unique(_keys(acks.coords), return_index=True)
    coords, counts = acks.coords[first], acks.counts[first]
    bad = np.flatnonzero(counts[:, NO_VOXELS] + counts[:, UNKNOWN_SVS])
    named = "; ".join(f"{tuple(int(c) for c in coords[i])}: {counts[i, NO_VOXELS]} node(s) without voxels, "
                      f"{counts[i, UNKNOWN_SVS]} unknown supervoxel(s)" for i in bad[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more chunks" if len(bad) > SHOWN else ""
    raise InputError(
        f"data_source.WATERSHED disagrees with the graph's inputs in {len(bad)} of {len(keys)} layer-2 chunks "
        f"({proof['nodes_without_voxels']} layer-2 nodes without a voxel, {proof['unknown_svs']} supervoxels the "
        f"graph does not know): {named}{more}. The L2 cache would be computed from other voxels than the graph's; "
        "check WATERSHED (or pass --l2cache_accept_mismatch to write it anyway)")


def cache_totals(mark: dict) -> dict:
    """What the L2 cache's own completion mark holds, from the graph's."""
    return {"rows": mark.get("l2cache_rows", 0),
            "nodes_without_voxels": mark.get("l2cache_nodes_without_voxels", 0),
            "unknown_svs": mark.get("l2cache_unknown_svs", 0), "finished_ms": mark.get("finished_ms"),
            "scope": mark.get("scope")}


def check_totals(proofs: list[dict], layers: list, roots: bool) -> dict:
    """All layers proven, and (with roots) every supervoxel and non-root node has its parent cell:
    parents = supervoxels + nodes with children - roots. Returns the totals."""
    by_layer = {p["layer"]: p for p in proofs}
    absent = [layer for layer in layers if layer not in by_layer]
    if absent:
        raise IncompleteError(f"no proof for {', '.join(layer_label(a) for a in absent)}")
    cache = by_layer.pop(L2CACHE, None)  # another table's rows: not in the graph's totals
    total = {k: sum(p[k] for p in by_layer.values()) for k in ("chunks", "rows", "parents", "children", "svs")}
    if cache is not None:
        total["l2cache_rows"] = cache["rows"]
        total["l2cache_nodes_without_voxels"] = cache.get("nodes_without_voxels", 0)
        total["l2cache_unknown_svs"] = cache.get("unknown_svs", 0)
    if roots:
        n_roots = by_layer[ROOTS]["children"]
        if total["parents"] != total["svs"] + total["children"] - n_roots:
            raise IncompleteError(
                f"cell totals disagree: {total['parents']} parent cells written, but {total['svs']} supervoxels + "
                f"{total['children'] - n_roots} non-root nodes need one each")
        total["roots"] = n_roots
    return total
