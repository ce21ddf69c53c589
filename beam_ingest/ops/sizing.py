"""Back-of-the-envelope sizing of a Dataflow + Bigtable ingest from measured rates.

The defaults come from `benchmarks/bench_ingest.py` on the ~1e6-SV synthetic dataset
(see README, Speed), from `benchmarks/bench_segmentation.py` for segmentation input, and
from Bigtable's published ~14,000 rows/s per node for writes of small rows. Prices are list
prices that change: pass your own.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Rates:
    build_svs_per_cpu_s: float = 265_000      # (a) build, SVs per CPU-second
    write_rows_per_cpu_s: float = 610_000     # encoding + sending, rows per client CPU-second
    rows_per_sv: float = 2.15                 # rows written per SV (SV rows + node rows + counters)
    bytes_per_row: float = 70.0               # bytes written per row
    bigtable_rows_per_node_s: float = 14_000  # Bigtable's published write rate per node
    dataflow_overhead: float = 3.0            # Dataflow/GCS/shuffle overhead on our measured CPU time
    # --from_segmentation (benchmarks/bench_segmentation.py: its default volume of 305k supervoxels in
    # 67M voxels, 1M-voxel layer-2 chunks, beyond a run's fixed cost; with half as many supervoxels
    # the voxels go 1.1-1.3x faster, the parts are 0.45 and WATERSHED 0.52 bytes a voxel)
    segmentation_voxels_per_cpu_s: float = 9.5e6  # read, relabel, contacts, WATERSHED/EDGES/COMPONENTS written
    part_bytes_per_voxel: float = 0.7         # chunk parts shuffled between its two steps (zstd)
    watershed_bytes_per_voxel: float = 0.6    # WATERSHED written (uint64, gzip level 1)
    # --l2cache_table (bench_segmentation.py --l2cache: what the cache adds to a --from_segmentation run,
    # per voxel of the chunk boxes; precomputed input also reads WATERSHED, ~10 ms per 1M-voxel chunk)
    l2cache_voxels_per_cpu_s: float = 12.9e6
    watershed_read_voxels_per_cpu_s: float = 1.0e8
    l2_nodes_per_sv: float = 0.11             # cache rows per SV (that volume: 33,968 layer-2 nodes, 304,879 SVs)
    l2cache_bytes_per_row: float = 150.0      # key, 8 cells of 60 bytes in all, their qualifiers


@dataclasses.dataclass(frozen=True)
class Prices:
    bigtable_node_hour: float = 0.65          # USD, SSD node
    bigtable_storage_gb_month: float = 0.17   # USD, SSD
    dataflow_vcpu_hour: float = 0.056         # USD, batch
    dataflow_gb_hour: float = 0.003557        # USD, worker memory
    dataflow_shuffle_gb: float = 0.011        # USD, batch shuffle data processed
    gcs_storage_gb_month: float = 0.020       # USD, standard storage (WATERSHED)
    worker_vcpus: int = 4
    worker_gb: float = 15.0


@dataclasses.dataclass(frozen=True)
class Estimate:
    bigtable_nodes: int
    workers: int
    rows: float
    hours: float
    cost_usd: float
    details: dict


def estimate(svs: float, l2_chunks: float, bigtable_nodes: int, rates: Rates = Rates(),
             prices: Prices = Prices(), voxels: float = 0, l2cache_voxels: float = 0) -> Estimate:
    """Wall time and cost with `bigtable_nodes` nodes, and the workers that keep them busy.
    `voxels`: of the segmentation volumes, with `--from_segmentation` (0: inputs are files).
    `l2cache_voxels`: of the watershed, with `--l2cache_table` (0: no cache); read from
    WATERSHED unless the run reads segmentation volumes."""
    rows = svs * rates.rows_per_sv
    voxel_cpu_s = voxels / rates.segmentation_voxels_per_cpu_s * rates.dataflow_overhead
    cache_rows = svs * rates.l2_nodes_per_sv if l2cache_voxels else 0.0
    cache_read_s = 0 if voxels else l2cache_voxels / rates.watershed_read_voxels_per_cpu_s
    cache_cpu_s = (l2cache_voxels / rates.l2cache_voxels_per_cpu_s + cache_read_s
                   + cache_rows / rates.write_rows_per_cpu_s) * rates.dataflow_overhead
    cpu_s = (svs / rates.build_svs_per_cpu_s + rows / rates.write_rows_per_cpu_s) * rates.dataflow_overhead \
        + voxel_cpu_s + cache_cpu_s
    bigtable_rows_s = bigtable_nodes * rates.bigtable_rows_per_node_s
    write_s = (rows + cache_rows) / bigtable_rows_s
    # enough vCPUs that the build keeps pace with Bigtable, never more than one per 10 chunks
    vcpus_needed = cpu_s / write_s
    workers = max(1, min(math.ceil(vcpus_needed / prices.worker_vcpus),
                         math.ceil(l2_chunks / 10 / prices.worker_vcpus)))
    compute_s = cpu_s / (workers * prices.worker_vcpus)
    wall_s = max(write_s, compute_s) + 600  # + ~10 min of job start-up and the small upper layers
    hours = wall_s / 3600
    stored_gb = rows * rates.bytes_per_row / 1e9
    cache_gb = cache_rows * rates.l2cache_bytes_per_row / 1e9
    # summaries and root-bound components are a fraction of the rows; then the segmentation parts
    shuffle_gb = stored_gb * 0.5 + voxels * rates.part_bytes_per_voxel / 1e9
    watershed_gb = voxels * rates.watershed_bytes_per_voxel / 1e9
    cost = (bigtable_nodes * hours * prices.bigtable_node_hour
            + workers * hours * (prices.worker_vcpus * prices.dataflow_vcpu_hour
                                 + prices.worker_gb * prices.dataflow_gb_hour)
            + shuffle_gb * prices.dataflow_shuffle_gb)
    return Estimate(bigtable_nodes, workers, rows, hours, cost, {
        "cpu_hours": cpu_s / 3600, "bigtable_rows_per_s": bigtable_rows_s, "stored_gb": stored_gb,
        "storage_usd_per_month": stored_gb * prices.bigtable_storage_gb_month, "voxel_cpu_hours": voxel_cpu_s / 3600,
        "shuffle_gb": shuffle_gb, "watershed_gb": watershed_gb,
        "watershed_usd_per_month": watershed_gb * prices.gcs_storage_gb_month,
        "l2cache_cpu_hours": cache_cpu_s / 3600, "l2cache_rows": cache_rows, "l2cache_gb": cache_gb,
        "l2cache_usd_per_month": cache_gb * prices.bigtable_storage_gb_month})


def format_estimates(svs: float, l2_chunks: float, node_options=(10, 20, 40), voxels: float = 0,
                     l2cache_voxels: float = 0) -> str:
    source = f" from {voxels:.3g} voxels of segmentation" if voxels else ""
    cache = f", with the L2 cache of {l2cache_voxels:.3g} voxels" if l2cache_voxels else ""
    lines = [f"{svs:.3g} SVs in {l2_chunks:.3g} layer-2 chunks{source}{cache} -> "
             f"~{svs * Rates().rows_per_sv:.3g} rows",
             f"{'Bigtable nodes':>15}  {'workers (4 vCPU)':>16}  {'wall time':>10}  {'ingest cost':>12}",
             ]
    for nodes in node_options:
        e = estimate(svs, l2_chunks, nodes, voxels=voxels, l2cache_voxels=l2cache_voxels)
        lines.append(f"{nodes:>15}  {e.workers:>16}  {e.hours:>8.1f} h  {e.cost_usd:>10,.0f} $")
    e = estimate(svs, l2_chunks, node_options[0], voxels=voxels, l2cache_voxels=l2cache_voxels)
    lines.append(f"build + write CPU: ~{e.details['cpu_hours']:.1f} vCPU-hours (with a {Rates().dataflow_overhead:g}x "
                 f"Dataflow overhead); table size ~{e.details['stored_gb']:.0f} GB "
                 f"(~{e.details['storage_usd_per_month']:.0f} $/month on SSD)")
    if voxels:
        lines.append(f"of which the voxels: ~{e.details['voxel_cpu_hours']:.1f} vCPU-hours; ~{e.details['shuffle_gb']:.0f} "
                     f"GB shuffled; WATERSHED ~{e.details['watershed_gb']:.0f} GB "
                     f"(~{e.details['watershed_usd_per_month']:.0f} $/month on GCS)")
    if l2cache_voxels:
        lines.append(f"of which the L2 cache: ~{e.details['l2cache_cpu_hours']:.1f} vCPU-hours; "
                     f"~{e.details['l2cache_rows']:.3g} rows ({Rates().l2_nodes_per_sv:g} per SV, as in the benchmark), "
                     f"~{e.details['l2cache_gb']:.0f} GB (~{e.details['l2cache_usd_per_month']:.0f} $/month on SSD)")
    return "\n".join(lines)
