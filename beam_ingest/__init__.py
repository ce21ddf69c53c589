"""PyChunkedGraph ingest as one Apache Beam batch pipeline."""
