"""Which Bigtable a run writes to (a `Target`: project and instance, or an emulator), checked,
and google-cloud-bigtable tables opened on it."""
from __future__ import annotations

import dataclasses
import os
import re
import warnings

from google.cloud.bigtable import Client
from google.cloud.bigtable.table import Table

from ..errors import TableError
from .grpc_transport import channel_options

# google-cloud-bigtable warns on every client it makes for an emulator; the launcher already
# says which Bigtable it writes to (Target.describe), in every process that makes clients
warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator", category=RuntimeWarning)


# Google's id rules (a project may carry a domain prefix, "example.com:my-project").
PROJECT_ID = re.compile(r"([a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")


INSTANCE_ID = re.compile(r"[a-z][-a-z0-9]{4,31}[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class Target:
    """The Bigtable instance of a run, decided once by the launcher and handed to every worker
    with the job: nothing that writes or reads the table looks at a worker's environment."""
    project: str
    instance: str
    emulator_host: str | None = None  # host:port of a Bigtable emulator; None: Google Cloud Bigtable

    def table_name(self, table_id: str) -> str:
        return f"projects/{self.project}/instances/{self.instance}/tables/{table_id}"

    def describe(self) -> str:
        where = f"emulator {self.emulator_host}" if self.emulator_host else "Bigtable"
        return f"{where} (project {self.project}, instance {self.instance})"


def resolve_target(project: str | None, instance: str | None, environ=None) -> Target:
    """The target from config/options and the launcher's environment (BIGTABLE_EMULATOR_HOST);
    the emulator accepts any names."""
    env = os.environ if environ is None else environ
    emulator = env.get("BIGTABLE_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TableError(f"BIGTABLE_EMULATOR_HOST: expected host:port, got {emulator!r}")
        return Target(project or "emulator", instance or "emulator", emulator)
    if not project or not instance:
        raise TableError(
            "no Bigtable configured: set backend_client.CONFIG.PROJECT/INSTANCE or the "
            "BIGTABLE_PROJECT/BIGTABLE_INSTANCE environment variables, or BIGTABLE_EMULATOR_HOST=host:port for a "
            "Bigtable emulator you started (cbtemulator, or `gcloud beta emulators bigtable start`)")
    if not PROJECT_ID.fullmatch(project):
        raise TableError(f"Bigtable project {project!r} (backend_client.CONFIG.PROJECT or BIGTABLE_PROJECT) is not "
                         "a valid project id")
    if not INSTANCE_ID.fullmatch(instance):
        raise TableError(f"Bigtable instance {instance!r} (backend_client.CONFIG.INSTANCE or BIGTABLE_INSTANCE) is "
                         "not a valid instance id (6-33 characters: lower-case letters, digits, '-')")
    return Target(project, instance, None)


class _TargetClient(Client):
    """google-cloud-bigtable's Client for one Target: its admin channels go to the target's
    emulator (not $BIGTABLE_EMULATOR_HOST) and carry GRPC_CHANNEL_OPTIONS (keepalive) on a
    connection of their own. Used by the launcher and the operator commands."""

    def __init__(self, target: Target, admin: bool = False):
        credentials = None
        if target.emulator_host:
            from google.auth.credentials import AnonymousCredentials
            credentials = AnonymousCredentials()
        super().__init__(project=target.project, admin=admin, credentials=credentials)
        self._emulator_host = target.emulator_host

    def _create_gapic_client_channel(self, client_class, grpc_transport):
        options = channel_options()
        if self._emulator_host:
            import grpc
            return grpc_transport(channel=grpc.insecure_channel(self._emulator_host, options=options),
                                  host=self._emulator_host)
        host = client_class.DEFAULT_ENDPOINT
        return grpc_transport(channel=grpc_transport.create_channel(host=host, credentials=self._credentials,
                                                                    options=options), host=host)


class TargetTable(Table):
    """google-cloud-bigtable's Table, knowing the Target and the client it was opened with."""

    def __init__(self, table_id: str, target: Target, client: _TargetClient):
        super().__init__(table_id, client.instance(target.instance))
        self.target, self.client = target, client


def open_table(target: Target, table_id: str, admin: bool = False) -> TargetTable:
    """The table through google-cloud-bigtable (admin calls; the operator commands' reads)."""
    return TargetTable(table_id, target, _TargetClient(target, admin=admin))
