"""Table administration: the families of a graph table, creating it, finding whether it
exists (with a deadline: an unreachable Bigtable is one error), split keys, single cells."""
from __future__ import annotations

from google.api_core import exceptions as gexc
from google.cloud.bigtable import column_family, row_filters

from ..errors import TableError
from . import cells


def family_rules(pcg_version: int = 2):
    """Column families and GC rules of a table of `pcg_version` (3 adds family 4; family 3
    keeps no GC rule: a MaxAge would expire the ingest's atomic cross edges)."""
    rules = {
        cells.FAMILY_HIERARCHY: None,
        cells.FAMILY_COUNTERS: column_family.MaxVersionsGCRule(1),
        cells.FAMILY_OPERATIONS: None,
        cells.FAMILY_CROSS_EDGES: None,
    }
    if pcg_version >= 3:
        rules[cells.FAMILY_LIFTED] = None
    return rules


def read_cell(table, row_key: bytes, family: str, qualifier: bytes):
    """The latest cell `(value, timestamp)` or None."""
    row = table.read_row(row_key, filter_=row_filters.CellsColumnLimitFilter(1))
    if row is None:
        return None
    found = row.cells.get(family, {}).get(qualifier)
    if not found:
        return None
    return found[0].value, found[0].timestamp


def table_split_keys(layout, n_tablets: int) -> list[bytes]:
    """Row keys that cut the table into about `n_tablets` ranges of similar write load.

    Keys are `%020d` node ids, so rows sort by layer, then x, y, z, then segment. About
    half of all rows are supervoxels and a quarter layer-2 nodes: those layers are cut
    along x-y slabs of chunks; every higher layer and the counters start a range of their own.
    """
    from . import cells
    if n_tablets <= 1:
        return []
    keys = set()
    for layer, share in ((1, 0.5), (2, 0.25)):
        nx, ny, _ = layout.chunks_per_axis(2)
        slabs = nx * ny
        for k in range(1, max(1, int(n_tablets * share)) + 1):
            slab = min(slabs - 1, k * slabs // (int(n_tablets * share) + 1))
            x, y = divmod(slab, ny)
            keys.add(cells.row_key(layout.chunk_id(layer, x, y, 0)))
    for layer in range(2, layout.layer_count + 1):
        keys.add(cells.row_key(layout.chunk_id(layer, 0, 0, 0)))
    keys.add(b"i")
    return sorted(keys)


REACH_DEADLINE_S = 20.0  # the launcher's first call: an unreachable Bigtable is an error within this


def describe_target(table) -> str:
    return table.target.describe()


def admin_call(table, what: str, call, deadline_s: float = REACH_DEADLINE_S):
    """Run an admin call with a deadline; unreachable or refusing Bigtable -> one TableError."""
    from google.api_core.retry import Retry
    retry = Retry(initial=0.25, maximum=2.0, timeout=deadline_s,
                  predicate=lambda exc: isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded)))
    try:
        return call(retry=retry, timeout=deadline_s)
    except (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        raise TableError(f"{describe_target(table)} unreachable while {what} (gave up after {deadline_s:.0f} s: "
                         f"{_short(exc)})") from None
    except (gexc.Unauthenticated, gexc.PermissionDenied) as exc:
        raise TableError(f"{describe_target(table)} refused {what}: {_short(exc)} (check credentials and "
                         "the project/instance names)") from None


def _short(exc) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(getattr(cause, "message", None) or cause).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def table_exists(table, deadline_s: float = REACH_DEADLINE_S) -> bool:
    from google.cloud.bigtable.table import VIEW_NAME_ONLY
    client = table.client.table_admin_client
    try:
        admin_call(table, f"looking up table {table.table_id!r}", lambda **kw: client.get_table(
            request={"name": table.name, "view": VIEW_NAME_ONLY}, **kw), deadline_s)
        return True
    except gexc.NotFound:
        return False


def create_table(table, split_keys=(), pcg_version: int = 2, families: dict | None = None) -> None:
    """Create the table with its families (a graph table's of `pcg_version`, or `families`);
    AlreadyExists (another launcher was faster) -> TableError."""
    try:
        table.create(initial_split_keys=list(split_keys),
                     column_families=family_rules(pcg_version) if families is None else families)
    except gexc.AlreadyExists:
        raise TableError(f"table {table.table_id!r} was created by another launcher at the same moment: one "
                         "launcher per graph") from None
    except (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        raise TableError(f"{describe_target(table)} unreachable while creating table {table.table_id!r}: "
                         f"{_short(exc)}") from None
