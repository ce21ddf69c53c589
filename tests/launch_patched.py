"""Runs `pipeline.main(argv)` in a process of its own, with one fault or rendezvous patched in.

    python tests/launch_patched.py barrier DIR N -- <pipeline args>
        every launcher waits, right after learning whether the table exists, until N
        launchers reached that point (files in DIR), so they race for create / claim together
    python tests/launch_patched.py kill-before-meta -- <pipeline args>
        SIGKILL itself after creating (and claiming) the table, before the meta row is written
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pipeline  # noqa: E402
from beam_ingest.launch import table as launcher  # noqa: E402
from beam_ingest.store import admin  # noqa: E402


def barrier(folder, n):
    real = admin.table_exists

    def table_exists(table, *args, **kwargs):
        found = real(table, *args, **kwargs)
        open(os.path.join(folder, str(os.getpid())), "w").close()
        deadline = time.time() + 60
        while len(os.listdir(folder)) < n and time.time() < deadline:
            time.sleep(0.001)
        return found

    admin.table_exists = table_exists


def kill_before_meta():
    def start_fresh(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    launcher._start_fresh = start_fresh


if __name__ == "__main__":
    split = sys.argv.index("--")
    mode, params, argv = sys.argv[1], sys.argv[2:split], sys.argv[split + 1:]
    if mode == "barrier":
        barrier(params[0], int(params[1]))
    elif mode == "kill-before-meta":
        kill_before_meta()
    sys.exit(pipeline.main(argv))
