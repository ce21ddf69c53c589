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
