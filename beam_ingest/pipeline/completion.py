"""The completion proof: every chunk of every layer built and all its rows acknowledged.

The sink reports, per chunk, how many entries it queued and how many Bigtable acknowledged
(`Acks`); a chunk counts only when the two are equal. Per layer, the acknowledged chunks
must be exactly the layer's chunks (`check_layer`); over the whole run, the cell totals
must agree: every supervoxel and every non-root node has a parent cell
(`check_totals`). Pure functions on numpy arrays; the Beam wiring is in sink.py and build.py;
the stages, their names and what their sinks count are in stages.py.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import IncompleteError
from . import stages
from .stages import L2CACHE, ROOTS

SHOWN = 5  # missing chunks named in a message


@dataclasses.dataclass
class Acks:
    """Chunks of one stage whose every entry Bigtable acknowledged, with what the sink counted
    for each: `counts` has one int64 field per name of `stages.counted(stage)`."""
    stage: object  # a layer, stages.ROOTS or stages.L2CACHE
    coords: np.ndarray  # (k, 3) chunk coordinates; (k, 1) bucket numbers for ROOTS
    counts: np.ndarray  # (k,) structured

    @staticmethod
    def dtype(stage) -> np.dtype:
        return np.dtype([(name, np.int64) for name in stages.counted(stage)])

    @classmethod
    def of(cls, stage, coords, columns) -> "Acks":
        """From coordinates and the counts as columns in `stages.counted(stage)` order (k, n)."""
        columns = np.asarray(columns, np.int64).reshape(-1, len(stages.counted(stage)))
        counts = np.zeros(len(columns), cls.dtype(stage))
        for i, name in enumerate(stages.counted(stage)):
            counts[name] = columns[:, i]
        return cls(stage, np.asarray(coords, np.int64).reshape(-1, stages.coord_width(stage)), counts)

    def columns(self) -> np.ndarray:
        """The counts as plain columns (k, n), in `stages.counted` order."""
        return np.stack([self.counts[name] for name in self.counts.dtype.names], axis=1).reshape(len(self.counts), -1)

    @classmethod
    def empty(cls, stage):
        return cls.of(stage, np.empty((0, stages.coord_width(stage)), np.int64),
                      np.empty((0, len(stages.counted(stage))), np.int64))

    @classmethod
    def concat(cls, stage, parts) -> "Acks":
        parts = [p for p in parts if len(p.coords)]
        if not parts:
            return cls.empty(stage)
        return cls(stage, np.concatenate([p.coords for p in parts]), np.concatenate([p.counts for p in parts]))


def _keys(coords: np.ndarray) -> np.ndarray:
    """One integer per coordinate (21 bits per axis)."""
    c = coords.astype(np.int64)
    if c.shape[1] == 1:
        return c[:, 0]
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def check_layer(acks: Acks, expected: np.ndarray) -> dict:
    """The proof of one stage, `{"layer", "chunks"}` and the sum of each of its counts (for a
    layer: "rows", "parents", "children", "svs"); raises IncompleteError naming the chunks
    without acknowledgement (or unexpected ones)."""
    keys = _keys(acks.coords)
    # a retried bundle acknowledges a chunk twice, with the same counts: count it once
    keys, first = np.unique(keys, return_index=True)
    counts = acks.counts[first]
    want = _keys(expected)
    missing = np.flatnonzero(~np.isin(want, keys))
    if len(missing):
        names = ", ".join(stages.describe(acks.stage, expected[i]) for i in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise IncompleteError(f"{stages.proof_label(acks.stage)}: {len(missing)} of {len(want)} chunks were not "
                              f"built and acknowledged by Bigtable: {names}{more}")
    stray = np.flatnonzero(~np.isin(keys, want))
    if len(stray):
        coords = acks.coords[first][stray[0]]
        raise IncompleteError(f"{stages.proof_label(acks.stage)}: acknowledged {stages.describe(acks.stage, coords)}, "
                              "which this run does not build")
    return {"layer": acks.stage, "chunks": int(len(keys)),
            **{name: int(counts[name].sum()) for name in counts.dtype.names}}


def check_cache(acks: Acks, expected: np.ndarray, accept_mismatch: bool = False) -> dict:
    """The L2 cache's proof (`check_layer`), `{"layer", "chunks", "rows", "nodes_without_voxels",
    "unknown_svs"}`. Unless `accept_mismatch`, a chunk whose WATERSHED block and layer-2 build
    disagree fails it (InputError naming the first such chunks and their counts)."""
    proof = check_layer(acks, expected)
    if accept_mismatch or not (proof["nodes_without_voxels"] or proof["unknown_svs"]):
        return proof
    from ..errors import InputError
    keys, first = np.unique(_keys(acks.coords), return_index=True)
    coords, counts = acks.coords[first], acks.counts[first]
    bad = np.flatnonzero(counts["nodes_without_voxels"] + counts["unknown_svs"])
    named = "; ".join(f"{tuple(int(c) for c in coords[i])}: {counts['nodes_without_voxels'][i]} node(s) without "
                      f"voxels, {counts['unknown_svs'][i]} unknown supervoxel(s)" for i in bad[:SHOWN])
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
        raise IncompleteError(f"no proof for {', '.join(stages.proof_label(a) for a in absent)}")
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
