#!/usr/bin/env python
"""Ingest benchmark: build speed, write speed against the emulator's raw rate, peak memory.

    .venv/bin/python benchmarks/bench_ingest.py                 # ~1e5 and ~1e6 SVs
    .venv/bin/python benchmarks/bench_ingest.py --sizes 1e5     # just the small one
    .venv/bin/python benchmarks/bench_ingest.py --sizes 1e6 1e7 --build_only   # (a) only: memory per SV
    .venv/bin/python benchmarks/bench_ingest.py --sizes 1e6 --build_only --pcg_versions   # v3's cost

For each dataset size it generates a synthetic dataset (cached under --data), then runs,
each in a fresh process:
  (a) the ingest with --skip_writes (the build alone: rows are dropped unencoded),
  (b) the ingest writing to a fresh Bigtable emulator,
  (replay) every MutateRows request of (b), captured in a run against a stand-in that
        acknowledges without sending, then sent alone to a fresh emulator with the same
        concurrency: what writing exactly these rows costs without our code;
  (raw) the same number of plain rows (one pre-encoded 8-byte cell each) written to a
        fresh emulator the same way.
and prints per-layer build time, SVs/s, SVs per CPU-second, edges/s, rows/s, peak RSS,
and the ratio (b) / (raw), then (a)'s peak RSS per SV (--build_only: (a) alone, for sizes
too big to write to one local emulator). Targets: (a) >= 250,000 SVs per CPU-second on ~1e6 SVs;
(b) <= 1.3x replay. By default the emulator is pinned to half of the CPUs and the ingest
to the other half, standing in for a Bigtable on machines of its own (--no_pin shares them).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SIZES = {  # name -> (chunks, SVs per chunk)
    "1e4": ((4, 4, 2), 300),
    "1e5": ((8, 8, 4), 400),
    "1e6": ((10, 10, 10), 1100),
    "1e7": ((20, 20, 20), 1300),
}


def child_ingest(config: str, graph_id: str, extra: list[str]) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import pipeline
    base_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # interpreter, Beam, numpy loaded
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _, counters, plan = pipeline.run(["--config", config, "--graph_id", graph_id] + extra)
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
            "counters": counters, "layer_count": plan.layout.layer_count,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_rss_mb": base_rss_mb}


def child_raw(n_rows: int, batch_rows: int, inflight: int) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import numpy as np

    from beam_ingest.store import admin, row_writer, targets, wire
    table_id = f"raw-{int(time.time() * 1000)}"
    target = targets.resolve_target(None, None)
    targets.open_table(target, table_id, admin=True).create(column_families=admin.family_rules())
    writer = row_writer.RowWriter(target, table_id, 1_700_000_000_000, batch_rows=batch_rows,
                                max_inflight=inflight)
    ids = np.arange(n_rows, dtype=np.uint64) + np.uint64(1 << 56)
    entries = wire.parent_entries(ids, ids, writer.timestamp_micros)  # encoded before the clock starts
    batches = [entries.slice(s, min(s + batch_rows, n_rows)) for s in range(0, n_rows, batch_rows)]
    wall0 = time.perf_counter()
    for batch in batches:
        writer._add(batch)
    writer.drain()
    return {"wall_s": time.perf_counter() - wall0, "rows": writer.rows_written}


class CapturingTransport:
    """Stands in for grpc_transport.mutate_rows_transport: records every MutateRows request and
    acknowledges each of its entries without sending anything."""

    def __init__(self, captured: list, table_name, emulator_host):
        from google.cloud.bigtable_v2.types import MutateRowsRequest, MutateRowsResponse
        self.captured, self.table_name, self.emulator_host = captured, table_name, emulator_host
        self._request_pb, self._response_pb = MutateRowsRequest.pb(), MutateRowsResponse.pb()

    def mutate_rows(self, request, timeout):
        self.captured.append(request)
        n = len(self._request_pb.FromString(request).entries)
        yield self._response_pb(entries=[{"index": i} for i in range(n)])


@contextlib.contextmanager
def capturing_requests():
    """Within: every RowWriter's requests are captured (the yielded list), none is sent."""
    from beam_ingest.store import grpc_transport
    captured: list[bytes] = []
    real_factory = grpc_transport.mutate_rows_transport
    grpc_transport.mutate_rows_transport = lambda table_name, emulator_host: CapturingTransport(
        captured, table_name, emulator_host)
    try:
        yield captured
    finally:
        grpc_transport.mutate_rows_transport = real_factory


def replay(requests: list[bytes], inflight: int) -> dict:
    """Send serialized MutateRows requests as they are, `inflight` at a time, to the emulator
    of BIGTABLE_EMULATOR_HOST (the table named in them must exist); every entry must succeed."""
    import concurrent.futures

    from google.cloud.bigtable_v2.types import MutateRowsRequest

    from beam_ingest.store import grpc_transport, targets
    table_name = MutateRowsRequest.pb().FromString(requests[0]).table_name
    transport = grpc_transport.mutate_rows_transport(table_name, targets.resolve_target(None, None).emulator_host)

    def send(request):
        failed = 0
        for response in transport.mutate_rows(request, 300):
            failed += sum(1 for e in response.entries if e.status.code)
        return failed

    wall0, cpu0 = time.perf_counter(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(inflight) as pool:
        failed = sum(pool.map(send, requests))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if failed:
        raise SystemExit(f"{failed} rows failed in the replay")
    return {"wall_s": wall, "cpu_s": cpu, "requests": len(requests), "bytes": sum(len(r) for r in requests)}


def child_replay(config: str, graph_id: str, batch_rows: int, inflight: int) -> dict:
    """Capture every MutateRows request an ingest sends, then time sending them alone.

    The capture run's writer talks to a stand-in that acknowledges without sending; the
    replay sends the identical requests to the emulator with the same concurrency.
    """
    import warnings
    warnings.filterwarnings("ignore")
    import pipeline
    from beam_ingest.launch import job
    check_completion = job.check_completion
    # The stand-in acknowledged the completion mark without writing it: the table cannot hold it.
    job.check_completion = lambda *args, **kwargs: None
    try:
        with capturing_requests() as captured:
            pipeline.run(["--config", config, "--graph_id", graph_id, f"--write_batch_rows={batch_rows}",
                          f"--max_inflight_writes={inflight}"])
    finally:
        job.check_completion = check_completion
    return replay(captured, inflight)


CLIENT_CPUS: set[int] | None = None    # --pin: the ingest's CPUs
EMULATOR_CPUS: set[int] | None = None  # --pin: the emulator's CPUs


def pin_cpus(no_pin: bool) -> None:
    """Unless `no_pin`: the emulator gets the upper half of the CPUs, the benchmark's children the rest."""
    global CLIENT_CPUS, EMULATOR_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if not no_pin and len(cpus) >= 2:
        half = len(cpus) // 2
        CLIENT_CPUS, EMULATOR_CPUS = set(cpus[:half]), set(cpus[half:])
        print(f"ingest on CPUs {sorted(CLIENT_CPUS)}, emulator on CPUs {sorted(EMULATOR_CPUS)}", flush=True)


def run_child(args: list[str], env=None, script: str = __file__) -> dict:
    """Run `script --child ARGS` in a fresh process (on CLIENT_CPUS); returns its last line, JSON."""
    pin = (lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if CLIENT_CPUS else None
    out = subprocess.run([sys.executable, os.path.abspath(script), "--child"] + args, env=env,
                         capture_output=True, text=True, cwd=ROOT, preexec_fn=pin)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"benchmark child failed: {args}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset(size: str, data_dir: str) -> str:
    """The config of the synthetic dataset of `size`, generated under `data_dir` unless cached."""
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    chunks, per_chunk = SIZES[size]
    folder = os.path.join(data_dir, size)
    config = os.path.join(folder, "config.yml")
    if not os.path.exists(config):
        print(f"[{size}] generating {chunks} chunks x ~{per_chunk} SVs under {folder}", flush=True)
        generate(folder, SyntheticSpec(chunks=chunks, svs_per_chunk=per_chunk, seed=42))
    return config


def measure(size: str, data_dir: str, batch_rows: int, inflight: int, build_only: bool = False) -> dict:
    from beam_ingest.ops.emulator import Emulator
    config = dataset(size, data_dir)
    write_opts = [f"--write_batch_rows={batch_rows}", f"--max_inflight_writes={inflight}"]
    print(f"[{size}] (a) build, writes dropped", flush=True)
    build = run_child(["ingest", config, "bench-a", "--skip_writes"])
    result = {"size": size, "build": build}
    if build_only:
        return result
    env = dict(os.environ)
    with Emulator(cpus=EMULATOR_CPUS) as emulator:
        env["BIGTABLE_EMULATOR_HOST"] = emulator.host
        print(f"[{size}] (b) build + writes to the emulator", flush=True)
        result["write"] = run_child(["ingest", config, "bench-b"] + write_opts, env=env)
    with Emulator(cpus=EMULATOR_CPUS) as emulator:
        env["BIGTABLE_EMULATOR_HOST"] = emulator.host
        rows = result["write"]["counters"]["rows_written"]
        print(f"[{size}] (raw) {rows} rows straight to the emulator", flush=True)
        result["raw"] = run_child(["raw", str(rows), str(batch_rows), str(inflight)], env=env)
    with Emulator(cpus=EMULATOR_CPUS) as emulator:
        env["BIGTABLE_EMULATOR_HOST"] = emulator.host
        print(f"[{size}] (replay) the requests of (b), captured, then sent alone", flush=True)
        result["replay"] = run_child(["replay", config, "bench-r", str(batch_rows), str(inflight)], env=env)
    return result


def measure_raw(size: str, data_dir: str) -> dict:
    """(a) from the raw agglomeration: reading sharded files and writing EDGES/COMPONENTS."""
    import shutil

    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    chunks, per_chunk = SIZES[size]
    folder = os.path.join(data_dir, f"{size}-raw")
    config = os.path.join(folder, "config.yml")
    if not os.path.exists(config):
        print(f"[{size}] generating a raw dataset under {folder}", flush=True)
        generate(folder, SyntheticSpec(chunks=chunks, svs_per_chunk=per_chunk, seed=42, raw=True))
    for out in ("edges", "components"):
        shutil.rmtree(os.path.join(folder, out), ignore_errors=True)
    print(f"[{size}] (a-raw) build from the raw agglomeration, writes dropped", flush=True)
    return {"size": size, "build": run_child(["ingest", config, "bench-raw", "--skip_writes", "--raw"])}


def report_raw(results: list[dict]) -> str:
    lines = ["| dataset (raw input) | SVs | (a) build s | SVs/s | SVs per CPU-s | layer 2 reading s "
             "| storage requests per chunk | round trips per chunk |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        a = r["build"]
        c = a["counters"]
        chunks = max(1, c.get("layer2_chunks", 1))
        lines.append(f"| {r['size']} | {c['layer2_svs']:,} | {a['wall_s']:.2f} | {c['layer2_svs'] / a['wall_s']:,.0f} "
                     f"| {c['layer2_svs'] / a['cpu_s']:,.0f} | {c.get('layer2_read_us', 0) / 1e6:.2f} "
                     f"| {c.get('layer2_storage_requests', 0) / chunks:.1f} "
                     f"| {c.get('layer2_storage_rounds', 0) / chunks:.1f} |")
    return "\n".join(lines)


def report_memory(results: list[dict]) -> str:
    """Peak RSS of (a) per SV: what the in-process runner needs to hold a dataset of this size."""
    lines = ["| dataset | SVs | rows | (a) build s | SVs/s | peak RSS (a) MB | bytes per SV | start-up MB "
             "| bytes per SV above start-up |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        a = r["build"]
        c = a["counters"]
        svs = c["layer2_svs"]
        peak, base = a["peak_rss_mb"] * 2**20, a.get("base_rss_mb", 0) * 2**20
        lines.append(f"| {r['size']} | {svs:,} | {c['rows_written']:,} | {a['wall_s']:.2f} | {svs / a['wall_s']:,.0f} "
                     f"| {a['peak_rss_mb']:,.0f} | {peak / svs:,.0f} | {a.get('base_rss_mb', 0):,.0f} "
                     f"| {(peak - base) / svs:,.0f} |")
    return "\n".join(lines)


def measure_v3(size: str, data_dir: str) -> dict:
    """(a) for table version 2 and 3: the cost of the lifted cross edges (--pcg_version 3)."""
    config = os.path.join(data_dir, size, "config.yml")
    out = {"size": size}
    for version in (2, 3):
        print(f"[{size}] (a) build, writes dropped, --pcg_version {version}", flush=True)
        out[version] = run_child(["ingest", config, f"bench-v{version}", "--skip_writes", f"--pcg_version={version}"])
    return out


def report_v3(results: list[dict]) -> str:
    """What version 3 adds: summaries handed between layer stages (Beam's shuffles), time, memory."""
    lines = ["| dataset | SVs | summary bytes per SV v2 | v3 | growth | (a) build s v2 | v3 | peak RSS MB v2 | v3 "
             "| lifted rows (family 4) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        v2, v3 = r[2], r[3]
        svs = v2["counters"]["layer2_svs"]
        b2, b3 = (v["counters"].get("summary_bytes", 0) / svs for v in (v2, v3))
        lifted = sum(n for k, n in v3["counters"].items() if k.endswith("_lifted_edges"))
        lines.append(f"| {r['size']} | {svs:,} | {b2:.1f} | {b3:.1f} | {b3 / b2 - 1:+.0%} | {v2['wall_s']:.2f} "
                     f"| {v3['wall_s']:.2f} | {v2['peak_rss_mb']:.0f} | {v3['peak_rss_mb']:.0f} | {lifted:,} |")
    return "\n".join(lines)


def report(results: list[dict]) -> str:
    lines = ["| dataset | SVs | edges | layers | (a) build s | SVs/s | SVs per CPU-s | edges/s | rows/s (a) "
             "| peak RSS (a) MB | (b) with writes s | rows/s (b) | peak RSS (b) MB | replay of (b)'s requests s | (b)/replay "
             "| raw 8-byte rows s | (b)/raw |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    layer_lines = []
    for r in results:
        a, b, raw, replay = r["build"], r["write"], r["raw"], r["replay"]
        c = a["counters"]
        svs, edges, rows = c["layer2_svs"], c["layer2_edges"], c["rows_written"]
        lines.append(
            f"| {r['size']} | {svs:,} | {edges:,} | {a['layer_count']} | {a['wall_s']:.2f} | {svs / a['wall_s']:,.0f} "
            f"| {svs / a['cpu_s']:,.0f} | {edges / a['wall_s']:,.0f} | {rows / a['wall_s']:,.0f} "
            f"| {a['peak_rss_mb']:.0f} | {b['wall_s']:.2f} | {b['counters']['rows_written'] / b['wall_s']:,.0f} "
            f"| {b['peak_rss_mb']:.0f} | {replay['wall_s']:.2f} | {b['wall_s'] / replay['wall_s']:.2f} "
            f"| {raw['wall_s']:.2f} | {b['wall_s'] / raw['wall_s']:.2f} |")
        per_layer = ", ".join(f"L{layer} {c.get(f'layer{layer}_us', 0) / 1e6:.2f}s"
                              for layer in range(2, a["layer_count"] + 1))
        layer_lines.append(f"- {r['size']}: {per_layer}, roots {c.get('roots_us', 0) / 1e6:.2f}s "
                           f"(layer 2 reading inputs: {c.get('layer2_read_us', 0) / 1e6:.2f}s, "
                           f"{c.get('layer2_storage_requests', 0) / c.get('layer2_chunks', 1):.1f} storage requests "
                           f"in {c.get('layer2_storage_rounds', 0) / c.get('layer2_chunks', 1):.1f} round trips "
                           f"per chunk); "
                           f"sink in (b): {b['counters'].get('write_us', 0) / 1e6:.2f}s")
    return "\n".join(lines + ["", "Per-layer build time (a), summed over chunks:"] + layer_lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind = argv[1]
        if kind == "ingest":
            out = child_ingest(argv[2], argv[3], argv[4:])
        elif kind == "replay":
            out = child_replay(argv[2], argv[3], int(argv[4]), int(argv[5]))
        else:
            out = child_raw(int(argv[2]), int(argv[3]), int(argv[4]))
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6"], choices=sorted(SIZES))
    parser.add_argument("--data", default=os.path.join(ROOT, "bench_data"), help="dataset cache folder")
    parser.add_argument("--batch_rows", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=2)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--build_only", action="store_true",
                        help="only (a), the build with --skip_writes: time and peak memory per SV (e.g. --sizes 1e7)")
    parser.add_argument("--pcg_versions", action="store_true",
                        help="also build each size as table version 2 and 3 (--skip_writes): summary bytes per SV, "
                             "time and memory of the lifted cross edges")
    parser.add_argument("--raw", action="store_true",
                        help="also build each size from a raw agglomeration (sharded files, ranged reads)")
    parser.add_argument("--no_pin", action="store_true",
                        help="let the emulator and the ingest share every CPU (default: the emulator gets "
                             "the upper half of the CPUs, standing in for a Bigtable on its own machines)")
    args = parser.parse_args(argv)
    pin_cpus(args.no_pin)
    results = [measure(size, args.data, args.batch_rows, args.inflight, args.build_only) for size in args.sizes]
    raw_results = [measure_raw(size, args.data) for size in args.sizes] if args.raw else []
    v3_results = [measure_v3(size, args.data) for size in args.sizes] if args.pcg_versions else []
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"precomputed": results, "raw": raw_results, "pcg_versions": v3_results}, fh, indent=1)
    if not args.build_only:
        print()
        print(report(results))
    print()
    print("Peak memory of (a), the build alone on the in-process runner:")
    print(report_memory(results))
    if raw_results:
        print()
        print(report_raw(raw_results))
    if v3_results:
        print()
        print("Table version 3 against 2 (builds with writes dropped):")
        print(report_v3(v3_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
