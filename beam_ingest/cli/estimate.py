"""`estimate`: workers, Bigtable nodes, wall time and cost of an ingest."""
from __future__ import annotations

import numpy as np

from ..errors import CommandError
from ..launch.options import int_in
from .args import count_type


def cmd_estimate(args):
    from ..ops.sizing import format_estimates
    l2_chunks, voxels = args.l2_chunks, args.voxels or 0
    if args.config:
        from ..launch.config import load_config
        from ..launch.plan import layout_for
        settings = load_config(args.config)
        geometry = None
        if args.from_segmentation:  # the grid is SUPERVOXELS', WATERSHED is an output
            from ..inputs.volumes import check_segmentation_volumes
            geometry = check_segmentation_volumes(settings, settings.data_source.CV_MIP,
                                                  settings.graph_config.CHUNK_SIZE).geometry
        layout = layout_for(settings.graph_config, settings.data_source, geometry)[0]
        l2_chunks = layout.chunk_count(2)
        config_voxels = float(np.prod(np.asarray(layout.voxel_counts, np.float64)))
        if not voxels and (geometry is not None or args.l2cache):
            voxels = config_voxels
        print(f"{args.config}: {layout.layer_count} layers, {'x'.join(map(str, layout.n_chunks))} layer-2 chunks, "
              f"{config_voxels:.3g} voxels")
        if args.svs > config_voxels:
            raise CommandError(f"--svs {args.svs:.3g}: more supervoxels than the {config_voxels:.3g} voxels of "
                               f"{args.config}; check --svs, or the config's volume")
    if not l2_chunks:
        raise CommandError("estimate needs --l2_chunks N or --config config.yml")
    for flag, wanted in (("--from_segmentation", args.from_segmentation), ("--l2cache", args.l2cache)):
        if wanted and not voxels:
            raise CommandError(f"estimate {flag} needs --voxels N or --config config.yml")
    if voxels and not (args.from_segmentation or args.l2cache):
        raise CommandError("estimate --voxels: the voxels count only with --from_segmentation or --l2cache")
    if voxels and args.svs > voxels:
        raise CommandError(f"--svs {args.svs:.3g}: more supervoxels than --voxels {voxels:.3g}")
    for note in _estimate_notes(args.svs, l2_chunks, voxels):
        print(f"note: {note}")
    print(format_estimates(args.svs, l2_chunks, tuple(args.nodes), voxels if args.from_segmentation else 0,
                           voxels if args.l2cache else 0))
    return 0


def _estimate_notes(svs: float, l2_chunks: float, voxels: float) -> list[str]:
    """Inputs that are possible but unlike any segmented brain: said, not refused."""
    notes = []
    if voxels and voxels / svs < 100:
        notes.append(f"{voxels / svs:.3g} voxels per supervoxel (segmentations have thousands); the voxel figures "
                     "below are for that volume")
    if svs / l2_chunks > 1e7:
        notes.append(f"{svs / l2_chunks:.3g} supervoxels per layer-2 chunk (typical: 1e3 to 1e5); check --l2_chunks")
    if svs / l2_chunks < 1:
        notes.append(f"{svs / l2_chunks:.3g} supervoxels per layer-2 chunk: most chunks would be empty")
    return notes


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="estimate workers, Bigtable nodes, wall time and cost of an ingest")
    p.add_argument("--svs", type=count_type(1e13), required=True, help="number of supervoxels, e.g. 1e9")
    p.add_argument("--l2_chunks", type=count_type(1e10), help="number of layer-2 chunks, e.g. 1e5")
    p.add_argument("--config", help="or: read the chunk grid from this config.yml and its watershed info "
                   "(with --from_segmentation: SUPERVOXELS' info, and the voxels from it)")
    p.add_argument("--from_segmentation", action="store_true",
                   help="the ingest reads segmentation volumes: their voxels' work, shuffle and WATERSHED are added")
    p.add_argument("--voxels", type=count_type(1e16), help="with --from_segmentation or --l2cache and no --config: "
                   "voxels of the volumes, e.g. 1e12")
    p.add_argument("--l2cache", action="store_true",
                   help="the ingest also writes the L2 cache (--l2cache_table): its CPU, rows and storage are added")
    p.add_argument("--nodes", type=int_in(1), nargs="+", default=[10, 20, 40], help="Bigtable node counts to compare")
    p.set_defaults(func=cmd_estimate)
