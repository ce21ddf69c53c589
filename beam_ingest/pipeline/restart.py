"""What an earlier run of the same table left for this one, read by the launcher before the
job is built: the pipeline then only reads the checkpoint files it is handed.

Two ways to start from a checkpoint (checkpoint.py has the files):
- `restart_at(url, identity, layer)` (`--start_layer=L`): layer L-1's summaries, the
  root-bound components of the layers below L, and the proofs that those layers' rows are
  written; nothing below L is built again.
- `resume_layer2(url, identity, layout)` (`--if_exists=continue` with a checkpoint): the
  layer-2 chunks whose rows Bigtable acknowledged are read back instead of rebuilt.
"""
from __future__ import annotations

import dataclasses

from . import checkpoint, completion


@dataclasses.dataclass(frozen=True)
class SavedWork:
    """Checkpoint files a run reads back instead of building them again."""
    summaries: tuple = ()        # summary files to read (names under the checkpoint URL)
    roots: tuple = ()            # root-bound component files to read
    proofs: tuple = ()           # completion proofs of layers not built again
    done_chunks: frozenset = frozenset()  # layer-2 chunks not built again
    acks: completion.Acks | None = None   # their acknowledgements, carried into layer 2's proof

    @property
    def empty(self) -> bool:
        return not (self.summaries or self.roots or self.proofs or self.done_chunks)


NOTHING = SavedWork()


def restart_at(url: str, identity: str, start_layer: int) -> SavedWork:
    """Layer `start_layer - 1`'s summaries and every proof and root file below `start_layer`;
    raises checkpoint.CheckpointError when any is missing or belongs to another run."""
    summaries = checkpoint.list_layer(url, "summaries", start_layer - 1, identity)
    roots = [name for layer in range(2, start_layer) for name in checkpoint.list_layer(url, "roots", layer, identity)]
    proofs = []
    for layer in range(2, start_layer):
        proof = checkpoint.read_marker(url, "summaries", layer, identity).get("proof")
        if not proof:
            raise checkpoint.CheckpointError(
                f"checkpoint {url.rstrip('/')}/{checkpoint.complete_name('summaries', layer)} holds no proof that "
                f"layer {layer}'s rows were written; restart from an earlier layer")
        proofs.append(proof)
    return SavedWork(summaries=tuple(summaries), roots=tuple(roots), proofs=tuple(proofs))


def resume_layer2(url: str, identity: str, layout) -> SavedWork:
    """The layer-2 chunks of run `identity` that were acknowledged and whose summary was saved,
    with their summary and root-bound files and their acknowledgements."""
    coords, counts = checkpoint.acknowledged_layer2(url, identity)
    saved = checkpoint.saved_summaries(url, 2, coords.tolist())
    keep = [i for i, c in enumerate(coords.tolist()) if tuple(c) in saved]
    done = frozenset(saved)
    root_files = {checkpoint.roots_file(2, layout.chunk_id(2, *c)) for c in done}
    roots = [name for name in checkpoint.list_roots(url, 2) if name in root_files]
    return SavedWork(summaries=tuple(saved[c] for c in sorted(done)), roots=tuple(roots), done_chunks=done,
                     acks=completion.Acks.of(2, coords[keep], counts[keep]))


def restartable_layer(url: str, identity: str, top_layer: int) -> int | None:
    """The highest layer a failed run of `identity` can restart at with `--start_layer`: every
    layer below it has its summaries, root-bound files and proof saved. None when no layer
    above 2 can be restarted at (or the checkpoint cannot be read)."""
    best = None
    try:
        for layer in range(2, top_layer):
            marker = checkpoint.read_marker(url, "summaries", layer, identity)
            checkpoint.read_marker(url, "roots", layer, identity)
            if not marker.get("proof"):
                break
            best = layer + 1
    except Exception:  # noqa: BLE001 - missing markers end the search; advice only
        pass
    return best
