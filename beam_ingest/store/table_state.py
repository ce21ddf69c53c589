"""The ingest's own cells, in a row of their own: run record, launcher claim, completion mark.

Row `beam_ingest` (cells.BOOKKEEPING_ROW), family 0:

    0:beam_ingest_run       JSON: the run identity (graph id, graph config, inputs, ingest
                            time, and a nonce drawn when the table was created)
    0:beam_ingest_claim     the nonce of the one launcher working on the table; its cell
                            timestamp is that launcher's last heartbeat
    0:beam_ingest_claim_by  JSON: host and pid of that launcher (for messages, and to see that
                            a launcher on this host is gone)
    0:beam_ingest_complete  JSON: written once every chunk's rows were acknowledged

Why a row of its own: PyChunkedGraph reads the whole `meta` row (and whole node rows) and
refuses any column its attribute registry does not know, so no row it may read can hold
these cells. It never reads this row's key. One row also means a single CheckAndMutateRow
tests and takes the claim atomically.

Tables written by earlier versions of this tool hold these cells in the `meta` row
(`legacy_cells`); `--if_exists=continue` moves them here (`move_legacy_cells`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time

from . import cells

log = logging.getLogger(__name__)

RUN = b"beam_ingest_run"
CLAIM = b"beam_ingest_claim"
CLAIM_BY = b"beam_ingest_claim_by"
COMPLETE = b"beam_ingest_complete"
LEGACY_QUALIFIERS = (RUN, CLAIM, CLAIM_BY, COMPLETE)  # what earlier versions kept in the `meta` row

CLAIM_TTL_S = 120.0  # a claim without a heartbeat for this long belongs to a launcher that is gone
HEARTBEAT_S = 20.0


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


def run_inputs(settings, raw: bool, pcg_version: int = 2, segmentation: dict | None = None,
               l2cache: dict | None = None) -> dict:
    """What defines the graph's content and outputs, for the run identity. `segmentation`: the
    plan's `--from_segmentation` settings (None without); `l2cache`: the L2 cache's table and
    cv_path (None without)."""
    gc, ds = settings.graph_config, settings.data_source
    out = {"graph_config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(gc).items()},
           "data_source": dataclasses.asdict(ds), "raw": bool(raw)}
    if segmentation is not None:
        ic = settings.ingest
        out["segmentation"] = {"SUPERVOXELS": ic.SUPERVOXELS, "OBJECTS": ic.OBJECTS, "AFFINITIES": ic.AFFINITIES}
        if segmentation.get("fill_missing"):  # absent otherwise: earlier runs' identities stay as they were
            out["segmentation"]["fill_missing"] = True
        if ic.SV_MAP:  # an output too: a continue must not skip chunks whose SV_MAP files were never written
            out["segmentation"]["SV_MAP"] = ic.SV_MAP
    if pcg_version != 2:  # absent for version 2: the identities of earlier runs stay as they were
        out["pcg_version"] = int(pcg_version)
    if raw:
        out["agglomeration"] = settings.ingest.AGGLOMERATION
    if l2cache is not None:  # absent without: earlier runs' identities stay as they were
        out["l2cache"] = dict(l2cache)
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


CALL_TIMEOUT_S = 20.0  # one call on the meta row; a healthy Bigtable answers in milliseconds
CALL_ATTEMPTS = 3      # calls that ran out of their deadline (an unreachable Bigtable fails in ~1 min)
FAST_ATTEMPTS = 8      # calls in all, when they fail at once (UNAVAILABLE, ABORTED, RESOURCE_EXHAUSTED)


class StateRows:
    """The table's small rows (the ingest's own row, meta, version) over the Bigtable data
    API, for the launcher and the operator commands.

    Same channel as the writers' (keepalive, a connection of its own): every call has a
    deadline of CALL_TIMEOUT_S, and a call failing DEADLINE_EXCEEDED or UNAVAILABLE is retried
    over a fresh channel, so a connection that went silent during a long run costs seconds.
    Every call here is idempotent (the claim's compare-and-set included: see `Claim`).
    """

    def __init__(self, target, table_id: str, timeout_s: float | None = None, attempts: int = CALL_ATTEMPTS):
        self.target, self.table_id = target, table_id
        self.table_name = target.table_name(table_id)
        self.timeout_s = CALL_TIMEOUT_S if timeout_s is None else timeout_s
        self.attempts = attempts
        self._client = None

    def _call(self, what: str, fn):
        """`fn(client)`, retried over a fresh channel: up to `attempts` calls that ran out of
        their deadline, and FAST_ATTEMPTS calls in all (backing off from 0.2 s, doubling)."""
        from google.api_core import exceptions as gexc
        from .grpc_transport import data_client
        timed_out = 0
        for attempt in range(1, FAST_ATTEMPTS + 1):
            if self._client is None:
                self._client = data_client(self.target.emulator_host)
            try:
                return fn(self._client)
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.Aborted, gexc.ResourceExhausted) as exc:
                self.close()  # its connection may be dead: the next attempt opens another
                timed_out += isinstance(exc, gexc.DeadlineExceeded)
                if timed_out == self.attempts or attempt == FAST_ATTEMPTS:
                    from ..errors import TableError
                    raise TableError(f"{self.target.describe()} unreachable while {what} of table "
                                     f"{self.table_id!r} ({attempt} attempts, {timed_out} of them out of their "
                                     f"{self.timeout_s:.0f} s: {type(exc).__name__})") from None
                log.warning("table %s: %s failed (%s); retrying over a fresh channel", self.table_id, what,
                            type(exc).__name__)
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))

    def close(self):
        if self._client is not None:
            self._client.transport.grpc_channel.close()
            self._client = None

    def read(self, row_key: bytes = cells.BOOKKEEPING_ROW) -> dict:
        """`{qualifier: (value, timestamp ms)}`: the latest cell of each column of family 0."""
        from google.cloud.bigtable_v2.types import RowFilter
        request = {"table_name": self.table_name, "rows": {"row_keys": [row_key]},
                   "filter": _chain(RowFilter(family_name_regex_filter=cells.FAMILY_HIERARCHY),
                                    RowFilter(cells_per_column_limit_filter=1))}
        return self._call(f"reading row {row_key!r}", lambda client: _merge_row(
            client.read_rows(request=request, timeout=self.timeout_s)))

    def has_node_rows(self) -> bool:
        """Any node or counter row (keys sort below `meta`; the ingest's own row is not one)."""
        from google.cloud.bigtable_v2.types import RowFilter
        ranges = [{"end_key_open": cells.BOOKKEEPING_ROW},
                  {"start_key_open": cells.BOOKKEEPING_ROW, "end_key_open": cells.META_ROW}]
        request = {"table_name": self.table_name, "rows_limit": 1, "rows": {"row_ranges": ranges},
                   "filter": _chain(RowFilter(cells_per_column_limit_filter=1), RowFilter(strip_value_transformer=True))}
        return self._call("looking for rows", lambda client: any(
            len(response.chunks) for response in client.read_rows(request=request, timeout=self.timeout_s)))

    def has_any_row(self) -> bool:
        """Any row but the ingest's own (keys only, one row)."""
        from google.cloud.bigtable_v2.types import RowFilter
        ranges = [{"end_key_open": cells.BOOKKEEPING_ROW}, {"start_key_open": cells.BOOKKEEPING_ROW}]
        request = {"table_name": self.table_name, "rows_limit": 1, "rows": {"row_ranges": ranges},
                   "filter": _chain(RowFilter(cells_per_column_limit_filter=1), RowFilter(strip_value_transformer=True))}
        return self._call("looking for rows", lambda client: any(
            len(response.chunks) for response in client.read_rows(request=request, timeout=self.timeout_s)))

    def write(self, row_cells: dict, ms: int, row_key: bytes = cells.BOOKKEEPING_ROW) -> None:
        """Cells `{qualifier: value}` of family 0 in one atomic row mutation, at time `ms`.
        A row PyChunkedGraph reads takes only its columns (`cells.check_pcg_columns`)."""
        cells.check_pcg_columns(row_key, [(cells.FAMILY_HIERARCHY, q) for q in row_cells])
        mutations = [_set(q, v, ms) for q, v in row_cells.items()]
        self._call(f"writing row {row_key!r}", lambda client: client.mutate_row(request={
            "table_name": self.table_name, "row_key": row_key, "mutations": mutations}, timeout=self.timeout_s))

    def delete(self, qualifiers, row_key: bytes) -> None:
        """Delete columns of family 0 from a row, in one atomic row mutation."""
        mutations = [_delete(q) for q in qualifiers]
        self._call(f"deleting cells of row {row_key!r}", lambda client: client.mutate_row(request={
            "table_name": self.table_name, "row_key": row_key, "mutations": mutations}, timeout=self.timeout_s))

    def check_and_mutate(self, predicate, if_matched: list, otherwise: list) -> bool:
        """CheckAndMutateRow on the ingest's own row; True when `predicate` matched a cell."""
        return self._call("updating the claim", lambda client: client.check_and_mutate_row(request={
            "table_name": self.table_name, "row_key": cells.BOOKKEEPING_ROW, "predicate_filter": predicate,
            "true_mutations": if_matched, "false_mutations": otherwise}, timeout=self.timeout_s).predicate_matched)

    def completion_mark(self) -> dict | None:
        found = self.read().get(COMPLETE)
        return json.loads(found[0]) if found else None

    def legacy_cells(self) -> dict:
        """The ingest's cells that an earlier version of this tool left in the `meta` row,
        `{qualifier: (value, timestamp ms)}`: PyChunkedGraph cannot open a table holding them."""
        return {q: found for q, found in self.read(cells.META_ROW).items() if q in LEGACY_QUALIFIERS}

    def move_legacy_cells(self, ttl_s: float = CLAIM_TTL_S) -> list[bytes]:
        """Move the run record and completion mark of an earlier version's table from the `meta`
        row to the ingest's own row (with their timestamps; what the own row holds already
        wins), and delete the old claim. Returns the qualifiers moved out of `meta`.

        Refuses (ClaimLost) while an earlier version's launcher still holds its claim there.
        Killed between the two steps, the next call finishes the move."""
        legacy = self.legacy_cells()
        if not legacy:
            return []
        if CLAIM in legacy:
            holder, stamp_ms = legacy[CLAIM]
            age = time.time() - stamp_ms / 1000.0
            if age <= ttl_s:
                raise ClaimLost(f"table {self.table_id!r} is being ingested by a launcher of an earlier version of "
                                f"this tool (its claim in the meta row had a heartbeat {age:.0f} s ago); stop it, "
                                f"or retry in {ttl_s:.0f} s if it is gone")
        own = self.read()
        for qualifier in (RUN, COMPLETE):
            if qualifier in legacy and qualifier not in own:
                value, stamp_ms = legacy[qualifier]
                self.write({qualifier: value}, stamp_ms)
        self.delete(sorted(legacy), cells.META_ROW)
        log.warning("table %s: moved the ingest's own cells (%s) out of the meta row, which PyChunkedGraph reads, "
                    "into row %r", self.table_id, ", ".join(q.decode() for q in sorted(legacy)),
                    cells.BOOKKEEPING_ROW.decode())
        return sorted(legacy)


def _chain(*filters):
    from google.cloud.bigtable_v2.types import RowFilter
    return RowFilter(chain=RowFilter.Chain(filters=list(filters)))


def _set(qualifier: bytes, value: bytes, ms: int):
    from google.cloud.bigtable_v2.types import Mutation
    return Mutation(set_cell=Mutation.SetCell(family_name=cells.FAMILY_HIERARCHY, column_qualifier=qualifier,
                                              timestamp_micros=int(ms) * 1000, value=value))


def _delete(qualifier: bytes):
    from google.cloud.bigtable_v2.types import Mutation
    return Mutation(delete_from_column=Mutation.DeleteFromColumn(family_name=cells.FAMILY_HIERARCHY,
                                                                 column_qualifier=qualifier))


def _claim_filter(expected: bytes | None):
    """Matches the claim cell, or only a claim cell holding `expected`."""
    from google.cloud.bigtable_v2.types import RowFilter
    chain = [RowFilter(family_name_regex_filter=cells.FAMILY_HIERARCHY),
             RowFilter(column_qualifier_regex_filter=b"^" + CLAIM + b"$"), RowFilter(cells_per_column_limit_filter=1)]
    if expected is not None:
        chain.append(RowFilter(value_regex_filter=b"^" + expected + b"$"))  # nonces are hex: no escaping
    return _chain(*chain)


def _merge_row(responses) -> dict:
    """The cells of one row from ReadRows chunks: `{qualifier: (value, timestamp ms)}`, first
    (latest) cell per column. Values may arrive split over chunks (`value_size` > 0)."""
    out, qualifier, stamp, parts = {}, None, 0, []
    for response in responses:
        for chunk in response.chunks:
            if chunk.reset_row:
                out, parts = {}, []
                continue
            if "qualifier" in chunk:
                qualifier = chunk.qualifier
            if parts == []:
                stamp = chunk.timestamp_micros
            parts.append(chunk.value)
            if chunk.value_size > 0:
                continue  # more of this value follows
            out.setdefault(qualifier, (b"".join(parts), stamp // 1000))
            parts = []
    return out


class ClaimLost(RuntimeError):
    pass


class Claim:
    """This launcher's exclusive claim on a table, taken with CheckAndMutateRow.

    At most one launcher holds a table: taking it is a compare-and-set from "no claim" (or
    from a stale claim, whose holder stopped its heartbeat or is a dead process on this
    host) to our nonce. A heartbeat thread renews it while the run goes on; `release`
    removes it. Every interleaving of concurrent launchers leaves exactly one holder.
    """

    def __init__(self, meta: StateRows, ttl_s: float = CLAIM_TTL_S, heartbeat_s: float = HEARTBEAT_S):
        self.meta = meta
        self.table_id = meta.table_id
        self.nonce = secrets.token_hex(16).encode()
        self.by = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.held = False
        self.lost = None  # why the claim was lost while running
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def _cas(self, expected: bytes | None, delete_only=False) -> bool:
        """Set the claim to ours (or delete it) iff it is now `expected` (None: absent).

        Idempotent, so a retry after a lost answer is safe: from `expected` = ours it sets or
        deletes ours again; from "absent", a retry finds our own claim, which `acquire` accepts."""
        now = int(time.time() * 1000)
        mutations = [_delete(CLAIM), _delete(CLAIM_BY)]
        if not delete_only:
            mutations += [_set(CLAIM, self.nonce, now), _set(CLAIM_BY, self.by, now)]
        if expected is None:
            return not self.meta.check_and_mutate(_claim_filter(None), [], mutations)
        return self.meta.check_and_mutate(_claim_filter(expected), mutations, [])

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
            state = self.meta.read()
            current = state.get(CLAIM)
            if current is None:
                if self._cas(None):
                    return self._held()
                continue
            holder, stamp_ms = current
            if holder == self.nonce:  # our own compare-and-set went through, its answer was lost
                return self._held()
            by = state.get(CLAIM_BY, (None, 0))[0]
            why = self._stale(holder, stamp_ms, by)
            if why is None:
                who = json.loads(by) if by else {}
                raise ClaimLost(
                    f"table {self.table_id!r} is being ingested by another launcher (host "
                    f"{who.get('host', '?')}, pid {who.get('pid', '?')}, last heartbeat "
                    f"{time.time() - stamp_ms / 1000:.0f} s ago): one launcher per graph. If it is gone, "
                    f"retry in {self.ttl_s:.0f} s")
            log.warning("taking over the claim on table %s from a launcher that is gone (%s)",
                        self.table_id, why)
            if self._cas(holder):
                return self._held()
        raise ClaimLost(f"table {self.table_id!r}: another launcher took it at the same time; "
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
                        log.error("table %s: %s; this run's result cannot be trusted", self.table_id,
                                  self.lost)
                        return
            except Exception as exc:  # Bigtable unreachable for a moment: try again next beat
                log.warning("table %s: claim heartbeat failed (%s)", self.table_id, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if not self._lock.acquire(timeout=10):  # a heartbeat hangs on a dead connection
            log.warning("table %s: claim not released; it expires in %.0f s", self.table_id, self.ttl_s)
            return
        try:
            if self.held:
                try:
                    self._cas(self.nonce, delete_only=True)
                except Exception as exc:
                    log.warning("table %s: could not release the claim (%s); it expires in %.0f s",
                                self.table_id, exc, self.ttl_s)
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
            raise ClaimLost(f"table {self.table_id!r}: {self.lost}")
