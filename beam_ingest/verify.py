"""Verify a table against its inputs, on a random sample of layer-2 chunks.

For each sampled chunk the expected layer 2 is rebuilt from the chunk's input files and
the table is checked exactly for it: every SV's parent, the partition of SVs into layer-2
nodes, each node's children, its atomic cross edges, the chunk's counter. Then the two ends
of every active edge of the chunk must share a root; where they do not, the mirror copy of
the edge is looked up in the partner chunk's inputs: a one-sided edge joins nothing by the
rules (counted), a mirrored one is a mismatch. Cost grows with the sample, not the brain.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
from google.cloud.bigtable import row_filters
from google.cloud.bigtable.row_set import RowSet

from .hierarchy.layer2 import build_layer2
from .store import cells
from .store.reader import decode_row


@dataclasses.dataclass
class Report:
    chunks: list = dataclasses.field(default_factory=list)   # (coord, svs, nodes)
    empty_chunks: int = 0
    edges_checked: int = 0
    one_sided: int = 0
    mismatches: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def format(self) -> str:
        lines = [f"checked {len(self.chunks)} layer-2 chunk(s) ({self.empty_chunks} sampled chunk(s) had no input), "
                 f"{sum(c[1] for c in self.chunks)} SVs, {sum(c[2] for c in self.chunks)} layer-2 nodes, "
                 f"{self.edges_checked} active cross-chunk edges ({self.one_sided} one-sided, tolerated)"]
        for coord, svs, nodes in self.chunks:
            lines.append(f"  chunk {coord}: {svs} SVs, {nodes} nodes")
        if self.mismatches:
            lines.append(f"MISMATCHES ({len(self.mismatches)}):")
            lines.extend(f"  {m}" for m in self.mismatches[:50])
            if len(self.mismatches) > 50:
                lines.append(f"  ... and {len(self.mismatches) - 50} more")
        else:
            lines.append("OK: the table matches its inputs on every sampled chunk")
        return "\n".join(lines)


class TableView:
    """Batched, cached reads of node rows (latest cells)."""

    def __init__(self, table):
        self.table = table
        self.rows: dict[int, dict | None] = {}

    def fetch(self, ids):
        missing = [int(i) for i in ids if int(i) not in self.rows]
        for start in range(0, len(missing), 1000):
            batch = missing[start:start + 1000]
            row_set = RowSet()
            for node in batch:
                row_set.add_row_key(cells.row_key(node))
                self.rows[node] = None
            for row in self.table.read_rows(row_set=row_set, filter_=row_filters.CellsColumnLimitFilter(1)):
                self.rows[int(row.row_key)] = decode_row(row)
        return {int(i): self.rows[int(i)] for i in ids}

    def counter(self, key: bytes):
        row = self.table.read_row(key, filter_=row_filters.CellsColumnLimitFilter(1))
        if row is None:
            return None
        return cells.decode_counter(row.cells[cells.FAMILY_COUNTERS][cells.COUNTER][0].value)

    def roots(self, ids) -> dict[int, int | None]:
        """Follow parents up to the top, level by level (one batched read per level)."""
        current = {int(i): int(i) for i in ids}
        for _ in range(64):
            nodes = self.fetch(set(current.values()))
            moved = False
            for start, node in current.items():
                row = nodes.get(node)
                if row is not None and row["parent"] is not None:
                    current[start] = row["parent"]
                    moved = True
            if not moved:
                break
        return current


def _sample_coords(layout, n: int, seed: int):
    rng = random.Random(seed)
    nx, ny, nz = layout.n_chunks
    total = nx * ny * nz
    order = rng.sample(range(total), min(total, max(3 * n, n)))
    return [(i // (ny * nz), (i // nz) % ny, i % nz) for i in order]


def verify(table, layout, reader, sample: int = 10, seed: int = 0, coords=None) -> Report:
    report = Report()
    view = TableView(table)
    inputs_cache = {}

    def inputs_of(coord):
        if coord not in inputs_cache:
            inputs_cache[coord] = reader.read(coord)
        return inputs_cache[coord]

    candidates = coords if coords is not None else _sample_coords(layout, sample, seed)
    for coord in candidates:
        if len(report.chunks) >= (len(candidates) if coords is not None else sample):
            break
        rows, _, root_bound, stats = build_layer2(inputs_of(coord), layout)
        if stats.svs == 0:
            report.empty_chunks += 1
            continue
        _check_chunk(coord, rows, root_bound, stats, layout, view, report)
        _check_roots(coord, rows, root_bound, layout, view, report, inputs_of)
    return report


def _expected_groups(rows, root_bound, layout):
    """Expected layer-2 groups: list of sorted SV arrays (and cross edges by group index)."""
    if layout.layer_count == 2:
        groups = root_bound.components
        return [groups.values[groups.offsets[i]:groups.offsets[i + 1]] for i in range(len(groups))], {}
    groups = rows.children
    members = [groups.values[groups.offsets[i]:groups.offsets[i + 1]] for i in range(len(groups))]
    edges = {}
    index = {int(n): i for i, n in enumerate(rows.children_of.tolist())}
    for node, layer, own, other in zip(rows.cross_node.tolist(), rows.cross_layer.tolist(),
                                       rows.cross_own.tolist(), rows.cross_other.tolist()):
        edges.setdefault(index[node], {}).setdefault(layer, set()).add((own, other))
    return members, edges


def _check_chunk(coord, rows, root_bound, stats, layout, view, report):
    members, expected_edges = _expected_groups(rows, root_bound, layout)
    svs = np.concatenate(members)
    found = view.fetch(svs.tolist())
    by_parent: dict[int, list[int]] = {}
    for sv in svs.tolist():
        row = found[sv]
        if row is None or row["parent"] is None:
            report.mismatches.append(f"chunk {coord}: SV {sv} has no parent row")
            continue
        by_parent.setdefault(row["parent"], []).append(sv)
    expected_sets = {frozenset(m.tolist()): i for i, m in enumerate(members)}
    parents = view.fetch(list(by_parent))
    max_segment = 0
    for parent, group in by_parent.items():
        layer = int(layout.layer_of(np.uint64(parent)))
        want_layer = 2 if layout.layer_count > 2 else layout.layer_count
        if layer != want_layer:
            report.mismatches.append(f"chunk {coord}: parent {parent} of SVs {group[:3]} is at layer {layer}, "
                                     f"not {want_layer}")
            continue
        index = expected_sets.get(frozenset(group))
        if index is None:
            report.mismatches.append(f"chunk {coord}: layer-2 node {parent} groups SVs {sorted(group)[:5]}"
                                     f"{'...' if len(group) > 5 else ''}, which is not a component of the inputs")
            continue
        row = parents[parent]
        children = None if row is None else row["children"]
        if children is None or sorted(children.tolist()) != sorted(group):
            report.mismatches.append(f"chunk {coord}: children of node {parent} differ from its SVs' parents")
        got_edges = {} if row is None else {k: set(map(tuple, v.tolist())) for k, v in row["cross_edges"].items()}
        if got_edges != expected_edges.get(index, {}):
            report.mismatches.append(f"chunk {coord}: atomic cross edges of node {parent} differ from the inputs "
                                     f"(layers {sorted(got_edges)} vs {sorted(expected_edges.get(index, {}))})")
        if layout.layer_count > 2:
            max_segment = max(max_segment, int(layout.segment_of(np.uint64(parent), 2)))
    if len(by_parent) != len(members) and not report.mismatches:
        report.mismatches.append(f"chunk {coord}: {len(by_parent)} layer-2 nodes, expected {len(members)}")
    if layout.layer_count > 2:
        counter = view.counter(cells.counter_key(layout.chunk_id(2, *coord)))
        if counter is None or counter < max_segment:
            report.mismatches.append(f"chunk {coord}: counter {counter} does not cover segment id {max_segment}")
    report.chunks.append((tuple(coord), int(stats.svs), len(members)))


def _check_roots(coord, rows, root_bound, layout, view, report, inputs_of):
    if layout.layer_count == 2 or not len(rows.cross_own):
        return
    own, other = rows.cross_own, rows.cross_other
    roots = view.roots(np.concatenate([own, other]).tolist())
    report.edges_checked += len(own)
    partners = {}
    for a, b in zip(own.tolist(), other.tolist()):
        if roots.get(a) == roots.get(b):
            continue
        partner = tuple(int(v) for v in layout.coords_of(np.uint64(b), 1)[0])
        if partner not in partners:
            partners[partner] = build_layer2(inputs_of(partner), layout)[0]
        partner_rows = partners[partner]
        mirrored = np.any((partner_rows.cross_own == b) & (partner_rows.cross_other == a))
        if mirrored:
            report.mismatches.append(f"chunk {coord}: active edge ({a}, {b}) is stored on both sides but its ends "
                                     f"have different roots {roots.get(a)} and {roots.get(b)}")
        else:
            report.one_sided += 1
