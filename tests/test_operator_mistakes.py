"""Operator mistakes: every bad option, id, environment value or path is one `error:` line,
exit status 2, and nothing is created (no table, no Redis keys)."""
import os
import re

import pytest

import pipeline
from beam_ingest.cli import main as cli
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import open_table


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mistakes") / "data"), SyntheticSpec(chunks=(2, 2, 1), svs_per_chunk=10))


def _one_error(capsys, code, expected_code=2):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


BAD_OPTIONS = [
    (["--write_batch_rows=-5"], r"--write_batch_rows: must be in 1\.\.10000, got -5"),
    (["--write_batch_rows=0"], r"--write_batch_rows: must be in 1\.\.10000, got 0"),
    (["--write_batch_rows=abc"], r"--write_batch_rows: expected an integer"),
    (["--max_inflight_writes=0"], r"--max_inflight_writes: must be in 1\.\.64"),
    (["--table_splits=-3"], r"--table_splits: must be in 0\.\.10000"),
    (["--ingest_timestamp=-1"], r"--ingest_timestamp: must be in 0\.\.253402300799999"),
    ([f"--ingest_timestamp={2**63 // 1000 + 1}"], r"--ingest_timestamp: must be in"),
    (["--start_layer=1"], r"--start_layer: must be >= 2"),
    (["--if_exists=overwrite"], r"--if_exists: invalid choice"),
    (["--skip_write"], r"--skip_write: unknown option; did you mean --skip_writes\?"),
    (["--write_batch_row=5"], r"--write_batch_row: unknown option; did you mean --write_batch_rows\?"),
    (["--checkpoint_dir="], r"--checkpoint_dir: must not be empty"),
    (["stray"], r"'stray': unexpected argument"),
    (["--raw=maybe"], r"--raw: expected true or false"),
    (["--fill_missing=maybe"], r"--fill_missing: expected true or false"),
    (["--dask_client_address=tcp://127.0.0.1:1"], r"--dask_client_address: applies to --runner=DaskRunner only \(this "
                                                  r"run's runner is FnApiRunner\)"),
    (["--dask_npartitions", "4"], r"--dask_npartitions: applies to --runner=DaskRunner only"),
]


@pytest.mark.parametrize("extra,message", BAD_OPTIONS, ids=[a[0] for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_error_line_and_creates_nothing(dataset, graph_id, capsys, extra, message):
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id] + extra)
    line = _one_error(capsys, code)
    assert re.search(message, line), line
    assert not open_table(graph_id).exists()


def test_beam_and_runner_options_stay_accepted(dataset, graph_id):
    from beam_ingest.launch.options import parse_argv
    known = parse_argv(["--config=x", "--graph_id=g", "--runner=PortableRunner", "--job_endpoint=embed",
                        "--environment_type=LOOPBACK", "--direct_num_workers=2", "--direct_running_mode=in_memory",
                        "--project=p", "--region=r", "--temp_location=gs://b/t", "--sdk_container_image=img",
                        "--experiments=a", "--experiments=b", "--max_num_workers=3", "--flink_master=x:1",
                        "--spark_master_url=spark://x", "--dry_run=True", "--setup_file=./setup.py"])
    assert known.graph_id == "g"


BAD_IDS = [
    ("", r"--graph_id: required"),
    ("has space", r"not a valid Bigtable table id"),
    ("-leading-dash", r"not a valid Bigtable table id"),
    (".leading-dot", r"not a valid Bigtable table id"),
    ("graph/slash", r"not a valid Bigtable table id"),
    ("grâph", r"not a valid Bigtable table id"),
    ("图", r"not a valid Bigtable table id"),
    ("x" * 51, r"has 51 characters; Bigtable table ids have at most 50"),
]


@pytest.mark.parametrize("graph_id,message", BAD_IDS, ids=[f"id{i}" for i in range(len(BAD_IDS))])
def test_graph_id_follows_bigtables_rule(dataset, bigtable_emulator, capsys, graph_id, message):
    code = pipeline.main(["--config", dataset["config"], f"--graph_id={graph_id}"])
    assert re.search(message, _one_error(capsys, code))
    if graph_id:
        from google.cloud.bigtable import Client
        assert graph_id not in [t.table_id for t in Client(project="emulator", admin=True)
                                .instance("emulator").list_tables()]


def test_graph_id_with_test_suffix_must_fit(dataset, bigtable_emulator, capsys):
    code = pipeline.main(["--config", dataset["config"], "--graph_id", "x" * 46, "--test"])
    assert re.search(r"so 45 with --test's '-test'", _one_error(capsys, code))
    # the longest valid ids are accepted
    from beam_ingest.launch.options import check_graph_id
    check_graph_id("_" + "a-b.c" * 9 + "0123")  # 50 characters
    check_graph_id("x" * 45, test=True)


@pytest.mark.parametrize("name,value,message", [
    ("REDIS_PORT", "abc", r"REDIS_PORT: must be an integer, got 'abc'"),
    ("REDIS_PORT", "70000", r"REDIS_PORT: must be in 1\.\.65535"),
    ("REDIS_DB", "x", r"REDIS_DB: must be an integer, got 'x'"),
    ("REDIS_DB", "-1", r"REDIS_DB: must be in 0\.\."),
])
def test_bad_redis_environment_is_refused_before_the_table(dataset, graph_id, monkeypatch, capsys, name, value,
                                                           message):
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv(name, value)
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert re.search(message, _one_error(capsys, code))
    assert not open_table(graph_id).exists()


def test_redis_variables_without_host(dataset, graph_id, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_HOST", raising=False)
    monkeypatch.setenv("REDIS_PORT", "6379")
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert "REDIS_PORT: set, but REDIS_HOST is not" in _one_error(capsys, code)


def test_bad_emulator_host(dataset, graph_id, monkeypatch, capsys):
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", "localhost")
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert "BIGTABLE_EMULATOR_HOST: expected host:port, got 'localhost'" in _one_error(capsys, code)


def test_bad_project_and_instance_ids(dataset, graph_id, monkeypatch, capsys):
    monkeypatch.delenv("BIGTABLE_EMULATOR_HOST")
    monkeypatch.setenv("BIGTABLE_PROJECT", "My Project")
    monkeypatch.setenv("BIGTABLE_INSTANCE", "instance")
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert "Bigtable project 'My Project'" in _one_error(capsys, code)
    monkeypatch.setenv("BIGTABLE_PROJECT", "my-project")
    monkeypatch.setenv("BIGTABLE_INSTANCE", "in")
    code = pipeline.main(["--config", dataset["config"], "--graph_id", graph_id])
    assert "Bigtable instance 'in'" in _one_error(capsys, code)


def test_unusable_config_paths(graph_id, tmp_path, capsys):
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"data_source:\n  EDGES: \xff\xfe\n")
    unreadable = tmp_path / "secret.yml"
    unreadable.write_text("data_source: {}\n")
    unreadable.chmod(0)
    cases = [(str(tmp_path), "is a directory"), (str(binary), "is not UTF-8 text"),
             (str(tmp_path / "nope.yml"), "config file not found")]
    if os.geteuid() != 0:  # root reads any file
        cases.append((str(unreadable), "permission denied"))
    for path, message in cases:
        code = pipeline.main(["--config", path, "--graph_id", graph_id])
        line = _one_error(capsys, code)
        assert line.startswith("error: --config: ") and message in line, line


@pytest.mark.parametrize("argv,message", [
    (["inspect", "--graph_id", "g", "--sv", "-5"], r"--sv: must be in 0\.\.18446744073709551615, got -5"),
    (["inspect", "--graph_id", "g", "--sv", str(2**64)], r"--sv: must be in 0\.\."),
    (["verify", "--config", "c", "--graph_id", "g", "--sample", "0"], r"--sample: must be >= 1, got 0"),
    (["verify", "--config", "c", "--graph_id", "g", "--sample", "-3"], r"--sample: must be >= 1, got -3"),
    (["generate", "--out", "x", "--chunks", "0", "1", "1"], r"--chunks: must be in 1\.\."),
    (["estimate", "--svs", "-1"], r"--svs: must be a positive number"),
    (["status", "--graph_id", "g", "--watch", "0"], r"--watch: must be a positive number"),
    (["flush-redis", "--graph_id", "*"], r"argument --graph_id: '\*' is not a valid Bigtable table id"),
    (["status", "--graph_id", "my_graph?"], r"argument --graph_id: 'my_graph\?' is not a valid Bigtable table id"),
    (["estimate", "--svs", "1e30", "--l2_chunks", "1e5"], r"--svs: 1e30 is beyond any dataset \(at most 1e\+13\)"),
    (["estimate", "--svs", "1e9", "--l2_chunks", "1e12"], r"--l2_chunks: 1e12 is beyond any dataset"),
])
def test_operator_command_mistakes(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert re.search(message, _one_error(capsys, exit_info.value.code))


def test_inspect_of_an_sv_without_a_row_is_an_error(dataset, graph_id, capsys):
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id]) == 0
    capsys.readouterr()
    for sv in (0, 1, 2**64 - 1):
        code = cli(["inspect", "--graph_id", graph_id, "--sv", str(sv)])
        assert f"--sv: node {sv} has no row in table '{graph_id}'" in _one_error(capsys, code)
