"""The namespace of the ingest's Beam counters (written by the stages, read by the report)."""

NAMESPACE = "ingest"
