"""Bigtable admin (table, families, meta/version rows) and a batched, checked row writer."""
from __future__ import annotations

import datetime
import logging
import os
import time

from google.api_core import exceptions as gexc
from google.cloud.bigtable import Client, column_family, row_filters
from google.cloud.bigtable.row import DirectRow

from . import cells

log = logging.getLogger(__name__)

# A status code per row from mutate_rows: these are worth retrying.
RETRYABLE_CODES = {4, 8, 10, 13, 14}  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE
TRANSIENT_EXCEPTIONS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted,
                        gexc.Aborted, gexc.InternalServerError)

VERSION_STRING = "2.0.0"


class TableError(RuntimeError):
    """The target table cannot be used as asked (exists, differs, missing...)."""


class WriteError(RuntimeError):
    """Rows that could not be written after all retries."""


def family_rules():
    return {
        cells.FAMILY_HIERARCHY: None,
        cells.FAMILY_COUNTERS: column_family.MaxVersionsGCRule(1),
        cells.FAMILY_OPERATIONS: None,
        cells.FAMILY_CROSS_EDGES: None,
    }


def resolve_instance(project: str | None, instance: str | None) -> tuple[str, str]:
    """Project and instance from config/env; the emulator accepts any names."""
    if os.environ.get("BIGTABLE_EMULATOR_HOST"):
        return project or "emulator", instance or "emulator"
    if not project or not instance:
        raise TableError(
            "no Bigtable configured: set backend_client.CONFIG.PROJECT/INSTANCE or the "
            "BIGTABLE_PROJECT/BIGTABLE_INSTANCE environment variables (or BIGTABLE_EMULATOR_HOST "
            "for a local emulator; `python -m beam_ingest demo` starts one for you)")
    return project, instance


def open_table(project: str, instance: str, table_id: str, admin: bool = False):
    client = Client(project=project, admin=admin)
    return client.instance(instance).table(table_id)


def timestamp_from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)


def read_cell(table, row_key: bytes, family: str, qualifier: bytes):
    """The latest cell `(value, timestamp)` or None."""
    row = table.read_row(row_key, filter_=row_filters.CellsColumnLimitFilter(1))
    if row is None:
        return None
    found = row.cells.get(family, {}).get(qualifier)
    if not found:
        return None
    return found[0].value, found[0].timestamp


def prepare_table(table, if_exists: str, meta_bytes: bytes, ingest_ms: int | None, same_graph) -> int:
    """Create (or check) the table and write meta/version rows; return the ingest time (ms).

    `if_exists`: "fail" refuses an existing table, "continue" reuses it when its meta row
    describes the same graph (and reuses its ingest time, so cells match the first run),
    "recreate" deletes and recreates it. `same_graph(meta_bytes_in_table)` compares metas.
    """
    exists = table.exists()
    if exists and if_exists == "fail":
        raise TableError(
            f"table {table.table_id!r} already exists; pass --if_exists=continue to resume an "
            "interrupted ingest into it, or --if_exists=recreate to delete it and start over")
    if exists and if_exists == "recreate":
        log.warning("deleting existing table %s (--if_exists=recreate)", table.table_id)
        table.delete()
        exists = False
    if exists:
        found = read_cell(table, cells.META_ROW, cells.FAMILY_HIERARCHY, cells.META)
        if found is None:
            raise TableError(f"table {table.table_id!r} exists but has no meta row: not an ingest "
                             "of this tool; refusing to continue into it")
        existing_meta, stamp = found
        reason = same_graph(existing_meta)
        if reason:
            raise TableError(f"table {table.table_id!r} holds a different graph ({reason}); "
                             "refusing to continue into it")
        table_ms = int(stamp.timestamp() * 1000)
        if ingest_ms is not None and ingest_ms != table_ms:
            raise TableError(f"--ingest_timestamp={ingest_ms} differs from the table's ingest time "
                             f"{table_ms}; leave it unset to continue the earlier run")
        log.info("continuing into existing table %s (ingest time %d)", table.table_id, table_ms)
        return table_ms
    if ingest_ms is None:
        ingest_ms = int(time.time() * 1000)
    table.create(column_families=family_rules())
    writer = RowWriter(table, ingest_ms)
    writer.write([(cells.META_ROW, [(cells.FAMILY_HIERARCHY, cells.META, meta_bytes)]),
                  (cells.VERSION_ROW, [(cells.FAMILY_HIERARCHY, cells.VERSION,
                                        VERSION_STRING.encode("utf8"))])])
    writer.flush()
    return ingest_ms


class RowWriter:
    """Buffers rows and writes them with `mutate_rows`, checking every row's status.

    Failed rows (per-row status or a transient RPC error) are retried with exponential
    backoff; a row still failing after `max_attempts` raises `WriteError` naming it.
    At most `batch_rows` rows are in flight per call, which bounds a worker's load.
    """

    def __init__(self, table, ingest_ms: int, batch_rows: int = 2000, max_attempts: int = 8,
                 initial_backoff_s: float = 0.1, max_backoff_s: float = 10.0):
        self.table = table
        self.timestamp = timestamp_from_ms(ingest_ms)
        self.batch_rows = batch_rows
        self.max_attempts = max_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.pending: list[DirectRow] = []
        self.rows_written = 0
        self.bytes_written = 0
        self.retries = 0

    def write(self, row_cells):
        for key, row in row_cells:
            direct = DirectRow(key)
            for family, qualifier, value in row:
                direct.set_cell(family, qualifier, value, timestamp=self.timestamp)
                self.bytes_written += len(value)
            self.pending.append(direct)
            if len(self.pending) >= self.batch_rows:
                self.flush()

    def flush(self):
        rows, self.pending = self.pending, []
        backoff = self.initial_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            if not rows:
                return
            try:
                statuses = self.table.mutate_rows(rows)
            except TRANSIENT_EXCEPTIONS as exc:
                failed, last_error = rows, f"{type(exc).__name__}: {exc}"
            else:
                failed = []
                for row, status in zip(rows, statuses):
                    if status.code == 0:
                        self.rows_written += 1
                        continue
                    if status.code not in RETRYABLE_CODES:
                        raise WriteError(f"row {row.row_key!r} of table {self.table.table_id!r} was "
                                         f"rejected: status {status.code} {status.message}")
                    failed.append(row)
                    last_error = f"status {status.code} {status.message}"
            rows = failed
            if rows and attempt < self.max_attempts:
                self.retries += 1
                log.warning("%d row(s) failed to write (%s); retrying in %.1fs", len(rows), last_error, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        if rows:
            raise WriteError(f"{len(rows)} row(s) of table {self.table.table_id!r} could not be written "
                             f"after {self.max_attempts} attempts, first {rows[0].row_key!r}: {last_error}")
