"""Synthetic datasets in the real input formats, at any size, with the awkward cases.

    python -m beam_ingest generate --out demo_data --chunks 4 4 2 --svs_per_chunk 200

writes `edges/`, `components/`, `watershed/info` and a `config.yml` under `--out`.
What it puts in on purpose: empty chunks, SVs with no edges (not in the graph), SVs the
components file does not map, a partial last chunk, a non-zero voxel offset, objects that
span the whole volume (crossing every layer), regional objects, split SVs joined by
cross-chunk ("fake") edges, between edges to face, edge and corner (diagonal) neighbours,
between edges present on one side only, duplicate edges and self edges.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os

import numpy as np
import yaml

from ..chunk_inputs import Edges
from ..inputs.precomputed import components_filename, edges_filename, encode_components, encode_edges
from ..layout import GraphLayout


@dataclasses.dataclass
class SyntheticSpec:
    chunks: tuple[int, int, int] = (2, 2, 2)
    svs_per_chunk: int = 50
    chunk_size: tuple[int, int, int] = (64, 64, 32)
    voxel_offset: tuple[int, int, int] = (17, 5, 3)
    partial_last_chunk: bool = True
    empty_chunk_fraction: float = 0.1
    global_objects: int = 2
    global_fraction: float = 0.08
    unmapped_fraction: float = 0.02
    one_sided_fraction: float = 0.03
    in_edges_per_sv: float = 2.5
    between_edges_per_sv: float = 0.3
    fake_edges_per_face: int = 2
    seed: int = 0
    raw: bool = False        # write the raw agglomeration (sharded files) instead of EDGES/COMPONENTS
    data_version: int = 4    # record format of the raw edge files (2, 3 or 4)


def _neighbour_offsets():
    """The 13 'forward' neighbour offsets: face, edge and corner neighbours, each pair once."""
    out = []
    for d in itertools.product((-1, 0, 1), repeat=3):
        if d > (0, 0, 0):
            out.append(d)
    return out


def _pick_partner(rng, objs_a, svs_b, objs_b_sorted_order, objs_b):
    """For each object in objs_a, a random SV of chunk B with the same object, else a random one."""
    order = objs_b_sorted_order
    sorted_objs = objs_b[order]
    lo = np.searchsorted(sorted_objs, objs_a, "left")
    hi = np.searchsorted(sorted_objs, objs_a, "right")
    has = hi > lo
    pick = np.where(has, lo + (rng.random(len(objs_a)) * np.maximum(hi - lo, 1)).astype(np.int64),
                    rng.integers(0, len(svs_b), len(objs_a)))
    return svs_b[order[np.minimum(pick, len(order) - 1)]]


def generate(out_dir: str, spec: SyntheticSpec = SyntheticSpec()) -> dict:
    """Write a dataset under `out_dir`; return a small dict describing it."""
    rng = np.random.default_rng(spec.seed)  # one stream, drawn in this order: the dataset is a function of the seed
    n = np.asarray(spec.chunks)
    size = n * np.asarray(spec.chunk_size)
    if spec.partial_last_chunk:
        size = size - np.asarray(spec.chunk_size) // 3  # the last chunk on every axis is partial
    layout = GraphLayout(tuple(spec.chunk_size), tuple(spec.voxel_offset), tuple(int(s) for s in size))
    assert layout.n_chunks == tuple(spec.chunks)

    coords = [tuple(int(v) for v in c) for c in layout.layer2_coords()]
    svs, objs = _chunk_svs(rng, spec, layout, coords)
    parts = {c: {k: [] for k in ("in_chunk", "between_chunk", "cross_chunk")} for c in coords}
    extra_mapped = {c: [] for c in coords}

    def add(c, kind, a, b):
        if len(a):
            parts[c][kind].append((a, b))

    _in_chunk_edges(rng, spec, coords, svs, objs, add)
    pair_records = _neighbour_edges(rng, spec, coords, svs, objs, add, extra_mapped)
    in_graph = {"svs_in_graph": _svs_in_graph(parts, svs)}
    if spec.raw:
        return {**_write_raw(out_dir, spec, layout, svs, objs, parts, pair_records, rng, size), **in_graph}
    n_edges = _write_precomputed(out_dir, spec, rng, coords, svs, objs, parts, extra_mapped)
    _write_info(os.path.join(out_dir, "watershed"), spec, size)
    return {**_write_config(out_dir, spec, layout, svs, coords, n_edges), **in_graph}


def _chunk_svs(rng, spec, layout, coords):
    """Each chunk's SV ids and their objects (global, regional or local to the chunk)."""
    svs, objs = {}, {}
    next_local = 1_000_000
    for c in coords:
        count = 0 if rng.random() < spec.empty_chunk_fraction else int(rng.poisson(spec.svs_per_chunk))
        if len(coords) == 1:
            count = max(count, 3)
        ids = layout.chunk_id(1, *c) | np.arange(1, count + 1, dtype=np.uint64)
        kind = rng.random(count)
        obj = np.empty(count, np.int64)
        glob = kind < spec.global_fraction
        obj[glob] = rng.integers(0, max(spec.global_objects, 1), int(glob.sum()))
        regional = (kind >= spec.global_fraction) & (kind < 0.45)
        level = rng.integers(1, 4, int(regional.sum()))
        region = np.stack([np.asarray(c) >> lv for lv in level], 0) if len(level) else np.zeros((0, 3), int)
        obj[regional] = (100 + level * 10_000_000 + region[:, 0] * 1_000_000 + region[:, 1] * 1000
                         + region[:, 2]) * 8 + rng.integers(0, 8, int(regional.sum()))
        local = ~glob & ~regional
        obj[local] = next_local + rng.integers(0, max(count // 3, 1), int(local.sum()))
        next_local += count + 1
        obj[local] = -obj[local]  # disjoint from the other kinds
        svs[c], objs[c] = ids, obj

    return svs, objs


def _in_chunk_edges(rng, spec, coords, svs, objs, add):
    """Edges within each chunk, mostly inside an object; with duplicates, self edges and a
    few SVs left without any edge."""
    for c in coords:
        ids, obj = svs[c], objs[c]
        if len(ids) < 2:
            continue
        m = int(len(ids) * spec.in_edges_per_sv)
        order = np.argsort(obj, kind="stable")
        a_idx = rng.integers(0, len(ids), m)
        same = rng.random(m) < 0.7
        b_same = _pick_partner(rng, obj[a_idx], ids, order, obj)
        b_rand = ids[rng.integers(0, len(ids), m)]
        b = np.where(same, b_same, b_rand)
        a = ids[a_idx]
        # leave a few SVs with no edge at all: they are not in the graph
        no_edge = ids[rng.random(len(ids)) < 0.03]
        keep = ~np.isin(a, no_edge) & ~np.isin(b, no_edge)
        a, b = a[keep], b[keep]
        dup = rng.random(len(a)) < 0.05
        a, b = np.concatenate([a, a[dup], a[:2]]), np.concatenate([b, b[dup], a[:2]])  # duplicates, self edges
        add(c, "in_chunk", a, b)


def _neighbour_edges(rng, spec, coords, svs, objs, add, extra_mapped) -> list:
    """Edges between neighbouring chunks (and a few fake cross-chunk ones); returns each
    cross-chunk pair once, `(c, o, kind, SVs in c, SVs in o)`, for the raw files."""
    pair_records = []
    for c in coords:
        for d in _neighbour_offsets():
            o = tuple(int(ci + di) for ci, di in zip(c, d))
            if o not in svs or len(svs[c]) == 0 or len(svs[o]) == 0:
                continue
            diagonal = sum(abs(v) for v in d) > 1
            if diagonal and spec.raw:
                continue  # the raw format holds face neighbours only
            m = int(len(svs[c]) * spec.between_edges_per_sv * (0.2 if diagonal else 1.0)) + 1
            a_idx = rng.integers(0, len(svs[c]), m)
            a = svs[c][a_idx]
            b = _pick_partner(rng, objs[c][a_idx], svs[o], np.argsort(objs[o], kind="stable"), objs[o])
            one_sided = rng.random(m) < (0 if spec.raw else spec.one_sided_fraction)
            pair_records.append((c, o, "between_chunk", a, b))
            flip = rng.random(m) < 0.5  # store copies in either orientation
            add(c, "between_chunk", np.where(flip, b, a), np.where(flip, a, b))
            add(o, "between_chunk", b[~one_sided], a[~one_sided])
            # components of each side map the partner SVs too (with their object)
            extra_mapped[c].append((b, objs[o][np.searchsorted(svs[o], b)]))
            extra_mapped[o].append((a, objs[c][a_idx]))
            if not diagonal and spec.fake_edges_per_face:
                k = min(spec.fake_edges_per_face, len(svs[c]), len(svs[o]))
                fa = svs[c][rng.integers(0, len(svs[c]), k)]
                fb = svs[o][rng.integers(0, len(svs[o]), k)]
                add(c, "cross_chunk", fa, fb)
                add(o, "cross_chunk", fb, fa)
                pair_records.append((c, o, "cross_chunk", fa, fb))
    return pair_records


def _write_precomputed(out_dir, spec, rng, coords, svs, objs, parts, extra_mapped) -> int:
    """The EDGES and COMPONENTS files of every chunk that has any; returns the edge count."""
    edges_dir = os.path.join(out_dir, "edges")
    comps_dir = os.path.join(out_dir, "components")
    ws_dir = os.path.join(out_dir, "watershed")
    for d in (edges_dir, comps_dir, ws_dir):
        os.makedirs(d, exist_ok=True)
    n_edges = 0
    for c in coords:
        if not any(parts[c].values()) and len(svs[c]) == 0:
            continue  # an empty chunk has no files at all
        edge_sets = {}
        for kind, lists in parts[c].items():
            a = np.concatenate([p[0] for p in lists]) if lists else np.empty(0, np.uint64)
            b = np.concatenate([p[1] for p in lists]) if lists else np.empty(0, np.uint64)
            edge_sets[kind] = Edges(a.astype(np.uint64), b.astype(np.uint64),
                                    rng.random(len(a)).astype(np.float32),
                                    rng.integers(1, 1000, len(a)).astype(np.uint64))
            n_edges += len(a)
        with open(os.path.join(edges_dir, edges_filename(c)), "wb") as fh:
            fh.write(encode_edges(edge_sets))
        mapped_svs = [svs[c]] + [e[0] for e in extra_mapped[c]]
        mapped_objs = [objs[c]] + [e[1] for e in extra_mapped[c]]
        all_svs = np.concatenate(mapped_svs)
        all_objs = np.concatenate(mapped_objs)
        all_svs, first = np.unique(all_svs, return_index=True)
        all_objs = all_objs[first]
        keep = rng.random(len(all_svs)) >= spec.unmapped_fraction
        all_svs, all_objs = all_svs[keep], all_objs[keep]
        with open(os.path.join(comps_dir, components_filename(c)), "wb") as fh:
            fh.write(encode_components(all_svs, all_objs))

    return n_edges


def _svs_in_graph(parts, svs) -> int:
    """The SVs an ingest puts in the graph: those in some edge of their own chunk's file
    (docs/hierarchy.md)."""
    total = 0
    for c, kinds in parts.items():
        ids = [end for lists in kinds.values() for pair in lists for end in pair]
        if ids:
            ids = np.unique(np.concatenate(ids).astype(np.uint64))
            total += int(np.isin(ids, np.asarray(svs[c], np.uint64)).sum())
    return total


def _write_info(ws_dir, spec, size):
    os.makedirs(ws_dir, exist_ok=True)
    info = {"type": "segmentation", "data_type": "uint64", "num_channels": 1,
            "scales": [{"key": "8_8_40", "resolution": [8, 8, 40], "voxel_offset": list(spec.voxel_offset),
                        "size": [int(s) for s in size], "chunk_sizes": [[64, 64, 32]], "encoding": "raw"}]}
    with open(os.path.join(ws_dir, "info"), "w") as fh:
        json.dump(info, fh)


def _write_config(out_dir, spec, layout, svs, coords, n_edges):
    absolute = os.path.abspath(out_dir)
    config = {
        "data_source": {"EDGES": f"file://{absolute}/edges", "COMPONENTS": f"file://{absolute}/components",
                        "WATERSHED": f"file://{absolute}/watershed", "DATA_VERSION": 4},
        "graph_config": {"CHUNK_SIZE": list(spec.chunk_size), "FANOUT": 2, "LAYER_ID_BITS": 8,
                         "SPATIAL_BITS": 10},
        "backend_client": {"TYPE": "bigtable", "CONFIG": {"ADMIN": True, "READ_ONLY": False}},
    }
    if spec.raw:
        config["data_source"]["DATA_VERSION"] = spec.data_version
        config["ingest_config"] = {"AGGLOMERATION": f"file://{absolute}/agg"}
    config_path = os.path.join(out_dir, "config.yml")
    with open(config_path, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return {"config": config_path, "svs": int(sum(len(v) for v in svs.values())), "edges": n_edges,
            "chunks": len(coords), "layer_count": layout.layer_count}


def _records(a, b, spec, rng):
    """Raw edge records of DATA_VERSION spec.data_version for the pairs (a, b)."""
    from ..inputs.raw import edge_dtype
    rec = np.zeros(len(a), edge_dtype(spec.data_version))
    rec["sv1"], rec["sv2"] = a, b
    for name in rec.dtype.names[2:]:
        rec[name] = rng.random(len(a)) if name.startswith("aff") else rng.integers(1, 100, len(a))
    return rec.tobytes()


def _write_raw(out_dir, spec, layout, svs, objs, parts, pair_records, rng, size):
    """The raw agglomeration: chunked_rg/{in_chunk,between_chunks,fake}_0_*.data and remap/done_*.data.

    Payloads are spread over every file the reading rules allow (an in-chunk payload may sit
    in the file of a lower neighbour; a between payload keyed either way round), and some
    records are split in two to exercise the summing of duplicate pairs.
    """
    from ..inputs.sharded import write_shard
    from ..inputs.raw import _between_files
    files: dict = {}

    def put(name, key, data, pair_keys):
        shard = files.setdefault(name, ({}, pair_keys))[0]
        shard[key] = shard.get(key, b"") + data

    def cid(c):
        return int(layout.chunk_id(1, *c))

    n_edges = 0
    for c, kinds in parts.items():
        if not kinds["in_chunk"]:
            continue
        a = np.concatenate([p[0] for p in kinds["in_chunk"]])
        b = np.concatenate([p[1] for p in kinds["in_chunk"]])
        n_edges += len(a)
        lower = [tuple(c[i] - (i == axis) for i in range(3)) for axis in range(3) if c[axis] > 0]
        home = lower[int(rng.integers(0, len(lower)))] if lower and rng.random() < 0.5 else c
        half = len(a) // 2
        put("in_chunk_0_%d_%d_%d.data" % home, cid(c), _records(a[:half], b[:half], spec, rng), False)
        put("in_chunk_0_%d_%d_%d.data" % c, cid(c), _records(a[half:], b[half:], spec, rng), False)
    for c, o, kind, a, b in pair_records:
        n_edges += 2 * len(a)
        prefix = "between_chunks_0" if kind == "between_chunk" else "fake_0"
        candidates = _between_files(layout, c, o)
        home = candidates[int(rng.integers(0, len(candidates)))]
        if rng.random() < 0.5:
            put(f"{prefix}_%d_%d_%d.data" % home, (cid(c), cid(o)), _records(a, b, spec, rng), True)
        else:
            put(f"{prefix}_%d_%d_%d.data" % home, (cid(o), cid(c)), _records(b, a, spec, rng), True)

    # remap: pairs that join the SVs of one object, inside a chunk and across face neighbours
    for c, ids in svs.items():
        obj = objs[c]
        order = np.lexsort((ids, obj))
        same = obj[order][1:] == obj[order][:-1]
        pairs = np.stack([ids[order][:-1][same], ids[order][1:][same]], 1)
        for mip in range(layout.layer_count - 1):
            part = pairs[mip::layout.layer_count - 1]
            if len(part):
                put("done_%d_%d_%d_%d.data" % ((mip,) + tuple(v >> mip for v in c)), cid(c),
                    part.astype("<u8").tobytes(), False)
    for c, o, kind, a, b in pair_records:
        if kind != "between_chunk":
            continue
        oa = objs[c][np.searchsorted(svs[c], a)]
        ob = objs[o][np.searchsorted(svs[o], b)]
        joined = np.stack([a[oa == ob], b[oa == ob]], 1)
        if len(joined):
            mip = int(rng.integers(0, layout.layer_count - 1))
            put("done_%d_%d_%d_%d.data" % ((mip,) + tuple(v >> mip for v in c)), cid(c),
                joined.astype("<u8").tobytes(), False)

    for name, (payloads, pair_keys) in files.items():
        folder = os.path.join(out_dir, "agg", "remap" if name.startswith("done") else "chunked_rg")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(write_shard(payloads, pair_keys))
    _write_info(os.path.join(out_dir, "watershed"), spec, size)
    return _write_config(out_dir, spec, layout, svs, list(svs), n_edges)
