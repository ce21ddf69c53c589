"""Start Google's Bigtable emulator (`cbtemulator`) on a free local port."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time


def find_cbtemulator() -> str:
    found = shutil.which("cbtemulator")
    if found:
        return found
    for pattern in ("/usr/lib/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
                    "/usr/share/google-cloud-sdk/platform/bigtable-emulator/cbtemulator",
                    "/google-cloud-sdk/platform/bigtable-emulator/cbtemulator"):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    raise FileNotFoundError(
        "cbtemulator not found: install the Debian package google-cloud-cli-bigtable-emulator "
        "(or put cbtemulator on PATH)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """A running emulator; `host` is the value for BIGTABLE_EMULATOR_HOST."""

    def __init__(self, port: int | None = None, cpus: set[int] | None = None):
        """`cpus`: pin the emulator to these CPUs (benchmarks give it cores of its own)."""
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.process = subprocess.Popen([find_cbtemulator(), "-host", "127.0.0.1", "-port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"cbtemulator did not start on port {self.port}")
                time.sleep(0.02)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self):
        os.environ["BIGTABLE_EMULATOR_HOST"] = self.host
        return self

    def __exit__(self, *exc):
        self.stop()
