"""Every shell command the README and docs/ show runs as written, and the sample outputs they
show are what the code prints.

Each ```bash block is run as a script by bash in a folder laid out like a checkout (`.venv`,
`pipeline.py`, `beam_ingest/`, `setup.py`, `examples/` linked in), against the session's
Bigtable (BIGTABLE_EMULATOR_HOST), a Redis, and the GCS emulator. The placeholders the docs
use are the user's own things and are made here: `config.yml` and `seg.yml` (generated
datasets, which kind depending on the commands), `my_graph` (a fresh table id per block),
`gs://my-bucket` (a folder of the GCS emulator), the Redis port and password. A Dataflow
command is run as its dry run (offline, as the docs say to check one); a command that
reads a table (`verify`, `inspect`, `status`, `--if_exists continue`) finds one built for it.

A block that cannot run offline says so on the line before it: `<!-- not run by the doc
tests: REASON -->`; the reason is required.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from beam_ingest.ops.emulator import free_port
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from conftest import EMULATOR_SITE
from helpers import copy_to_bucket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + [os.path.join("docs", n) for n in sorted(os.listdir(os.path.join(ROOT, "docs")))]
SKIP = re.compile(r"<!-- not run by the doc tests: (.+?) -->\s*$", re.S)
CHECKOUT = (".venv", "pipeline.py", "beam_ingest", "setup.py", "examples", "templates", "benchmarks", "tools",
            "requirements.txt", "requirements-dask.txt")
READS_A_TABLE = re.compile(r"-m beam_ingest (verify|inspect|status)\b|--if_exists[ =]continue")
REDIS_DB = "9"
DEMO = SyntheticSpec(chunks=(4, 4, 2), svs_per_chunk=200)  # the dataset of `demo` and of `generate`'s defaults  # the docs' own Redis db: their flush-redis empties it


def blocks():
    """`(page, line, text, skip reason or None)` of every ```bash block."""
    return [b[:4] for b in _blocks()]


def shown_outputs() -> dict:
    """`{(page, line): output}` for a ```bash block followed at once by its output block."""
    return {(b[0], b[1]): b[4] for b in _blocks() if b[4] is not None}


def _blocks():
    found = []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as fh:
            text = fh.read()
        for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
            line = text[:match.start()].count("\n") + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skip = SKIP.search(before)
            after = re.match(r"```(?:text)?\n(.*?)```", text[match.end():].lstrip("\n") if
                             text[match.end():].startswith("\n```") else text[match.end():], re.S)
            found.append((page, line, match.group(1), skip.group(1).strip() if skip else None,
                          after.group(1) if after else None))
    return found


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b[3] is None]
# this module runs the blocks of these pages, tests/test_docs_pages.py those of the others (two
# modules: the test runner's workers take one each)
HERE = ("README.md", "docs/operating.md")


def commands(script: str) -> list[str]:
    """The block's commands, continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.split("  #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_every_block_runs_or_says_why_not():
    assert len(RUN) >= 30, len(RUN)
    for page, line, _, reason in BLOCKS:
        if reason is not None:
            assert len(reason) > 20, f"{page}:{line}: give the reason the block is not run"
    spelled = [(page, line, c) for page, line, script, _ in BLOCKS for c in commands(script)
               if re.match(r"(python|pip|beam-ingest) ", c) and page != "README.md"]
    assert not spelled, f"spell commands with the venv's .venv/bin/python (or .venv/bin/pip): {spelled}"


@pytest.fixture(scope="module")
def docs_redis(redis_server):
    return {**redis_server, "REDIS_DB": REDIS_DB}


def _dataset_kinds(script: str) -> dict:
    """Which datasets the block's placeholders stand for."""
    cmds = commands(script)
    script = " ".join(cmds)  # what comments say does not count
    estimate_only = cmds and all(" estimate " in f" {c} " for c in cmds)
    seg_config = "--from_segmentation" in script and "--config config.yml" in script
    written_ws = "--l2cache_table" in script and "--from_segmentation" not in script
    return {"config": "raw" if "--raw" in script else "seg" if seg_config or written_ws else "files",
            "seg": "big_info" if estimate_only else "seg", "written_ws": written_ws}


def _big_info_config(folder) -> str:
    """A segmentation config whose SUPERVOXELS info declares ~1e12 voxels (estimate reads only
    the info)."""
    info = generate_segmentation(str(folder / "seg_small"), SegmentationSpec(seed=5, objects=False, affinities=False))
    sv = info["supervoxels"].removeprefix("file://")
    with open(os.path.join(sv, "info")) as fh:
        meta = json.load(fh)
    meta["scales"][0]["size"] = [16384, 16384, 4096]
    with open(os.path.join(sv, "info"), "w") as fh:
        json.dump(meta, fh)
    import yaml
    with open(info["config"]) as fh:
        config = yaml.safe_load(fh)
    config["graph_config"]["CHUNK_SIZE"] = [256, 256, 128]  # chunks of a real volume's size
    with open(info["config"], "w") as fh:
        yaml.safe_dump(config, fh)
    return info["config"]


def prepare(folder, script: str, gcs_base: str, python: str, env: dict) -> None:
    """The folder the block runs in: the checkout's files linked in, the placeholder datasets."""
    checkout_like(folder, python)
    kinds = _dataset_kinds(script)
    if kinds["config"] == "raw":
        config = generate(str(folder / "data"), SyntheticSpec(raw=True, data_version=3))["config"]
    elif kinds["config"] == "seg":
        config = generate_segmentation(str(folder / "data"), SegmentationSpec(seed=7))["config"]
        if kinds["written_ws"]:  # WATERSHED, EDGES and COMPONENTS written by a run from the volumes
            subprocess.run([python, "pipeline.py", "--config", config, "--graph_id", f"{env['GRAPH']}_seg",
                            "--from_segmentation"], cwd=folder, env=env, check=True, capture_output=True)
    else:
        config = generate(str(folder / "data"), DEMO)["config"]
    shutil.copyfile(config, folder / "config.yml")
    seg = (_big_info_config(folder) if kinds["seg"] == "big_info"
           else generate_segmentation(str(folder / "seg"), SegmentationSpec(seed=8))["config"]
           if "seg.yml" in script else None)
    if seg:
        shutil.copyfile(seg, folder / "seg.yml")
    if "gs://my-bucket/config.yml" in script:
        copy_to_bucket(folder / "data", gcs_base)


def table_first(folder, script: str, python: str, env: dict) -> None:
    """A block whose first command on `my_graph` reads it: build the table first, from the
    inputs (and with the L2 cache) that command names."""
    first = next((c for c in commands(script) if f"--graph_id {env['GRAPH']}" in c), "")
    if not READS_A_TABLE.search(first):
        return
    named = re.search(r"--config (\S+)", first)  # status and inspect name none: the block's config.yml
    config = named.group(1) if named else "config.yml"
    extra = [flag for flag in ("--raw", "--from_segmentation") if flag in first]
    cache = re.search(r"--l2cache_table[ =](\S+)", first)
    if cache:
        extra.append(f"--l2cache_table={cache.group(1)}")
    subprocess.run([python, "pipeline.py", "--config", config, "--graph_id", env["GRAPH"], *extra], cwd=folder,
                   env=env, check=True, capture_output=True, text=True)


def substitute(script: str, graph: str, gcs_base: str, redis: dict, ports: dict) -> str:
    out = re.sub(r"\\\n\s*", " ", script)  # continuation lines joined
    out = out.replace("my_graph", graph).replace("gs://my-bucket", gcs_base)
    out = out.replace("REDIS_PORT=6379", f"REDIS_PORT={redis['REDIS_PORT']}").replace(
        "REDIS_PASSWORD=dev", f"REDIS_PASSWORD={redis['REDIS_PASSWORD']}").replace("REDIS_DB=0", f"REDIS_DB={REDIS_DB}")
    out = out.replace("REDIS_HOST=localhost", "REDIS_HOST=127.0.0.1")
    out = out.replace("8086", str(ports["bigtable"])).replace("8786", str(ports["dask"]))
    out = out.replace("50000", str(ports["pool"]))
    out = out.replace("tcp://scheduler:", "tcp://127.0.0.1:").replace("<that SV id>", "72057594037927937")
    # a Dataflow job cannot be submitted offline: its dry run checks it, as the docs say to
    out = re.sub(r"(?m)^(.*--runner DataflowRunner.*?)(\s+#.*)?$",
                 lambda m: m.group(1) + ("" if "--dry_run" in m.group(1) else " --dry_run=True"), out)
    # `--watch` refreshes until interrupted: interrupt it after a few refreshes
    out = re.sub(r"(?m)^(\.venv/bin/python -m beam_ingest status [^\n#]*--watch)([^\n]*)$",
                 r"timeout -s INT 5 \1 1 || [ $? = 124 ]", out)
    return out


def block_params(pages_here: bool):
    chosen = [(p, n, s) for p, n, s, _ in RUN if (p in HERE) == pages_here]
    return pytest.mark.parametrize("page,line,script", chosen, ids=[f"{p}:{n}" for p, n, _ in chosen])


@block_params(pages_here=True)
def test_the_block_runs(page, line, script, tmp_path, bigtable_emulator, gcs_server, docs_redis):
    run_block(page, line, script, tmp_path, gcs_server, docs_redis)


def run_block(page, line, script, tmp_path, gcs_server, docs_redis):
    python = sys.executable
    graph = f"doc{line}_{re.sub(r'[^a-z]', '', page.lower())[:12]}"
    gcs_base = f"{gcs_server}/docs-{os.getpid()}-{line}-{re.sub(r'[^a-z]', '', page.lower())}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(docs_redis)
    env["GRAPH"] = graph
    env["PYTHONPATH"] = EMULATOR_SITE  # the fake-gcs-server gap patched in every process (conftest.py)
    prepare(tmp_path, script, gcs_base, python, env)
    ports = {"bigtable": free_port(), "dask": free_port(), "pool": free_port()}
    table_first(tmp_path, substitute(script, graph, gcs_base, docs_redis, ports), python, env)
    body = substitute(script, graph, gcs_base, docs_redis, ports)
    wrapped = ("set -eo pipefail\ntrap 'status=$?; exec 2>/dev/null; jobs -p | xargs -r kill; wait; exit $status' EXIT\n"
               + _wait_for_background(body))
    done = subprocess.run(["bash", "-c", wrapped], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)
    assert done.returncode == 0, f"{page}:{line}\n{body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr and "RuntimeWarning" not in done.stderr, done.stderr
    shown = SHOWN.get((page, line))
    if shown is not None:  # the output block right after the commands: what the last one prints
        assert done.stdout.endswith(shown), f"{page}:{line} shows\n{shown}\nbut printed\n{done.stdout}"


SHOWN = shown_outputs()


def _wait_for_background(body: str) -> str:
    """After a line that starts a server in the background, wait until it listens."""
    lines = []
    for line in body.splitlines():
        # a server's own log (and its messages when the block ends and it is stopped) to a file
        line = re.sub(r"\s*&\s*(#.*)?$", r" >>background.log 2>&1 &", line)
        lines.append(line)
        port = re.search(r"(?:-port |--port |--service_port=)(\d+)\b.*&$", line)
        if port:
            lines.append(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{port.group(1)}) 2>/dev/null && break; "
                         "sleep 0.2; done")
        if re.search(r"dask worker .*&$", line):
            lines.append("sleep 5")
    return "\n".join(lines) + "\n"


def text_block_after(page: str, marker: str) -> str:
    """The ```text block that follows `marker` on `page`."""
    with open(os.path.join(ROOT, page)) as fh:
        text = fh.read()
    return re.search(r"```text\n(.*?)```", text[text.index(marker):], re.S).group(1)


def masked(text: str) -> str:
    """Times, which differ from run to run, as `T`."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "T UTC", text)
    return re.sub(r"\d+\.\d+", "T", text)


def checkout_like(folder, python):
    for name in CHECKOUT:
        source = os.path.join(ROOT, name) if name != ".venv" else os.path.dirname(os.path.dirname(python))
        if os.path.exists(source):
            os.symlink(source, folder / name)


def test_the_readme_demo_prints_what_the_readme_shows(tmp_path):
    """The README's first command after the install, in a fresh shell: its summary is the one
    the README and docs/operating.md show (times aside), its counts add up, and nothing in
    its output is a warning or a traceback."""
    checkout_like(tmp_path, sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "BIGTABLE_", "PYTHONPATH"))}
    done = subprocess.run([".venv/bin/python", "-m", "beam_ingest", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for page in ("README.md", "docs/operating.md"):
        with open(os.path.join(ROOT, page)) as fh:
            shown = re.search(r"```text\n(layer    chunks.*?)```", fh.read(), re.S).group(1)
        assert masked(shown) in masked(out), f"{page} shows\n{shown}\nthe demo printed\n{out}"
    generated, left_out = map(int, re.search(r"generated (\d+) SVs \((\d+) of them in no edge", out).groups())
    assert int(re.search(r"^SVs (\d+),", out, re.M).group(1)) == generated - left_out
    for stream in (done.stdout, done.stderr):
        assert not re.search(r"Traceback|Warning|warning", stream), stream
    assert all(re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO ", line) for line in done.stderr.splitlines()), done.stderr


def test_status_prints_what_operating_md_shows(tmp_path, bigtable_emulator, docs_redis):
    checkout_like(tmp_path, sys.executable)
    generate(str(tmp_path / "data"), DEMO)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PYTHONPATH"))}
    env.update(docs_redis)
    subprocess.run([".venv/bin/python", "pipeline.py", "--config", "data/config.yml", "--graph_id", "doc_status"],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    done = subprocess.run([".venv/bin/python", "-m", "beam_ingest", "status", "--graph_id", "doc_status"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    shown = text_block_after("docs/operating.md", "`status` prints:")
    assert masked(done.stdout) == masked(shown), done.stdout


@pytest.mark.parametrize("command", [
    ["benchmarks/bench_ingest.py", "--sizes", "1e4"],
    ["benchmarks/bench_sink.py", "--size", "1e4"],
    ["benchmarks/bench_dask.py", "--size", "1e4"],
    ["benchmarks/bench_segmentation.py", "--ocdbt", "--size", "128", "128", "64", "--chunk_size", "64", "64", "32"],
], ids=lambda c: c[0])
def test_the_benchmarks_performance_md_shows_run_at_a_small_size(command, tmp_path):
    """performance.md's benchmark commands take minutes as written (not run above): the same
    scripts at their smallest size, each with its own emulator, end with their figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "BIGTABLE_", "PYTHONPATH"))}
    done = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:], "--data", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and re.search(r"\d", done.stdout.strip().splitlines()[-1]), done.stdout


def _source_text() -> str:
    """The package's source with adjacent string literals joined, whitespace collapsed: the
    static parts of every message it can print."""
    parts = []
    for folder, _, names in os.walk(os.path.join(ROOT, "beam_ingest")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as fh:
                    parts.append(fh.read())
    text = "\n".join(parts)
    text = re.sub(r"(?:\"|')\s*\)?\s*\n\s*\+?\s*\(?\s*(?:rf|fr|f|r)?(?:\"|')", "", text)
    return re.sub(r"\s+", " ", text)


VARIABLE = re.compile(r"\.\.\.|…|\{[^}]*\}|'[^']*'|\([^()]*\)|\[[^\]]*\]|\S*[/:]\S*|\S*\d\S*|\bN\b|\bM\b")


def test_every_error_the_docs_show_is_worded_as_the_code_words_it():
    """Each `error: ...` or `MISMATCH: ...` sample: the fixed wording between its particular
    values (names, numbers, paths, elisions) is in the code; a message reworded without its
    sample fails here."""
    source = _source_text()
    checked, missing = 0, []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as fh:
            text = fh.read()
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
            if lang not in ("", "text"):
                continue
            joined = re.sub(r"\n(?!\s*(?:error|MISMATCH):)", " ", block)
            for line in re.findall(r"(?m)^\s*(?:error|MISMATCH): (.*)$", joined):
                for fragment in VARIABLE.split(line):
                    fragment = re.sub(r"\s+", " ", fragment).strip(" ,;.:")
                    if len(fragment.split()) >= 3:
                        checked += 1
                        words = fragment.split()
                        # a word at an edge may come from a value (`f"no {what}"`)
                        if not any(" ".join(w) in source for w in (words, words[1:], words[:-1])):
                            missing.append(f"{page}: {fragment!r} (from: {line[:100]})")
    assert checked > 20, checked
    assert not missing, "\n".join(missing)
