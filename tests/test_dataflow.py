"""Dataflow job construction (offline dry runs) and the Flex template."""
import argparse
import json
import os
import re
import subprocess
import tempfile

import apache_beam as beam
import pytest

import pipeline
from beam_ingest.errors import ConfigError
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import copy_to_bucket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW = ["--runner=DataflowRunner", "--project=fake-project", "--region=us-central1",
            "--temp_location=gs://fake-bucket/tmp", "--setup_file=./setup.py"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, gcs_server):
    """On gs:// (the GCS emulator): Dataflow's workers cannot read the launcher's disk."""
    root = tmp_path_factory.mktemp("df") / "data"
    info = generate(str(root), SyntheticSpec(chunks=(5, 3, 2), svs_per_chunk=10))
    return {**info, "local_config": info["config"], "config": copy_to_bucket(root, f"{gcs_server}/df-data")}


@pytest.fixture(autouse=True)
def bigtable_env(monkeypatch):
    monkeypatch.setenv("BIGTABLE_PROJECT", "bt-project")
    monkeypatch.setenv("BIGTABLE_INSTANCE", "bt-instance")
    monkeypatch.delenv("BIGTABLE_EMULATOR_HOST", raising=False)
    monkeypatch.chdir(ROOT)


def test_dry_run_builds_the_expected_job(dataset):
    result, counters, plan = pipeline.run(["--config", dataset["config"], "--graph_id", "g"] + DATAFLOW
                                          + ["--dry_run=True"])
    assert counters["dry_run"] == 1 and counters["transforms"] == len(result.job.proto_pipeline.components.transforms)
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    layers = range(2, plan.layout.layer_count + 1)
    assert plan.layout.layer_count == 5
    for layer in layers:
        assert f"BuildGraph/BuildLayer{layer}" in names
        assert f"BuildGraph/WriteLayer{layer}" in names
        assert f"BuildGraph/ProveLayer{layer}" in names
    for layer in layers[1:]:
        assert f"BuildGraph/GroupLayer{layer}" in names
    assert {"BuildGraph/AssignRootIds", "BuildGraph/GroupRootBuckets", "BuildGraph/WriteRoots",
            "BuildGraph/ProveRoots", "BuildGraph/ProveComplete", "BuildGraph/SpreadChunks"} <= names
    assert not any("BuildLayer6" in n for n in names)
    options = result.job.options.get_all_options()
    assert options["setup_file"] == "./setup.py" and options["graph_id"] == "g"


@pytest.mark.parametrize("drop, extra, message", [
    ("--region=us-central1", [], "--region: required with --runner=DataflowRunner"),
    ("--project=fake-project", [], "--project: required"),
    ("--temp_location=gs://fake-bucket/tmp", ["--temp_location=/tmp/local"], "--temp_location: must be a gs:// path"),
    ("--setup_file=./setup.py", ["--setup_file=./nope.py"], "--setup_file: ./nope.py does not exist"),
])
def test_required_dataflow_options_have_clear_errors(dataset, drop, extra, message):
    argv = ["--config", dataset["config"], "--graph_id", "g"] + [a for a in DATAFLOW if a != drop] + extra
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline.run(argv + ["--dry_run=True"])


def test_template_launch_does_not_wait(dataset, monkeypatch):
    class Submitted:
        def wait_until_finish(self, duration=None):
            raise AssertionError("the template launcher blocked on the job")

        def job_id(self):
            return "job-123"

    monkeypatch.setattr(beam.Pipeline, "run", lambda self, *a, **k: Submitted())
    # a real (not dry) Dataflow pipeline checks its gs:// temp bucket online when built
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda *a, **k: None)
    monkeypatch.setenv("FLEX_TEMPLATE_PYTHON_PY_FILE", "/template/pipeline.py")
    result, counters, _ = pipeline.run(["--config", dataset["config"], "--graph_id", "g", "--skip_writes=true"]
                                       + DATAFLOW)
    assert isinstance(result, Submitted) and counters == {}
    assert pipeline.main(["--config", dataset["config"], "--graph_id", "g", "--skip_writes=true"] + DATAFLOW) == 0


def _pipeline_option_names():
    parser = argparse.ArgumentParser()
    pipeline.IngestOptions._add_argparse_args(parser)
    return {a.dest for a in parser._actions if a.dest != "help"}


def test_metadata_describes_every_option_and_only_those():
    with open(os.path.join(ROOT, "templates", "metadata.json")) as fh:
        metadata = json.load(fh)
    params = {p["name"]: p for p in metadata["parameters"]}
    assert set(params) == _pipeline_option_names()
    for p in params.values():
        assert p["label"] and p["helpText"]
        for regex in p.get("regexes", []):
            re.compile(regex)
    required = {n for n, p in params.items() if not p.get("isOptional")}
    assert required == {"config", "graph_id"}
    assert re.match(params["if_exists"]["regexes"][0], "continue")
    assert not re.match(params["if_exists"]["regexes"][0], "overwrite")


def _flex_build(metadata_path):
    env = dict(os.environ, CLOUDSDK_CONFIG=tempfile.mkdtemp())
    return subprocess.run(["gcloud", "dataflow", "flex-template", "build", "gs://fake-bucket/templates/ingest.json",
                           "--image=gcr.io/fake-project/chunkedgraph-ingest:1", "--sdk-language=PYTHON",
                           f"--metadata-file={metadata_path}", "--print-only", "--format=value(.)"],
                          capture_output=True, text=True, env=env, timeout=120)


def test_template_spec_validates_offline(tmp_path):
    out = _flex_build(os.path.join(ROOT, "templates", "metadata.json"))
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    assert spec["sdkInfo"]["language"] == "PYTHON"
    assert {p["name"] for p in spec["metadata"]["parameters"]} == _pipeline_option_names()
    # and gcloud really validates: a parameter without helpText is refused
    with open(os.path.join(ROOT, "templates", "metadata.json")) as fh:
        broken = json.load(fh)
    del broken["parameters"][0]["helpText"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert _flex_build(str(tmp_path / "broken.json")).returncode != 0


def test_dockerfile_matches_the_pinned_sdk():
    with open(os.path.join(ROOT, "templates", "Dockerfile")) as fh:
        dockerfile = fh.read()
    with open(os.path.join(ROOT, "requirements.txt")) as fh:
        beam_version = re.search(r"apache-beam\[gcp\]==([\d.]+)", fh.read()).group(1)
    assert f"apache/beam_python3.11_sdk:{beam_version}" in dockerfile
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipeline.py" in dockerfile
    assert "python_template_launcher" in dockerfile


def test_dry_run_of_segmentation_input(tmp_path, gcs_server):
    """--from_segmentation on Dataflow: the read and faces steps are in the job, the parts
    between them travel with their zstd coder, and a dry run creates no WATERSHED."""
    from cloudfiles import CloudFiles

    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=30))
    base = f"{gcs_server}/df-seg-{os.getpid()}"
    config = copy_to_bucket(tmp_path / "seg", base)
    result, counters, plan = pipeline.run(["--config", config, "--graph_id", "g", "--from_segmentation",
                                           "--fill_missing"] + DATAFLOW + ["--dry_run=True"])
    components = result.job.proto_pipeline.components
    names = {t.unique_name for t in components.transforms.values()}
    assert {"BuildGraph/ReadSegmentation", "BuildGraph/GroupChunkParts", "BuildGraph/BuildLayer2"} <= names
    read = next(t for t in components.transforms.values() if t.unique_name == "BuildGraph/ReadSegmentation")
    parts = components.pcollections[next(iter(read.outputs.values()))]
    coder = components.coders[parts.coder_id]
    pickled = [components.coders[c].spec.payload for c in coder.component_coder_ids]
    assert any(b"ChunkPartCoder" in p for p in pickled), "the parts' value coder is not ChunkPartCoder"
    assert result.job.options.get_all_options()["fill_missing"] is True
    assert not CloudFiles(base + "/watershed").exists("info")


@pytest.mark.parametrize("key", ["data_source.EDGES", "--checkpoint_dir"])
def test_local_paths_are_refused_for_dataflow(dataset, tmp_path, capsys, key):
    """Dataflow's workers cannot read the launcher's disk: a local input or output path is an
    error naming it, exit 2, dry run or not (the config itself may be local: the launcher reads it)."""
    argv = ["--config", dataset["local_config"], "--graph_id", "g"] + DATAFLOW
    if key == "--checkpoint_dir":  # inputs on gs://, the checkpoint on this disk
        argv = ["--config", dataset["config"], "--graph_id", "g", f"--checkpoint_dir={tmp_path}/ckpt"] + DATAFLOW
    assert pipeline.main(argv + ["--dry_run=True"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {key}: ") and "Dataflow's workers cannot read or write" in line
    assert not os.path.exists(f"{tmp_path}/ckpt")


def test_an_invalid_temp_bucket_is_refused_at_once(dataset, capsys):
    """Beam would try, for minutes offline, to create a default bucket instead."""
    argv = ["--config", dataset["config"], "--graph_id", "g"] + [a for a in DATAFLOW if "temp_location" not in a]
    assert pipeline.main(argv + ["--temp_location=gs://b/tmp", "--dry_run=True"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --temp_location: 'gs://b/tmp' is not a valid gs://bucket/path (Invalid GCS bucket")


@pytest.fixture
def no_google_credentials(monkeypatch, tmp_path):
    """No credentials file anywhere, no storage emulator, and a metadata server that refuses."""
    from beam_ingest.launch import credentials
    from beam_ingest.ops.emulator import free_port
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("CLOUD_VOLUME_DIR", str(tmp_path / "cv"))
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(credentials, "_found", {})
    yield
    credentials._found.clear()


def test_a_gs_config_without_credentials_says_so(no_google_credentials, capsys):
    """The README's Dataflow dry run on a machine without Google credentials: one line naming
    the config and how to give credentials (not Google's DefaultCredentialsError after 3 probes)."""
    argv = ["--config", "gs://my-bucket/config.yml", "--graph_id", "my_graph"] + DATAFLOW + ["--dry_run=True"]
    assert pipeline.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --config: gs://my-bucket/config.yml is on Google Cloud Storage, and no Google "
                           "credentials were found") and "a dry run too" in line


def test_a_dry_run_needs_no_credentials_for_the_temp_location(dataset, monkeypatch):
    """Inputs readable (here: the emulator), temp_location never touched by a dry run."""
    from beam_ingest.launch import credentials
    monkeypatch.setattr(credentials, "_on_google_cloud", lambda: pytest.fail("probed the metadata server"))
    result, counters, _ = pipeline.run(["--config", dataset["config"], "--graph_id", "g"] + DATAFLOW
                                       + ["--dry_run=True"])
    assert counters["dry_run"] == 1
