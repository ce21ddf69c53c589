"""PyChunkedGraph ingest as one Apache Beam batch pipeline."""

__version__ = "0.2.0"
