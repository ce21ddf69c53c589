#!/usr/bin/env bash
# Create .venv (if needed) and install the pinned requirements into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt 2>&1 \
  | grep -v "^WARNING: Location" || true
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (the tests start their own)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
fi
if ! command -v cbtemulator >/dev/null 2>&1 && \
   ! dpkg -L google-cloud-cli-bigtable-emulator 2>/dev/null | grep -q 'cbtemulator$'; then
  echo "installing the Bigtable emulator (google-cloud-cli-bigtable-emulator)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    google-cloud-cli-bigtable-emulator
fi
