"""The package a user installs: a wheel, in a fresh virtual environment outside the checkout."""
import ast
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_names(name="requirements.txt"):
    with open(os.path.join(ROOT, name)) as fh:
        return {re.split(r"[\[=<>]", line.strip())[0].lower().replace("_", "-")
                for line in fh if line.strip() and not line.startswith("#")}


def test_every_module_the_package_imports_is_pinned():
    """Each third-party module imported anywhere in beam_ingest/ comes from a pinned requirement
    (of the package, or of its `dask` extra for the modules only the Dask path imports)."""
    found = set()
    for base, _, names in os.walk(os.path.join(ROOT, "beam_ingest")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(base, name)) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found |= {alias.name.split(".")[0] for alias in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    providers = importlib.metadata.packages_distributions()
    pinned = requirement_names() | requirement_names("requirements-dask.txt")
    missing = {}
    for module in sorted(found):
        if module in sys.stdlib_module_names or module in ("beam_ingest", "__future__"):
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"module {module} is imported but installed by no distribution"
        if not dists & pinned and not any(d.startswith("apache-beam") for d in dists):
            missing[module] = sorted(dists)
    assert not missing, f"imported but not pinned in requirements.txt: {missing}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed with its pinned requirements into a new
    virtual environment in a temporary folder (uv: seconds, where pip takes minutes)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), ROOT], check=True,
                   capture_output=True, text=True, cwd=str(out))
    wheel = next(str(out / n) for n in os.listdir(out) if n.endswith(".whl"))
    venv = out / "venv"
    uv = os.path.join(os.path.dirname(sys.executable), "uv")
    subprocess.run([uv, "venv", "-q", str(venv), "--python", sys._base_executable], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), wheel], check=True)
    return venv


def run_outside(venv, cwd, *args, env=None, timeout=600):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(env or {})
    return subprocess.run(list(args), cwd=str(cwd), env=environment, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_runs_the_demo_and_the_ingest_outside_the_checkout(installed, tmp_path, bigtable_emulator):
    from beam_ingest import __version__
    work = tmp_path / "elsewhere"
    work.mkdir()
    bin_ = installed / "bin"
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "--version")
    assert done.stdout.strip() == f"beam-ingest {__version__}", done.stderr
    done = run_outside(installed, work, str(bin_ / "python"), "-m", "beam_ingest", "--version")
    assert done.stdout.strip() == f"beam-ingest {__version__}", done.stderr
    done = run_outside(installed, work, str(bin_ / "python"), "-c", "import beam_ingest; print(beam_ingest.__file__)")
    assert str(installed) in done.stdout and ROOT not in done.stdout  # the installed copy, not the checkout
    # what the messages point to is installed with the wheel: the docs and the examples
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "--help")
    docs = done.stdout.strip().splitlines()[-1].removeprefix("documentation: ")
    assert docs.startswith(str(installed)) and sorted(os.listdir(docs)) == sorted(os.listdir(os.path.join(ROOT, "docs")))
    assert os.path.exists(os.path.join(os.path.dirname(docs), "examples", "open_in_pcg.py"))
    env = {"BIGTABLE_EMULATOR_HOST": bigtable_emulator.host}
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "demo", "--chunks", "2", "2", "1",
                       "--graph_id", "wheel-demo", env=env)
    assert done.returncode == 0 and "the chain of SV" in done.stdout, done.stdout + done.stderr
    pointed = re.search(r"--use_configured_bigtable, (\S+\.md)\)", done.stdout).group(1)
    assert pointed == os.path.join(docs, "pychunkedgraph.md") and os.path.exists(pointed)
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "ingest", "--config",
                       str(work / "demo_data" / "config.yml"), "--graph_id", "wheel-ingest", "--pcg_version=3", env=env)
    assert done.returncode == 0 and "SVs " in done.stdout, done.stdout + done.stderr
    done = run_outside(installed, work, str(bin_ / "beam-ingest"), "verify", "--config",
                       str(work / "demo_data" / "config.yml"), "--graph_id", "wheel-ingest", env=env)
    assert done.returncode == 0 and "OK: the table matches" in done.stdout, done.stdout + done.stderr


def tracked_text_files():
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if n.endswith((".py", ".md", ".txt", ".yml", ".yaml", ".json", ".sh", ".cfg", ".ini"))
            or n in ("Dockerfile", "templates/Dockerfile", ".ci/run")]


def test_nothing_refers_outside_the_repository():
    """README, docs, --help, docstrings, comments and tests stand on their own: no path into
    the team's folders beside the checkout, no `spec/` pages that are not here."""
    outside = re.compile(r"(\.\./)+shared|\bshared[/](spec|design|seed|testing)|(?<![\w/])spec[/][\w-]+\.md|"
                         r"\bshared[/]")  # [/]: this file passes the check too
    found = []
    for name in tracked_text_files():
        with open(os.path.join(ROOT, name), errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if outside.search(line):
                    found.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_every_link_in_the_docs_leads_to_a_file_here():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    pages = ["README.md"] + [os.path.join("docs", n) for n in sorted(os.listdir(os.path.join(ROOT, "docs")))]
    for page in pages:
        with open(os.path.join(ROOT, page)) as fh:
            text = fh.read()
        for target in link.findall(text):
            if re.match(r"\w+://|mailto:", target):
                continue
            if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target))):
                broken.append(f"{page}: {target}")
    assert not broken, broken


def test_the_readme_is_a_start_page():
    with open(os.path.join(ROOT, "README.md")) as fh:
        lines = fh.read().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; details belong in docs/"
    text = "\n".join(lines)
    assert "bash tools/install.sh && .venv/bin/python -m beam_ingest demo" in text and "bash .ci/run" in text
    for page in ("operating.md", "scale.md", "performance.md", "table-format.md", "hierarchy.md",
                 "input-formats.md", "segmentation-input.md", "pychunkedgraph.md", "l2cache.md"):
        assert f"docs/{page}" in text, page


def test_the_packages_import_boundaries():
    """hierarchy/ (the pure algorithms) and inputs/ (the readers) share only the types of
    chunk_inputs.py; the report reads counters without the Beam stages."""
    def imports_of(path):
        with open(path) as fh:
            tree = ast.parse(fh.read())
        package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    out.add(".".join(base + ([node.module] if node.module else [])))
                else:
                    out.add(node.module or "")
            elif isinstance(node, ast.Import):
                out |= {alias.name for alias in node.names}
        return out

    def modules_under(folder):
        return [os.path.join(ROOT, "beam_ingest", folder, n) for n in os.listdir(os.path.join(ROOT, "beam_ingest", folder))
                if n.endswith(".py")]

    for path in modules_under("hierarchy"):
        assert not any(m.startswith("beam_ingest.inputs") for m in imports_of(path)), path
    for path in modules_under("inputs"):
        assert not any(m.startswith("beam_ingest.hierarchy") for m in imports_of(path)), path
    assert not any(m.startswith("beam_ingest.pipeline") for m in imports_of(os.path.join(ROOT, "beam_ingest", "ops",
                                                                                           "report.py")))
