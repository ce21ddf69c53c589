import os
import tempfile

# cloud-files / cloud-volume read these at import time: keep a developer's secrets out of tests.
_secrets = tempfile.mkdtemp(prefix="beam-ingest-secrets-")
os.environ["CLOUD_VOLUME_DIR"] = _secrets
os.environ["CLOUD_FILES_DIR"] = _secrets
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_SESSION_TOKEN", "")
os.environ.pop("BIGTABLE_PROJECT", None)
os.environ.pop("BIGTABLE_INSTANCE", None)

import itertools  # noqa: E402

import pytest  # noqa: E402

from beam_ingest.emulator import Emulator  # noqa: E402

_ids = itertools.count()


@pytest.fixture(scope="session")
def bigtable_emulator():
    emulator = Emulator()
    os.environ["BIGTABLE_EMULATOR_HOST"] = emulator.host
    yield emulator
    emulator.stop()
    os.environ.pop("BIGTABLE_EMULATOR_HOST", None)


@pytest.fixture
def graph_id(bigtable_emulator, request):
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"t{next(_ids)}-{name}".strip("-")


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free port, with a password (Debian's package)."""
    import shutil
    import socket
    import subprocess
    import time

    from beam_ingest.emulator import free_port
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
