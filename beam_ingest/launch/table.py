"""The graph's table, prepared before the job: created, or checked to hold this graph and
continued, or recreated; the launcher's claim taken, the meta, version and run record
written. `prepare_table` returns a `TableState`, a context manager that releases the claim."""
from __future__ import annotations

import dataclasses
import json
import logging
import time

from ..errors import TableError
from ..store import cells
from ..store.meta import dumps_meta, loads_meta, meta_for
from ..store.table_state import Claim, RunRecord

log = logging.getLogger(__name__)


def meta_mismatch(plan):
    """A function telling why a table's meta cell describes another graph (or None)."""
    ours = meta_for(plan.graph_id, plan.settings, plan.custom_data())

    def compare(existing: bytes):
        try:
            theirs = loads_meta(existing)
        except Exception as exc:  # any unpickling failure means "not ours"
            return f"its meta row cannot be read ({exc})"
        for name in ("graph_config", "data_source"):
            a, b = getattr(theirs, name), getattr(ours, name)
            if tuple(a) != tuple(b):
                diffs = [f"{f}: table {x!r} vs config {y!r}" for f, x, y in zip(a._fields, a, b) if x != y]
                return f"{name} differs: " + "; ".join(diffs)
        return None

    return compare


@dataclasses.dataclass(frozen=True)
class TableState:
    """The table this run writes: whose it is (`record`), our claim on it, its ingest time,
    and the completion mark an earlier run of the same identity left (None if it never
    finished). `with state:` releases the claim on the way out, however it is left."""
    record: RunRecord
    claim: Claim
    ingest_ms: int
    complete: dict | None = None
    fresh: bool = True

    def __enter__(self) -> "TableState":
        return self

    def __exit__(self, *exc) -> None:
        self.claim.release()


def prepare_table(plan, target, if_exists: str, ingest_ms: int | None = None, table_splits: int = 0,
                  restart_layer: int | None = None) -> TableState:
    """Create or check the table of `plan` on `target` (a store.targets.Target), take this
    launcher's claim on it, write meta/version and the run record. Every refusal is a
    TableError; the claim is released on any failure."""
    from ..store import admin, table_state, targets
    table = targets.open_table(target, plan.graph_id, admin=True)
    meta = table_state.StateRows(target, plan.graph_id)
    exists = admin.table_exists(table)
    found = _check_existing(target, meta, exists, if_exists, restart_layer)
    inputs = plan.run_inputs()
    claim = None
    try:
        if exists:
            claim = _take_claim(meta)
            if if_exists == "recreate" and _empty_as_created(found, plan.pcg_version):
                # another launcher may have created it a moment ago and not claimed it yet:
                # deleting it would let both run; taking it as it is leaves one claim, one run
                log.info("table %s is empty, with the families this run needs: writing into it", meta.table_id)
            elif if_exists == "recreate":
                log.warning("deleting existing table %s on %s (--if_exists=recreate)", meta.table_id,
                            target.describe())
                table.delete()  # still claimed: no other launcher can be writing into it
                claim.forget()
                claim, exists = None, False
        if not exists:
            log.info("creating table %s on %s", meta.table_id, target.describe())
            admin.create_table(table, admin.table_split_keys(plan.layout, table_splits), plan.pcg_version)
            claim = _take_claim(meta)
            return _start_fresh(plan, meta, claim, ingest_ms, inputs)
        _move_legacy_cells(meta)
        state = meta.read()
        if cells.META not in meta.read(cells.META_ROW):
            if meta.has_node_rows():
                raise TableError(f"table {meta.table_id!r} exists but has no meta row and holds rows: not an "
                                 "ingest of this tool; refusing to continue into it")
            log.info("table %s has no meta row and no rows (a run stopped right after creating it): "
                     "starting it afresh", meta.table_id)
            return _start_fresh(plan, meta, claim, ingest_ms, inputs)
        return _continue(plan, meta, claim, ingest_ms, inputs, state)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def _check_existing(target, meta, exists: bool, if_exists: str, restart_layer: int | None):
    """What the existing table is (None if there is none); refuses a table that is not a
    graph's, an existing one with `--if_exists=fail`, and a restart without one."""
    found = None
    if exists:
        from ..store import kinds
        found = kinds.classify(target, meta.table_id)
        if found is not None and found.kind in (kinds.L2CACHE, kinds.FOREIGN):
            raise TableError(f"--graph_id: table {meta.table_id!r} is {found.detail}, not a graph table; refusing to "
                             "write into it or delete it, whatever --if_exists says (choose another graph id)")
    if exists and if_exists == "fail":
        raise TableError(
            f"table {meta.table_id!r} already exists; pass --if_exists=continue to resume an "
            "interrupted ingest into it, or --if_exists=recreate to delete it and start over")
    if restart_layer and not exists:
        raise TableError(f"--start_layer={restart_layer}: table {meta.table_id!r} does not exist; a restart at a "
                         "layer continues the earlier run's table (its lower layers are already in it)")
    return found


def _empty_as_created(found, pcg_version: int) -> bool:
    """An empty table with exactly the column families `create_table` would give it."""
    from ..store import admin, kinds
    return (found is not None and found.kind == kinds.EMPTY
            and set(found.families) == set(admin.family_rules(pcg_version)))


def _move_legacy_cells(meta):
    from ..store.table_state import ClaimLost
    try:
        meta.move_legacy_cells()
    except ClaimLost as exc:
        raise TableError(str(exc)) from None


def _take_claim(meta):
    from ..store.table_state import Claim, ClaimLost
    from google.api_core.exceptions import NotFound
    claim = Claim(meta)
    try:
        claim.acquire()
    except ClaimLost as exc:
        raise TableError(str(exc)) from None
    except NotFound:
        raise TableError(f"table {meta.table_id!r} was deleted by another launcher at the same moment: one "
                         "launcher per graph") from None
    return claim


def _start_fresh(plan, meta, claim, ingest_ms, inputs) -> TableState:
    from ..store import table_state
    if ingest_ms is None:
        ingest_ms = int(time.time() * 1000)
    record = table_state.RunRecord.new(plan.graph_id, ingest_ms, inputs)
    meta_bytes = dumps_meta(meta_for(plan.graph_id, plan.settings, plan.custom_data()))
    meta.write({table_state.RUN: record.to_json()}, ingest_ms)
    meta.write({cells.META: meta_bytes}, ingest_ms, row_key=cells.META_ROW)
    meta.write({cells.VERSION: cells.VERSION_STRINGS[plan.pcg_version].encode()}, ingest_ms,
               row_key=cells.VERSION_ROW)
    return TableState(record, claim, ingest_ms, None, fresh=True)


def _continue(plan, meta, claim, ingest_ms, inputs, state) -> TableState:
    from ..store import table_state
    existing_meta, table_ms = meta.read(cells.META_ROW)[cells.META]
    reason = meta_mismatch(plan)(existing_meta)
    if reason:
        raise TableError(f"table {meta.table_id!r} holds a different graph ({reason}); refusing to continue into it")
    found = meta.read(row_key=cells.VERSION_ROW).get(cells.VERSION)
    ours = cells.VERSION_STRINGS[plan.pcg_version]
    if found is not None and found[0].decode(errors="replace").split(".")[0] != ours.split(".")[0]:
        theirs = found[0].decode(errors="replace")
        raise TableError(f"--pcg_version={plan.pcg_version}: table {meta.table_id!r} is a version {theirs} table "
                         f"(this run writes {ours}); continue it with --pcg_version={theirs.split('.')[0]}, or "
                         "--if_exists=recreate to rebuild it as version " + ours.split(".")[0])
    if ingest_ms is not None and ingest_ms != table_ms:
        raise TableError(f"--ingest_timestamp={ingest_ms} differs from the table's ingest time "
                         f"{table_ms}; leave it unset to continue the earlier run")
    if table_state.RUN in state:
        record = table_state.RunRecord.from_json(state[table_state.RUN][0])
        diffs = table_state.input_differences(record.inputs, inputs)
        if diffs:
            raise TableError(f"table {meta.table_id!r} was ingested from other inputs ({'; '.join(diffs)}); "
                             "refusing to continue into it")
    else:  # a table of an earlier version of this tool: give it a record now
        record = table_state.RunRecord.new(plan.graph_id, table_ms, inputs)
        meta.write({table_state.RUN: record.to_json()}, table_ms)
    complete = None
    if table_state.COMPLETE in state:
        mark = json.loads(state[table_state.COMPLETE][0])
        if mark.get("identity") == record.identity:
            complete = mark
    log.info("continuing into existing table %s on %s (ingest time %d)", meta.table_id, meta.target.describe(),
             table_ms)
    return TableState(record, claim, table_ms, complete, fresh=False)
