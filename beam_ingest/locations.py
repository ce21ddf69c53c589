"""Every path a run reads or writes, checked before anything is created.

A path is a cloud-files URL (`gs://`, `s3://` with an optional `http(s)://host` endpoint,
`file://`, `http(s)://` for inputs, a registered alias such as `matrix://`, optionally behind
`precomputed://`) or a local path. An unknown scheme (`gcs://`, `bogus://`) or a URL with one
slash (`gs:/b/x`) is an error naming its key: written as is, it would be a folder named
`gcs:` under the working directory. Two spellings of one location (`/d/sv`, `file:///d/sv/`)
compare equal (`same_location`), so an output can never silently be one of the inputs.
Outputs are probed for writability (`probe_writable`), naming the key, before the table
or any file is created.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets

from .errors import ConfigError

WRITABLE = ("gs", "s3", "file")
_FORMAT_PREFIX = re.compile(r"^precomputed://")
_FORMAT_SUFFIX = re.compile(r"\|neuroglancer-precomputed:$")
_ONE_SLASH = re.compile(r"^[A-Za-z][\w+.-]*:/(?!/)")


@dataclasses.dataclass(frozen=True)
class Location:
    protocol: str
    host: str | None
    bucket: str | None
    path: str  # no trailing slash; absolute and resolved for local folders

    def describe(self) -> str:
        if self.protocol == "file":
            return self.path
        return f"{self.protocol}://{self.host + '/' if self.host else ''}{self.bucket or ''}/{self.path}".rstrip("/")


def location(key: str, url: str) -> Location:
    """The normalized location of `url`; ConfigError naming `key` if it is no usable path."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{key}: must be a path or URL, got {url!r}")
    text = _FORMAT_SUFFIX.sub("", _FORMAT_PREFIX.sub("", url.strip()))
    if _ONE_SLASH.match(text):
        scheme = text.split(":", 1)[0]
        raise ConfigError(f"{key}: {url!r} is not a URL ({scheme}:/ has one slash; write {scheme}://...) and not "
                          "a local path")
    if "://" not in text:
        return Location("file", None, None, os.path.realpath(os.path.abspath(text)))
    from cloudfiles import paths
    from cloudfiles.exceptions import UnsupportedProtocolError
    try:
        found = paths.extract(text)
    except UnsupportedProtocolError:
        scheme = text.split("://", 1)[0]
        raise ConfigError(f"{key}: {url!r} has an unknown scheme {scheme}:// (use gs://, s3://, file://, "
                          "http(s):// for inputs, a cloud-files alias, or a local path)") from None
    if found.protocol == "file":
        return Location("file", None, None, os.path.realpath(found.path))
    return Location(found.protocol, found.host, found.bucket, (found.path or "").strip("/"))


def same_location(a: str, b: str) -> bool:
    return location("", a) == location("", b)


def check_output(key: str, url: str) -> Location:
    """An output path: a known scheme that can be written, shared by every worker."""
    where = location(key, url)
    if where.protocol not in WRITABLE:
        raise ConfigError(f"{key}: {url!r} cannot be written by the ingest ({where.protocol}://); outputs go to "
                          "gs://, s3:// or a local/file:// folder")
    return where


def check_not_an_input(key: str, url: str, inputs: dict) -> None:
    """An output must not be a location the run reads (`inputs`: `{key: url}`)."""
    ours = location(key, url)
    for other_key, other in inputs.items():
        if other and location(other_key, other) == ours:
            raise ConfigError(f"{key}: {url!r} is the input {other_key} ({other!r}); the ingest would overwrite what "
                              "it reads: give it a path of its own")


def probe_writable(key: str, url: str) -> None:
    """Write and remove a small file where the output goes (its nearest existing folder on a
    local disk: nothing is left behind, no folder created). ConfigError naming `key`."""
    where = check_output(key, url)
    token = f".beam_ingest_probe-{secrets.token_hex(6)}"
    if where.protocol == "file":
        folder = where.path
        while not os.path.exists(folder):
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        if not os.path.isdir(folder):
            raise ConfigError(f"{key}: {url!r} cannot be created: {folder} is a file, not a folder")
        try:
            with open(os.path.join(folder, token), "wb") as fh:
                fh.write(b"probe")
            os.unlink(os.path.join(folder, token))
        except OSError as exc:
            raise ConfigError(f"{key}: {url!r} is not writable here ({folder}: {exc.strerror or exc})") from None
        return
    from cloudfiles import CloudFiles

    from .errors import StorageTimeout
    from .deadline import within

    def probe():
        files = CloudFiles(url, progress=False)
        files.put(token, b"probe", raw=True, compress=None)
        files.delete(token)
    try:
        within(f"{key}: {url}", probe)
    except StorageTimeout as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # storage errors vary by backend
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{key}: {url!r} is not writable ({type(exc).__name__}: {text})") from None
