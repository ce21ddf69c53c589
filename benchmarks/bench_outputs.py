"""EDGES/COMPONENTS-sized files: comparing before skipping against rewriting every file, on a
fresh folder and on a retry (every file already right), on a local disk and on an S3
emulator (moto, in process). `OutputFolder.sync` compares on local disks and rewrites on
object stores, after these numbers.

    python benchmarks/bench_outputs.py --files 500 --size 60000
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from beam_ingest.outputs.files import OutputFolder  # noqa: E402


def timed(fn, names, payload):
    start = time.perf_counter()
    for name in names:
        fn(name, payload[name])
    return time.perf_counter() - start


def measure(url, n, size):
    payload = {f"edges_{i}_0_0.proto.zst": os.urandom(size) for i in range(n)}
    names = sorted(payload)
    rows = []
    for label, method in (("rewrite", "write"), ("compare, then write", "compare")):
        folder = OutputFolder("data_source.EDGES", f"{url}/{method}")
        act = folder.write if method == "write" else (lambda n, d, f=folder: f.read(n) == d or f.write(n, d))
        fresh = timed(act, names, payload)
        retry = timed(act, names, payload)
        rows.append((label, fresh, retry))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--size", type=int, default=60_000, help="bytes per file (a 1M-voxel chunk's EDGES: ~60 kB)")
    args = parser.parse_args(argv)
    local = tempfile.mkdtemp(prefix="bench-outputs-")
    targets = [("file", "file://" + local)]
    try:
        import boto3
        import cloudfiles.paths
        from moto.server import ThreadedMotoServer
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_SESSION_TOKEN", "")
        import logging
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="bench-outputs")
        cloudfiles.paths.add_alias("benchs3", f"s3://http://{host}:{port}/")
        targets.append(("s3 (moto)", "benchs3://bench-outputs/out"))
    except ImportError:
        server = None
    print(f"{args.files} files of {args.size} bytes; milliseconds per file")
    print(f"{'storage':<10} {'method':<28} {'fresh folder':>13} {'retry':>8}")
    for name, url in targets:
        for label, fresh, retry in measure(url, args.files, args.size):
            print(f"{name:<10} {label:<28} {fresh / args.files * 1e3:>13.3f} {retry / args.files * 1e3:>8.3f}")
    shutil.rmtree(local, ignore_errors=True)
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
