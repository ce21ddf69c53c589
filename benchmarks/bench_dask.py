#!/usr/bin/env python
"""The ingest on a dask.distributed cluster against the in-process runner, in one run.

    .venv/bin/python benchmarks/bench_dask.py                  # the ~1e6-SV dataset, 2 workers
    .venv/bin/python benchmarks/bench_dask.py --size 1e5 --workers 2
    .venv/bin/python benchmarks/bench_dask.py --npartitions 4   # stages cut into 4 tasks

Generates (or reuses, under --data) bench_ingest.py's synthetic dataset, starts a Bigtable
emulator, a `dask scheduler` and --workers single-threaded `dask worker` processes, then runs
the ingest four times, each launcher in a fresh process: in-process and on the cluster, each
with --skip_writes (the build alone) and writing to the emulator. Reports wall time, the
cluster/in-process ratio, the launcher's and each worker's peak RSS, and the first-run
overhead: connecting a client to the scheduler, and a one-element Beam job on the cluster.
All processes share this machine's CPUs: on one machine the cluster measures what Dask adds
(task graph, serialization between worker processes), not what more machines would give.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)


def child_ingest(config: str, graph_id: str, extra: list[str]) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import pipeline
    wall0 = time.perf_counter()
    _, counters, _ = pipeline.run(["--config", config, "--graph_id", graph_id] + extra)
    mark = counters.get("mark") or {}
    svs = counters.get("proven_svs") or mark.get("svs") or counters.get("layer2_svs", 0)
    return {"wall_s": time.perf_counter() - wall0, "svs": svs,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_overhead(address: str) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import apache_beam as beam
    import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers the Dask options)
    from apache_beam.options.pipeline_options import PipelineOptions
    from distributed import Client

    from beam_ingest.launch.runners import close_runner_client, touch
    start = time.perf_counter()
    Client(address, timeout=30).close()
    connect = time.perf_counter() - start
    start = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                                               f"--dask_client_address={address}"]))
    _ = p | beam.Create([1]) | beam.Map(touch)
    result = p.run()
    result.wait_until_finish()
    close_runner_client(result)
    return {"connect_s": connect, "trial_job_s": time.perf_counter() - start}


def run_child(args: list[str], env=None) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"] + args, env=env,
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"benchmark child failed: {args}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_peaks(address: str) -> list[float]:
    """Each worker process's peak RSS (MB) so far."""
    from distributed import Client
    with Client(address, timeout=30) as client:
        peaks = client.run(lambda: __import__("resource").getrusage(0).ru_maxrss / 1024)
    return sorted(peaks.values())


def restart_workers(address: str) -> None:
    """Fresh worker processes (peak RSS starts again; nothing cached from the last run)."""
    from distributed import Client
    with Client(address, timeout=30) as client:
        n = len(client.scheduler_info()["workers"])
        client.restart(timeout=120)
        client.wait_for_workers(n, timeout=120)


def start_cluster(workers: int, folder: str):
    from beam_ingest.ops.emulator import free_port
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGTABLE_", "REDIS_"))}
    env["PYTHONPATH"] = ROOT
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for i in range(workers):
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--memory-limit", "8GiB", "--local-directory", folder],
                                      env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client
    deadline = time.time() + 120
    while True:
        try:
            with Client(address, timeout=5) as client:
                client.wait_for_workers(workers, timeout=120)
            return address, procs
        except OSError:
            if time.time() > deadline:
                raise


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        out = child_ingest(rest[0], rest[1], rest[2:]) if kind == "ingest" else child_overhead(rest[0])
        print(json.dumps(out))
        return 0
    from bench_ingest import SIZES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1e6", choices=sorted(SIZES), help="dataset size (default 1e6 SVs)")
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes (default 2)")
    parser.add_argument("--npartitions", type=int, default=None,
                        help="--dask_npartitions for the cluster runs (default: Beam's guess)")
    parser.add_argument("--data", default=os.path.join(ROOT, "bench_data"), help="dataset cache folder")
    args = parser.parse_args(argv)

    from beam_ingest.ops.emulator import Emulator
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    chunks, per_chunk = SIZES[args.size]
    folder = os.path.join(args.data, args.size)
    config = os.path.join(folder, "config.yml")
    if not os.path.exists(config):
        print(f"generating {chunks} chunks x ~{per_chunk} SVs under {folder}", flush=True)
        generate(folder, SyntheticSpec(chunks=chunks, svs_per_chunk=per_chunk, seed=42))
    work = os.path.join(args.data, "dask-work")
    os.makedirs(work, exist_ok=True)
    address, procs = start_cluster(args.workers, work)
    results = {}
    try:
        results["overhead"] = run_child(["overhead", address])
        dask_args = ["--runner=DaskRunner", f"--dask_client_address={address}"] + (
            [f"--dask_npartitions={args.npartitions}"] if args.npartitions else [])
        with Emulator() as emulator:
            env = dict(os.environ, BIGTABLE_EMULATOR_HOST=emulator.host)
            for writes in (False, True):
                extra = [] if writes else ["--skip_writes"]
                name = "writes" if writes else "dropped"
                print(f"in-process, writes {name}", flush=True)
                results[f"inproc_{name}"] = run_child(["ingest", config, f"inproc-{name}"] + extra, env=env)
                restart_workers(address)
                print(f"dask cluster ({args.workers} workers), writes {name}", flush=True)
                results[f"dask_{name}"] = run_child(["ingest", config, f"dask-{name}"] + extra + dask_args, env=env)
                results[f"dask_{name}"]["worker_peak_rss_mb"] = worker_peaks(address)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)

    o = results["overhead"]
    parts = f", --dask_npartitions={args.npartitions}" if args.npartitions else ", Beam's default partitions"
    print(f"\n{args.size} SVs dataset, {args.workers} dask workers (1 thread each){parts}, "
          f"{os.cpu_count()} CPUs shared by all processes")
    print(f"first-run overhead: client connect {o['connect_s']:.2f} s, one-element Beam job on the cluster "
          f"{o['trial_job_s']:.2f} s")
    print(f"{'run':<22} {'wall s':>8} {'SVs/s':>10} {'launcher MB':>12}  worker peak MB")
    for name in ("dropped", "writes"):
        for runner in ("inproc", "dask"):
            r = results[f"{runner}_{name}"]
            peaks = ", ".join(f"{p:.0f}" for p in r.get("worker_peak_rss_mb", [])) or "-"
            print(f"{runner + ', writes ' + name:<22} {r['wall_s']:>8.1f} {r['svs'] / r['wall_s']:>10,.0f} "
                  f"{r['peak_rss_mb']:>12.0f}  {peaks}")
        ratio = results[f"dask_{name}"]["wall_s"] / results[f"inproc_{name}"]["wall_s"]
        print(f"  dask / in-process, writes {name}: {ratio:.2f}x")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
