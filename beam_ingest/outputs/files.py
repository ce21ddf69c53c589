"""The files a run writes besides the table (EDGES, COMPONENTS, SV_MAP): exactly this run's.

A file is "already written" only when it holds exactly the bytes this run would write (the
bytes are a pure function of the input): local files are compared before they are kept,
objects are rewritten. A chunk for which this run writes nothing must have no file, so a
file left by a run on other data is replaced or removed, never kept. Writes are
atomic: on a local disk the bytes go to a temporary name in the same folder and are renamed
into place (a full disk leaves no partial file under the real name); an object store's PUT is
atomic by itself. Errors name the config key, the file and the cause.
"""
from __future__ import annotations

import os
import secrets

from ..deadline import within
from ..errors import InputError


class OutputFolder:
    """One output folder (`key`: its config key, for messages), opened lazily per worker."""

    def __init__(self, key: str, url: str):
        self.key, self.url = key, url.rstrip("/")
        self._local = _local_path(self.url)
        self._files = None

    def __getstate__(self):
        return {"key": self.key, "url": self.url, "_local": self._local, "_files": None}

    def _cloud(self):
        if self._files is None:
            from cloudfiles import CloudFiles
            self._files = CloudFiles(self.url, progress=False)
        return self._files

    def path(self, name: str) -> str:
        return f"{self.url}/{name}"

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when it does not exist."""
        return within(f"{self.key}: {self.path(name)}", self._read, name)

    def _read(self, name: str) -> bytes | None:
        try:
            if self._local is not None:
                try:
                    with open(os.path.join(self._local, name), "rb") as fh:
                        return fh.read()
                except FileNotFoundError:
                    return None
            return self._cloud().get(name, raw=True)
        except Exception as exc:  # storage errors vary by backend
            raise InputError(f"{self.key}: {self.path(name)} cannot be read ({_cause(exc)})") from None

    def sync(self, name: str, data: bytes | None) -> str:
        """Make the file hold exactly `data` (None: no file). Returns "kept", "written",
        "deleted" or "absent".

        On a local disk the file is read and compared first (a retry keeps it: no write);
        on an object store it is written (deleted) without looking: a lookup that misses
        costs as much as the write itself (benchmarks/bench_outputs.py: on S3, 28 vs 17 ms
        a file in a fresh folder), and fresh folders are the common case."""
        if self._local is None:
            if data is None:
                self.delete(name)
                return "deleted"
            self.write(name, data)
            return "written"
        existing = self.read(name)
        if data is None:
            if existing is None:
                return "absent"
            self.delete(name)
            return "deleted"
        if existing == data:
            return "kept"
        self.write(name, data)
        return "written"

    def write(self, name: str, data: bytes) -> None:
        within(f"{self.key}: {self.path(name)}", self._write, name, data)

    def _write(self, name: str, data: bytes) -> None:
        try:
            if self._local is not None:
                os.makedirs(self._local, exist_ok=True)
                final = os.path.join(self._local, name)
                temporary = f"{final}.tmp-{secrets.token_hex(6)}"
                try:
                    with open(temporary, "wb") as fh:
                        fh.write(data)
                    os.replace(temporary, final)
                finally:
                    if os.path.exists(temporary):
                        os.unlink(temporary)
                return
            self._cloud().put(name, data, raw=True, compress=None)
        except Exception as exc:
            raise InputError(f"{self.key}: {self.path(name)} could not be written ({_cause(exc)})") from None

    def delete(self, name: str) -> None:
        within(f"{self.key}: {self.path(name)}", self._delete, name)

    def _delete(self, name: str) -> None:
        try:
            if self._local is not None:
                try:
                    os.unlink(os.path.join(self._local, name))
                except FileNotFoundError:
                    pass
                return
            self._cloud().delete(name)
        except Exception as exc:
            raise InputError(f"{self.key}: {self.path(name)} (left by another run) could not be deleted "
                             f"({_cause(exc)})") from None


def _local_path(url: str) -> str | None:
    """The folder on this machine for a file:// URL or a plain path; None for object stores."""
    if url.startswith("file://"):
        return url[len("file://"):]
    if "://" not in url:
        return os.path.abspath(url)
    return None


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
