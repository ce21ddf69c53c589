"""The runner a job asks for, proven able to run before the table is created.

Beam finds out that a runner cannot run here (an unknown name, a portable runner without a
job endpoint, a job server jar or binary it cannot fetch offline, a missing extra) only when
the job starts, which for an ingest is after the table was created. Here: the name resolves
to a runner class, the in-process runners' options are in range, and any other runner but
Dataflow (whose dry runs and option checks happen offline) runs a one-element job first.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

from .config import ConfigError

IN_PROCESS = ("fnapirunner", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner")
TRIAL_TIMEOUT_S = 300.0


def runner_name(options) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()


def check_runner(options) -> None:
    """Cheap checks of `--runner` and its options (no job is run). ConfigError naming the option."""
    from apache_beam.runners.runner import create_runner
    name = runner_name(options)
    short = _short(name)
    if short in ("interactiverunner", "interactive"):
        raise ConfigError("--runner=InteractiveRunner: runs pipelines in a notebook, not an ingest; use the "
                          "in-process default, DataflowRunner, or a portable runner (FlinkRunner, SparkRunner, "
                          "PortableRunner with --job_endpoint)")
    try:
        runner = create_runner(name)
    except ValueError:
        known = ", ".join(StandardOptions.KNOWN_RUNNER_NAMES)
        raise ConfigError(f"--runner={name}: unknown runner (known: {known}, or the full name of a "
                          "PipelineRunner class)") from None
    except ImportError as exc:
        raise ConfigError(f"--runner={name}: cannot be loaded here ({exc})") from None
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise ConfigError(f"--direct_num_workers: must be >= 0 (0: one per CPU), got {workers}")
    kind = type(runner).__name__
    if kind == "PortableRunner" and not options.view_as(PortableOptions).job_endpoint:
        raise ConfigError("--runner=PortableRunner: needs --job_endpoint=HOST:PORT (a running job server), or "
                          "name the engine: --runner=FlinkRunner or --runner=SparkRunner")


def needs_trial(options) -> bool:
    short = _short(runner_name(options))
    return short not in IN_PROCESS and "dataflow" not in short


def trial_run(options, timeout_s: float = TRIAL_TIMEOUT_S) -> None:
    """Run a one-element job on the requested runner; ConfigError naming it if it cannot."""
    import apache_beam as beam

    from .deadline import with_deadline
    name = runner_name(options)

    def attempt():
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | "Trial" >> beam.Create([1]) | "Touch" >> beam.Map(lambda x: x)

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
        raise ConfigError(f"--runner={name}: cannot run a job here ({type(exc).__name__}: {text})") from None
