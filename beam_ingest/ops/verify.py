"""Verify a table against its inputs, on a random sample of layer-2 chunks.

For each sampled chunk the expected layer 2 is rebuilt from the chunk's input files and
the table is checked exactly for it: every SV's parent, the partition of SVs into layer-2
nodes, each node's children, its atomic cross edges, the chunk's counter. Then the two ends
of every active edge of the chunk must share a root; where they do not, the mirror copy of
the edge is looked up in the partner chunk's inputs: a one-sided edge joins nothing by the
rules (counted), a mirrored one is a mismatch. Cost grows with the sample, not the brain.

Tables of version 3 (docs/table-format.md, version 3): also each sampled chunk's layer-1 counter,
its layer-2 nodes' family-4 cells exactly (`[X, partner's layer-2 node]` for every matched
atomic edge), and for the ancestors of those nodes that each matched edge's row is in their
`cross_edges_<l>` cell.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
from google.cloud.bigtable import row_filters
from google.cloud.bigtable.row_set import RowSet

from ..hierarchy.layer2 import build_layer2
from ..store import cells
from ..store.reader import decode_row


@dataclasses.dataclass
class Report:
    chunks: list = dataclasses.field(default_factory=list)   # (coord, svs, nodes)
    empty_chunks: int = 0
    edges_checked: int = 0
    one_sided: int = 0
    mismatches: list = dataclasses.field(default_factory=list)
    lifted_checked: int = 0  # family-4 cells compared (version 3)
    files_checked: int = 0  # chunks whose EDGES/COMPONENTS files were compared with their inputs
    l2cache_checked: int = 0  # L2 cache rows compared with a recomputation
    l2cache_keys: str = ""  # what the scan of every L2 cache row key found
    ocdbt_checked: int = 0  # chunks whose box of the OCDBT copy was compared with WATERSHED (--ocdbt)
    requested: int = 0  # --sample
    total: int = 0  # layer-2 chunks of the graph (or of the given coords)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def format(self) -> str:
        if self.requested >= self.total:
            scope = (f"checked all {len(self.chunks)} layer-2 chunk(s) with input (the graph has {self.total}, "
                     f"{self.empty_chunks} without input; --sample {self.requested} asks for all of them)")
        else:
            scope = (f"checked {len(self.chunks)} layer-2 chunk(s) with input, a sample of the graph's {self.total} "
                     f"({self.empty_chunks} sampled chunk(s) without input skipped)")
        lines = [f"{scope}, "
                 f"{sum(c[1] for c in self.chunks)} SVs, {sum(c[2] for c in self.chunks)} layer-2 nodes, "
                 f"{self.edges_checked} active cross-chunk edges ({self.one_sided} one-sided, tolerated)"
                 + (f", {self.lifted_checked} lifted cross-edge cells (version 3)" if self.lifted_checked else "")
                 + (f", the EDGES/COMPONENTS files of {self.files_checked} chunk(s)" if self.files_checked else "")
                 + (f", {self.l2cache_checked} L2 cache rows" if self.l2cache_checked else "")
                 + (f", the OCDBT copy's boxes of {self.ocdbt_checked} chunk(s)" if self.ocdbt_checked else "")]
        for coord, svs, nodes in self.chunks:
            lines.append(f"  chunk {coord}: {svs} SVs, {nodes} nodes")
        if self.l2cache_keys:
            lines.append(self.l2cache_keys)
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
        self.foreign: list[str] = []  # columns outside PyChunkedGraph's registry, in rows read

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
                self.foreign += [f"row {row.row_key.decode()}: column {family}:{qualifier.decode(errors='replace')} "
                                 "is not PyChunkedGraph's (it could not read the row)"
                                 for family, columns in row.cells.items() for qualifier in columns
                                 if not cells.is_pcg_column(family, qualifier)]
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


@dataclasses.dataclass
class CacheCheck:
    """The L2 cache to check: its table, a reader of WATERSHED blocks (l2cache.chunks.
    WatershedVoxels), the resolution, and its completion mark (None: none)."""
    table: object
    voxels: object
    resolution: tuple
    mark: dict | None = None


SHOWN_KEYS = 5


def _keys_in(table, start: bytes | None = None, end: bytes | None = None) -> list[bytes]:
    """Every row key of `table` in [start, end) (keys only: one stripped cell per row)."""
    chain = row_filters.RowFilterChain([row_filters.CellsRowLimitFilter(1), row_filters.StripValueTransformerFilter(True)])
    return [row.row_key for row in table.read_rows(start_key=start, end_key=end, filter_=chain)]


def check_cache_keys(graph_table, layout, cache: CacheCheck, report: Report) -> None:
    """Every row of the cache is a layer-2 node of the graph (its meta, version and own rows
    aside), and every layer-2 node has one, but for the nodes the cache's completion mark says
    had no voxel. Reads row keys only: both tables' layer-2 keys, once."""
    own = {cells.META_ROW, cells.VERSION_ROW, cells.BOOKKEEPING_ROW}
    start, end = cells.row_key(layout.chunk_id(2, 0, 0, 0)), cells.row_key(layout.chunk_id(3, 0, 0, 0))
    graph_keys = np.array(_keys_in(graph_table, start, end), dtype="S20")
    found = [k for k in _keys_in(cache.table) if k not in own]
    cache_keys = np.array(found, dtype=f"S{max([20] + [len(k) for k in found])}")
    strays = cache_keys[~np.isin(cache_keys, graph_keys)]
    without = graph_keys[~np.isin(graph_keys, cache_keys)]
    expected_without = int((cache.mark or {}).get("nodes_without_voxels", 0))
    report.l2cache_keys = (f"L2 cache: {len(cache_keys)} rows for {len(graph_keys)} layer-2 nodes of the graph "
                           f"(every row key read; {len(without)} nodes without a row, {len(strays)} rows of no node)")
    if len(strays):
        names = ", ".join(k.decode(errors="replace") for k in strays[:SHOWN_KEYS])
        report.mismatches.append(f"L2 cache holds {len(strays)} row(s) that are not layer-2 nodes of this graph "
                                 f"(first: {names}): rows of another graph or an earlier run")
    if len(without) != expected_without:
        names = ", ".join(k.decode() for k in without[:SHOWN_KEYS])
        report.mismatches.append(f"L2 cache has no row for {len(without)} layer-2 node(s) of the graph (its "
                                 f"completion mark accounts for {expected_without} without voxels); first: {names}")


def verify(table, layout, reader, sample: int = 10, seed: int = 0, coords=None, pcg_version: int = 2,
           files: dict | None = None, cache: CacheCheck | None = None, copy: CopyCheck | None = None) -> Report:
    """`files`: `{"edges": url, "components": url}` the run wrote (with --raw or
    --from_segmentation, where `reader` computes the inputs from the raw data): each sampled
    chunk's files must hold exactly what the inputs give (none for a chunk without any).
    `cache`: each sampled chunk's L2 cache rows must equal a recomputation from WATERSHED.
    `copy`: each sampled chunk's box of WATERSHED's OCDBT copy must equal WATERSHED's."""
    report = Report()
    view = TableView(table)
    inputs_cache = {}

    def inputs_of(coord):
        if coord not in inputs_cache:
            inputs_cache[coord] = reader.read(coord)
        return inputs_cache[coord]

    candidates = coords if coords is not None else _sample_coords(layout, sample, seed)
    report.requested = len(candidates) if coords is not None else sample
    report.total = len(candidates) if coords is not None else layout.chunk_count(2)
    for coord in candidates:
        if len(report.chunks) >= (len(candidates) if coords is not None else sample):
            break
        rows, _, root_bound, stats = build_layer2(inputs_of(coord), layout, lifted=pcg_version >= 3)
        if files:
            _check_files(coord, inputs_of(coord), files, report)
        if copy is not None:
            _check_copy(coord, layout, copy, report)
        if stats.svs == 0:
            report.empty_chunks += 1
            continue
        _check_chunk(coord, rows, root_bound, stats, layout, view, report)
        _check_roots(coord, rows, root_bound, layout, view, report, inputs_of)
        if pcg_version >= 3:
            _check_lifted(coord, rows, layout, view, report)
        if cache is not None:
            _check_cache(coord, rows, layout, cache, report)
    if cache is not None:
        check_cache_keys(table, layout, cache, report)
    report.mismatches += view.foreign
    return report


@dataclasses.dataclass
class CopyCheck:
    """WATERSHED's OCDBT copy to check (`--ocdbt` tables): the copy, opened as PyChunkedGraph
    opens it (a tensorstore), and a reader of WATERSHED's blocks (l2cache.chunks.WatershedVoxels)."""
    store: object
    voxels: object


def _check_copy(coord, layout, copy: CopyCheck, report):
    start, stop = (np.asarray(v, np.int64) for v in layout.voxel_box(coord))
    expected = copy.voxels.read_block(coord)
    found = np.asarray(copy.store[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2], 0].read().result())
    differ = int(np.count_nonzero(found != expected))
    if differ:
        report.mismatches.append(f"layer-2 chunk {coord}: its box of the OCDBT copy differs from WATERSHED in "
                                 f"{differ} of {expected.size} voxels")
    report.ocdbt_checked += 1


def _check_cache(coord, rows, layout, cache: CacheCheck, report):
    """The chunk's cache rows equal those recomputed from its WATERSHED block and its layer-2
    parents; its other layer-2 nodes (no voxel in the chunk) have none."""
    from ..l2cache.chunks import cache_rows
    expected = {key: {q: v for _, q, v in found}
                for key, found in cache_rows(cache.voxels.read(coord), layout.chunk_size, rows, cache.resolution)[0]}
    keys = sorted(set(expected) | {cells.row_key(int(n)) for n in np.unique(rows.parent_ids)})
    row_set = RowSet()
    for key in keys:
        row_set.add_row_key(key)
    stored = {row.row_key: {q: columns[q][0].value for columns in row.cells.values() for q in columns}
              for row in cache.table.read_rows(row_set=row_set, filter_=row_filters.CellsColumnLimitFilter(1))}
    for key in keys:
        want, got = expected.get(key), stored.get(key)
        if want != got:
            what = "missing" if got is None else "unexpected" if want is None else \
                "differs in " + ", ".join(sorted(q.decode() for q in set(want) | set(got) if want.get(q) != got.get(q)))
            report.mismatches.append(f"layer-2 chunk {coord}: L2 cache row {key.decode()} {what}")
        report.l2cache_checked += 1


def _check_files(coord, inputs, files, report):
    """The chunk's EDGES and COMPONENTS files against the bytes its inputs give."""
    from ..outputs.files import OutputFolder
    from ..inputs.precomputed import components_filename, edges_filename, encode_components, encode_edges
    report.files_checked += 1
    expected = {
        "edges": (edges_filename(coord), encode_edges(inputs.edges) if any(len(e) for e in inputs.edges.values())
                  else None),
        "components": (components_filename(coord), encode_components(inputs.component_svs, inputs.component_labels)
                       if len(inputs.component_svs) else None)}
    for kind, (name, want) in expected.items():
        url = files.get(kind)
        if not url:
            continue
        found = OutputFolder(f"data_source.{kind.upper()}", url).read(name)
        if found == want:
            continue
        if want is None:
            report.mismatches.append(f"chunk {coord}: {kind.upper()} file {url}/{name} exists, but the chunk has no "
                                     f"{kind} (left by another run?)")
        elif found is None:
            report.mismatches.append(f"chunk {coord}: {kind.upper()} file {url}/{name} is missing")
        else:
            report.mismatches.append(f"chunk {coord}: {kind.upper()} file {url}/{name} ({len(found)} bytes) is not what "
                                     f"the inputs give ({len(want)} bytes; written by another run, or cut short?)")


def _check_lifted(coord, rows, layout, view, report):
    """Version 3 cells of one chunk: its layer-1 counter, and family 4 from its matched edges."""
    layer1 = cells.counter_key(layout.chunk_id(1, *coord))
    want = {int(c): int(v) for c, v in zip(rows.counter_chunks.tolist(), rows.counter_values.tolist())}
    got = view.counter(layer1)
    if got != want.get(int(layout.chunk_id(1, *coord))):
        report.mismatches.append(f"chunk {coord}: layer-1 counter {got}, expected the chunk's largest segment id "
                                 f"{want.get(int(layout.chunk_id(1, *coord)))}")
    if layout.layer_count == 2:
        return
    own, other, layers = rows.cross_own, rows.cross_other, rows.cross_layer
    ends = view.fetch(np.concatenate([own, other]).tolist())
    l2_of = {sv: (None if row is None else row["parent"]) for sv, row in ends.items()}
    partners = view.fetch({l2_of[b] for b in other.tolist() if l2_of[b] is not None})
    expected = {}  # (X, l) -> rows, for the chunk's layer-2 nodes
    matched = []
    for a, b, l in zip(own.tolist(), other.tolist(), layers.tolist()):
        y = l2_of[b]
        stored = partners.get(y) if y is not None else None
        mirror = stored is not None and l in stored["cross_edges"] and \
            bool(np.any(np.all(stored["cross_edges"][l] == (b, a), axis=1)))
        if mirror:
            expected.setdefault((l2_of[a], l), set()).add((l2_of[a], y))
            matched.append((a, b, l))
    svs = view.fetch(rows.node_ids.tolist())  # every layer-2 node of the chunk, edges or not
    nodes = view.fetch({row["parent"] for row in svs.values() if row is not None and row["parent"] is not None})
    for x, row in nodes.items():
        got = {l: set(map(tuple, v.tolist())) for l, v in ({} if row is None else row["lifted"]).items()}
        want = {l: r for (node, l), r in expected.items() if node == x}
        report.lifted_checked += len(want)
        if got != want:
            report.mismatches.append(f"chunk {coord}: lifted cross edges (family 4) of layer-2 node {x} differ from "
                                     f"its matched atomic edges (layers {sorted(got)} vs {sorted(want)})")
    # ancestors: each holds the row of every matched edge below it (A: b's highest ancestor at its layer or below)
    for a, b, l in matched:
        chain_a, chain_b = _ancestors(view, a, layout), _ancestors(view, b, layout)
        for x in chain_a[1:]:
            c = int(layout.layer_of(np.uint64(x)))
            if c == 2 or c > l:
                continue
            partner = max((n for n in chain_b if int(layout.layer_of(np.uint64(n))) <= c),
                          key=lambda n: int(layout.layer_of(np.uint64(n))))
            cell = (view.fetch([x])[x] or {"lifted": {}})["lifted"].get(l)
            report.lifted_checked += 1
            if cell is None or not np.any(np.all(cell == (x, partner), axis=1)):
                report.mismatches.append(f"chunk {coord}: node {x} (layer {c}) lacks the lifted row [{x}, {partner}] "
                                         f"of edge ({a}, {b}) in its cross_edges_{l} cell")


def _ancestors(view, sv: int, layout) -> list[int]:
    """The node ids above `sv`, from its layer-2 node up (parents read from the table)."""
    out, node = [], sv
    for _ in range(64):
        row = view.fetch([node])[node]
        if row is None or row["parent"] is None:
            break
        node = row["parent"]
        out.append(node)
    return out


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
