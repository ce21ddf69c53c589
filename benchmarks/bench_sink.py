#!/usr/bin/env python
"""Sink benchmark: our sink, Beam's WriteToBigTable and the raw replay, on the same rows.

    .venv/bin/python benchmarks/bench_sink.py                  # the ~1e5-SV dataset, ~2e5 rows
    .venv/bin/python benchmarks/bench_sink.py --size 1e4       # a quick one

A capture step runs the real ingest of a synthetic dataset (bench_ingest.py's, cached under
--data) with --skip_writes and records every `Rows` batch its sink receives, then lets our
sink write those batches to a stand-in that acknowledges without sending (bench_ingest's
capturing_requests), recording every MutateRows request. Then, each in a fresh process
writing to a fresh Bigtable emulator, timed:
  (ours)    `beam.Create(rows batches) | ParDo(WriteRowsFn)`: the pipeline's own sink
            (numpy -> wire encoding, background MutateRows, per-row status checks, acks);
  (replay)  the captured requests sent as they are, --inflight at a time
            (bench_ingest's replay): what writing exactly these rows costs without a sink;
  (beam)    `beam.Create(direct_rows) | WriteToBigTable(project, instance, table)`, one
            `DirectRow` per captured entry with the same cells and explicit timestamps
            (Beam's pure-Python sink: a MutationsBatcher per bundle, its default
            flush_count unless --beam_flush_count). With --direct_rows pipeline the rows
            are made in the pipeline instead, `Create(entries) | Map(DirectRow) | ...`, as
            a pipeline using this sink would make them.
Both pipelines run on the in-process FnApiRunner. "sink s" is from the first element
reaching the sink (ours: WriteRowsFn; beam: WriteToBigTable, or the DirectRow step with
--direct_rows pipeline) to the end of the pipeline: no pipeline construction, no runner
start-up; "wall s" is all of it (for beam, making the DirectRows and Create pickling each
one). Making the DirectRows is also timed alone, for reference.

Afterwards each table is scanned and every cell (key, family, qualifier, timestamp, value)
hashed: the three tables must equal the captured cells. The emulator is pinned to half of
the CPUs and the writer to the other half, as in bench_ingest.py (--no_pin shares them).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import bench_ingest  # noqa: E402

INGEST_MS = 1_700_000_000_000  # every cell's timestamp (ms): identical cells in every variant
TABLE_ID = "sink"  # one table per variant, each in an emulator of its own
FIRST = ("bench_sink", "first_element_ms")  # Beam distribution: when the first element reached the sink


def _quiet():
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def _stamp(element):
    from apache_beam.metrics import Metrics
    Metrics.distribution(*FIRST).update(int(time.time() * 1000))
    return element


def _run_pipeline(build) -> dict:
    """Run `build(pipeline)` on the in-process FnApiRunner; wall time and sink time."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    wall0, cpu0 = time.perf_counter(), time.process_time()
    pipeline = beam.Pipeline(runner=FnApiRunner())
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    end_ms = time.time() * 1000
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    first = result.metrics().query(MetricsFilter().with_namespace(FIRST[0]).with_name(FIRST[1]))["distributions"]
    first_ms = min(d.committed.min for d in first)
    return {"wall_s": wall, "cpu_s": cpu, "sink_s": (end_ms - first_ms) / 1000}


def _sink_spec(target, batch_rows: int, inflight: int):
    from beam_ingest.pipeline.sink import SinkSpec
    return SinkSpec(target=target, table_id=TABLE_ID, ingest_ms=INGEST_MS, batch_rows=batch_rows,
                    max_inflight=inflight)


def _ours(pipeline, batches, sink):
    import apache_beam as beam

    from beam_ingest.pipeline.sink import WriteRowsFn
    (pipeline | "Rows" >> beam.Create(batches) | "Stamp" >> beam.Map(_stamp)
     | "Write" >> beam.ParDo(WriteRowsFn(sink)))


def _create_table():
    from beam_ingest.store import admin, targets
    target = targets.resolve_target(None, None)
    targets.open_table(target, TABLE_ID, admin=True).create(column_families=admin.family_rules())
    return target


def _cell_hash(key: bytes, family: str, qualifier: bytes, timestamp_micros: int, value: bytes) -> bytes:
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    for part in (key, family.encode(), qualifier, timestamp_micros.to_bytes(8, "big", signed=True), value):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def _digest(hashes) -> str:
    import hashlib
    return hashlib.sha256(b"".join(sorted(set(hashes)))).hexdigest()


def scan_table(target, table_id: str) -> dict:
    """Every cell of the table, read with one raw ReadRows stream: counts and a digest."""
    from google.cloud.bigtable_v2.types import ReadRowsRequest, ReadRowsResponse

    from beam_ingest.store import grpc_transport
    channel = grpc_transport.data_client(target.emulator_host).transport.grpc_channel
    call = channel.unary_stream("/google.bigtable.v2.Bigtable/ReadRows", request_serializer=None,
                                response_deserializer=ReadRowsResponse.pb().FromString)
    request = ReadRowsRequest.pb()(table_name=target.table_name(table_id)).SerializeToString()
    hashes, rows = [], 0
    key, family, qualifier, timestamp, value, in_cell = b"", "", b"", 0, b"", False
    for response in call(request, timeout=600):
        for chunk in response.chunks:
            if chunk.reset_row:
                raise SystemExit("ReadRows reset a row: not expected from the emulator")
            if not in_cell:
                if chunk.row_key:
                    key = chunk.row_key
                if chunk.HasField("family_name"):
                    family = chunk.family_name.value
                if chunk.HasField("qualifier"):
                    qualifier = chunk.qualifier.value
                timestamp, value = chunk.timestamp_micros, b""
            value += chunk.value
            in_cell = chunk.value_size > 0  # a split value goes on in the next chunk
            if not in_cell:
                hashes.append(_cell_hash(key, family, qualifier, timestamp, value))
            if chunk.commit_row:
                rows += 1
    channel.close()
    return {"rows": rows, "cells": len(hashes), "digest": _digest(hashes)}


def child_capture(config: str, out: str, batch_rows: int, inflight: int) -> dict:
    """The rows of a real ingest, the requests our sink makes of them, their cells."""
    _quiet()
    from google.cloud.bigtable_v2.types import MutateRowsRequest

    import pipeline
    from beam_ingest.pipeline import sink
    from beam_ingest.store import targets
    batches = []
    process = sink.WriteRowsFn.process

    def recording(self, rows):
        batches.append(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
        return process(self, rows)

    sink.WriteRowsFn.process = recording
    try:
        pipeline.run(["--config", config, "--graph_id", "sink-capture", "--skip_writes"])
    finally:
        sink.WriteRowsFn.process = process
    batches = [pickle.loads(b) for b in batches]
    target = targets.Target("emulator", "emulator", "127.0.0.1:1")  # never reached: requests are captured
    with bench_ingest.capturing_requests() as requests:
        _run_pipeline(lambda p: _ours(p, batches, _sink_spec(target, batch_rows, inflight)))
    request_pb = MutateRowsRequest.pb()
    entries, hashes = [], []
    for request in requests:
        for entry in request_pb.FromString(request).entries:
            cells = []
            for mutation in entry.mutations:
                if mutation.WhichOneof("mutation") != "set_cell":
                    raise SystemExit(f"unexpected mutation {mutation.WhichOneof('mutation')}")
                c = mutation.set_cell
                cells.append((c.family_name, c.column_qualifier, c.timestamp_micros, c.value))
                hashes.append(_cell_hash(entry.row_key, *cells[-1]))
            entries.append((entry.row_key, cells))
    for name, obj in (("batches", batches), ("requests", requests), ("entries", entries)):
        with open(os.path.join(out, f"{name}.pkl"), "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return {"batches": len(batches), "requests": len(requests), "entries": len(entries),
            "row_keys": len({key for key, _ in entries}), "cells": len(set(hashes)), "digest": _digest(hashes),
            "bytes": sum(len(r) for r in requests)}


def _load(out: str, name: str):
    with open(os.path.join(out, f"{name}.pkl"), "rb") as fh:
        return pickle.load(fh)


def child_ours(out: str, batch_rows: int, inflight: int) -> dict:
    _quiet()
    batches = _load(out, "batches")
    target = _create_table()
    result = _run_pipeline(lambda p: _ours(p, batches, _sink_spec(target, batch_rows, inflight)))
    return {**result, "table": scan_table(target, TABLE_ID)}


def child_replay(out: str, inflight: int) -> dict:
    _quiet()
    requests = _load(out, "requests")
    target = _create_table()
    result = bench_ingest.replay(requests, inflight)
    return {**result, "sink_s": result["wall_s"], "table": scan_table(target, TABLE_ID)}


def direct_row(entry):
    """One captured entry as a DirectRow: the same cells, with their explicit timestamps."""
    import datetime

    from google.cloud.bigtable.row import DirectRow
    key, cells = entry
    row = DirectRow(row_key=key)
    for family, qualifier, timestamp_micros, value in cells:
        row.set_cell(family, qualifier, value, timestamp=datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
                     + datetime.timedelta(microseconds=timestamp_micros))
    return row


def child_beam(out: str, flush_count: int, made_in: str) -> dict:
    _quiet()
    import apache_beam as beam
    from apache_beam.io.gcp.bigtableio import WriteToBigTable
    entries = _load(out, "entries")
    target = _create_table()
    build0 = time.perf_counter()
    for entry in entries:
        direct_row(entry)
    build_s = time.perf_counter() - build0
    kwargs = {"flush_count": flush_count} if flush_count else {}

    def build(p):
        if made_in == "pipeline":
            rows = (p | "Entries" >> beam.Create(entries) | "Stamp" >> beam.Map(_stamp)
                    | "DirectRows" >> beam.Map(direct_row))
        else:  # made beforehand; Create pickles every one when the pipeline is built
            rows = p | "DirectRows" >> beam.Create([direct_row(e) for e in entries]) | "Stamp" >> beam.Map(_stamp)
        rows | "Write" >> WriteToBigTable(target.project, target.instance, TABLE_ID, **kwargs)

    result = _run_pipeline(build)
    return {**result, "direct_rows_s": build_s, "table": scan_table(target, TABLE_ID)}


def report(size: str, capture: dict, results: dict) -> str:
    n = capture["entries"]
    lines = [f"{size} dataset: {n:,} rows (MutateRows entries; {capture['row_keys']:,} row keys, "
             f"{capture['cells']:,} cells, {capture['bytes'] / 2**20:.1f} MiB in {capture['requests']:,} "
             "requests)", "",
             "| sink | wall s | sink s | rows/s (sink s) | CPU s (writer process) | table equals the captured cells |",
             "|---|---|---|---|---|---|"]
    for name, label in (("ours", "ours (WriteRowsFn)"),
                        ("replay", "replay of ours' requests"),
                        ("beam", "Beam's WriteToBigTable")):
        r = results[name]
        same = "yes" if r["table"]["digest"] == capture["digest"] else (
            f"NO ({r['table']['rows']:,} rows, {r['table']['cells']:,} cells)")
        lines.append(f"| {label} | {r['wall_s']:.2f} | {r['sink_s']:.2f} | {n / r['sink_s']:,.0f} "
                     f"| {r['cpu_s']:.2f} | {same} |")
    ours, rep, beam = results["ours"], results["replay"], results["beam"]
    lines += ["",
              f"ours / replay: {ours['sink_s'] / rep['sink_s']:.2f}x the time (sink s)",
              f"beam / ours:   {beam['sink_s'] / ours['sink_s']:.2f}x the time (sink s), "
              f"{beam['wall_s'] / ours['wall_s']:.2f}x (wall s)",
              f"making the {n:,} DirectRows, timed alone: {beam['direct_rows_s']:.2f} s "
              f"(in beam's wall s; in its sink s only with --direct_rows pipeline)"]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, rest = argv[1], argv[2:]
        if kind == "capture":
            out = child_capture(rest[0], rest[1], int(rest[2]), int(rest[3]))
        elif kind == "ours":
            out = child_ours(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "replay":
            out = child_replay(rest[0], int(rest[1]))
        else:
            out = child_beam(rest[0], int(rest[1]), rest[2])
        print(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1e5", choices=sorted(bench_ingest.SIZES))
    parser.add_argument("--data", default=os.path.join(ROOT, "bench_data"), help="dataset cache folder")
    parser.add_argument("--batch_rows", type=int, default=2000, help="our sink's rows per MutateRows request")
    parser.add_argument("--inflight", type=int, default=2, help="our sink's (and the replay's) requests in flight")
    parser.add_argument("--beam_flush_count", type=int, default=0,
                        help="WriteToBigTable's flush_count (rows per request); 0: Beam's default")
    parser.add_argument("--direct_rows", choices=("before", "pipeline"), default="before",
                        help="beam: make the DirectRows before the pipeline, `Create(direct_rows)` (default), "
                             "or in it, `Create(entries) | Map(DirectRow)`")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--no_pin", action="store_true", help="let the emulator and the writer share every CPU")
    args = parser.parse_args(argv)

    import tempfile

    from beam_ingest.ops.emulator import Emulator
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    bench_ingest.pin_cpus(args.no_pin)
    chunks, per_chunk = bench_ingest.SIZES[args.size]
    folder = os.path.join(args.data, args.size)
    config = os.path.join(folder, "config.yml")
    if not os.path.exists(config):
        print(f"[{args.size}] generating {chunks} chunks x ~{per_chunk} SVs under {folder}", flush=True)
        generate(folder, SyntheticSpec(chunks=chunks, svs_per_chunk=per_chunk, seed=42))
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as out:
        print(f"[{args.size}] capture: the ingest's rows, our sink's requests for them", flush=True)
        capture = bench_ingest.run_child(["capture", config, out, str(args.batch_rows), str(args.inflight)],
                                         script=__file__)
        variants = (("ours", [str(args.batch_rows), str(args.inflight)]),
                    ("replay", [str(args.inflight)]),
                    ("beam", [str(args.beam_flush_count), args.direct_rows]))
        results = {}
        for name, extra in variants:
            with Emulator(cpus=bench_ingest.EMULATOR_CPUS) as emulator:
                env = dict(os.environ, BIGTABLE_EMULATOR_HOST=emulator.host)
                print(f"[{args.size}] ({name}) {capture['entries']:,} rows to a fresh emulator", flush=True)
                results[name] = bench_ingest.run_child([name, out] + extra, env=env, script=__file__)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, "capture": capture, "results": results}, fh, indent=1)
    print()
    print(report(args.size, capture, results))
    bad = [name for name, r in results.items() if r["table"]["digest"] != capture["digest"]]
    if bad:
        print(f"tables differing from the captured cells: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
