"""A deadline for one storage call, so that storage which never answers ends the run.

cloud-files sets no timeout on http(s) reads, and a server that accepts a connection and
never replies holds the caller forever. `within` runs the call on a daemon thread and gives
up after the deadline with an `InputError` naming what was asked of which path; the stuck
thread is left behind (it cannot be cancelled) and does not keep the process alive.
"""
from __future__ import annotations

import threading

from .errors import StorageTimeout

STORAGE_DEADLINE_S = 60.0  # one request, with cloud-files' own retries; healthy storage answers in far less


def with_deadline(seconds: float, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` on a daemon thread; TimeoutError if it has not returned after
    `seconds` (the thread is left behind: it cannot be cancelled)."""
    outcome = {}

    def call():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="deadline-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer in {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def within(what: str, fn, *args, seconds: float | None = None, **kwargs):
    """`fn(*args, **kwargs)`, or StorageTimeout("<what>: no answer in N s") after the deadline."""
    seconds = STORAGE_DEADLINE_S if seconds is None else seconds
    try:
        return with_deadline(seconds, fn, *args, **kwargs)
    except TimeoutError as exc:
        if str(exc) != f"no answer in {seconds:.0f} s":
            raise  # the call's own TimeoutError
        raise StorageTimeout(f"{what}: no answer in {seconds:.0f} s (the storage accepts connections but does "
                             "not reply)") from None
