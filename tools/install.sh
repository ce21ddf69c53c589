#!/usr/bin/env bash
# Create .venv (if needed) and install the pinned requirements into it, then the Debian
# packages the tests and the demo need. Any step that fails stops here with exit 1 and an
# `error:` line: nothing after it runs on a half-installed machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

fail() {
  echo "error: tools/install.sh: $1" >&2
  exit 1
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv || fail "could not create .venv with $PY"

pip_log=$(mktemp)
trap 'rm -f "$pip_log"' EXIT
if ! .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt \
     >"$pip_log" 2>&1; then
  grep -v "^WARNING: Location" "$pip_log" >&2 || true
  fail "pip could not install requirements.txt and requirements-dev.txt (its output is above)"
fi
grep -v "^WARNING: Location" "$pip_log" || true

apt_install() {
  # waits up to 2 minutes for another apt or dpkg (an unattended upgrade) to let go of its lock
  apt-get -o DPkg::Lock::Timeout=120 update -qq || fail "apt-get update failed (above); $1 was not installed"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$1" \
    || fail "apt-get could not install $1 (above)"
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (the tests start their own)"
  apt_install redis-server
fi
if ! command -v cbtemulator >/dev/null 2>&1 && \
   ! dpkg -L google-cloud-cli-bigtable-emulator 2>/dev/null | grep -q 'cbtemulator$'; then
  echo "installing the Bigtable emulator (google-cloud-cli-bigtable-emulator)"
  apt_install google-cloud-cli-bigtable-emulator
fi
