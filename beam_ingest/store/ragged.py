"""Ragged byte arrays: many variable-length byte strings in one numpy buffer.

The wire encoder builds protobuf messages for a whole batch of rows at once with these:
every operation is a handful of numpy calls over all items, never a Python step per item.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def decimal_keys(ids: np.ndarray) -> np.ndarray:
    """`%020d` of many uint64 ids as an (n, 20) uint8 array of ASCII digits."""
    rest = np.array(ids, np.uint64)
    out = np.empty((len(rest), 20), np.uint8)
    ten = np.uint64(10)
    for k in range(19, -1, -1):  # division by a scalar is fast in numpy (libdivide)
        quotient = rest // ten
        out[:, k] = rest - quotient * ten
        rest = quotient
    out += np.uint8(48)
    return out


@dataclasses.dataclass
class Ragged:
    """Item i is `flat[offsets[i]:offsets[i + 1]]`."""
    flat: np.ndarray     # uint8
    offsets: np.ndarray  # int64, len(items) + 1

    @classmethod
    def from_lengths(cls, flat: np.ndarray, lengths: np.ndarray) -> "Ragged":
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.ascontiguousarray(flat, np.uint8).reshape(-1), offsets)

    @classmethod
    def from_bytes(cls, items) -> "Ragged":
        items = list(items)
        return cls.from_lengths(np.frombuffer(b"".join(items), np.uint8),
                                np.fromiter((len(b) for b in items), np.int64, len(items)))

    @classmethod
    def fixed(cls, rows: np.ndarray) -> "Ragged":
        """Items of equal width from an (n, width) uint8 array."""
        n, width = rows.shape
        return cls(np.ascontiguousarray(rows, np.uint8).reshape(-1), np.arange(n + 1, dtype=np.int64) * width)

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item(self, i: int) -> bytes:
        return self.flat[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def take(self, index: np.ndarray) -> "Ragged":
        index = np.asarray(index, np.int64)
        starts, lengths = self.offsets[index], self.lengths[index]
        out = Ragged.from_lengths(np.empty(int(lengths.sum()), np.uint8), lengths)
        out.flat[:] = self.flat[_gather(starts, lengths, out.offsets)]
        return out

    def group(self, counts: np.ndarray) -> "Ragged":
        """Concatenate runs of consecutive items: run j has `counts[j]` items."""
        ends = np.cumsum(counts)
        return Ragged(self.flat, np.concatenate([[0], self.offsets[ends]]).astype(np.int64))


def _gather(starts, lengths, out_offsets) -> np.ndarray:
    """Source positions that copy items (starts, lengths) to consecutive output items."""
    return np.repeat(starts - out_offsets[:-1], lengths) + np.arange(out_offsets[-1])


def join(n: int, segments) -> Ragged:
    """Item-wise concatenation of segments, each a `bytes` constant (the same for every item),
    an (n, width) uint8 array, or a `Ragged` of n items."""
    lengths = np.zeros(n, np.int64)
    for seg in segments:
        lengths += len(seg) if isinstance(seg, bytes) else (seg.shape[1] if isinstance(seg, np.ndarray)
                                                             else seg.lengths)
    out = Ragged.from_lengths(np.empty(int(lengths.sum()), np.uint8), lengths)
    position = out.offsets[:-1].copy()
    for seg in segments:
        if isinstance(seg, bytes):
            seg = np.broadcast_to(np.frombuffer(seg, np.uint8), (n, len(seg)))
        if isinstance(seg, np.ndarray):
            width = seg.shape[1]
            if width:
                out.flat[position[:, None] + np.arange(width)] = seg
            position += width
        else:
            lengths = seg.lengths
            out.flat[np.repeat(position - seg.offsets[:-1], lengths) + np.arange(seg.offsets[-1])] = seg.flat
            position += lengths
    return out


def varints(values: np.ndarray) -> Ragged:
    """Base-128 varint encodings of non-negative integers."""
    values = np.asarray(values, np.uint64)
    n = len(values)
    if n == 0 or values.max() < 0x80:  # the common case: one byte each
        return Ragged.fixed(values.astype(np.uint8).reshape(n, 1))
    width = np.ones(n, np.int64)
    for k in range(1, 10):
        width += values >= np.uint64(1) << np.uint64(7 * k)
    table = np.zeros((n, int(width.max()) if n else 1), np.uint8)
    for k in range(table.shape[1]):
        byte = ((values >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = width > k + 1
        table[:, k] = byte | (more.astype(np.uint8) << 7)
    keep = np.arange(table.shape[1]) < width[:, None]
    return Ragged.from_lengths(table[keep], width)


def concat(parts) -> Ragged:
    parts = list(parts)
    if not parts:
        return Ragged(np.empty(0, np.uint8), np.zeros(1, np.int64))
    lengths = np.concatenate([p.lengths for p in parts])
    return Ragged.from_lengths(np.concatenate([p.flat[p.offsets[0]:p.offsets[-1]] for p in parts]), lengths)
