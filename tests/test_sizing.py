import re

import numpy as np

from beam_ingest.cli import main
from beam_ingest.ops.sizing import Rates, estimate


def test_estimate_follows_bigtable_and_the_measured_rates():
    small, large = estimate(1e9, 1e5, 10), estimate(1e9, 1e5, 40)
    rows = 1e9 * Rates().rows_per_sv
    assert small.rows == rows
    # Bigtable-bound: four times the nodes, about a quarter of the write time (plus start-up)
    assert abs(small.hours - (rows / (10 * 14_000) + 600) / 3600) < 0.05
    assert large.hours < small.hours / 3
    assert large.workers >= small.workers
    assert 0 < small.cost_usd < 1000 and small.details["stored_gb"] > 100


def test_estimate_command(capsys):
    assert main(["estimate", "--svs", "1e9", "--l2_chunks", "1e5", "--nodes", "10", "20"]) == 0
    out = capsys.readouterr().out
    assert "2.15e+09 rows" in out and out.count(" h ") >= 2


def test_segmentation_input_adds_its_voxels():
    plain, seg = estimate(1e9, 1e5, 10), estimate(1e9, 1e5, 10, voxels=1e12)
    rates = Rates()
    extra_hours = 1e12 / rates.segmentation_voxels_per_cpu_s * rates.dataflow_overhead / 3600
    assert abs(seg.details["cpu_hours"] - plain.details["cpu_hours"] - extra_hours) < 1e-6
    assert seg.details["shuffle_gb"] - plain.details["shuffle_gb"] == 1e12 * rates.part_bytes_per_voxel / 1e9
    assert seg.details["watershed_gb"] == 1e12 * rates.watershed_bytes_per_voxel / 1e9
    assert seg.workers > plain.workers and seg.cost_usd > plain.cost_usd


def test_estimate_command_reads_a_segmentation_config(tmp_path, capsys):
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=3, chunks=(3, 2, 2)))
    assert main(["estimate", "--svs", "100", "--config", info["config"], "--from_segmentation"]) == 0
    out = capsys.readouterr().out
    from cloudvolume import CloudVolume
    size = float(np.prod(CloudVolume(info["supervoxels"]).info["scales"][0]["size"]))
    voxels = float(out.split(" from ")[1].split(" voxels")[0])
    assert abs(voxels - size) <= 0.005 * size and "3x2x2 layer-2 chunks" in out and "of which the voxels" in out
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--from_segmentation"]) == 2
    assert "needs --voxels N or --config" in capsys.readouterr().err
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--voxels", "1e6"]) == 2
    assert "only with --from_segmentation" in capsys.readouterr().err


def test_estimate_refuses_more_svs_than_voxels_and_notes_odd_inputs(tmp_path, capsys):
    """The issue's case: 1e9 SVs against a config of a few thousand voxels is an error naming
    both figures, not a ~75 GB shuffle; unusual but possible inputs get a note line."""
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=3, chunks=(3, 2, 2)))
    assert main(["estimate", "--svs", "1e9", "--config", info["config"], "--from_segmentation"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: --svs 1e\+09: more supervoxels than the [\d.]+e\+03 voxels of {re.escape(info['config'])}; "
                        r"check --svs, or the config's volume", err), err
    assert main(["estimate", "--svs", "1e9", "--l2_chunks", "1e5", "--from_segmentation", "--voxels", "1e10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: 10 voxels per supervoxel (segmentations have thousands)")
    assert main(["estimate", "--svs", "1e9", "--l2_chunks", "10"]) == 0
    assert capsys.readouterr().out.startswith("note: 1e+08 supervoxels per layer-2 chunk (typical: 1e3 to 1e5)")
    assert main(["estimate", "--svs", "1e9", "--l2_chunks", "1e5"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_the_l2_cache_adds_its_voxels_rows_and_storage():
    rates = Rates()
    seg, seg_cache = estimate(1e9, 1e5, 10, voxels=1e12), estimate(1e9, 1e5, 10, voxels=1e12, l2cache_voxels=1e12)
    cache_rows = 1e9 * rates.l2_nodes_per_sv
    extra_hours = (1e12 / rates.l2cache_voxels_per_cpu_s + cache_rows / rates.write_rows_per_cpu_s) \
        * rates.dataflow_overhead / 3600
    assert abs(seg_cache.details["l2cache_cpu_hours"] - extra_hours) < 1e-6
    assert abs(seg_cache.details["cpu_hours"] - seg.details["cpu_hours"] - extra_hours) < 1e-6
    assert seg_cache.details["l2cache_rows"] == cache_rows and seg_cache.rows == seg.rows  # the graph's rows
    assert seg_cache.details["l2cache_gb"] == cache_rows * rates.l2cache_bytes_per_row / 1e9
    assert seg_cache.hours > seg.hours and seg_cache.cost_usd > seg.cost_usd  # more rows through Bigtable
    # from precomputed files the cache reads WATERSHED too
    files_cache = estimate(1e9, 1e5, 10, l2cache_voxels=1e12)
    read_hours = 1e12 / rates.watershed_read_voxels_per_cpu_s * rates.dataflow_overhead / 3600
    assert abs(files_cache.details["l2cache_cpu_hours"] - extra_hours - read_hours) < 1e-6
    assert estimate(1e9, 1e5, 10).details["l2cache_cpu_hours"] == 0


def test_estimate_command_with_the_l2_cache(tmp_path, capsys):
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    files = generate(str(tmp_path / "files"), SyntheticSpec(chunks=(2, 2, 2), svs_per_chunk=10))
    assert main(["estimate", "--svs", "1e4", "--config", files["config"], "--l2cache"]) == 0
    out = capsys.readouterr().out
    assert "with the L2 cache of" in out and "of which the L2 cache" in out and "of which the voxels" not in out
    seg = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=3, chunks=(2, 2, 1)))
    assert main(["estimate", "--svs", "100", "--config", seg["config"], "--from_segmentation", "--l2cache"]) == 0
    out = capsys.readouterr().out
    assert "of which the voxels" in out and "of which the L2 cache" in out
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--l2cache"]) == 2
    assert "estimate --l2cache needs --voxels N or --config" in capsys.readouterr().err
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--l2cache", "--voxels", "1e6"]) == 0
    assert "with the L2 cache of 1e+06 voxels" in capsys.readouterr().out
