"""tools/install.sh stops at the first failed step, with exit 1 and an `error:` line, so the
README's `install && demo` never runs on a half-installed machine. Run on a copy of the
script with stand-ins for pip and apt-get that fail as they do."""
import os
import shutil
import stat
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def executable(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def checkout(tmp_path, pip_exit: int):
    """A folder with tools/install.sh, the requirement files and a .venv whose pip exits
    `pip_exit` after printing a line (and a warning the script filters out)."""
    (tmp_path / "tools").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "tools", "install.sh"), tmp_path / "tools" / "install.sh")
    for name in ("requirements.txt", "requirements-dev.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    executable(tmp_path / ".venv" / "bin" / "python", "exit 0\n")
    executable(tmp_path / ".venv" / "bin" / "pip",
               f"echo 'WARNING: Location x is ignored'\necho 'ERROR: No matching distribution found for numpy'\n"
               f"exit {pip_exit}\n")
    return tmp_path


def run(folder, path):
    return subprocess.run(["bash", str(folder / "tools" / "install.sh")], capture_output=True, text=True,
                          env={"PATH": path, "HOME": str(folder)}, timeout=60)


def tools_path(tmp_path, with_redis: bool, apt_text: str):
    """A PATH of bash, coreutils and grep, a failing apt-get, and redis-server / cbtemulator
    only when asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "grep", "mktemp", "rm", "cat", "env", "dirname"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    executable(bin_dir / "apt-get", apt_text)
    executable(bin_dir / "dpkg", "exit 1\n")
    if with_redis:
        executable(bin_dir / "redis-server", "exit 0\n")
        executable(bin_dir / "cbtemulator", "exit 0\n")
    return str(bin_dir)


def test_a_failed_pip_install_stops_the_script(tmp_path):
    folder = checkout(tmp_path / "repo", pip_exit=1)
    out = run(folder, tools_path(tmp_path, with_redis=True, apt_text="exit 0\n"))
    assert out.returncode == 1
    assert "ERROR: No matching distribution found for numpy" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: tools/install.sh: pip could not install requirements.txt "
                                                   "and requirements-dev.txt (its output is above)")


def test_an_apt_lock_held_elsewhere_stops_the_script(tmp_path):
    folder = checkout(tmp_path / "repo", pip_exit=0)
    apt = "echo 'E: Could not get lock /var/lib/apt/lists/lock' >&2\nexit 100\n"
    out = run(folder, tools_path(tmp_path, with_redis=False, apt_text=apt))
    assert out.returncode == 1
    assert "E: Could not get lock /var/lib/apt/lists/lock" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: tools/install.sh: apt-get update failed (above); "
                                                   "redis-server was not installed")


def test_a_machine_with_everything_installs_quietly_and_exits_0(tmp_path):
    folder = checkout(tmp_path / "repo", pip_exit=0)
    out = run(folder, tools_path(tmp_path, with_redis=True, apt_text="exit 1\n"))
    assert out.returncode == 0, out.stderr
    assert "WARNING: Location" not in out.stdout + out.stderr
    assert "No matching distribution" in out.stdout  # pip's own output is still shown
