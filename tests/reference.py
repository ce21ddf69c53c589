"""An independent reference of docs/hierarchy.md: plain Python sets and union-find.

Slow on purpose (a loop per SV and edge): it shares no code with the build, only the
protobuf message definitions, so a bug in the vectorized build cannot hide here too.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import yaml
import zstandard

from beam_ingest.inputs.protos import ChunkComponentsMsg, ChunkEdgesMsg


class UnionFind:
    def __init__(self):
        self.parent = {}

    def add(self, x):
        self.parent.setdefault(x, x)

    def find(self, x):
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self):
        out = defaultdict(set)
        for x in self.parent:
            out[self.find(x)].add(x)
        return list(out.values())


def _u64(buf):
    return [int.from_bytes(buf[i:i + 8], "little") for i in range(0, len(buf), 8)]


class Reference:
    """The structure the rules define for one dataset directory (as made by `synthetic`)."""

    def __init__(self, config_path):
        with open(config_path) as fh:
            cfg = yaml.safe_load(fh)
        path = lambda url: url.removeprefix("file://")
        self.edges_dir = path(cfg["data_source"]["EDGES"])
        self.comps_dir = path(cfg["data_source"]["COMPONENTS"])
        with open(os.path.join(path(cfg["data_source"]["WATERSHED"]), "info")) as fh:
            scale = json.load(fh)["scales"][0]
        chunk_size = cfg["graph_config"]["CHUNK_SIZE"]
        self.n_chunks = [-(-s // c) for s, c in zip(scale["size"], chunk_size)]
        self.layer_count = math.ceil(math.log2(max(self.n_chunks))) + 2 if max(self.n_chunks) > 1 else 2
        spatial = cfg["graph_config"]["SPATIAL_BITS"]
        self.bits = max(spatial, self.layer_count - 2)
        self.layer_bits = cfg["graph_config"]["LAYER_ID_BITS"]
        self._build()

    def coord(self, sv):
        b, top = self.bits, 64 - self.layer_bits
        mask = (1 << b) - 1
        return ((sv >> (top - b)) & mask, (sv >> (top - 2 * b)) & mask, (sv >> (top - 3 * b)) & mask)

    def cross_layer(self, a, b):
        layer = 1
        for _ in range(2, self.layer_count):
            if a != b:
                layer += 1
            a = tuple(v // 2 for v in a)
            b = tuple(v // 2 for v in b)
        return layer

    def _read_chunk(self, c):
        name = os.path.join(self.edges_dir, "edges_%d_%d_%d.proto.zst" % c)
        kinds = {"in_chunk": set(), "between_chunk": set(), "cross_chunk": set()}
        if os.path.exists(name):
            with open(name, "rb") as fh:
                msg = ChunkEdgesMsg.FromString(zstandard.ZstdDecompressor().decompress(fh.read()))
            for kind in kinds:
                part = getattr(msg, kind)
                for a, b in zip(_u64(part.node_ids1), _u64(part.node_ids2)):
                    if kind != "in_chunk" and self.coord(a) != c:
                        a, b = b, a
                    kinds[kind].add((a, b))
        mapping = {}
        name = os.path.join(self.comps_dir, "components_%d_%d_%d.proto" % c)
        if os.path.exists(name):
            with open(name, "rb") as fh:
                flat = list(ChunkComponentsMsg.FromString(fh.read()).components)
            i, comp = 0, 0
            while i < len(flat):
                n = flat[i]
                for sv in flat[i + 1:i + 1 + n]:
                    mapping[sv] = comp
                i += 1 + n
                comp += 1
        return kinds, mapping

    def _build(self):
        self.svs = set()
        # every node: (layer, frozenset of SV leaves); l2 cross edges by leaves
        self.nodes = set()
        self.l2_cross = {}
        self.ancestor_layers = {}
        pending = []  # [leaves, chunk coord at layer 2, set of (own, other, layer)]
        coords = [(x, y, z) for x in range(self.n_chunks[0]) for y in range(self.n_chunks[1])
                  for z in range(self.n_chunks[2])]
        for c in coords:
            kinds, m = self._read_chunk(c)
            uf = UnionFind()
            for kind, edges in kinds.items():
                for a, b in edges:
                    uf.add(a)
                    if kind == "in_chunk":
                        uf.add(b)
            for a, b in kinds["in_chunk"]:
                if a in m and b in m and m[a] == m[b]:
                    uf.union(a, b)
            for group in uf.groups():
                leaves = frozenset(group)
                self.svs |= leaves
                edges = set()
                for kind in ("between_chunk", "cross_chunk"):
                    for a, b in kinds[kind]:
                        if a in leaves and (kind == "cross_chunk" or (a in m and b in m and m[a] == m[b])):
                            edges.add((a, b, self.cross_layer(c, self.coord(b))))
                self.nodes.add((2, leaves))
                by_layer = defaultdict(set)
                for a, b, layer in edges:
                    by_layer[layer].add((a, b))
                self.l2_cross[leaves] = {k: sorted(v) for k, v in by_layer.items()}
                for sv in leaves:
                    self.ancestor_layers[sv] = [2]
                pending.append([leaves, c, edges])

        if self.layer_count == 2:
            self.nodes = {(2, leaves) for _, leaves in self.nodes}
            return
        for layer in range(3, self.layer_count + 1):
            by_chunk = defaultdict(list)
            for node in pending:
                key = (0, 0, 0) if layer == self.layer_count else tuple(v >> (layer - 2) for v in node[1])
                by_chunk[key].append(node)
            pending = []
            for chunk_nodes in by_chunk.values():
                holder = {}
                for i, node in enumerate(chunk_nodes):
                    for a, b, k in node[2]:
                        if k == layer - 1:
                            holder[(a, b)] = i
                uf = UnionFind()
                for i in range(len(chunk_nodes)):
                    uf.add(i)
                for (a, b), i in holder.items():
                    j = holder.get((b, a))
                    if j is not None:
                        uf.union(i, j)
                for group in uf.groups():
                    members = [chunk_nodes[i] for i in group]
                    if layer == self.layer_count:
                        self._make(layer, members)
                        continue
                    remaining = set().union(*(n[2] for n in members))
                    remaining = {e for e in remaining if e[2] >= layer}
                    if len(members) >= 2:
                        pending.append([self._make(layer, members), members[0][1], remaining])
                        continue
                    upper = [e[2] for e in remaining]
                    if not upper:
                        self._make(self.layer_count, members)
                    elif min(upper) == layer:
                        pending.append([self._make(layer, members), members[0][1], remaining])
                    else:
                        pending.append(members[0][:2] + [remaining])

    def _make(self, layer, members):
        leaves = frozenset().union(*(n[0] for n in members))
        self.nodes.add((layer, leaves))
        for sv in leaves:
            self.ancestor_layers[sv].append(layer)
        return leaves
