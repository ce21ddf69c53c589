"""Packaging for Dataflow workers (`--setup_file ./setup.py`) and local installs."""
import glob
import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "beam_ingest", "__init__.py")) as fh:
    VERSION = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)


def requirements(name: str) -> list:
    with open(os.path.join(HERE, name)) as fh:
        return [line.strip() for line in fh if line.strip() and not line.startswith(("#", "-"))]


REQUIREMENTS = requirements("requirements.txt")

setuptools.setup(
    name="beam-chunkedgraph-ingest",
    version=VERSION,
    description="PyChunkedGraph ingest as one Apache Beam batch pipeline",
    packages=setuptools.find_packages(include=["beam_ingest", "beam_ingest.*"]),
    python_requires=">=3.10",
    install_requires=REQUIREMENTS,
    extras_require={"test": ["kvdbclient==0.6.0"], "dask": requirements("requirements-dask.txt")},
    entry_points={"console_scripts": ["beam-ingest = beam_ingest.cli:main"]},
    # what the commands' messages point to, installed under <prefix>/share/beam-chunkedgraph-ingest
    # (beam_ingest/shipped.py finds them there)
    data_files=[(f"share/beam-chunkedgraph-ingest/{folder}", sorted(glob.glob(f"{folder}/*.{ext}")))
                for folder, ext in (("docs", "md"), ("examples", "py"))],
)
