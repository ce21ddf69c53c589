"""A Dask cluster made fit for an ingest before the job starts, and kept from hanging it.

Beam's DaskRunner hands the job to the cluster and waits: a scheduler without workers, or
with workers that cannot import this package, leaves the launcher waiting; so does a worker
that freezes mid-run (the scheduler gives up on a silent worker only after its worker-ttl,
5 minutes by default, checked every 5 minutes; with no worker left, it waits forever).

`check_cluster` asks the scheduler, within a minute, for at least one worker and for every
worker to import this package at this version (naming the worker that cannot).
`set_liveness` then tells the scheduler to drop a worker silent for WORKER_TTL_S (its tasks
go to the others) and to fail the job's tasks once no worker has been left for
NO_WORKERS_S, so a run goes on without a frozen worker or fails naming the cause.

The functions that run on the scheduler and workers are sent by value (this module is
registered with cloudpickle): they must run where this package is not installed.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..deadline import with_deadline
from ..shipped import shipped

CONNECT_S = 20.0      # reaching the scheduler
WORKERS_S = 30.0      # waiting for a first worker
PROBE_S = 30.0        # every worker's answer to the import probe
WORKER_TTL_S = 60.0   # a worker silent this long is dropped (its tasks go to the others)
NO_WORKERS_S = 180.0  # with no worker this long, the job's tasks fail (the run exits non-zero)


def _probe_package():
    """On a worker: this package's version there, or the reason it cannot be imported."""
    try:
        import beam_ingest
    except Exception as exc:  # what the worker lacks, as text: the launcher names it
        return f"cannot import beam_ingest ({type(exc).__name__}: {exc})"
    return f"beam_ingest {beam_ingest.__version__}"


def _set_scheduler_liveness(dask_scheduler=None, ttl_s=WORKER_TTL_S, no_workers_s=NO_WORKERS_S):
    """On the scheduler: the worker ttl and its check's period, and the no-workers timeout."""
    dask_scheduler.worker_ttl = ttl_s
    old = dask_scheduler.periodic_callbacks.get("worker-ttl")
    if old is not None:
        old.stop()
    periodic = type(dask_scheduler.periodic_callbacks["idle-timeout"])  # tornado's, as the scheduler uses
    check = periodic(dask_scheduler.check_worker_ttl, ttl_s * 1000 / 4)
    dask_scheduler.periodic_callbacks["worker-ttl"] = check
    check.start()
    dask_scheduler.no_workers_timeout = no_workers_s
    return {"worker_ttl": dask_scheduler.worker_ttl, "no_workers_timeout": dask_scheduler.no_workers_timeout}


def _client(address: str, connect_s: float | None = None):
    import cloudpickle
    import sys
    from distributed import Client
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        return Client(address, timeout=connect_s or CONNECT_S)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--dask_client_address={address}: cannot reach the Dask scheduler there "
                          f"({type(exc).__name__}: {exc})") from None


def check_cluster(address: str, connect_s: float | None = None) -> None:
    """ConfigError, within about a minute, unless the cluster at `address` (reached within
    `connect_s`, --dask_connection_timeout) has a worker and every worker imports this
    package at this version."""
    from .. import __version__
    client = _client(address, connect_s)
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_S)
        except TimeoutError:
            raise ConfigError(f"--dask_client_address={address}: the Dask scheduler has no worker (waited "
                              f"{WORKERS_S:.0f} s); start some with `dask worker {address}`") from None
        try:
            answers = with_deadline(PROBE_S, client.run, _probe_package, on_error="return")
        except Exception as exc:
            raise ConfigError(f"--dask_client_address={address}: the workers did not answer a probe in "
                              f"{PROBE_S:.0f} s ({type(exc).__name__}: {exc})") from None
        ours = f"beam_ingest {__version__}"
        wrong = {worker: answer if isinstance(answer, str) else f"{type(answer).__name__}: {answer}"
                 for worker, answer in sorted(answers.items()) if answer != ours}
        if not answers:
            raise ConfigError(f"--dask_client_address={address}: every worker left before answering a probe")
        if wrong:
            worker, why = next(iter(wrong.items()))
            also = f" (and {len(wrong) - 1} other worker(s))" if len(wrong) > 1 else ""
            raise ConfigError(f"--dask_client_address={address}: Dask worker {worker}{also}: {why}; every worker "
                              f"needs this package, {ours} ({shipped('docs/scale.md')})")
    finally:
        client.close()


def set_liveness(address: str, ttl_s: float | None = None, no_workers_s: float | None = None) -> dict:
    """Tell the scheduler at `address` to drop silent workers and to fail tasks left without
    any worker; returns what it set."""
    client = _client(address)
    try:
        return client.run_on_scheduler(_set_scheduler_liveness, ttl_s=ttl_s or WORKER_TTL_S,
                                       no_workers_s=no_workers_s or NO_WORKERS_S)
    finally:
        client.close()


def dropped_workers(address: str) -> list[str]:
    """The workers the scheduler at `address` dropped for missing their heartbeats (its event
    log), for the message of a failed run; empty if it cannot be asked."""
    try:
        client = _client(address)
    except ConfigError:
        return []
    try:
        events = with_deadline(PROBE_S, client.get_events, "scheduler")
    except Exception:  # the run failed already: this only adds to its message
        return []
    finally:
        client.close()
    return sorted({worker for _, event in events if isinstance(event, dict)
                   and event.get("action") == "worker-ttl-timed-out" for worker in event.get("workers", ())})
