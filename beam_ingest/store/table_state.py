"""The ingest's own cells in the table's `meta` row: run record, launcher claim, completion mark.

    0:beam_ingest_run       JSON: the run identity (graph id, graph config, inputs, ingest
                            time, and a nonce drawn when the table was created)
    0:beam_ingest_claim     the nonce of the one launcher working on the table; its cell
                            timestamp is that launcher's last heartbeat
    0:beam_ingest_claim_by  JSON: host and pid of that launcher (for messages, and to see that
                            a launcher on this host is gone)
    0:beam_ingest_complete  JSON: written once every chunk's rows were acknowledged

Why the `meta` row: PyChunkedGraph reads that row and takes only its `0:meta` cell, and
it never scans non-numeric keys, so these cells are invisible to it; and one row means a
single CheckAndMutateRow tests and takes the claim atomically.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time

from google.cloud.bigtable import row_filters

from . import cells
from .bigtable import timestamp_from_ms

log = logging.getLogger(__name__)

RUN = b"beam_ingest_run"
CLAIM = b"beam_ingest_claim"
CLAIM_BY = b"beam_ingest_claim_by"
COMPLETE = b"beam_ingest_complete"

CLAIM_TTL_S = 120.0  # a claim without a heartbeat for this long belongs to a launcher that is gone
HEARTBEAT_S = 20.0


def _ms(stamp: datetime.datetime) -> int:
    return int(round(stamp.timestamp() * 1000))


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """Who the table's cells belong to. Checkpoints, Redis progress and the completion mark
    carry `identity`; they are trusted only when it equals the table's."""
    graph_id: str
    ingest_ms: int
    table_nonce: str
    inputs: dict  # graph config, data source and input mode, as plain JSON values

    @property
    def identity(self) -> str:
        blob = json.dumps({"graph_id": self.graph_id, "ingest_ms": self.ingest_ms, "nonce": self.table_nonce,
                           "inputs": self.inputs}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def to_json(self) -> bytes:
        return json.dumps({"identity": self.identity, **dataclasses.asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "RunRecord":
        raw = json.loads(data)
        return cls(raw["graph_id"], int(raw["ingest_ms"]), raw["table_nonce"], raw["inputs"])

    @classmethod
    def new(cls, graph_id: str, ingest_ms: int, inputs: dict) -> "RunRecord":
        return cls(graph_id, int(ingest_ms), secrets.token_hex(8), inputs)


def run_inputs(settings, raw: bool) -> dict:
    """What defines the graph's content, for the run identity."""
    gc, ds = settings.graph_config, settings.data_source
    out = {"graph_config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(gc).items()},
           "data_source": dataclasses.asdict(ds), "raw": bool(raw)}
    if raw:
        out["agglomeration"] = settings.ingest.AGGLOMERATION
    return out


def input_differences(stored: dict, ours: dict) -> list[str]:
    """Readable differences between two `run_inputs` (empty when equal)."""
    diffs = []
    for key in sorted(set(stored) | set(ours)):
        a, b = stored.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}: table {a.get(k)!r} vs this run {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: table {a!r} vs this run {b!r}")
    return diffs


def read_meta_row(table) -> dict:
    """`{qualifier: (value, timestamp ms)}`: the latest cell of each column of the meta row."""
    row = table.read_row(cells.META_ROW, filter_=row_filters.RowFilterChain(
        [row_filters.FamilyNameRegexFilter(cells.FAMILY_HIERARCHY), row_filters.CellsColumnLimitFilter(1)]))
    if row is None:
        return {}
    return {q: (found[0].value, _ms(found[0].timestamp))
            for q, found in row.cells.get(cells.FAMILY_HIERARCHY, {}).items() if found}


def has_node_rows(table) -> bool:
    """Any node or counter row (keys sort below `meta`)."""
    return any(True for _ in table.read_rows(end_key=cells.META_ROW, limit=1,
                                             filter_=row_filters.CellsColumnLimitFilter(1)))


def write_cells(table, row_cells: dict, ms: int) -> None:
    """Cells of the meta row `{qualifier: value}` in one atomic row mutation."""
    row = table.direct_row(cells.META_ROW)
    for qualifier, value in row_cells.items():
        row.set_cell(cells.FAMILY_HIERARCHY, qualifier, value, timestamp=timestamp_from_ms(ms))
    status = row.commit()
    if getattr(status, "code", 0):
        raise RuntimeError(f"writing the meta row of table {table.table_id!r} failed: {status}")


def completion_mark(table) -> dict | None:
    found = read_meta_row(table).get(COMPLETE)
    return json.loads(found[0]) if found else None


def _claim_filter(expected: bytes | None):
    chain = [row_filters.FamilyNameRegexFilter(cells.FAMILY_HIERARCHY),
             row_filters.ColumnQualifierRegexFilter(b"^" + CLAIM + b"$"), row_filters.CellsColumnLimitFilter(1)]
    if expected is not None:
        chain.append(row_filters.ValueRegexFilter(b"^" + expected + b"$"))  # nonces are hex: no escaping
    return row_filters.RowFilterChain(chain)


class ClaimLost(RuntimeError):
    pass


class Claim:
    """This launcher's exclusive claim on a table, taken with CheckAndMutateRow.

    At most one launcher holds a table: taking it is a compare-and-set from "no claim" (or
    from a stale claim, whose holder stopped its heartbeat or is a dead process on this
    host) to our nonce. A heartbeat thread renews it while the run goes on; `release`
    removes it. Every interleaving of concurrent launchers leaves exactly one holder.
    """

    def __init__(self, table, ttl_s: float = CLAIM_TTL_S, heartbeat_s: float = HEARTBEAT_S):
        self.table = table
        self.nonce = secrets.token_hex(16).encode()
        self.by = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.held = False
        self.lost = None  # why the claim was lost while running
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def _fresh_table(self):
        """The table over a new client: a heartbeat or release never waits on a connection that
        died during a long run."""
        from .bigtable import open_table
        client = self.table._instance._client
        return open_table(client.project, self.table._instance.instance_id, self.table.table_id)

    def _cas(self, expected: bytes | None, delete_only=False) -> bool:
        """Set the claim to ours (or delete it) iff it is now `expected` (None: absent)."""
        table = self.table if not self.held else self._fresh_table()
        row = table.conditional_row(cells.META_ROW, filter_=_claim_filter(expected))
        state = expected is not None  # predicate matched -> the "true" mutations
        now = timestamp_from_ms(int(time.time() * 1000))
        row.delete_cell(cells.FAMILY_HIERARCHY, CLAIM, state=state)
        row.delete_cell(cells.FAMILY_HIERARCHY, CLAIM_BY, state=state)
        if not delete_only:
            row.set_cell(cells.FAMILY_HIERARCHY, CLAIM, self.nonce, timestamp=now, state=state)
            row.set_cell(cells.FAMILY_HIERARCHY, CLAIM_BY, self.by, timestamp=now, state=state)
        matched = row.commit()
        return bool(matched) if expected is not None else not matched

    def _stale(self, holder: bytes, stamp_ms: int, by: bytes | None) -> str | None:
        """Why the holder's claim can be taken over, or None while it is alive."""
        age = time.time() - stamp_ms / 1000.0
        if age > self.ttl_s:
            return f"no heartbeat for {age:.0f} s"
        try:
            info = json.loads(by) if by else {}
        except ValueError:
            info = {}
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return f"its process {info['pid']} on this host is gone"
            except PermissionError:
                pass
        return None

    def acquire(self) -> None:
        """Take the claim or raise `ClaimLost` naming the launcher that holds it."""
        for _ in range(3):  # the holder may change between our read and our write
            state = read_meta_row(self.table)
            current = state.get(CLAIM)
            if current is None:
                if self._cas(None):
                    return self._held()
                continue
            holder, stamp_ms = current
            by = state.get(CLAIM_BY, (None, 0))[0]
            why = self._stale(holder, stamp_ms, by)
            if why is None:
                who = json.loads(by) if by else {}
                raise ClaimLost(
                    f"table {self.table.table_id!r} is being ingested by another launcher (host "
                    f"{who.get('host', '?')}, pid {who.get('pid', '?')}, last heartbeat "
                    f"{time.time() - stamp_ms / 1000:.0f} s ago): one launcher per graph. If it is gone, "
                    f"retry in {self.ttl_s:.0f} s")
            log.warning("taking over the claim on table %s from a launcher that is gone (%s)",
                        self.table.table_id, why)
            if self._cas(holder):
                return self._held()
        raise ClaimLost(f"table {self.table.table_id!r}: another launcher took it at the same time; "
                        "one launcher per graph")

    def _held(self):
        self.held = True
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._lock:
                    if self.held and not self._cas(self.nonce):
                        self.lost = "another launcher took over the table's claim"
                        self.held = False
                        log.error("table %s: %s; this run's result cannot be trusted", self.table.table_id,
                                  self.lost)
                        return
            except Exception as exc:  # Bigtable unreachable for a moment: try again next beat
                log.warning("table %s: claim heartbeat failed (%s)", self.table.table_id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if not self._lock.acquire(timeout=10):  # a heartbeat hangs on a dead connection
            log.warning("table %s: claim not released; it expires in %.0f s", self.table.table_id, self.ttl_s)
            return
        try:
            if self.held:
                try:
                    self._cas(self.nonce, delete_only=True)
                except Exception as exc:
                    log.warning("table %s: could not release the claim (%s); it expires in %.0f s",
                                self.table.table_id, exc, self.ttl_s)
                self.held = False
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Stop holding a claim whose table is being deleted (nothing left to release)."""
        self._stop.set()
        with self._lock:
            self.held = False

    def check(self) -> None:
        """Raise `ClaimLost` if the claim was lost while the run went on."""
        if self.lost:
            raise ClaimLost(f"table {self.table.table_id!r}: {self.lost}")
