"""The ingest's pipeline options, and a strict parse of the whole command line.

Beam drops arguments it does not know with a warning; for an ingest a mistyped option
(`--skip_write`) must stop the run before anything is created. `parse_argv` parses the
command line with every registered Beam option class (so every Beam and runner option
stays accepted) and turns unknown options and bad values into one `ConfigError`.
"""
from __future__ import annotations

import argparse
import difflib
import re

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from ..errors import ConfigError
from ..shipped import shipped

# Bigtable's rule for table ids (the graph id is the table id).
TABLE_ID_PATTERN = re.compile(r"[_a-zA-Z0-9][-_.a-zA-Z0-9]*")
TABLE_ID_MAX = 50
TEST_SUFFIX = "-test"
# Cell timestamps are int64 microseconds, and must read back as a datetime (year <= 9999).
MAX_INGEST_MS = 253_402_300_799_999
# MutateRows takes at most 100,000 mutations; a row carries up to ~10 (parents, children,
# one cross-edge cell per layer).
MAX_BATCH_ROWS = 10_000
MAX_INFLIGHT = 64
MAX_TABLE_SPLITS = 10_000


def flag(value) -> bool:
    """Boolean options accept `--flag`, `--flag=true` and `--flag=false` (Flex templates pass values)."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]."""
    def parse(text):
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"in {low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def non_empty(text):
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return str(text)


def check_graph_id(graph_id: str, test: bool = False, option: str = "--graph_id") -> None:
    """Bigtable's table-id rule, for the table this run writes (`<id>-test` with --test)."""
    if not TABLE_ID_PATTERN.fullmatch(graph_id):
        raise ConfigError(f"{option}: {graph_id!r} is not a valid Bigtable table id (letters, digits, "
                          "'_', '-' and '.', not starting with '-' or '.')")
    limit = TABLE_ID_MAX - (len(TEST_SUFFIX) if test else 0)
    if len(graph_id) > limit:
        raise ConfigError(f"{option}: {graph_id!r} has {len(graph_id)} characters; Bigtable table ids "
                          f"have at most {TABLE_ID_MAX}" + (f" (so {limit} with --test's '{TEST_SUFFIX}')"
                                                             if test else ""))


def check_l2cache_options(opts) -> None:
    """`--l2cache_table`: a valid table id of its own; `--l2cache_cv_path` only with it."""
    if opts.l2cache_table is None:
        if opts.l2cache_cv_path:
            raise ConfigError("--l2cache_cv_path: only with --l2cache_table (the cache whose meta names it)")
        if opts.l2cache_accept_mismatch:
            raise ConfigError("--l2cache_accept_mismatch: only with --l2cache_table")
        return
    check_graph_id(opts.l2cache_table, opts.test, option="--l2cache_table")
    if opts.l2cache_table == opts.graph_id:
        raise ConfigError(f"--l2cache_table: {opts.l2cache_table!r} is the graph's own table; the cache needs a "
                          "table of its own (e.g. l2cache_<graph id>_v1)")


def add_flag(parser, name: str, default, help: str) -> None:
    """A true/false option: `--name`, `--name=true` or `--name=false`."""
    parser.add_argument(name, type=flag, nargs="?", const=True, default=default, help=help)


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--config", type=non_empty, help="Path or URL of the ingest config.yml (required).")
        parser.add_argument("--graph_id", help="Id of the graph = the Bigtable table id (required; letters, "
                                               "digits, '_', '-', '.', at most 50 characters).")
        parser.add_argument(
            "--if_exists", default="fail", choices=("fail", "continue", "recreate"),
            help="What to do when the table exists: fail (default), continue an interrupted "
                 "ingest of the same graph (checked against its meta row; reuses its ingest "
                 "time so the result equals a clean run), or recreate (delete, start over).")
        parser.add_argument(
            "--ingest_timestamp", type=int_in(0, MAX_INGEST_MS), default=None,
            help="Timestamp of every cell, in ms since the epoch (default: now). Two runs with "
                 "the same value write identical cells.")
        add_flag(
            parser, "--skip_writes", False,
            help="Build the whole graph but drop the rows instead of writing them (no table is "
                 "touched); for benchmarks and dry checks of input.")
        parser.add_argument(
            "--write_batch_rows", type=int_in(1, MAX_BATCH_ROWS), default=2000,
            help=f"Rows per Bigtable mutate_rows call, 1..{MAX_BATCH_ROWS} (default 2000).")
        parser.add_argument(
            "--max_inflight_writes", type=int_in(1, MAX_INFLIGHT), default=2,
            help=f"MutateRows requests in flight per worker, 1..{MAX_INFLIGHT} (flow control; 1 = "
                 "synchronous writes; default 2).")
        parser.add_argument(
            "--table_splits", type=int_in(0, MAX_TABLE_SPLITS), default=0,
            help="Create the table pre-split into about this many tablets along the expected row-key "
                 "ranges (by layer and chunk slab), so a large ingest writes to many nodes from the start.")
        parser.add_argument(
            "--checkpoint_dir", type=non_empty, default=None,
            help="Save what every chunk hands to its parent (its summary) under this URL (gs://, s3://, "
                 "file:// or a path), so that a failed run can restart at a layer with --start_layer.")
        parser.add_argument(
            "--start_layer", type=int_in(2), default=2,
            help="Start at this layer (3 .. layer count) from the checkpoint of the layer below, writing the "
                 "same cells a full run would; needs --checkpoint_dir and --if_exists=continue.")
        add_flag(
            parser, "--raw", False,
            help="Read the raw agglomeration (ingest_config.AGGLOMERATION: sharded chunked_rg/ and remap/ "
                 "files, DATA_VERSION 2/3/4) instead of EDGES/COMPONENTS, and write each chunk's EDGES and "
                 "COMPONENTS files on the way (unless those paths are unset).")
        add_flag(
            parser, "--from_segmentation", False,
            help="Build from segmentation volumes (ingest_config.SUPERVOXELS, optional OBJECTS and AFFINITIES): "
                 "relabel supervoxels into chunk-encoded ids (written to data_source.WATERSHED), extract contacts "
                 "as edges and write the EDGES/COMPONENTS files on the way (" + shipped("docs/segmentation-input.md") + ").")
        add_flag(
            parser, "--fill_missing", False,
            help="With --from_segmentation: a storage file missing from SUPERVOXELS, OBJECTS or AFFINITIES "
                 "reads as 0 (background; volumes written with delete_black_uploads leave empty regions out). "
                 "Default: a missing file stops the run, naming it.")
        parser.add_argument(
            "--pcg_version", type=int, choices=(2, 3), default=2,
            help="PyChunkedGraph table version to write: 2 (default) or 3 (adds family 4 with every non-root "
                 "node's lifted cross edges, layer-1 chunk counters and version 3.1.7, for PyChunkedGraph 3.x "
                 "servers; " + shipped("docs/table-format.md") + ", version 3).")
        parser.add_argument(
            "--l2cache_table", default=None,
            help="Also write CAVE's L2 cache (per-layer-2-node volume, area, representative point, thickness, "
                 "principal axes) into this Bigtable table, in the same run, from the voxels of each layer-2 "
                 "chunk (" + shipped("docs/l2cache.md") + "). --if_exists covers it too. Default: no cache.")
        parser.add_argument(
            "--l2cache_cv_path", default="",
            help="With --l2cache_table: the segmentation path the cache's meta names (cv_path), e.g. "
                 "graphene://https://<server>/segmentation/table/<graph_id> (default: empty).")
        add_flag(
            parser, "--l2cache_accept_mismatch", False,
            help="With --l2cache_table and precomputed or --raw input: finish even where WATERSHED and the graph "
                 "disagree (layer-2 nodes without a voxel in their chunk get no cache row; supervoxels the graph "
                 "does not know are left out); the summary and the completion mark count both. Default: any "
                 "disagreement fails the run, naming the first chunks.")
        add_flag(
            parser, "--test", False,
            help="A trial run: only the 8 layer-2 chunks at the centre of the dataset (the children of "
                 "the centre layer-3 chunk) and their layer-3 parent, into the table <graph_id>-test; "
                 "prints each chunk's edge counts first.")
        add_flag(
            parser, "--wait", None,
            help="Wait for the job to finish and print the summary (default: yes, except for a Dataflow "
                 "job launched from a Flex template, which must return at once).")
        add_flag(
            parser, "--verbose", False,
            help="Log Beam's own messages and the full traceback of a failure (default: one error line).")
        parser.add_argument("--fail_at_layer", type=int_in(2), default=None,
                            help="(testing) fail at this layer.")


class _StrictParser(_BeamArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def _all_option_classes():
    """The registered PipelineOptions classes, as Beam itself collects them."""
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    return seen.values()


def _mentions_dask(argv) -> bool:
    return any(a.startswith("--dask_") or (a.startswith("--runner") and "dask" in a.lower()) for a in argv)


def register_runner_options(argv) -> None:
    """Beam's Dask options live in its Dask runner's module, which needs dask to import:
    load it when the command line asks for Dask, so its options are known (to this check and
    to Beam's own parse); without dask, a `--dask_*` option is an error saying so."""
    if not _mentions_dask(argv):
        return
    try:
        import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers DaskOptions)
    except (ImportError, AttributeError):
        from .runners import DASK_EXTRA
        option = next((a.split("=", 1)[0] for a in argv if a.startswith("--dask_")), None)
        if option:
            raise ConfigError(f"{option}: a DaskRunner option, and dask is not installed here: {DASK_EXTRA}") from None


def parse_argv(argv) -> argparse.Namespace:
    """Parse the whole command line strictly; raises ConfigError naming the first bad option."""
    argv = list(argv)
    register_runner_options(argv)
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    for cls in _all_option_classes():
        cls._add_argparse_args(parser)
    known, unknown = parser.parse_known_args(argv)
    options = [a for a in unknown if a.startswith("-")]
    if options or unknown:
        arg = (options or unknown)[0]
        if not arg.startswith("-"):
            raise ConfigError(f"{arg!r}: unexpected argument (options are written --name=value)")
        name = arg.split("=", 1)[0]
        known_names = [s for action in parser._actions for s in action.option_strings]
        close = difflib.get_close_matches(name, known_names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{name}: unknown option{hint} (python pipeline.py --help lists them)")
    return known
