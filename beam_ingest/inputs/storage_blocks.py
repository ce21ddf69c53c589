"""Reads and writes boxes of a precomputed volume aligned to its storage chunks, file by file.

A CloudVolume cutout spends about 0.5 ms of bookkeeping per storage file (bounding boxes,
scheduling), more than decoding the file costs; a layer-2 chunk of a segmentation is read
as tens of small files. For volumes in the encodings segmentations use, this reader asks
CloudVolume only for the geometry (and, in sharded volumes, for each storage chunk's byte
range), fetches the box's files or ranges with cloud-files, uncompresses them and decodes
them with cloudvolume.chunks.decode (a box that is one file is returned as decoded, without
a copy); anything else (other encodings, boxes reaching outside the volume) is a CloudVolume
cutout. Writes of aligned boxes go the same way, a storage file at a time (raw blocks copied
once into x-fastest order, other encodings through cloudvolume.chunks.encode; cloud-files
put), which also lets the gzip level be chosen:
CloudVolume compresses uploads at gzip's default level 9 whatever its `compress_level` says.
Gzip itself is ISA-L's (python-isal): at level 1 it compressed a 64x64x32 chunk of uint64
labels 10x faster than libdeflate, to smaller files.
"""
from __future__ import annotations

import concurrent.futures
import itertools

import deflate  # libdeflate: cloud-files' own gzip (a dependency of it)
import numpy as np

FAST_ENCODINGS = ("raw", "compressed_segmentation", "compresso", "crackle")  # decoded file by file
LOCAL_PROTOCOLS = ("file", "mem")
_FETCH_THREADS = 16
_pool = None


class MissingStorageChunk(LookupError):
    """A storage file of the box does not exist."""


def _pool_of_threads():
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="storage-files")
    return _pool


class StorageBlocks:
    """`read(start, stop)`: the voxels `start..stop` (absolute, at the volume's mip) as an
    x-fastest array of shape `stop - start` + (channels,)."""

    def __init__(self, volume, fill_missing: bool = False):
        meta, mip = volume.meta, volume.mip
        self.fill_missing = fill_missing  # a missing file reads as the background (0)
        self.volume = volume
        self.chunk = np.asarray(meta.chunk_size(mip), np.int64)
        self.offset = np.asarray(meta.voxel_offset(mip), np.int64)
        self.stop = self.offset + np.asarray(meta.volume_size(mip), np.int64)
        self.encoding = meta.encoding(mip)
        self.dtype = np.dtype(meta.data_type)
        self.channels = int(meta.num_channels)
        self.block_size = meta.compressed_segmentation_block_size(mip) if self.encoding == "compressed_segmentation" \
            else None
        self.background = volume.background_color
        self.fast = self.encoding in FAST_ENCODINGS
        self.sharded = bool(meta.sharding(mip))
        self.path = meta.join(meta.cloudpath, meta.key(mip))
        self.local = meta.path.protocol in LOCAL_PROTOCOLS
        self._files = None
        self._shards = None
        self.files_read = 0  # storage files, or chunks in shard files

    def _aligned(self, start, stop) -> bool:
        return bool(np.all((start - self.offset) % self.chunk == 0)
                    and np.all(((stop - self.offset) % self.chunk == 0) | (stop == self.stop)))

    def read(self, start, stop) -> np.ndarray:
        """A box inside the volume; storage files it covers only in part are decoded whole and
        cropped (as a CloudVolume cutout would)."""
        start, stop = np.asarray(start, np.int64), np.asarray(stop, np.int64)
        if not self.fast or np.any(start < self.offset) or np.any(stop > self.stop) or np.any(stop <= start):
            cutout = self.volume[int(start[0]):int(stop[0]), int(start[1]):int(stop[1]), int(start[2]):int(stop[2])]
            return np.asarray(cutout)
        boxes = self._boxes(self.offset + (start - self.offset) // self.chunk * self.chunk, stop)
        contents = self._fetch_sharded(boxes) if self.sharded else self._fetch([name for _, _, name in boxes])
        if len(boxes) == 1 and np.array_equal(boxes[0][0], start) and np.array_equal(boxes[0][1], stop) \
                and contents[0] is not None:  # the box is one file: its decoded array as it is (may be read-only)
            return _decode(contents[0], self.encoding, tuple(int(v) for v in stop - start) + (self.channels,),
                           self.dtype, self.block_size, self.background)
        out = np.empty(tuple(int(v) for v in stop - start) + (self.channels,), self.dtype, order="F")
        for (lo, hi, name), content in zip(boxes, contents):
            shape = tuple(int(v) for v in hi - lo) + (self.channels,)
            if content is None:
                if not self.fill_missing:
                    raise MissingStorageChunk(f"storage chunk {name} is in no shard file under {self.path}"
                                              if self.sharded else f"storage file {self.path}/{name} does not exist")
                block = np.full(shape, self.background, self.dtype)
            else:
                block = _decode(content, self.encoding, shape, self.dtype, self.block_size, self.background)
            a, b = np.maximum(lo, start), np.minimum(hi, stop)
            out[tuple(slice(int(x - s), int(y - s)) for x, y, s in zip(a, b, start))] = \
                block[tuple(slice(int(x - s), int(y - s)) for x, y, s in zip(a, b, lo))]
        return out

    def write(self, start, data: np.ndarray, compress_level: int | None = None):
        """Writes `data` (x-fastest, shape + (channels,)) at voxel `start`."""
        self.write_mapped(start, data, None, compress_level)

    def write_mapped(self, start, data: np.ndarray, table: np.ndarray | None, compress_level: int | None = None):
        """Writes `table[data]` (`data` x-fastest; one channel if `table` is given) at voxel
        `start`, mapping one storage file's block at a time: the whole mapped volume is never
        made, and a raw block is copied once, not twice as cloudvolume.chunks.encode does."""
        def mapped(block):  # shape + (channels,)
            return block if table is None else table[block][..., np.newaxis]

        start = np.asarray(start, np.int64)
        stop = start + np.asarray(data.shape[:3], np.int64)
        if not self.fast or self.sharded or not self._aligned(start, stop):
            self.volume[int(start[0]):int(stop[0]), int(start[1]):int(stop[1]), int(start[2]):int(stop[2])] = \
                mapped(data)
            return
        from cloudvolume import chunks
        from cloudvolume.datasource.precomputed.common import content_type, should_compress
        meta, mip = self.volume.meta, self.volume.mip
        compress = should_compress(self.encoding, None, None)
        files = []
        for lo, hi, name in self._boxes(start, stop):
            block = data[tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))]
            if self.encoding == "raw":  # x-fastest bytes: the C-order layout of the reversed axes
                content = np.ascontiguousarray(block.T) if table is None else table[block.T]
                content = content.reshape(-1) if compress == "gzip" else content.tobytes()
            else:
                content = chunks.encode(mapped(block), self.encoding, self.block_size,
                                        compression_params=meta.compression_params(mip))
            files.append((name, gzip_bytes(content, compress_level) if compress == "gzip" else content))
        options = dict(content_type=content_type(self.encoding), compress=compress, compression_level=compress_level,
                       raw=compress == "gzip")
        folder = self._folder()
        if self.local or len(files) == 1:
            for name, content in files:
                folder.put(name, content, **options)
        else:
            list(_pool_of_threads().map(lambda file: folder.put(*file, **options), files))

    def _boxes(self, start, stop) -> list:
        """The storage files of an aligned box: `(start, stop, name)` each."""
        boxes = []
        for corner in itertools.product(*(range(int(a), int(b), int(c)) for a, b, c in zip(start, stop, self.chunk))):
            lo = np.asarray(corner, np.int64)
            hi = np.minimum(lo + self.chunk, self.stop)
            boxes.append((lo, hi, "_".join(f"{a}-{b}" for a, b in zip(lo, hi))))
        return boxes

    def _folder(self):
        if self._files is None:
            from cloudfiles import CloudFiles
            self._files = CloudFiles(self.path, progress=False)
        return self._files

    def _fetch(self, names) -> list:
        """Files (names, or cloud-files' `{path, start, end}` byte ranges; None: skipped) in order."""
        self.files_read += sum(name is not None for name in names)
        if self.local or len(names) == 1:
            return [self._get(name) for name in names]
        # cloud-files' own multi-file get starts a thread queue per call (~0.1 s): one pool per process
        return list(_pool_of_threads().map(self._get, names))

    def _fetch_sharded(self, boxes) -> list:
        """The storage chunks of `boxes` from their shard files. CloudVolume's ShardReader finds
        their byte ranges (one reader per volume, so the shard and minishard indexes it fetched
        stay cached; a cutout makes a new reader, and fetches them again, for every chunk);
        the ranges are fetched as files are, without cloud-files' multi-file queue, which
        waits in steps of 0.1 s (locally, the indexes are read one at a time for that reason)."""
        from cloudvolume.datasource.precomputed.common import compressed_morton_code
        volume = self.volume
        if self._shards is None:
            self._shards = volume.image.shard_reader(volume.mip)
        grid = np.ceil((self.stop - self.offset) / self.chunk).astype(np.int64)
        codes = [int(c) for c in compressed_morton_code([(lo - self.offset) // self.chunk for lo, _, _ in boxes],
                                                        grid)]
        key = volume.meta.key(volume.mip)
        if self.local:  # one chunk at a time: an index not yet cached is one read, not a queue that polls
            found = {c: self._shards.exists(c, key, return_byte_range=True, progress=False) for c in codes}
        else:  # the indexes not yet cached are fetched in parallel
            found = self._shards.exists(codes, key, return_byte_range=True, progress=False)
        ranges = [None if found.get(c) is None else
                  {"path": found[c][0].rsplit("/", 1)[-1], "start": found[c][1], "end": found[c][1] + found[c][2]}
                  for c in codes]
        contents = self._fetch(ranges)
        encoding = self._shards.spec.data_encoding
        return [c if c is None or encoding == "raw" else _uncompress(c, encoding, "shard data") for c in contents]

    def _get(self, name):
        """A file's bytes, uncompressed; None if it does not exist."""
        if name is None:
            return None
        found = self._folder().get([name], raw=True)[0]  # one path: fetched in this thread
        content, encoding = found["content"], found["compress"]
        return None if content is None else _uncompress(content, encoding, name)


def gzip_bytes(data, level: int | None = None) -> bytes:
    """A gzip member of `data` (bytes, or a contiguous array's buffer), with no timestamp so a
    rewrite is byte-identical (ISA-L: levels 0-3; without python-isal, cloud-files' gzip)."""
    try:
        from isal import igzip
    except ImportError:
        from cloudfiles.compression import compress
        return compress(bytes(data), "gzip", compress_level=level)
    return igzip.compress(data, compresslevel=min(max(1 if level is None else level, 0), 3), mtime=0)


def _uncompress(content: bytes, encoding, name):
    """Gzip is undone here with libdeflate, as cloud-files would, but without its copy of the
    result (a bytearray numpy can decode in place): 1 ms of a 64x64x32 uint64 chunk's 1.4."""
    if encoding == "gzip":
        return deflate.gzip_decompress(content)
    from cloudfiles.compression import decompress
    return decompress(content, encoding, filename=str(name))


def _decode(content: bytes, encoding, shape, dtype, block_size, background):
    from cloudvolume import chunks
    if encoding != "raw" and isinstance(content, bytearray):
        content = bytes(content)  # the label codecs take bytes only (a copy of the small compressed stream)
    return chunks.decode(content, encoding, shape=shape, dtype=dtype, block_size=block_size,
                         background_color=background)


def open_blocks(where: str, url: str, mip: int, fill_missing: bool = False) -> StorageBlocks:
    """The storage blocks of the volume at `url`, scale `mip`, opened as the ingest reads and
    writes volumes (no cache, unbounded, aligned writes only, empty blocks kept); an error
    names `where` (a config key and path) and the cause."""
    from cloudvolume import CloudVolume

    from ..deadline import within
    from ..errors import InputError
    try:
        volume = within(where, CloudVolume, url, mip=mip, progress=False, fill_missing=fill_missing,
                        bounded=False, cache=False, lru_bytes=0, non_aligned_writes=False,
                        delete_black_uploads=False, provenance={})
    except InputError:
        raise
    except Exception as exc:  # storage errors vary
        raise InputError(f"{where} cannot be opened: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    return StorageBlocks(volume, fill_missing=fill_missing)
