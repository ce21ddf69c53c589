"""The watershed's Neuroglancer `info`: bounds and resolution of the chosen mip.

The volume is opened with CloudVolume, as PyChunkedGraph opens it, so every path that
cloud-volume accepts works: `gs://`, `s3://`, `file://` or a plain local path,
`http(s)://`, cloud-files aliases, and any of them behind `precomputed://` (or with a
`|neuroglancer-precomputed:` suffix). Whatever goes wrong becomes one `InputError` line
that names the info's path.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from cloudfiles import CloudFiles, paths as cf_paths
from cloudfiles.exceptions import UnsupportedProtocolError as CfUnsupportedProtocolError

from ..errors import InputError


@dataclasses.dataclass(frozen=True)
class WatershedInfo:
    voxel_offset: tuple[int, int, int]
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]


def parse_watershed_info(info, mip: int, where: str) -> WatershedInfo:
    try:
        scales = info["scales"]
        if not isinstance(scales, list) or not scales:
            raise InputError(f"{where}: 'scales' is empty")
        if mip >= len(scales):
            raise InputError(f"{where}: CV_MIP={mip} but the info has {len(scales)} scale(s)")
        scale = scales[mip]
        values = {}
        for key in ("voxel_offset", "size", "resolution"):
            value = scale[key]
            if not isinstance(value, list) or len(value) != 3:
                raise InputError(f"{where}: scales[{mip}].{key} must be a list of 3 numbers, got {value!r}")
            values[key] = value
        offset = tuple(int(v) for v in values["voxel_offset"])
        size = tuple(int(v) for v in values["size"])
        resolution = tuple(float(v) for v in values["resolution"])
    except KeyError as exc:
        raise InputError(f"{where}: missing key {exc} in the watershed info") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{where}: malformed watershed info ({exc})") from None
    if any(s <= 0 for s in size):
        raise InputError(f"{where}: scales[{mip}].size must be positive, got {list(size)}")
    return WatershedInfo(offset, size, resolution)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_S3_ENDPOINT = re.compile(r"s3://(https?://[^/]+)/(.*)$")
_PATH_FORMS = "[precomputed://]gs://, s3://, file://, http(s):// or a local path"


def _one_line(exc: BaseException) -> str:
    """An exception's text without cloud-volume's colours and newlines."""
    text = " ".join(_ANSI.sub("", str(exc)).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cloudvolume_path(path: str, where: str) -> str:
    """`path` as CloudVolume should open it, always with `precomputed://` in front.

    The explicit format stops CloudVolume from retrying a missing info as zarr (several
    more requests, and ~20 s of retries on some servers); an `s3://http(s)://HOST/...`
    endpoint, which cloud-files accepts and CloudVolume does not, goes through an alias.
    """
    rest = path
    head = re.match(r"(\w+)://", rest)
    fmt = head.group(1) if head and head.group(1) in cf_paths.ALLOWED_FORMATS else None
    if fmt:
        rest = rest[head.end():]
    tail = re.search(r"\|([\w-]+):$", rest)
    if tail:
        rest = rest[:tail.start()]
        if tail.group(1) != "neuroglancer-precomputed":
            fmt = fmt or tail.group(1)
    if fmt not in (None, "precomputed"):
        raise InputError(f"{where}: a {fmt} volume, not a Neuroglancer precomputed segmentation")
    endpoint = _S3_ENDPOINT.match(rest)
    if endpoint:
        host, key = endpoint.groups()
        alias = "s3endpoint" + hashlib.sha1(host.encode()).hexdigest()[:12]
        if alias not in cf_paths.ALIASES:
            cf_paths.add_alias(alias, f"s3://{host}/")
        rest = f"{alias}://{key}"
    proto = re.match(r"([\w+]+)://", rest)
    if proto and cf_paths.get_protocol(rest) is None:
        # CloudVolume would read e.g. ftp://x/y as a local folder named "ftp:".
        raise InputError(f"{where}: unsupported protocol {proto.group(1)}:// (use {_PATH_FORMS})")
    return "precomputed://" + rest


def _read_raw_info(cloudpath: str, where: str):
    """The info as stored at `cloudpath`, for precise messages about what is wrong in it."""
    try:
        data = CloudFiles(cloudpath).get("info")  # decompressed, as CloudVolume reads it
    except Exception as exc:  # storage errors vary by backend
        raise InputError(f"{where}: cannot be read ({_one_line(exc)})") from None
    if data is None:
        raise InputError(f"{where}: not found (data_source.WATERSHED must name a precomputed segmentation)")
    try:
        info = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise InputError(f"{where}: must be a JSON object")
    return info


def read_watershed_info(path: str, mip: int = 0) -> WatershedInfo:
    """Bounds and resolution at `mip` of the precomputed volume at `path` (opened with CloudVolume)."""
    from ..deadline import within
    return within(f"watershed info {path.rstrip('/')}/info", _read_watershed_info, path, mip)


def _read_watershed_info(path: str, mip: int) -> WatershedInfo:
    where = f"watershed info {path.rstrip('/')}/info"
    cloudpath = _cloudvolume_path(path, where)
    from cloudvolume import CloudVolume  # here, not at the top: its import takes ~0.5 s
    from cloudvolume import exceptions as cv_exceptions

    try:
        cv = CloudVolume(
            cloudpath, mip=mip,
            progress=False,      # no progress bars
            cache=False,         # no disk cache: always the current info
            lru_bytes=0,         # no in-memory chunk cache (no chunks are read anyway)
            fill_missing=False,  # irrelevant: only the info is read
            use_https=False,     # gs:// and s3:// go through their APIs (and credentials)
            provenance={},       # skip fetching the `provenance` file: one request less
        )
    except cv_exceptions.InfoUnavailableError as exc:
        info = _read_raw_info(cloudpath, where)  # "not found" unless the info is there after all
        if info.get("redirect"):
            raise InputError(f"{where}: its redirect to {info['redirect']} leads nowhere "
                             f"({_one_line(exc)})") from None
        raise InputError(f"{where}: cannot be read ({_one_line(exc)})") from None
    except cv_exceptions.RedirectError as exc:
        raise InputError(f"{where}: bad redirect ({_one_line(exc)})") from None
    except (cv_exceptions.UnsupportedProtocolError, CfUnsupportedProtocolError):
        raise InputError(f"{where}: not a path CloudVolume can open (use {_PATH_FORMS})") from None
    except json.JSONDecodeError as exc:  # orjson's error is one too
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # CloudVolume trips over a malformed info (or a CV_MIP past its scales) with bare
        # KeyErrors and the like: read the info again to say exactly what is wrong. An info
        # that has the bounds but lacks what only CloudVolume needs (e.g. a scale's `key`)
        # still gives its bounds.
        info = _read_raw_info(cloudpath, where)
        if info.get("redirect"):
            raise InputError(f"{where}: its redirect to {info['redirect']} cannot be opened "
                             f"({_one_line(exc)})") from None
        return parse_watershed_info(info, mip, where)
    except Exception as exc:  # storage errors vary by backend
        raise InputError(f"{where}: cannot be read ({_one_line(exc)})") from None

    parse_watershed_info(cv.info, cv.mip, where)  # the same checks (and messages) as ever
    return WatershedInfo(
        voxel_offset=tuple(int(v) for v in cv.voxel_offset),
        size=tuple(int(v) for v in cv.bounds.size3()),
        resolution=tuple(float(v) for v in cv.resolution),
    )


def read_info(path: str) -> dict:
    """The whole `info` JSON of the precomputed volume at `path` (any form read_watershed_info takes)."""
    from ..deadline import within
    where = f"info {path.rstrip('/')}/info"
    return within(where, _read_raw_info, _cloudvolume_path(path, where), where)
