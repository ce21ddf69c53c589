"""`generate`: a synthetic dataset in the real input formats."""
from __future__ import annotations

import argparse

from ..errors import CommandError
from ..launch.options import int_in
from .args import positive_float


def cmd_generate(args):
    if args.segmentation:
        return cmd_generate_segmentation(args)
    seg_only = [flag for flag, value in (("--chunk_size", args.chunk_size), ("--voxels_per_sv", args.voxels_per_sv),
                                         ("--dtype", args.dtype), ("--[no-]objects", args.objects),
                                         ("--[no-]affinities", args.affinities)) if value is not None]
    if seg_only:
        raise CommandError(f"{seg_only[0]} applies to --segmentation only")
    from ..synthetic.precomputed import SyntheticSpec, generate
    spec = SyntheticSpec(chunks=tuple(args.chunks), svs_per_chunk=args.svs_per_chunk, seed=args.seed,
                         raw=args.raw, data_version=args.data_version)
    info = generate(args.out, spec)
    print(f"wrote {info['svs']} SVs ({left_out(info)}), {info['edges']} edges in {info['chunks']} chunks "
          f"({info['layer_count']} layers); config: {info['config']}")
    return 0


def left_out(info) -> str:
    """The generated SVs the graph will not hold: those in no edge (docs/hierarchy.md)."""
    return f"{info['svs'] - info['svs_in_graph']} of them in no edge, so not in the graph"


def cmd_generate_segmentation(args):
    """generate --segmentation: supervoxels/ (+ objects/, affinities/) volumes and a config.yml."""
    from ..synthetic.segmentation import SegmentationSpec, generate_segmentation
    if args.raw:
        raise CommandError("--raw and --segmentation do not go together")
    fields = {"chunks": tuple(args.chunks), "seed": args.seed}
    for key in ("chunk_size", "voxels_per_sv", "dtype", "objects", "affinities"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = tuple(value) if isinstance(value, list) else value
    info = generate_segmentation(args.out, SegmentationSpec(**fields))
    inputs = ", ".join(k for k in ("supervoxels", "objects", "affinities") if info[k])
    print(f"wrote {inputs}: {info['n_supervoxels']} SVs, {'x'.join(map(str, info['size']))} voxels, "
          f"{'x'.join(map(str, info['n_chunks']))} chunks of {'x'.join(map(str, info['chunk_size']))}; "
          f"config: {info['config']}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="write a synthetic dataset in the real input formats")
    p.add_argument("--out", required=True, help="output folder (edges/, components/, watershed/, config.yml)")
    p.add_argument("--chunks", type=int_in(1, 1 << 16), nargs=3, default=[4, 4, 2], metavar=("X", "Y", "Z"),
                   help="layer-2 chunks per axis (default 4 4 2)")
    p.add_argument("--svs_per_chunk", type=int_in(1), default=200, help="mean SVs per chunk (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true",
                   help="write the raw agglomeration (agg/chunked_rg, agg/remap) instead of edges/ and components/; "
                        "ingest it with pipeline.py --raw")
    p.add_argument("--data_version", type=int, default=4, choices=(2, 3, 4), help="raw edge record format")
    p.add_argument("--segmentation", action="store_true",
                   help="write segmentation input instead (docs/segmentation-input.md): supervoxels/, objects/, "
                        "affinities/ precomputed volumes and a config.yml naming them under ingest_config; "
                        "uses --chunks and --seed, not --svs_per_chunk")
    p.add_argument("--chunk_size", type=int_in(1, 1 << 16), nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="with --segmentation: CHUNK_SIZE in voxels (default 8 8 4)")
    p.add_argument("--voxels_per_sv", type=positive_float, default=None,
                   help="with --segmentation: mean supervoxel volume in voxels (default 24)")
    p.add_argument("--dtype", choices=("uint64", "uint32"), default=None,
                   help="with --segmentation: data type of supervoxels/ (default uint64)")
    p.add_argument("--objects", action=argparse.BooleanOptionalAction, default=None,
                   help="with --segmentation: write objects/ (default: yes)")
    p.add_argument("--affinities", action=argparse.BooleanOptionalAction, default=None,
                   help="with --segmentation: write affinities/ (default: yes)")
    p.set_defaults(func=cmd_generate)
