"""Test helpers: run an ingest, and read a table back into comparable structure."""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pipeline  # noqa: E402
from beam_ingest.layout import ROOT_COUNTER_BUCKETS  # noqa: E402
from beam_ingest.store import cells, targets  # noqa: E402
from beam_ingest.store.reader import read_all  # noqa: E402

TS = 1_700_000_000_123


def run_ingest(config, graph_id, *extra, timestamp=TS):
    argv = ["--config", str(config), "--graph_id", graph_id]
    if timestamp is not None:
        argv.append(f"--ingest_timestamp={timestamp}")
    return pipeline.run(argv + list(extra))


def target():
    """The emulator the test session started (BIGTABLE_EMULATOR_HOST), as a launcher resolves it."""
    return targets.resolve_target(None, None)


def open_table(graph_id):
    return targets.open_table(target(), graph_id, admin=True)


def state_rows(graph_id):
    from beam_ingest.store.table_state import StateRows
    return StateRows(target(), graph_id)


def decode_ours(raw, layout, expect_ms):
    """The table through this project's decoders (beam_ingest.store.cells)."""
    out = {"parent": {}, "children": {}, "cross": {}, "lifted": {}, "counters": {}}
    for key, cols in raw.items():
        for (fam, q), versions in cols.items():
            assert len(versions) == 1, f"{key} {fam}:{q} has {len(versions)} versions"
            value, stamp = versions[0]
            if expect_ms is not None:
                assert int(stamp.timestamp() * 1000) == expect_ms, (key, fam, q)
        if key in (b"meta", b"version", cells.BOOKKEEPING_ROW):
            continue
        if key.startswith(b"i"):
            out["counters"][key] = cells.decode_counter(cols[("1", b"counter")][0][0])
            continue
        node = int(key)
        assert key == b"%020d" % node
        if ("0", b"parents") in cols:
            out["parent"][node] = cells.decode_id(cols[("0", b"parents")][0][0])
        if ("0", b"children") in cols:
            out["children"][node] = cells.decode_ids(cols[("0", b"children")][0][0]).tolist()
        for (fam, q), versions in cols.items():
            if fam in ("3", "4"):
                layer = int(q.decode().rsplit("_", 1)[1])
                out["cross" if fam == "3" else "lifted"].setdefault(node, {})[layer] = \
                    cells.decode_edges(versions[0][0])
    return out


class TableStructure:
    """A table decoded and checked for internal consistency (asserts inside).

    `via="pcg"` decodes it through PyChunkedGraph's own client library (tests/pcg_client.py)
    instead of this project's decoders: the same checks then hold for what the server reads."""

    def __init__(self, graph_id, layout, expect_ms=TS, via="ours"):
        lc = layout.layer_count
        if via == "pcg":
            from pcg_client import PcgRead, decoded
            t = target()
            self.pcg = PcgRead(graph_id, t.project, t.instance)  # the caller may use its client, then close it
            assert self.pcg.other_keys == [cells.BOOKKEEPING_ROW], self.pcg.other_keys
            parts = decoded(self.pcg, expect_ms)
        else:
            self.raw = read_all(open_table(graph_id))
            parts = decode_ours(self.raw, layout, expect_ms)
        self.parent, self.children = parts["parent"], parts["children"]
        self.lifted = parts["lifted"]  # table version 3
        self.cross = {n: {k: v.tolist() for k, v in e.items()} for n, e in parts["cross"].items()}
        self.counters, self.layer1_counters = {}, {}  # layer-1 counters: table version 3
        for key, value in parts["counters"].items():
            is_layer1 = b"_" not in key and int(layout.layer_of(np.uint64(int(key[1:])))) == 1
            (self.layer1_counters if is_layer1 else self.counters)[key] = value
        for node, kids in self.children.items():
            assert kids == sorted(set(kids)), f"children of {node} not ascending"

        # parent/children consistency
        for node, kids in self.children.items():
            assert kids, f"node {node} has no children"
            for k in kids:
                assert self.parent.get(k) == node, f"child {k} of {node} has parent {self.parent.get(k)}"
        for node, p in self.parent.items():
            assert node in self.children.get(p, []), f"{node} not among children of its parent {p}"

        layer_of = lambda n: int(layout.layer_of(np.uint64(n)))
        self.svs = {n for n in self.parent if layer_of(n) == 1}
        assert not any(layer_of(n) == 1 for n in self.children)
        leaves = {}

        def leaves_of(n):
            if n in self.svs:
                return frozenset([n])
            if n not in leaves:
                leaves[n] = frozenset().union(*(leaves_of(k) for k in self.children[n]))
            return leaves[n]

        self.leaves_of = leaves_of
        self.nodes = {(layer_of(n), leaves_of(n)) for n in self.children}
        self.ancestor_layers = {}
        for sv in self.svs:
            chain, n = [], self.parent[sv]
            while True:
                chain.append(layer_of(n))
                if n not in self.parent:
                    break
                n = self.parent[n]
            assert chain[-1] == lc, f"SV {sv} ends at layer {chain[-1]}, not the root layer {lc}"
            assert chain == sorted(chain) and len(set(chain)) == len(chain)
            self.ancestor_layers[sv] = chain
        self.l2_cross = {leaves_of(n): {k: sorted(map(tuple, v)) for k, v in e.items()}
                         for n, e in self.cross.items()}
        for n, e in self.cross.items():
            assert layer_of(n) == 2
        self.roots = [n for n in self.children if n not in self.parent]
        self._check_counters(layout)

    def _check_counters(self, layout):
        root_chunk = int(layout.root_chunk_id)
        max_seg = defaultdict(int)
        root_k = defaultdict(int)
        for n in self.children:
            layer = int(layout.layer_of(np.uint64(n)))
            chunk = int(layout.chunk_of(np.uint64(n), layer))
            seg = int(layout.segment_of(np.uint64(n), layer))
            if chunk == root_chunk:
                assert seg // ROOT_COUNTER_BUCKETS >= 1, f"root id {n} has k = 0"
                root_k[seg % ROOT_COUNTER_BUCKETS] = max(root_k[seg % ROOT_COUNTER_BUCKETS],
                                                        seg // ROOT_COUNTER_BUCKETS)
            else:
                max_seg[chunk] = max(max_seg[chunk], seg)
        for r in self.roots:
            assert int(layout.chunk_of(np.uint64(r), layout.layer_count)) == root_chunk
        expected = {cells.counter_key(c): v for c, v in max_seg.items()}
        expected.update({cells.root_counter_key(root_chunk, b): root_k[b] for b in range(ROOT_COUNTER_BUCKETS)})
        assert self.counters == expected


def copy_to_bucket(root, base_url):
    """A generated dataset (its folder `root` and config.yml) copied under `base_url` (gs://
    or s3:// of the test emulators), its config rewritten to name the copies and put there
    too; returns the config's URL."""
    from cloudfiles import CloudFiles
    root = os.path.abspath(str(root))
    CloudFiles("file://" + root).transfer_to(base_url)
    with open(os.path.join(root, "config.yml")) as fh:
        text = fh.read().replace("file://" + root, base_url)
    CloudFiles(base_url).put("config.yml", text.encode(), compress=None, content_type="application/yaml")
    return base_url + "/config.yml"


def forget_half_of_layer2_acks(checkpoint_folder) -> list[tuple]:
    """As a run killed before Bigtable acknowledged them leaves it: the second half of the
    first acknowledgement file's layer-2 chunks dropped from the checkpoint. Returns them."""
    acks = sorted((checkpoint_folder / "acks" / "layer2").iterdir())
    record = json.loads(acks[0].read_text())
    kept = len(record["coords"]) // 2
    lost = [tuple(c) for c in record["coords"][kept:]]
    record["coords"], record["counts"] = record["coords"][:kept], record["counts"][:kept]
    acks[0].write_text(json.dumps(record))
    return lost

