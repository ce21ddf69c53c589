"""Packaging for Dataflow workers (`--setup_file ./setup.py`) and local installs."""
import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "requirements.txt")) as fh:
    REQUIREMENTS = [line.strip() for line in fh if line.strip() and not line.startswith("#")]

setuptools.setup(
    name="beam-chunkedgraph-ingest",
    version="0.1.0",
    description="PyChunkedGraph ingest as one Apache Beam batch pipeline",
    packages=setuptools.find_packages(include=["beam_ingest", "beam_ingest.*"]),
    python_requires=">=3.10",
    install_requires=REQUIREMENTS,
)
