"""config.yml -> typed, validated settings (the keys of the Redis/rq ingest's config, docs/input-formats.md)."""
from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any

import yaml
from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataSource:
    EDGES: str | None
    COMPONENTS: str | None
    WATERSHED: str
    DATA_VERSION: int = 4
    CV_MIP: int = 0


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    CHUNK_SIZE: tuple[int, int, int]
    FANOUT: int = 2
    LAYER_ID_BITS: int = 8
    SPATIAL_BITS: int = 10
    ID_PREFIX: str = ""


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    ADMIN: bool = True
    READ_ONLY: bool = False
    PROJECT: str | None = None
    INSTANCE: str | None = None


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    AGGLOMERATION: str | None = None  # raw agglomeration (--raw)
    SUPERVOXELS: str | None = None    # --from_segmentation inputs (docs/segmentation-input.md)
    OBJECTS: str | None = None
    AFFINITIES: str | None = None
    SV_MAP: str | None = None         # --from_segmentation output: per chunk, new id -> original id


@dataclasses.dataclass(frozen=True)
class Settings:
    data_source: DataSource
    graph_config: GraphConfig
    backend: BackendConfig
    ingest: IngestConfig


_SECTIONS = {"data_source", "graph_config", "backend_client", "ingest_config"}


def _type_name(kind) -> str:
    return {str: "a string", int: "an integer", bool: "true/false", list: "a list"}[kind]


class _Section:
    """Reads typed keys from one mapping, tracking which keys were used."""

    def __init__(self, mapping: Any, name: str):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"{name}: must be a mapping, got {type(mapping).__name__}")
        self.mapping = mapping
        self.name = name
        self.used: set[str] = set()

    def get(self, key: str, kind, *, required: bool = False, default=None):
        self.used.add(key)
        path = f"{self.name}.{key}"
        if key not in self.mapping or self.mapping[key] is None:
            if required:
                near = difflib.get_close_matches(key, [k for k in self.mapping if isinstance(k, str)], n=1)
                hint = f" ({self.name}.{near[0]} is there: a typo?)" if near and near[0] != key else ""
                raise ConfigError(f"{path}: required key is missing{hint}")
            return default
        value = self.mapping[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{path}: must be {_type_name(int)}, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{path}: must be {_type_name(str)}, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{path}: must be {_type_name(bool)}, got {value!r}")
        if kind is str and not value.strip() and required:
            raise ConfigError(f"{path}: must not be empty")
        return value

    def check_unknown(self):
        unknown = sorted(set(self.mapping) - self.used)
        if unknown:
            raise ConfigError(f"{self.name}.{unknown[0]}: unknown key (known: {', '.join(sorted(self.used))})")


def _positive_triple(section: _Section, key: str):
    value = section.get(key, list, required=True)
    path = f"{section.name}.{key}"
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{path}: must be a list of three positive integers [x, y, z], got {value!r}")
    return tuple(int(v) for v in value)


def parse_config(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping with sections {sorted(_SECTIONS)}")
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(sorted(_SECTIONS))})")
    for required in ("data_source", "graph_config"):
        if required not in raw:
            raise ConfigError(f"{required}: required section is missing")

    ds = _Section(raw["data_source"], "data_source")
    data_source = DataSource(
        EDGES=ds.get("EDGES", str),
        COMPONENTS=ds.get("COMPONENTS", str),
        WATERSHED=ds.get("WATERSHED", str, required=True),
        DATA_VERSION=ds.get("DATA_VERSION", int, default=4),
        CV_MIP=ds.get("CV_MIP", int, default=0),
    )
    ds.check_unknown()
    if data_source.DATA_VERSION not in (2, 3, 4):
        raise ConfigError(f"data_source.DATA_VERSION: must be 2, 3 or 4, got {data_source.DATA_VERSION}")
    if data_source.CV_MIP < 0:
        raise ConfigError(f"data_source.CV_MIP: must be >= 0, got {data_source.CV_MIP}")

    gc = _Section(raw["graph_config"], "graph_config")
    graph = GraphConfig(
        CHUNK_SIZE=_positive_triple(gc, "CHUNK_SIZE"),
        FANOUT=gc.get("FANOUT", int, default=2),
        LAYER_ID_BITS=gc.get("LAYER_ID_BITS", int, default=8),
        SPATIAL_BITS=gc.get("SPATIAL_BITS", int, default=10),
        ID_PREFIX=gc.get("ID_PREFIX", str, default=""),
    )
    gc.check_unknown()
    if graph.FANOUT != 2:
        raise ConfigError(
            f"graph_config.FANOUT: only 2 is supported (PyChunkedGraph's layout uses powers of 2), got {graph.FANOUT}")
    if not 1 <= graph.LAYER_ID_BITS <= 16:
        raise ConfigError(f"graph_config.LAYER_ID_BITS: must be in 1..16, got {graph.LAYER_ID_BITS}")
    if not 1 <= graph.SPATIAL_BITS <= 16:
        raise ConfigError(f"graph_config.SPATIAL_BITS: must be in 1..16, got {graph.SPATIAL_BITS}")

    bc = _Section(raw.get("backend_client"), "backend_client")
    backend_type = bc.get("TYPE", str, default="bigtable")
    if backend_type != "bigtable":
        raise ConfigError(f"backend_client.TYPE: only 'bigtable' is supported, got {backend_type!r}")
    bc.used.add("CONFIG")
    cfg = _Section(bc.mapping.get("CONFIG"), "backend_client.CONFIG")
    bc.check_unknown()
    backend = BackendConfig(
        ADMIN=cfg.get("ADMIN", bool, default=True),
        READ_ONLY=cfg.get("READ_ONLY", bool, default=False),
        PROJECT=cfg.get("PROJECT", str, default=None) or os.environ.get("BIGTABLE_PROJECT"),
        INSTANCE=cfg.get("INSTANCE", str, default=None) or os.environ.get("BIGTABLE_INSTANCE"),
    )
    cfg.check_unknown()
    if backend.READ_ONLY:
        raise ConfigError("backend_client.CONFIG.READ_ONLY: must be false for an ingest (it writes the table)")

    ic = _Section(raw.get("ingest_config"), "ingest_config")
    ingest = IngestConfig(**{key: ic.get(key, str, default=None)
                             for key in ("AGGLOMERATION", "SUPERVOXELS", "OBJECTS", "AFFINITIES", "SV_MAP")})
    ic.check_unknown()

    return Settings(data_source=data_source, graph_config=graph, backend=backend, ingest=ingest)


def load_config(path: str) -> Settings:
    """Read and validate a config.yml (a local path or any cloud-files URL)."""
    try:
        if "://" in path and not path.startswith("file://"):
            from cloudfiles import CloudFile

            from .credentials import require_google_credentials
            from ..deadline import within
            require_google_credentials("--config", path)
            data = within(path, lambda: CloudFile(path).get())
            if data is None:
                raise FileNotFoundError(path)
        else:
            with open(path.removeprefix("file://"), "rb") as fh:
                data = fh.read()
        text = data.decode("utf8")
    except FileNotFoundError:
        raise ConfigError(f"--config: config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: {path} is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"--config: {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except ConfigError:
        raise
    except Exception as exc:  # storage errors differ by backend
        raise ConfigError(f"--config: {path} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return parse_config(raw)
