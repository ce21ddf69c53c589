"""The copy of WATERSHED in which PyChunkedGraph 3.x splits supervoxels (`--ocdbt`).

PyChunkedGraph 3.x keeps a copy of WATERSHED's base scale in an OCDBT store at
`<WATERSHED>/ocdbt/base`: a tensorstore `neuroglancer_precomputed` volume over an `ocdbt`
kvstore (zstd level 12), with WATERSHED's schema (rank, dtype, codec, domain, shape, chunk
layout, dimension units, as tensorstore reads them from WATERSHED's `info`). The server
opens it with exactly that spec and those constraints, reads every segmentation lookup from
it and writes split supervoxels' new ids into it. Here the launcher creates it, and the
workers fill it layer-2 chunk by layer-2 chunk with the voxels they hold.

Only WATERSHED's `info` is ever read with tensorstore (for the schema): its chunks are not
(local volumes written with gzip have `.gz` file names, which tensorstore does not read).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..deadline import within
from ..errors import ConfigError, InputError

COPY_DIR = "ocdbt"  # <WATERSHED>/ocdbt/, holding PyChunkedGraph's `base` and our marker
ZSTD_LEVEL = 12  # PyChunkedGraph's
DEFAULT_SV_SPLIT_THRESHOLD = 10  # PyChunkedGraph's `--sv-split-threshold` default
MARKER = "beam_ingest_graph.json"  # whose copy this is: {"graph_id": ...}
SCHEMES = ("gs://", "file://")  # kvstore URLs tensorstore opens as PyChunkedGraph passes them


def custom_data(sv_split_threshold: int) -> dict:
    """The graph meta's `custom_data` of a table in which supervoxels can be split."""
    return {"seg": {"ocdbt": True, "sv_split_threshold": int(sv_split_threshold)}}


def copy_url(watershed: str) -> str:
    """Where PyChunkedGraph looks for the copy: its own join of WATERSHED and `ocdbt/base`."""
    return os.path.join(watershed, COPY_DIR, "base")


def copy_spec(watershed: str) -> dict:
    return {"driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "ocdbt", "base": copy_url(watershed),
                        "config": {"compression": {"id": "zstd", "level": ZSTD_LEVEL}}}}


def check_watershed(watershed: str, voxel_offset) -> None:
    """What PyChunkedGraph 3.x can open, checked before anything is created: a WATERSHED URL
    tensorstore reads as given, and a zero voxel offset (the server opens the copy with both
    WATERSHED's domain and its shape, which tensorstore cannot merge unless the domain starts
    at 0)."""
    if not watershed.startswith(SCHEMES):
        raise ConfigError(f"--ocdbt: data_source.WATERSHED {watershed!r} must be a gs:// or file:// URL: "
                          "PyChunkedGraph 3.x opens the copy at <WATERSHED>/ocdbt/base with tensorstore, which "
                          "reads the path as written in the table's meta")
    if any(int(v) for v in voxel_offset):
        raise ConfigError(f"--ocdbt: data_source.WATERSHED starts at voxel offset {list(voxel_offset)}; "
                          "PyChunkedGraph 3.x opens the OCDBT copy with WATERSHED's domain and its shape, which "
                          "tensorstore cannot merge unless the volume starts at 0 (it fails with \"Cannot merge "
                          "index domain\"): no ingest can give it a copy it opens. Without --ocdbt the table "
                          "serves every other edit")


def open_copy(watershed: str, create: bool = False):
    """The copy, opened as PyChunkedGraph opens it (`create`: made, where there is none)."""
    import tensorstore as ts
    where = f"data_source.WATERSHED: {watershed}"
    try:
        schema = within(where, lambda: ts.open({"driver": "neuroglancer_precomputed", "kvstore": watershed},
                                               read=True).result().schema)
        return within(f"{where} (its OCDBT copy)", lambda: ts.open(
            copy_spec(watershed), create=create, rank=schema.rank, dtype=schema.dtype,
            codec=schema.codec, domain=schema.domain, shape=schema.shape, chunk_layout=schema.chunk_layout,
            dimension_units=schema.dimension_units).result())
    except InputError:
        raise
    except Exception as exc:  # tensorstore's errors: one class, the message says what
        raise InputError(f"{where}: its OCDBT copy {copy_url(watershed)} cannot be "
                         f"{'created' if create else 'opened'}: {' '.join(str(exc).split())[:300]}") from None


def _folder(watershed: str):
    from cloudfiles import CloudFiles
    return CloudFiles(os.path.join(watershed, COPY_DIR), progress=False)


def owner(watershed: str) -> str | None:
    """The graph whose copy `<WATERSHED>/ocdbt/` holds: its id, "" for a folder that holds
    something without our marker, None for no folder."""
    folder = _folder(watershed)
    found = within(f"data_source.WATERSHED: {watershed}", lambda: folder.get(MARKER))
    if found is not None:
        return json.loads(found).get("graph_id", "")
    anything = within(f"data_source.WATERSHED: {watershed}", lambda: next(iter(folder.list()), None))
    return None if anything is None else ""


def check_owner(watershed: str, graph_id: str) -> None:
    """An existing `<WATERSHED>/ocdbt/` of another graph (or of no ingest of ours) is refused,
    whatever --if_exists says: PyChunkedGraph reads one copy per WATERSHED."""
    found = owner(watershed)
    if found is None or found == graph_id:
        return
    whose = f"graph {found!r}" if found else "no ingest of this tool"
    raise ConfigError(f"--ocdbt: {os.path.join(watershed, COPY_DIR)} holds the OCDBT copy of {whose}; refusing "
                      f"to replace it for graph {graph_id!r} (one copy per WATERSHED: delete that folder, or give "
                      "this graph a WATERSHED of its own)")


def prepare_copy(watershed: str, graph_id: str, fresh: bool) -> None:
    """The launcher's part: a fresh run makes the copy afresh; a continued one keeps what the
    earlier run wrote (its chunks are written again only where they are built again)."""
    if not fresh:
        try:
            open_copy(watershed, create=False)
            return
        except InputError:
            pass  # no copy yet (the earlier run stopped before making it): make it
    folder = _folder(watershed)  # ours (check_owner): emptied here, not by tensorstore's delete of a key range
    names = within(f"data_source.WATERSHED: {watershed}", lambda: list(folder.list()))
    if names:
        within(f"data_source.WATERSHED: {watershed}", folder.delete, names)
    open_copy(watershed, create=True)
    _folder(watershed).put(MARKER, json.dumps({"graph_id": graph_id}).encode(), content_type="application/json",
                           compress=None)


class CopyWriter:
    """A worker's writer of the copy: opened once per worker (tensorstore handles share the
    store's cache), each chunk's box written and committed before the chunk goes on."""

    def __init__(self, watershed: str):
        self.watershed = watershed
        self._opened = None

    def _store(self):
        if self._opened is None:
            self._opened = open_copy(self.watershed)
        return self._opened

    def write(self, coord, start, voxels: np.ndarray) -> None:
        """The box of layer-2 chunk `coord` at voxel `start` (x, y, z), its supervoxel ids."""
        lo = [int(v) for v in start]
        hi = [a + int(n) for a, n in zip(lo, voxels.shape[:3])]
        store = self._store()
        try:
            within(f"the OCDBT copy {copy_url(self.watershed)} (layer-2 chunk {tuple(coord)})",
                   lambda: store[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], 0].write(voxels).result())
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"data_source.WATERSHED: its OCDBT copy {copy_url(self.watershed)} could not be "
                             f"written for layer-2 chunk {tuple(coord)}: {' '.join(str(exc).split())[:300]}") from None
