"""WATERSHED written by a `--from_segmentation` run: its info, created by the launcher
before the job (the chunks are written by the layer-2 stage)."""
from __future__ import annotations


def create_watershed(url: str, info: dict) -> None:
    from cloudvolume import CloudVolume
    CloudVolume(url, info=info, progress=False).commit_info()
