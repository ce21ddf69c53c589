"""Google credentials for gs:// paths, found quickly or named as missing.

Without credentials, Google's client library probes the Compute Engine metadata server
three times with a 3 s timeout each before it gives up, and the error it then raises says
nothing of what the run was reading. Here: the usual places are looked at first (no
network), then the metadata server once, briefly; the error names the path and how to give
credentials.
"""
from __future__ import annotations

import os

from ..errors import ConfigError

METADATA_TIMEOUT_S = 1.0
_found: dict = {}


def _known_files() -> list[str]:
    paths = [os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")]
    cloudvolume_dir = os.environ.get("CLOUD_VOLUME_DIR", os.path.expanduser("~/.cloudvolume"))
    paths.append(os.path.join(cloudvolume_dir, "secrets", "google-secret.json"))
    try:
        from google.auth import _cloud_sdk
        paths.append(_cloud_sdk.get_application_default_credentials_path())
    except Exception:  # noqa: BLE001 - no gcloud configuration folder
        pass
    return [p for p in paths if p and os.path.isfile(p)]


def _on_google_cloud() -> bool:
    import logging
    quiet = logging.getLogger("google.auth.compute_engine._metadata")  # its "unavailable" warning is our answer
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import google.auth.transport.requests
        from google.auth.compute_engine import _metadata
        return bool(_metadata.ping(google.auth.transport.requests.Request(), timeout=METADATA_TIMEOUT_S,
                                   retry_count=1))
    except Exception:  # noqa: BLE001 - no metadata server here
        return False
    finally:
        quiet.setLevel(level)


def have_google_credentials() -> bool:
    """A credentials file, a storage emulator (STORAGE_EMULATOR_HOST), or a Google Cloud machine."""
    if "have" not in _found:
        _found["have"] = bool(os.environ.get("STORAGE_EMULATOR_HOST") or _known_files() or _on_google_cloud())
    return _found["have"]


def require_google_credentials(key: str, url: str) -> None:
    """ConfigError naming `key` when `url` is a gs:// path and no Google credentials are found."""
    if not str(url).strip().lower().startswith(("gs://", "precomputed://gs://")):
        return
    if not have_google_credentials():
        raise ConfigError(
            f"{key}: {url} is on Google Cloud Storage, and no Google credentials were found (no "
            "GOOGLE_APPLICATION_CREDENTIALS, no `gcloud auth application-default login`, no "
            "~/.cloudvolume/secrets/google-secret.json, not on a Google Cloud machine); every run reads its "
            "config and inputs, a dry run too: give credentials, or use local copies to check the job")
