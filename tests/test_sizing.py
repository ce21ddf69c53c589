import numpy as np

from beam_ingest.cli import main
from beam_ingest.sizing import Rates, estimate


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
    from beam_ingest.synthetic_segmentation import SegmentationSpec, generate_segmentation
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=3, chunks=(3, 2, 2)))
    assert main(["estimate", "--svs", "1e4", "--config", info["config"], "--from_segmentation"]) == 0
    out = capsys.readouterr().out
    from cloudvolume import CloudVolume
    size = float(np.prod(CloudVolume(info["supervoxels"]).info["scales"][0]["size"]))
    voxels = float(out.split(" from ")[1].split(" voxels")[0])
    assert abs(voxels - size) <= 0.005 * size and "3x2x2 layer-2 chunks" in out and "of which the voxels" in out
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--from_segmentation"]) == 2
    assert "needs --voxels N or --config" in capsys.readouterr().err
    assert main(["estimate", "--svs", "1e4", "--l2_chunks", "12", "--voxels", "1e6"]) == 2
    assert "only with --from_segmentation" in capsys.readouterr().err
