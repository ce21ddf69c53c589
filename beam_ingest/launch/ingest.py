"""The ingest: build a PyChunkedGraph table with Apache Beam (`run(argv)`, `main(argv)`).

    python pipeline.py --config config.yml --graph_id my_graph
    beam-ingest ingest --config config.yml --graph_id my_graph      (installed package)

runs on the local runner (in process; add `--direct_running_mode=multi_processing
--direct_num_workers=N` for worker processes) and writes to the Bigtable instance named by
the config or the BIGTABLE_* environment variables (BIGTABLE_EMULATOR_HOST for an emulator).
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import time

from beam_ingest.errors import ConfigError, IngestFailed, UserError, user_error_in
from beam_ingest.launch.context import prepare
from beam_ingest.launch.job import execute
from beam_ingest.launch.options import IngestOptions, parse, parse_argv
from beam_ingest.ops.report import format_summary

# The objects of the imports above (~230k) live as long as the process: moved out of the
# collector's reach, full collections (cloud-volume's import alone runs two) no longer walk
# them, 0.2 s of a run's CPU.
gc.freeze()

log = logging.getLogger(__name__)


def run(argv=None):
    """Run the ingest in four steps: parse and validate the options, prepare the run (plan,
    tables, claim), build and execute its job, check the completion mark. Returns
    `(pipeline result, counters dict, plan)`; counters are empty when the job was not waited
    for (a Dataflow template launch)."""
    options = parse(sys.argv[1:] if argv is None else argv)
    with prepare(options) as ctx:  # the launcher's claim on the table is released on every path
        if ctx.complete is not None:
            log.info("table %s is complete already (proven by an earlier run of this graph): nothing to do",
                     ctx.plan.graph_id)
            return None, {"already_complete": 1, **ctx.complete}, ctx.plan
        return execute(ctx)


def configure_logging(verbose: bool, dask: bool = False) -> None:
    """Our progress lines at INFO; Beam's own messages (and the long traceback it logs when a
    step fails) only with --verbose, where everything goes to the log at DEBUG. On Dask the
    same for distributed's (a lost scheduler's traceback): our `error:` line says what failed."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    if dask:
        try:
            import distributed  # noqa: F401 - it sets its loggers' levels when imported: first, then ours
        except ImportError:
            return  # the runner check says how to install it
        names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
        for name in names + ["distributed", "tornado", "asyncio"]:  # distributed sets some children's levels
            logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def print_help() -> None:
    parser = argparse.ArgumentParser(
        prog="python pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option (--runner, --project, ...) is accepted too; anything else "
               "is an error.")
    IngestOptions._add_argparse_args(parser)
    parser.print_help()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    try:
        verbose = parse_argv(argv).verbose
    except ConfigError:
        verbose = False  # run() reports it
    runners = ([a.split("=", 1)[1] for a in argv if a.startswith("--runner=")]
               + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--runner"])
    configure_logging(verbose, dask=any(r.rsplit(".", 1)[-1].lower() in ("dask", "daskrunner") for r in runners))
    start = time.time()
    try:
        result, counters, plan = run(argv)
    except UserError as exc:
        log.debug("stopped", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except IngestFailed as exc:
        log.debug("the pipeline failed", exc_info=True)
        mistake = user_error_in(exc.__cause__)
        first = str(mistake) if mistake else _last_line(exc.__cause__)
        print(f"error: {first}\n{str(exc).splitlines()[-1]}", file=sys.stderr)
        return mistake.exit_status if mistake else exc.exit_status
    except Exception as exc:  # a failure we did not foresee: still one line, details with --verbose
        log.debug("unexpected failure", exc_info=True)
        print(f"error: {type(exc).__name__}: {_last_line(exc)} (rerun with --verbose for details)", file=sys.stderr)
        return 1
    if counters.get("dry_run"):
        print(f"dry run of graph {plan.graph_id} ({plan.layout.layer_count} layers, {plan.layout.chunk_count(2)} "
              f"layer-2 chunks): options, config and inputs checked, a job of {counters['transforms']} transforms "
              "built; nothing was created, written or run")
    elif counters.get("already_complete"):
        print(f"table {plan.graph_id} is complete already: an earlier run of the same graph proved every chunk "
              f"written ({counters.get('chunks', '?')} chunks, {counters.get('rows', '?')} rows); nothing to do")
    elif counters:
        print(format_summary(counters, plan.layout.layer_count, time.time() - start))
    else:
        job = getattr(result, "job_id", None)
        print(f"submitted graph {plan.graph_id} ({plan.layout.layer_count} layers)"
              + (f" as Dataflow job {job()}" if callable(job) else ""))
    return 0


def _last_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
