"""The ingest's pipeline options: a strict parse of the whole command line, and every rule
between options, in one place (`parse` -> `IngestOptions.validate`).

Beam drops arguments it does not know with a warning; for an ingest a mistyped option
(`--skip_write`) must stop the run before anything is created. `parse_argv` parses the
command line with every registered Beam option class (so every Beam and runner option
stays accepted) and turns unknown options and bad values into one `ConfigError`. Rules that
need the graph (the layers `--start_layer` may name) are `IngestOptions.validate_for`.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  TestOptions, _BeamArgumentParser)

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
    """The ingest's own options; `validate` holds every rule between them and Beam's."""

    def validate(self, argv) -> None:
        """Every rule of the command line that needs no config: required options, their
        combinations, the runner and Dataflow's options. Also settles what Beam would read
        otherwise (the in-process runner by default, `--dry_run=false` as false). Raises
        ConfigError naming the option."""
        if not self.config:
            raise ConfigError("--config: required (path or URL of config.yml)")
        if not self.graph_id:
            raise ConfigError("--graph_id: required (the table id of the graph)")
        check_graph_id(self.graph_id, self.test)
        check_l2cache_options(self)
        if self.checkpoint_dir:
            from ..locations import check_output
            check_output("--checkpoint_dir", self.checkpoint_dir)
        if self.raw and self.from_segmentation:
            raise ConfigError("--raw and --from_segmentation: choose one input")
        if self.fill_missing and not self.from_segmentation:
            raise ConfigError("--fill_missing: applies to --from_segmentation only")
        if self.ocdbt and self.pcg_version != 3:
            raise ConfigError("--ocdbt: needs --pcg_version 3 (supervoxel splitting is a PyChunkedGraph 3.x feature)")
        if self.sv_split_threshold is not None and not self.ocdbt:
            raise ConfigError("--sv_split_threshold: applies to --ocdbt only")
        if self.ocdbt and self.start_layer > 2:
            raise ConfigError("--start_layer: a restart above layer 2 cannot write the OCDBT copy (it is written by "
                              "the layer-2 stage); continue with --if_exists=continue instead, which rebuilds layer 2")
        if self.l2cache_table and self.start_layer > 2:
            raise ConfigError("--start_layer: a restart above layer 2 cannot write the L2 cache (it is written by the "
                              "layer-2 stage); continue with --if_exists=continue instead, which rebuilds layer 2")
        self._validate_runner(argv)

    def _validate_runner(self, argv) -> None:
        from .runners import check_runner, is_dask, runner_name
        standard = self.view_as(StandardOptions)
        if standard.runner is None:
            standard.runner = "FnApiRunner"  # in process; no attempt to download the Prism runner
        self.is_dry_run()  # a bad --dry_run value stops here
        check_runner(self)
        dask_only = [a.split("=", 1)[0] for a in argv if a.startswith("--dask_")]
        if dask_only and not is_dask(self):
            raise ConfigError(f"{dask_only[0]}: applies to --runner=DaskRunner only (this run's runner is "
                              f"{runner_name(self)}); add --runner=DaskRunner or drop it")
        if self.is_dataflow():
            check_dataflow_options(self)
            self.view_as(SetupOptions).save_main_session = False  # DoFns live in the package

    def validate_for(self, layer_count: int) -> None:
        """The rules that need the graph's layer count (`--start_layer`)."""
        if self.start_layer == 2:
            return
        if not self.checkpoint_dir:
            raise ConfigError("--start_layer: needs --checkpoint_dir (the checkpoint of the earlier run)")
        if not 3 <= self.start_layer <= layer_count:
            raise ConfigError(f"--start_layer: must be in 3..{layer_count} for this graph, got {self.start_layer}")
        if self.if_exists != "continue" and not self.skip_writes:
            raise ConfigError("--start_layer: continues an earlier run's table; pass --if_exists=continue")
        if self.test:
            raise ConfigError("--start_layer: cannot be combined with --test")

    def table_id(self) -> str:
        """The graph's table: `<graph_id>-test` with --test."""
        return self.graph_id + TEST_SUFFIX if self.test else self.graph_id

    def cache_table_id(self) -> str | None:
        if not self.l2cache_table:
            return None
        return self.l2cache_table + TEST_SUFFIX if self.test else self.l2cache_table

    def is_dataflow(self) -> bool:
        runner = self.view_as(StandardOptions).runner or ""
        return "dataflow" in str(runner).lower()

    def is_dry_run(self) -> bool:
        """`--dry_run`: Beam reads any value as "dry run" (it is a string option), so only
        true/false spellings are accepted, and false means false."""
        test = self.view_as(TestOptions)
        value = test.dry_run
        if value in (None, False):
            return False
        lowered = str(value).strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            test.dry_run = False  # Beam would take the string "false" as a dry run
            return False
        raise ConfigError(f"--dry_run: expected true or false, got {value!r}")

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
        add_flag(
            parser, "--ocdbt", False,
            help="With --pcg_version 3: a table in which PyChunkedGraph 3.x can split supervoxels. The meta says "
                 "so, and the run copies WATERSHED's base scale, chunk by chunk, into the OCDBT volume "
                 "<WATERSHED>/ocdbt/base that the server edits (" + shipped("docs/pychunkedgraph.md") + ").")
        parser.add_argument(
            "--sv_split_threshold", type=int_in(1), default=None,
            help="With --ocdbt: the distance threshold the server matches split edges with (the meta's "
                 "sv_split_threshold; default 10, PyChunkedGraph's).")
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


def check_dataflow_options(options: PipelineOptions):
    """Clear errors for what a Dataflow job needs, before Beam's own checks."""
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from .credentials import require_google_credentials
    gcp = options.view_as(GoogleCloudOptions)
    for name in ("project", "region", "temp_location"):
        if not getattr(gcp, name):
            raise ConfigError(f"--{name}: required with --runner=DataflowRunner")
    validator = PipelineOptionsValidator(options, None)
    for name in ("temp_location", "staging_location"):
        value = getattr(gcp, name)
        if value and not value.startswith("gs://"):
            raise ConfigError(f"--{name}: must be a gs:// path for Dataflow, got {value!r}")
        # Beam, given no valid gs:// path, creates a default bucket (network, minutes offline)
        errors = validator.validate_gcs_path(gcp, name) if value else []
        if errors:
            raise ConfigError(f"--{name}: {value!r} is not a valid gs://bucket/path ({errors[0]})")
    if not options.view_as(IngestOptions).is_dry_run():  # a dry run stages nothing
        require_google_credentials("--temp_location", gcp.temp_location)
    setup = options.view_as(SetupOptions)
    if setup.setup_file and not os.path.exists(setup.setup_file):
        raise ConfigError(f"--setup_file: {setup.setup_file} does not exist")


def parse(argv) -> IngestOptions:
    """The command line as the ingest's options, every rule checked (`IngestOptions.validate`);
    raises ConfigError naming the first bad option, before anything is created."""
    argv = list(argv)
    parse_argv(argv)  # unknown options and bad values
    options = PipelineOptions(argv).view_as(IngestOptions)
    options.validate(argv)
    return options
