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
