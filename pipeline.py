#!/usr/bin/env python
"""Build a PyChunkedGraph table from a segmented volume with Apache Beam.

    python pipeline.py --config config.yml --graph_id my_graph

The entry the README, Dataflow jobs and the Flex template use; the ingest itself lives in
the package (`beam_ingest.launch.ingest`), which an installed package runs as
`beam-ingest ingest ...` or `python -m beam_ingest ingest ...`.
"""
import sys

from beam_ingest.launch.ingest import IngestOptions, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
