"""The agglomeration's sharded container (docs/input-formats.md), read with ranged requests.

    bytes 0-3   b"SO01"
    bytes 4-11  uint64 LE offset of the index;  12-19 its length (crc included)
    payloads    data + crc32(data) (uint32 LE); the index's size includes the crc
    index       records (chunk id(s), offset, size) + crc32 of the records

Reading one chunk's payloads takes three rounds of parallel ranged requests over all the
files it needs: headers, then indexes, then the payloads. A whole file is never fetched.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..errors import InputError

MAGIC = b"SO01"
HEADER_LENGTH = 20
CRC_LENGTH = 4


def index_dtype(pair_keys: bool) -> np.dtype:
    """In-chunk and remap files key payloads by one chunk id, between/fake files by two."""
    key = ("chunkid", "<u8", (2,)) if pair_keys else ("chunkid", "<u8")
    return np.dtype([key, ("offset", "<u8"), ("size", "<u8")])


def _crc(data: bytes) -> bytes:
    return np.uint32(zlib.crc32(data)).tobytes()


def write_shard(payloads: dict, pair_keys: bool) -> bytes:
    """Serialize `{chunk id or (id, id): data bytes}` into one container (for generators and tests)."""
    body = bytearray()
    records = np.zeros(len(payloads), index_dtype(pair_keys))
    offset = HEADER_LENGTH
    for i, (key, data) in enumerate(sorted(payloads.items())):
        records[i]["chunkid"] = key
        records[i]["offset"] = offset
        records[i]["size"] = len(data) + CRC_LENGTH
        body += data + _crc(data)
        offset += len(data) + CRC_LENGTH
    index = records.tobytes()
    index += _crc(index)
    header = MAGIC + np.array([offset, len(index)], "<u8").tobytes()
    return header + bytes(body) + index


def _wanted_records(records: np.ndarray, want, pairs: bool) -> np.ndarray:
    """Positions of the index records whose key is in `want` (vectorized over the records)."""
    keys = records["chunkid"]
    if not pairs:
        return np.flatnonzero(np.isin(keys, np.fromiter((int(k) for k in want), np.uint64)))
    hit = np.zeros(len(records), bool)
    for a, b in want:  # a handful of chunk pairs per file
        hit |= (keys[:, 0] == np.uint64(a)) & (keys[:, 1] == np.uint64(b))
    return np.flatnonzero(hit)


class ShardReader:
    """Ranged reads of payloads from many sharded files of one folder (cloud-files)."""

    def __init__(self, url: str, key_name=None):
        self.url = url.rstrip("/")
        self.key_name = key_name  # optional: key -> words for error messages (e.g. its chunk coordinates)
        self._cf = None
        self.requests = 0  # ranged requests made
        self.rounds = 0    # batches of them (each one parallel round trip)

    def _files(self):
        if self._cf is None:
            from cloudfiles import CloudFiles
            self._cf = CloudFiles(self.url, progress=False)
            # cloud-files reads a batch of local files through a 1-thread pool that polls every
            # 0.1 s; one request at a time is much faster there. Remote batches go in parallel.
            self._local = self._cf.protocol == "file"
        return self._cf

    def _get(self, ranges):
        """[(name, start, end)] -> {(name, start): bytes or None}, one parallel batch."""
        if not ranges:
            return {}
        self.requests += len(ranges)
        self.rounds += 1
        requests = [{"path": n, "start": s, "end": e} for n, s, e in ranges]
        try:
            cf = self._files()
            if self._local:
                results = [cf.get([r], raw=True)[0] for r in requests]
            else:  # object stores and http: storage may stop answering
                from ..deadline import within
                results = within(f"{self.url}: ranged read of {len(requests)} part(s)", cf.get, requests, raw=True)
        except InputError:
            raise
        except Exception as exc:  # storage errors vary by backend
            raise InputError(f"{self.url}: ranged read failed ({exc})") from None
        out = {}
        for r in results:
            start = (r.get("byte_range") or (None, None))[0]
            out[(r["path"], start)] = None if r.get("error") else r.get("content")
        return out

    def read(self, wanted: dict, pair_keys, where: str) -> dict:
        """`wanted`: {file name: [keys]} -> {(file name, key): payload data (crc checked)}.

        `pair_keys`: whether files key payloads by chunk pairs: a bool, or a function of the
        file name (so in-chunk and between files are read in the same three rounds).

        Missing files are skipped. An empty file, a bad magic, an index past the end, a crc
        mismatch, a payload outside the file or a wanted key listed more than once in the index
        raises InputError naming the file (and byte offset or key).
        """
        names = sorted(wanted)
        headers = self._get([(n, 0, HEADER_LENGTH) for n in names])
        index_ranges = []
        for name in names:
            header = headers.get((name, 0))
            if header is None:
                continue
            path = f"{self.url}/{name}"
            if len(header) == 0:
                raise InputError(f"{path} ({where}): empty file (0 bytes), not a sharded file")
            if len(header) < HEADER_LENGTH or header[:4] != MAGIC:
                raise InputError(f"{path} ({where}): not a sharded file (bad header {header[:4]!r})")
            offset, length = (int(v) for v in np.frombuffer(header[4:HEADER_LENGTH], "<u8"))
            if length < CRC_LENGTH:
                raise InputError(f"{path} ({where}): index length {length} is too short")
            index_ranges.append((name, offset, offset + length))
        indexes = self._get(index_ranges)
        payload_ranges, keys_at = [], {}
        for name, start, end in index_ranges:
            path = f"{self.url}/{name}"
            pairs = pair_keys(name) if callable(pair_keys) else pair_keys
            dtype = index_dtype(pairs)
            raw = indexes.get((name, start))
            if raw is None or len(raw) != end - start:
                got = 0 if raw is None else len(raw)
                raise InputError(f"{path} ({where}): the index at byte {start} (length {end - start}) runs past "
                                 f"the end of the file ({got} bytes there)")
            records_bytes, crc = raw[:-CRC_LENGTH], raw[-CRC_LENGTH:]
            if _crc(records_bytes) != crc:
                raise InputError(f"{path} ({where}): crc mismatch in the index at byte {start}")
            if len(records_bytes) % dtype.itemsize:
                raise InputError(f"{path} ({where}): index of {len(records_bytes)} bytes is not whole records")
            records = np.frombuffer(records_bytes, dtype)
            chosen = records[_wanted_records(records, wanted[name], pairs)]
            chosen_keys = chosen["chunkid"]
            _, first, counts = np.unique(chosen_keys, axis=0, return_index=True, return_counts=True)
            if np.any(counts > 1):
                # Two payloads under one key: which one is the chunk's data? Refuse rather than pick.
                dup = int(np.flatnonzero(counts > 1)[0])
                same = (chosen_keys == chosen_keys[first[dup]]).reshape(len(chosen), -1).all(axis=1)
                key = chosen_keys[first[dup]]
                key = tuple(int(k) for k in key) if pairs else int(key)
                offsets = chosen["offset"][same]
                named = f"{key} ({self.key_name(key)})" if self.key_name else f"{key}"
                raise InputError(f"{path} ({where}): the index lists key {named} {int(counts[dup])} times (payloads "
                                 f"at bytes {', '.join(str(int(o)) for o in offsets)}); each key must appear once")
            end_of_data, size = np.uint64(start), chosen["size"]
            bad = ((size < CRC_LENGTH) | (size > end_of_data)
                   | (chosen["offset"] > end_of_data - np.minimum(size, end_of_data)))  # no uint64 wrap-around
            if np.any(bad):
                rec = chosen[int(np.flatnonzero(bad)[0])]
                raise InputError(f"{path} ({where}): payload at byte {int(rec['offset'])} (size {int(rec['size'])}) "
                                 "lies outside the data section")
            for rec in chosen:
                s, size = int(rec["offset"]), int(rec["size"])
                if (name, s) not in keys_at:  # two keys may share one payload: fetch it once
                    payload_ranges.append((name, s, s + size))
                keys_at.setdefault((name, s), []).append(
                    tuple(int(k) for k in rec["chunkid"]) if pairs else int(rec["chunkid"]))
        payloads = self._get(payload_ranges)
        out = {}
        for name, s, e in payload_ranges:
            raw = payloads.get((name, s))
            if raw is None or len(raw) != e - s:
                raise InputError(f"{self.url}/{name} ({where}): payload at byte {s} is cut short")
            data = raw[:-CRC_LENGTH]
            if _crc(data) != raw[-CRC_LENGTH:]:
                raise InputError(f"{self.url}/{name} ({where}): crc mismatch in the payload at byte {s}")
            for key in keys_at[(name, s)]:
                out[(name, key)] = data
        return out
