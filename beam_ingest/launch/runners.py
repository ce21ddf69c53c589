"""The runner a job asks for, proven able to run before the table is created.

Beam finds out that a runner cannot run here (an unknown name, a portable runner without a
job endpoint, a job server jar or binary it cannot fetch offline, a missing extra) only when
the job starts, which for an ingest is after the table was created. Here: the name resolves
to a runner class, the in-process runners' options are in range, and any other runner but
Dataflow (whose dry runs and option checks happen offline) runs a one-element job first.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

from ..errors import ConfigError
from ..shipped import shipped

IN_PROCESS = ("fnapirunner", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner")
TRIAL_TIMEOUT_S = 300.0
# Runners Beam ships outside its list of known names (StandardOptions.KNOWN_RUNNER_NAMES):
# their short name here, the class Beam gets.
EXTRA_RUNNERS = {"daskrunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}
DASK_EXTRA = "pip install 'beam-chunkedgraph-ingest[dask]' (dask and distributed; from a checkout: pip install '.[dask]')"


def runner_name(options) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()


def known_runner_names() -> list[str]:
    names = list(StandardOptions.KNOWN_RUNNER_NAMES)
    return names + [p.rsplit(".", 1)[-1] for p in EXTRA_RUNNERS.values() if p.rsplit(".", 1)[-1] not in names]


def resolve_runner(options) -> None:
    """A short name Beam does not map itself (`DaskRunner`) becomes its class path, so
    every later `Pipeline(options=...)` finds it."""
    name = runner_name(options)
    if isinstance(options.view_as(StandardOptions).runner, str):
        path = EXTRA_RUNNERS.get(name.lower()) or EXTRA_RUNNERS.get(name.lower() + "runner")
        if path:
            options.view_as(StandardOptions).runner = path


def is_dask(options) -> bool:
    return _short(runner_name(options)) == "daskrunner"


def check_runner(options) -> None:
    """Cheap checks of `--runner` and its options (no job is run). ConfigError naming the option."""
    from apache_beam.runners.runner import create_runner
    resolve_runner(options)
    name = runner_name(options)
    short = _short(name)
    if short in ("interactiverunner", "interactive"):
        raise ConfigError("--runner=InteractiveRunner: runs pipelines in a notebook, not an ingest; use the "
                          "in-process default, DataflowRunner, DaskRunner, or a portable runner (FlinkRunner, "
                          "SparkRunner, PortableRunner with --job_endpoint)")
    try:
        runner = create_runner(name)
    except ValueError:
        raise ConfigError(f"--runner={name}: unknown runner (known: {', '.join(known_runner_names())}, or the full "
                          "name of a PipelineRunner class)") from None
    except (ImportError, AttributeError) as exc:  # Beam's Dask module fails with AttributeError without dask
        hint = f"; {DASK_EXTRA}" if short == "daskrunner" else ""
        raise ConfigError(f"--runner={name}: cannot be loaded here ({type(exc).__name__}: {exc}){hint}") from None
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise ConfigError(f"--direct_num_workers: must be >= 0 (0: one per CPU), got {workers}")
    kind = type(runner).__name__
    if kind == "PortableRunner" and not options.view_as(PortableOptions).job_endpoint:
        raise ConfigError("--runner=PortableRunner: needs --job_endpoint=HOST:PORT (a running job server), or "
                          "name the engine: --runner=FlinkRunner or --runner=SparkRunner")


def drops_finish_bundle_outputs(options) -> bool:
    """Beam's DaskRunner (2.77) collects a bundle's outputs before it calls finish_bundle, so
    whatever finish_bundle emits is lost; the sink then acknowledges after every element."""
    return is_dask(options)


def needs_trial(options) -> bool:
    """Runners that are neither in-process nor Dataflow run a one-element job first; so does
    Dask on a cluster of its own (on a local cluster it starts it would only start one more)."""
    short = _short(runner_name(options))
    if short == "daskrunner":
        return bool(dask_address(options))
    return short not in IN_PROCESS and "dataflow" not in short


def dask_connect_s(options) -> float | None:
    """--dask_connection_timeout, in seconds (None: not given)."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    return options.view_as(DaskOptions).timeout


def dask_address(options) -> str | None:
    """The Dask scheduler a DaskRunner job runs on (None: another runner, or a local cluster
    the runner starts; dask need not be installed for other runners)."""
    if not is_dask(options):
        return None
    from apache_beam.runners.dask.dask_runner import DaskOptions
    dask = options.view_as(DaskOptions)
    return dask.address or dask.scheduler_file


def touch(element):
    """The trial job's step: a function of this package, so the job fails unless the workers
    can import it (as the ingest's own steps need)."""
    return element


def final_outputs(result) -> list | None:
    """The elements of the job's last transform, where the runner hands them back (Beam's
    DaskRunner computes the last transform's bag and keeps its futures); None elsewhere.
    Read before `close_runner_client`."""
    futures = getattr(result, "futures", None)
    client = getattr(result, "client", None)
    if futures is None or client is None:
        return None
    return [element for future in futures for element in future.result()]


def close_runner_client(result) -> None:
    """Beam's DaskRunner leaves its dask client open (and a local cluster it started running)."""
    client = getattr(result, "client", None)
    if client is not None:
        try:
            client.close()
        except Exception:  # closing is best effort: the job's outcome is already known
            pass


def trial_run(options, timeout_s: float = TRIAL_TIMEOUT_S) -> None:
    """Run a one-element job on the requested runner; ConfigError naming it if it cannot."""
    import apache_beam as beam

    from ..deadline import with_deadline
    name = runner_name(options)

    def attempt():
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "Trial" >> beam.Create([1]) | "Touch" >> beam.Map(touch)
        result = pipeline.run()
        try:
            result.wait_until_finish()
        finally:
            close_runner_client(result)

    try:
        with_deadline(timeout_s, attempt)
    except TimeoutError:
        raise ConfigError(f"--runner={name}: a one-element trial job did not finish in {timeout_s:.0f} s; is the "
                          "job server or cluster reachable?") from None
    except Exception as exc:  # whatever the runner raised, as one line naming it
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        text = " ".join(lines[-1].split()) if lines else type(exc).__name__
        if len(text) > 600:  # keep the head (what failed) and the tail (Beam's advice)
            text = f"{text[:250]} ... {text[-300:]}"
        hint = ""
        if "beam_ingest" in text and ("No module named" in text or "ModuleNotFoundError" in text):
            hint = f"; every worker needs this package installed ({shipped('docs/scale.md')})"
        raise ConfigError(f"--runner={name}: cannot run a job here ({type(exc).__name__}: {text}){hint}") from None


def progress_kind(options) -> str | None:
    """How this runner's workers can report progress to the launcher (progress.PROGRESS_*):
    a directory on this machine for the in-process runner, its worker processes and a Dask
    cluster the runner starts here; the scheduler's events for a Dask cluster elsewhere;
    None for runners whose workers are out of reach (Dataflow, Flink, Spark, portable)."""
    from ..pipeline.progress import PROGRESS_DASK, PROGRESS_FILES
    short = _short(runner_name(options))
    if short in IN_PROCESS:
        return PROGRESS_FILES
    if short == "daskrunner":
        return PROGRESS_DASK if dask_address(options) else PROGRESS_FILES
    return None
