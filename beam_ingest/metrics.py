"""The namespace of the ingest's Beam counters (written by the stages, read by the report)."""

NAMESPACE = "ingest"


def count(name: str, value: int = 1) -> None:
    """Add `value` to the ingest's counter `name` (Beam metrics; the report reads them)."""
    from apache_beam.metrics import Metrics
    Metrics.counter(NAMESPACE, name).inc(int(value))
