"""The whole build as one PTransform: layer 2 from its inputs (or from a checkpoint), every
layer above, the roots, each stage's sink and proof, and the completion proof.

How layer 2 gets its inputs is one of two stages, picked by the launcher:
- `FileChunks`: a reader of files per chunk (precomputed EDGES/COMPONENTS, or the raw
  agglomeration); the build gets each chunk's coordinate.
- `VolumeChunks`: segmentation volumes; each chunk is read once and its part sent to itself
  and its face neighbours, so the build gets (coordinate, parts).
Where the build starts is one of two values, also the launcher's (restart.py reads the
checkpoint before the job is built):
- `FromInputs`: from layer 2 (every chunk, or a `--test` run's), less the chunks an earlier
  run of the table left saved;
- `FromCheckpoint`: from a layer above 2 (`--start_layer`), with the layers below read back.
"""
from __future__ import annotations

import dataclasses
import functools
import typing

import apache_beam as beam

from . import checkpoint, completion, stages
from ..chunk_inputs import ChunkReader
from ..inputs.segmentation import ChunkPart
from ..layout import GraphLayout
from .restart import NOTHING, SavedWork
from .sink import ProveCompleteFn, ProveLayer, SinkSpec, WriteCacheRowsFn, WriteRowsFn
from .stages import L2CACHE, ROOTS
from .transforms import (CACHE_ROWS, CHECKPOINTED, ROOT_BOUND, ROWS, SAVED, SUMMARY, BuildLayer2Fn, BuildParentLayerFn,
                         BuildRootsFn, BuiltChunks, ReadSegmentationChunkFn)


def _expand_slab(x, layout):
    _, ny, nz = layout.n_chunks
    for y in range(ny):
        for z in range(nz):
            yield (x, y, z)


# Creates whose elements are reshuffled, grouped or combined next skip Create's own reshuffle
# (a GroupByKey stage each, ~0.1 s of a small run); the root-bound files keep it, as they are
# read right after.
def layer2_coords(pbegin, layout: GraphLayout, coords=None):
    """Every layer-2 chunk coordinate (generated per x slab, on the workers), or these."""
    if coords is not None:
        return pbegin | "Layer2Coords" >> beam.Create(sorted({tuple(int(v) for v in c) for c in coords}),
                                                      reshuffle=False)
    return (pbegin
            | "Layer2Slabs" >> beam.Create(list(range(layout.n_chunks[0])), reshuffle=False)
            | "Layer2Coords" >> beam.FlatMap(_expand_slab, layout))


class FileChunks:
    """Layer-2 inputs read from files, one chunk at a time; `files`: what the layer-2 stage
    writes of them (outputs.chunk_files.ChunkFiles: EDGES and COMPONENTS of `--raw` input)."""

    def __init__(self, reader: ChunkReader, files=None):
        self.reader = reader
        self.files = files

    def elements(self, pbegin, layout: GraphLayout, built: BuiltChunks):
        coords = layer2_coords(pbegin, layout, built.coords)
        if built.skipped:
            coords = coords | "SkipDoneChunks" >> beam.Filter(built)
        return coords | "SpreadChunks" >> beam.Reshuffle()


class VolumeChunks:
    """Layer-2 inputs computed from segmentation volumes (inputs/volumes.py): step 1 reads
    every chunk a built chunk touches (a `--test` run: its chunks and their face neighbours;
    after a resume: the chunks left and theirs) and the parts are grouped by the chunk they
    are for; step 2 is the reader's `read` in the build. `files`: what the steps write
    (outputs.chunk_files.ChunkFiles: WATERSHED and SV_MAP in step 1, EDGES and COMPONENTS in 2)."""

    def __init__(self, reader: ChunkReader, files=None):
        self.reader = reader
        self.files = files

    def elements(self, pbegin, layout: GraphLayout, built: BuiltChunks):
        reader = self.reader
        if built.coords is not None:
            coords = layer2_coords(pbegin, layout, [n for c in sorted(built.coords)
                                                    for n in [c, *reader.neighbours(c)]])
        else:
            coords = layer2_coords(pbegin, layout)
            if built.skipped:
                coords = coords | "SkipUntouchedChunks" >> beam.Filter(
                    lambda c: built(c) or any(built(n) for n in reader.neighbours(c)))
        return (coords
                | "SpreadChunks" >> beam.Reshuffle()
                | "ReadSegmentation" >> beam.ParDo(ReadSegmentationChunkFn(reader, built, self.files)).with_output_types(
                    typing.Tuple[typing.Tuple[int, int, int], ChunkPart])
                | "GroupChunkParts" >> beam.GroupByKey())


@dataclasses.dataclass(frozen=True)
class FromInputs:
    """Build from layer 2: every chunk, or only `coords` (a `--test` run), less the chunks
    `saved` holds (read back from the checkpoint instead)."""
    layer2: FileChunks | VolumeChunks
    coords: tuple | None = None
    saved: SavedWork = NOTHING


@dataclasses.dataclass(frozen=True)
class FromCheckpoint:
    """Build from `layer` (> 2) on; `saved` holds layer `layer - 1`'s summaries and the
    root-bound files and proofs of every layer below."""
    layer: int
    saved: SavedWork


@dataclasses.dataclass
class _Built:
    """What the layers built so far hand on."""
    summaries: object           # PCollection of (parent chunk, summary)
    roots: list                 # PCollections of (bucket, root-bound components)
    proofs: list                # PCollections of layer proofs
    marked: object = None       # (CHECKPOINTED, layer) once the top layer's checkpoint is complete


def _pick(tagged, tag):
    if tagged[0] == tag:
        yield tagged[1]


def _select(built, stage: str, tag: str):
    """The `tag` values of a build stage's `(tag, value)` pairs (fused into the stage)."""
    return built | f"{stage}{tag.capitalize()}" >> beam.FlatMap(_pick, tag).with_output_types(typing.Any)


def _write_markers(element, url: str, identity: str):
    """A layer's checkpoint markers (summaries with the layer's proof, root bounds), from its
    saved-file counts and its proof; then `(CHECKPOINTED, layer)`."""
    layer, parts = element
    parts = list(parts)
    proofs = [value for kind, value in parts if kind == "proof"]
    if len(proofs) != 1:
        raise RuntimeError(f"layer {layer}: {len(proofs)} proofs for its checkpoint markers, expected 1")
    for kind, count in parts:
        if kind != "proof":
            checkpoint.mark_complete(url, kind, layer, count, identity, proofs[0] if kind == "summaries" else None)
    yield CHECKPOINTED, layer


class BuildGraph(beam.PTransform):
    """Builds the graph and writes it: one build stage per layer, each with its own sink (no
    Flatten, so each stage's writes are fused into it and overlap its build), one proof per
    layer, and the completion proof over all of them. Returns the completion mark."""

    def __init__(self, layout: GraphLayout, start: FromInputs | FromCheckpoint, sink: SinkSpec, top_layer=None,
                 fail_at_layer=None, checkpoint_url=None, pcg_version=2, cache=None):
        """`top_layer`: stop after building this layer (then no roots are assigned; with a
        `FromInputs` of a few chunks, the `--test` run). `checkpoint_url`: save every layer's
        summaries there. `pcg_version` 3: also the cells PyChunkedGraph 3.x adds
        (docs/table-format.md, version 3). `cache`: an l2cache.chunks.CacheSpec: the layer-2
        stage also writes the L2 cache (every layer-2 chunk is then built from its inputs)."""
        super().__init__()
        self.cache = cache
        self.layout = layout
        self.start = start
        self.sink = sink
        self.top_layer = top_layer or layout.layer_count
        self.fail_at_layer = fail_at_layer
        self.checkpoint_url = checkpoint_url
        self.lifted = pcg_version >= 3
        self.coords = start.coords if isinstance(start, FromInputs) else None

    def expand(self, pbegin):
        if isinstance(self.start, FromCheckpoint):
            built, first = self._from_checkpoint(pbegin), self.start.layer
        else:
            built, first = self._from_layer2(pbegin), 3
        for layer in range(first, self.top_layer + 1):
            built = self._parent_layer(built, layer)
        if built.marked is not None:  # the top layer's checkpoint complete too, before the completion mark
            built.proofs.append(built.marked)
        layers = list(range(2, self.top_layer + 1)) + ([L2CACHE] if self.cache is not None else [])
        with_roots = self.top_layer == self.layout.layer_count
        if with_roots:
            built.proofs.append(self._roots(pbegin, built.roots))
            layers.append(ROOTS)
        if self.start.saved.proofs:
            built.proofs.append(pbegin | "CarriedProofs" >> beam.Create(list(self.start.saved.proofs),
                                                                        reshuffle=False))
        scope = "full" if self.coords is None else "test"
        return (built.proofs
                | "AllProofs" >> beam.Flatten()
                | "KeyProofs" >> beam.Map(lambda proof: (None, proof))
                | "GatherProofs" >> beam.GroupByKey()  # not ToList: its default-value stages, for nothing
                | "ProveComplete" >> beam.ParDo(ProveCompleteFn(
                    self.sink, layers, with_roots, scope, self.cache.table_id if self.cache is not None else None)))

    def _from_layer2(self, pbegin) -> _Built:
        start, saved = self.start, self.start.saved
        built = BuiltChunks(start.coords, saved.done_chunks)
        reader = start.layer2.reader
        stage = stages.step_name(2)
        chunks = (start.layer2.elements(pbegin, self.layout, built)
                  | f"Build{stage}" >> beam.ParDo(
                      BuildLayer2Fn(self.layout, reader, self.fail_at_layer, self.checkpoint_url,
                                    self.sink.identity, self.lifted, self.cache, start.layer2.files)))
        proof = self._write_and_prove(_select(chunks, stage, ROWS), 2,
                                      stages.expected_chunks(self.layout, 2, start.coords), saved.acks)
        summaries, roots = _select(chunks, stage, SUMMARY), [_select(chunks, stage, ROOT_BOUND)]
        if saved.done_chunks:
            saved_summaries, saved_roots = self._read_checkpoint(pbegin, f"Done{stage}", saved)
            summaries = (summaries, saved_summaries) | f"{stage}Summaries" >> beam.Flatten()
            roots.append(saved_roots)
        marked = self._mark_saved(chunks, 2, proof, (len(saved.summaries), len(saved.roots)))
        proofs = [proof]
        if self.cache is not None:
            cache = stages.step_name(L2CACHE)
            proofs.append(_select(chunks, stage, CACHE_ROWS)
                          | f"Write{cache}" >> beam.ParDo(WriteCacheRowsFn(self.sink, self.cache.table_id))
                          | f"Prove{cache}" >> ProveLayer(L2CACHE,
                                                         stages.expected_chunks(self.layout, 2, start.coords),
                                                         functools.partial(completion.check_cache,
                                                                           accept_mismatch=self.cache.accept_mismatch)))
        return _Built(summaries, roots, proofs, marked)

    def _from_checkpoint(self, pbegin) -> _Built:
        summaries, roots = self._read_checkpoint(pbegin, "Checkpoint", self.start.saved)
        return _Built(summaries, [roots], [])

    def _parent_layer(self, below: _Built, layer: int) -> _Built:
        """Layer `layer` from the summaries below. The layer below's "checkpoint complete"
        element goes into the same grouping: a grouping emits only once all of its input is
        in, so the layer starts after the checkpoint below is complete (data, not a side
        input: Beam's DaskRunner computes a side input again, with everything upstream, in
        every task that reads it)."""
        summaries = below.summaries
        if below.marked is not None:
            summaries = (summaries, below.marked) | f"{stages.step_name(layer)}Inputs" >> beam.Flatten()
        stage = stages.step_name(layer)
        chunks = (summaries
                  | f"Group{stage}" >> beam.GroupByKey()
                  | f"Build{stage}" >> beam.ParDo(
                      BuildParentLayerFn(self.layout, layer, self.fail_at_layer, self.checkpoint_url,
                                         self.sink.identity, self.lifted)))
        test_chunk = None if self.coords is None else [tuple(int(c) >> 1 for c in self.coords[0])]
        proof = self._write_and_prove(_select(chunks, stage, ROWS), layer,
                                      stages.expected_chunks(self.layout, layer, test_chunk))
        return _Built(_select(chunks, stage, SUMMARY), below.roots + [_select(chunks, stage, ROOT_BOUND)],
                      below.proofs + [proof], self._mark_saved(chunks, layer, proof))

    def _roots(self, pbegin, roots: list):
        seeds = pbegin | "RootBuckets" >> beam.Create([(n, None) for n in range(stages.ROOT_BUCKETS)],
                                                      reshuffle=False)
        root_rows = ((roots + [seeds])
                     | "AllRootBound" >> beam.Flatten()
                     | "GroupRootBuckets" >> beam.GroupByKey()
                     | "AssignRootIds" >> beam.ParDo(BuildRootsFn(self.layout)))
        return self._write_and_prove(root_rows, ROOTS, stages.expected_chunks(self.layout, ROOTS))

    def _mark_saved(self, chunks, layer, proof, already=(0, 0)):
        """Write the layer's checkpoint markers once its summaries are saved and its rows
        proven written; returns `(CHECKPOINTED, layer)` once they are (None without a
        checkpoint), for the next layer's grouping or, for the top layer, the completion proof.
        `already`: summary and root-bound files saved by an earlier run and reused."""
        if not self.checkpoint_url:
            return None
        stage = stages.step_name(layer)
        seeds = chunks.pipeline | f"SavedSeed{stage}" >> beam.Create([("summaries", already[0]),
                                                                            ("roots", already[1])], reshuffle=False)
        counts = ((_select(chunks, stage, SAVED), seeds)
                  | f"AllSaved{stage}" >> beam.Flatten()
                  | f"CountSaved{stage}" >> beam.CombinePerKey(sum)
                  | f"KeySaved{stage}" >> beam.Map(lambda kv, layer=layer: (layer, kv)).with_output_types(
                      typing.Any))
        proved = proof | f"KeyProof{stage}" >> beam.Map(
            lambda p, layer=layer: (layer, ("proof", p))).with_output_types(typing.Any)
        return ((counts, proved)
                | f"SavedAndProven{stage}" >> beam.Flatten()
                | f"GatherSaved{stage}" >> beam.GroupByKey()
                | f"MarkCheckpoint{stage}" >> beam.FlatMap(
                    _write_markers, self.checkpoint_url, self.sink.identity).with_output_types(typing.Any))

    def _read_checkpoint(self, pbegin, label, saved: SavedWork):
        """The saved summaries and root-bound components, read on the workers."""
        url, identity = self.checkpoint_url, self.sink.identity
        summaries = (pbegin
                     | f"{label}Summaries" >> beam.Create(list(saved.summaries), reshuffle=False)
                     | f"{label}Spread" >> beam.Reshuffle()
                     | f"{label}ReadSummaries" >> beam.Map(
                         lambda name: checkpoint.decode_summary(checkpoint.read_file(url, name), identity, name)))
        roots = (pbegin
                 | f"{label}RootBound" >> beam.Create(list(saved.roots))
                 | f"{label}ReadRootBound" >> beam.Map(
                     lambda name: checkpoint.decode_root_bound(checkpoint.read_file(url, name), identity, name)))
        return summaries, roots

    def _write_and_prove(self, rows, layer, expected, carried=None):
        stage = stages.step_name(layer)
        acks = rows | f"Write{stage}" >> beam.ParDo(WriteRowsFn(self.sink, stage=stage))
        if carried is not None and len(carried.coords):
            acks = ((acks, rows.pipeline | f"Carried{stage}Acks" >> beam.Create([carried]))
                    | f"All{stage}Acks" >> beam.Flatten())
        return acks | f"Prove{stage}" >> ProveLayer(layer, expected)
