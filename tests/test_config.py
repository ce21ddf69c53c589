import pytest
import yaml

from beam_ingest.errors import ConfigError
from beam_ingest.launch.config import load_config, parse_config


def good():
    return {
        "data_source": {"EDGES": "gs://b/edges", "COMPONENTS": "gs://b/comps", "WATERSHED": "gs://b/ws",
                        "DATA_VERSION": 4},
        "graph_config": {"CHUNK_SIZE": [256, 256, 512], "FANOUT": 2, "LAYER_ID_BITS": 8, "SPATIAL_BITS": 10},
        "backend_client": {"TYPE": "bigtable", "CONFIG": {"ADMIN": True, "READ_ONLY": False}},
        "ingest_config": {"AGGLOMERATION": "gs://b/agg"},
    }


def test_good_config_and_defaults(monkeypatch):
    monkeypatch.setenv("BIGTABLE_PROJECT", "env-project")
    monkeypatch.setenv("BIGTABLE_INSTANCE", "env-instance")
    s = parse_config(good())
    assert s.graph_config.CHUNK_SIZE == (256, 256, 512)
    assert s.data_source.CV_MIP == 0 and s.graph_config.ID_PREFIX == ""
    assert (s.backend.PROJECT, s.backend.INSTANCE) == ("env-project", "env-instance")
    cfg = good()
    cfg["backend_client"]["CONFIG"]["PROJECT"] = "cfg-project"
    assert parse_config(cfg).backend.PROJECT == "cfg-project"  # config wins over env


def _mutate(path, value):
    cfg = good()
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize("path, value, message", [
    ("data_source.WATERSHED", KeyError, "data_source.WATERSHED: required key is missing"),
    ("graph_config.CHUNK_SIZE", KeyError, "graph_config.CHUNK_SIZE: required key is missing"),
    ("graph_config.CHUNK_SIZE", [1, 2], "graph_config.CHUNK_SIZE: must be a list of three positive"),
    ("graph_config.CHUNK_SIZE", [1, 0, 2], "graph_config.CHUNK_SIZE: must be a list of three positive"),
    ("graph_config.FANOUT", 3, "graph_config.FANOUT: only 2 is supported"),
    ("graph_config.SPATIAL_BITS", "ten", "graph_config.SPATIAL_BITS: must be an integer"),
    ("graph_config.LAYER_ID_BITS", True, "graph_config.LAYER_ID_BITS: must be an integer"),
    ("graph_config.COLOUR", 1, "graph_config.COLOUR: unknown key"),
    ("data_source.DATA_VERSION", 5, "data_source.DATA_VERSION: must be 2, 3 or 4"),
    ("data_source.EDGES", 7, "data_source.EDGES: must be a string"),
    ("backend_client.TYPE", "hbase", "backend_client.TYPE: only 'bigtable'"),
    ("backend_client.CONFIG.READ_ONLY", True, "backend_client.CONFIG.READ_ONLY: must be false"),
    ("backend_client.CONFIG.ADMIN", "yes", "backend_client.CONFIG.ADMIN: must be true/false"),
    ("ingest_config.EXTRA", "x", "ingest_config.EXTRA: unknown key"),
    ("graph_config", KeyError, "graph_config: required section is missing"),
    ("extra_section", {}, "extra_section: unknown section"),
    ("data_source", [1, 2], "data_source: must be a mapping"),
])
def test_bad_key_is_named(path, value, message):
    with pytest.raises(ConfigError) as info:
        parse_config(_mutate(path, value))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_required_key_misspelt_is_named_as_the_likely_typo():
    cfg = good()
    cfg["graph_config"]["CHUNK_SIZ"] = cfg["graph_config"].pop("CHUNK_SIZE")
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    assert str(info.value) == ("graph_config.CHUNK_SIZE: required key is missing (graph_config.CHUNK_SIZ is there: "
                               "a typo?)")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("data_source: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    ok = tmp_path / "ok.yml"
    ok.write_text(yaml.safe_dump(good()))
    assert load_config(str(ok)).data_source.EDGES == "gs://b/edges"
    assert load_config("file://" + str(ok)).data_source.EDGES == "gs://b/edges"
