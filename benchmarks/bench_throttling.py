#!/usr/bin/env python
"""An ingest against a Bigtable that throttles, against the same ingest without throttling.

    .venv/bin/python benchmarks/bench_throttling.py                  # the ~1e5-SV dataset
    .venv/bin/python benchmarks/bench_throttling.py --size 1e4 --exhausted 0.3 --bursts 0.02

Both runs write through the test suite's strict Bigtable front (tests/bigtable_front.py) in
front of a fresh emulator: once answering every request, once answering RESOURCE_EXHAUSTED
to a share of the MutateRows requests (--exhausted) and, from a share of them (--bursts),
to every request for --burst_s seconds, as a Bigtable cluster whose nodes are busy does. The
throttled run must finish with the same rows; it reports wall time, rows/s, the ratio, and
the time the writers spent backing off (summed over their threads) from the run's summary.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from bench_ingest import SIZES, dataset  # noqa: E402


def ingest(config: str, graph_id: str, front_host: str, extra: list[str]) -> dict:
    import pipeline
    os.environ["BIGTABLE_EMULATOR_HOST"] = front_host
    start = time.perf_counter()
    _, counters, _ = pipeline.run(["--config", config, "--graph_id", graph_id, "--ingest_timestamp=1700000000000",
                                   *extra])
    return {"wall_s": time.perf_counter() - start, "rows": counters["rows_written"],
            "throttled_s": counters.get("write_throttled_us", 0) / 1e6, "retries": counters.get("write_retries", 0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1e5", choices=sorted(SIZES))
    parser.add_argument("--data", default=os.path.join(ROOT, "bench_data"), help="dataset cache folder")
    parser.add_argument("--exhausted", type=float, default=0.2, help="share of requests answered RESOURCE_EXHAUSTED")
    parser.add_argument("--bursts", type=float, default=0.01, help="share of requests that start a burst")
    parser.add_argument("--burst_s", type=float, default=2.0, help="how long a burst refuses every request")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from beam_ingest.ops.emulator import Emulator
    from bigtable_front import BigtableFront, Faults
    config = dataset(args.size, args.data)
    results = {}
    for name, faults in (("unthrottled", Faults(seed=args.seed)),
                         ("throttled", Faults(seed=args.seed, exhausted_rate=args.exhausted, burst_rate=args.bursts,
                                              burst_s=args.burst_s))):
        with Emulator() as emulator:
            front = BigtableFront(emulator.host, faults)
            try:
                print(f"[{args.size}] {name}", flush=True)
                results[name] = ingest(config, f"bench-{name}", front.host, [])
                results[name]["requests"] = front.stats["mutate_rows"]
                results[name]["refused"] = (front.stats["request RESOURCE_EXHAUSTED"])
            finally:
                front.stop()
    plain, slow = results["unthrottled"], results["throttled"]
    if slow["rows"] != plain["rows"]:
        raise SystemExit(f"the throttled run wrote {slow['rows']} rows, the unthrottled {plain['rows']}")
    print(f"{'run':12} {'wall s':>8} {'rows/s':>10} {'requests':>9} {'throttled':>10} {'backing off s':>14}")
    for name, r in results.items():
        print(f"{name:12} {r['wall_s']:>8.1f} {r['rows'] / r['wall_s']:>10.0f} {r['requests']:>9} {r['refused']:>10} "
              f"{r['throttled_s']:>14.1f}")
    print(f"throttled / unthrottled wall time: {slow['wall_s'] / plain['wall_s']:.2f}x "
          f"({args.exhausted:.0%} of requests RESOURCE_EXHAUSTED, {args.bursts:.0%} starting a {args.burst_s:g} s burst); "
          f"{slow['rows']} rows each")


if __name__ == "__main__":
    main()
