#!/usr/bin/env python
"""Segmentation-input benchmark (`--from_segmentation`): voxels per second per core, end to end.

    .venv/bin/python benchmarks/bench_segmentation.py                 # 512 x 512 x 256 voxels
    .venv/bin/python benchmarks/bench_segmentation.py --repeat 3 --chunk_size 64 64 32 --storage_chunk 64 64 32
    .venv/bin/python benchmarks/bench_segmentation.py --size 256 256 128
    .venv/bin/python benchmarks/bench_segmentation.py --voxels_per_sv 512   # half as many supervoxels
    .venv/bin/python benchmarks/bench_segmentation.py --sharded         # inputs in shard files
    .venv/bin/python benchmarks/bench_segmentation.py --without_affinities   # supervoxels and objects only
    .venv/bin/python benchmarks/bench_segmentation.py --l2cache --repeat 3   # what --l2cache_table adds
    .venv/bin/python benchmarks/bench_segmentation.py --ocdbt --repeat 3     # what --ocdbt's copy adds

Generates synthetic volumes (supervoxels, objects, affinities; cached under --data) with
`generate --segmentation`, then runs the whole ingest from them in a fresh process with
--skip_writes (no table; every file output is written: WATERSHED, EDGES, COMPONENTS) on the
in-process runner, pinned to one CPU. Reports voxels/s per CPU-second, end to end and beyond
what any run costs (the same ingest of 2x2x2 chunks of the same size is run too, or of one
chunk if the volume is 2x2x2 chunks: the difference is what the larger volume adds, the rate a dataset of billions of voxels sees),
and where the time goes: the read step (`segmentation_read_us`: read each chunk once,
relabel, contacts inside, write WATERSHED), the faces step (`layer2_read_us`: contacts
across faces, components, write EDGES/COMPONENTS), the layer-2 build (the rest of
`layer2_us`), the layers above, and what is left (start-up, pipeline construction, Beam);
and the peak RSS against one chunk. Before each run a fixed numpy sort and copy are timed
(the machine check): on a shared machine they show how fast the CPU and memory were at that
moment, a rough guide when comparing runs taken at different moments.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def machine_check_ms() -> tuple[float, float]:
    """How fast this CPU and its memory are right now, in ms: sorting 1M seeded random uint64
    and copying 64 MB (fastest of 5 each). On a shared machine the same code's run times move
    with them."""
    import numpy as np
    values = np.random.default_rng(0).integers(0, 1 << 63, 1 << 20, dtype=np.uint64)
    source, target = np.ones(1 << 23, np.uint64), np.empty(1 << 23, np.uint64)
    sort = copy = float("inf")
    for _ in range(5):
        data = values.copy()
        start = time.perf_counter()
        data.sort()
        sort = min(sort, time.perf_counter() - start)
        start = time.perf_counter()
        np.copyto(target, source)
        copy = min(copy, time.perf_counter() - start)
    return sort * 1e3, copy * 1e3


def child(config: str, extra: list) -> dict:
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import pipeline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    _, counters, plan = pipeline.run(["--config", config, "--graph_id", "bench-seg", "--from_segmentation",
                                      "--skip_writes"] + extra)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "counters": counters,
            "voxels": int(plan.layout.voxel_counts[0]) * int(plan.layout.voxel_counts[1])
            * int(plan.layout.voxel_counts[2]),
            "chunk_voxels": int(plan.layout.chunk_size[0]) * int(plan.layout.chunk_size[1])
            * int(plan.layout.chunk_size[2]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_rss_mb": base}


def dataset(args, chunks, storage) -> str:
    """The config of synthetic volumes of `chunks` layer-2 chunks (generated once, then cached);
    with --ocdbt at voxel offset 0 (the only volumes PyChunkedGraph 3.x opens the copy of)."""
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    size = [n * c for n, c in zip(chunks, args.chunk_size)]
    folder = os.path.join(args.data, "seg_" + "x".join(map(str, size)) + "_chunk_"
                          + "x".join(map(str, args.chunk_size)) + "_storage_" + "x".join(map(str, storage))
                          + f"_sv{args.voxels_per_sv:g}" + ("_origin" if args.ocdbt else ""))
    config = os.path.join(folder, "config.yml")
    if not os.path.exists(config):
        print(f"generating {size} voxels ({chunks} chunks of {args.chunk_size}) under {folder}", flush=True)
        offset = {"voxel_offset": (0, 0, 0)} if args.ocdbt else {}
        generate_segmentation(folder, SegmentationSpec(chunks=tuple(chunks), chunk_size=tuple(args.chunk_size),
                                                       partial_last_chunk=False, voxels_per_sv=args.voxels_per_sv,
                                                       seed=42, storage_chunk=args.storage_chunk, **offset))
    if args.sharded:
        config = sharded_config(folder, config)
    return without_affinities(config) if args.without_affinities else config


def without_affinities(config: str) -> str:
    """The same config without ingest_config.AFFINITIES (every edge's affinity 1.0)."""
    import yaml
    with open(config) as fh:
        cfg = yaml.safe_load(fh)
    cfg["ingest_config"].pop("AFFINITIES", None)
    out = config[:-len(".yml")] + "_without_affinities.yml"
    with open(out, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return out


def sharded_config(folder: str, config: str) -> str:
    sharded = os.path.join(folder, "config_sharded.yml")
    if not os.path.exists(sharded):
        import yaml
        with open(config) as fh:
            cfg = yaml.safe_load(fh)
        for key in ("SUPERVOXELS", "OBJECTS", "AFFINITIES"):
            print(f"writing {key} as one shard file", flush=True)
            cfg["ingest_config"][key] = sharded_copy(cfg["ingest_config"][key], cfg["ingest_config"][key] + "_sharded")
        with open(sharded, "w") as fh:
            yaml.safe_dump(cfg, fh)
    return sharded


def sharded_copy(url: str, dest: str) -> str:
    """`url`'s volume as one shard file (64 minishards), its chunks compressed as the files
    were (gzip or not), so that reads compare like for like."""
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume
    from beam_ingest.synthetic.segmentation import copy_volume
    key = CloudVolume(url, progress=False).info["scales"][0]["key"]
    gzipped = any(name.endswith(".gz") for name in CloudFiles(url).list(prefix=key))
    return copy_volume(url, dest, sharded=True, data_encoding="gzip" if gzipped else "raw", minishard_bits=6)


def ingest(config: str, cpus, extra=()) -> dict:
    """One ingest in a fresh process pinned to `cpus`, outputs of an earlier run removed first;
    the machine check is taken just before, here (on the same CPU), not in the measured process."""
    folder = os.path.dirname(config)
    os.sched_setaffinity(0, cpus)
    check_ms = machine_check_ms()
    for out in ("watershed", "edges", "components"):
        subprocess.run(["rm", "-rf", os.path.join(folder, out)], check=True)
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", config, *extra], capture_output=True,
                         text=True, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    if run.returncode:
        sys.stderr.write(run.stderr[-4000:])
        raise SystemExit(1)
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "check_ms": check_ms}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(child(argv[1], argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 256], metavar=("X", "Y", "Z"))
    parser.add_argument("--chunk_size", type=int, nargs=3, default=[128, 128, 64], metavar=("X", "Y", "Z"),
                        help="layer-2 CHUNK_SIZE (default 128 128 64: 1M voxels, near the 1.6M of the seed's "
                        "200 200 40)")
    parser.add_argument("--storage_chunk", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="the input volumes' storage chunk size (default: half of --chunk_size)")
    parser.add_argument("--voxels_per_sv", type=float, default=256,
                        help="mean volume of an original supervoxel, in voxels (default 256: about 305k supervoxels "
                        "in the default volume and chunks, the 'few hundred thousand' the issue sizes; 512 gives "
                        "about 160k)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the ingest this many times and report the fastest (this machine is noisy)")
    parser.add_argument("--sharded", action="store_true",
                        help="read the volumes from sharded copies (one shard file each; written once, then cached)")
    parser.add_argument("--without_affinities", action="store_true",
                        help="leave AFFINITIES out of the config (supervoxels and objects only)")
    parser.add_argument("--l2cache", action="store_true",
                        help="also run every ingest with --l2cache_table (computed, then dropped with the rows) and "
                        "report what the L2 cache adds (target: at most 30%%)")
    parser.add_argument("--ocdbt", action="store_true",
                        help="run every ingest as a version-3 table, and also with --ocdbt, and report what writing "
                        "WATERSHED's OCDBT copy adds and its bytes per voxel (volumes at voxel offset 0)")
    parser.add_argument("--data", default=os.path.join(ROOT, "bench_data"))
    args = parser.parse_args(argv)
    chunks = tuple(s // c for s, c in zip(args.size, args.chunk_size))
    storage = args.storage_chunk or [c // 2 if c % 2 == 0 else c for c in args.chunk_size]
    config = dataset(args, chunks, storage)
    # the same chunks, a few of them: what a run costs whatever its size
    few = (2, 2, 2) if chunks[0] * chunks[1] * chunks[2] > 8 else (1, 1, 1)
    small = dataset(args, few, storage) if few != chunks else None
    cpus = sorted(os.sched_getaffinity(0))[:1]
    runs, small_runs, cache_runs, ocdbt_runs = [], [], [], []
    version = ["--pcg_version=3"] if args.ocdbt else []
    for _ in range(max(args.repeat, 1)):
        runs.append(ingest(config, cpus, version))
        if small:
            small_runs.append(ingest(small, cpus, version))
        if args.l2cache:
            cache_runs.append(ingest(config, cpus, version + ["--l2cache_table=bench-l2"]))
        if args.ocdbt:
            ocdbt_runs.append({**ingest(config, cpus, version + ["--ocdbt"]), "copy_bytes": copy_bytes(config)})
    r = min(runs, key=lambda x: x["cpu_s"])
    if len(runs) > 1:
        cpu = ", ".join(f"{x['cpu_s']:.1f}" for x in runs)
        print(f"fastest of {len(runs)} runs (CPU s: {cpu})")
    checks = ", ".join(f"{x['check_ms'][0]:.1f}/{x['check_ms'][1]:.1f}" for x in runs)
    print(f"machine check before each run (ms to sort 1M uint64 / to copy 64 MB; lower is a faster machine at "
          f"that moment): {checks}")
    c = r["counters"]
    read_s = c.get("segmentation_read_us", 0) / 1e6
    faces_s = c.get("layer2_read_us", 0) / 1e6
    build_s = c.get("layer2_us", 0) / 1e6 - faces_s
    upper_s = sum(v for k, v in c.items() if k.endswith("_us") and k.startswith(("layer", "roots"))
                  and k not in ("layer2_us", "layer2_read_us")) / 1e6
    work_s = read_s + faces_s + build_s + upper_s
    voxels = r["voxels"]
    print(f"{voxels:,} voxels, {c.get('layer2_svs', 0):,} supervoxels, {c.get('layer2_edges', 0):,} edges, "
          f"{c.get('layer2_chunks', 0)} layer-2 chunks of {args.chunk_size}, storage chunks "
          f"{storage} ({c.get('segmentation_storage_files', 0):,} "
          f"{'chunks read from shard files' if args.sharded else 'files read'}), one CPU")
    print(f"end to end: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU s: "
          f"**{voxels / r['cpu_s'] / 1e6:.2f} M voxels/s per core**")
    if small_runs:
        s = min(small_runs, key=lambda x: x["cpu_s"])
        marginal = (voxels - s["voxels"]) / max(r["cpu_s"] - s["cpu_s"], 1e-9)
        print(f"  per voxel beyond a run's fixed cost: **{marginal / 1e6:.2f} M voxels/s per core** (the same ingest "
              f"of {'x'.join(map(str, few))} chunks, {s['voxels']:,} voxels, took {s['cpu_s']:.1f} CPU s; the "
              "difference is what a larger volume adds)")
    print(f"  per-chunk work: {work_s:.1f} s ({voxels / max(work_s, 1e-9) / 1e6:.2f} M voxels/s), of which")
    print(f"    read each chunk once + relabel + contacts inside + write WATERSHED: {read_s:.1f} s "
          f"({voxels / max(read_s, 1e-9) / 1e6:.2f} M voxels/s)")
    print(f"    contacts across faces + components + write EDGES/COMPONENTS: {faces_s:.1f} s")
    print(f"    layer-2 build: {build_s:.1f} s; layers 3+ and roots: {upper_s:.1f} s")
    print(f"  the rest (start-up, pipeline construction, Beam between stages): {r['wall_s'] - work_s:.1f} s; "
          f"waiting on storage (wall beyond CPU, inside the steps above): {max(r['wall_s'] - r['cpu_s'], 0):.1f} s")
    inputs = "uint64 supervoxels and objects" + ("" if args.without_affinities else " + 3 float32 affinity channels")
    chunk_mb = r["chunk_voxels"] * (16 if args.without_affinities else 28) / 2**20
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB (start-up {r['base_rss_mb']:.0f} MB); one chunk is "
          f"{r['chunk_voxels']:,} voxels ({chunk_mb:.0f} MB as {inputs}); the in-process runner also holds every "
          "chunk's part between the two steps (its boundary planes and contacts; Dataflow shuffles them)")
    if cache_runs:
        w, wc, rate = _with_option(cache_runs, "l2cache_us", voxels)
        print(f"with --l2cache_table: {w['wall_s']:.1f} s wall, {w['cpu_s']:.1f} CPU s, "
              f"{wc.get('l2cache_rows', 0):,} cache rows; the cache's own step {rate}; "
              f"**{w['cpu_s'] / r['cpu_s']:.2f}x the CPU of the run without** (target <= 1.30x), "
              f"peak RSS {w['peak_rss_mb']:.0f} MB")
    if ocdbt_runs:
        o, _, rate = _with_option(ocdbt_runs, "ocdbt_us", voxels)
        print(f"with --ocdbt: {o['wall_s']:.1f} s wall, {o['cpu_s']:.1f} CPU s; writing the copy {rate}; "
              f"**{o['cpu_s'] / r['cpu_s']:.2f}x the CPU of the same version-3 run without**; the copy holds "
              f"{o['copy_bytes']:,} bytes, **{o['copy_bytes'] / voxels:.3f} bytes per voxel** "
              f"(WATERSHED itself: {watershed_bytes(config) / voxels:.3f})")
    return 0


def _with_option(runs, step: str, voxels: int):
    """The fastest run with an option, its counters, and its own step's time and rate."""
    fastest = min(runs, key=lambda x: x["cpu_s"])
    counters = fastest["counters"]
    step_s = counters.get(step, 0) / 1e6
    return fastest, counters, f"{step_s:.1f} s ({voxels / max(step_s, 1e-9) / 1e6:.2f} M voxels/s)"


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def copy_bytes(config: str) -> int:
    """The bytes of WATERSHED's OCDBT copy left by the last run."""
    return _folder_bytes(os.path.join(os.path.dirname(config), "watershed", "ocdbt"))


def watershed_bytes(config: str) -> int:
    """The bytes of WATERSHED's own chunk files (its OCDBT copy left out)."""
    folder = os.path.join(os.path.dirname(config), "watershed")
    return _folder_bytes(folder) - _folder_bytes(os.path.join(folder, "ocdbt"))


if __name__ == "__main__":
    sys.exit(main())
