"""The watershed's Neuroglancer `info`: bounds and resolution of the chosen mip."""
from __future__ import annotations

import dataclasses
import json

from cloudfiles import CloudFiles

from .precomputed import InputError


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


def read_watershed_info(path: str, mip: int = 0) -> WatershedInfo:
    where = f"watershed info {path.rstrip('/')}/info"
    try:
        data = CloudFiles(path).get("info", raw=True)
    except Exception as exc:  # storage errors vary by backend
        raise InputError(f"{where}: cannot be read ({exc})") from None
    if data is None:
        raise InputError(f"{where}: not found (data_source.WATERSHED must name a precomputed segmentation)")
    try:
        info = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise InputError(f"{where}: must be a JSON object")
    return parse_watershed_info(info, mip, where)
