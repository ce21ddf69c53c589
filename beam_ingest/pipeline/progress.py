"""Progress of an ingest: per layer, how many chunks are done (their rows written).

Two places hold it: an optional Redis cache (REDIS_HOST, REDIS_PORT, REDIS_DB,
REDIS_PASSWORD), which `status` reads from anywhere, and a channel from the workers to the
launcher (a directory on its machine, or the Dask scheduler's events) that drives the bars
and per-layer lines of a run. Both are told of a chunk as soon as Bigtable acknowledged its
last row. Redis is a cache, never a dependency: when it is down the ingest warns and goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import time

from . import stages

log = logging.getLogger(__name__)

PREFIX = "beam_ingest"

@dataclasses.dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None

    @classmethod
    def from_env(cls, environ=None) -> "RedisSettings | None":
        """The settings of REDIS_HOST/PORT/DB/PASSWORD, checked (ConfigError naming the variable);
        None when REDIS_HOST is unset. Read once by the launcher; workers get them from the job."""
        from ..errors import ConfigError
        env = os.environ if environ is None else environ
        host = env.get("REDIS_HOST", "").strip()
        if not host:
            for name in ("REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD"):
                if env.get(name):
                    raise ConfigError(f"{name}: set, but REDIS_HOST is not (set REDIS_HOST to use the progress "
                                      "cache, or unset the REDIS_* variables)")
            return None

        def integer(name, default, low, high):
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{name}: must be an integer, got {text!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"{name}: must be in {low}..{high}, got {value}")
            return value

        return cls(host, integer("REDIS_PORT", 6379, 1, 65535), integer("REDIS_DB", 0, 0, 1 << 20),
                   env.get("REDIS_PASSWORD") or None)

    def client(self):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password,
                           socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1))


def chunk_name(coord) -> str:
    return "_".join(str(int(c)) for c in coord)


class ProgressCache:
    """One graph's progress in Redis: `total` per layer and the set of done chunks per layer.

    Sets make marking idempotent: a retried bundle marks the same chunks again.
    Every Redis error is logged (at most once a minute) and swallowed.
    """

    def __init__(self, settings: RedisSettings, graph_id: str, identity: str = ""):
        self.settings = settings
        self.graph_id = graph_id
        self.identity = identity  # the run identity of the table (store/table_state.py)
        self._client = None
        self._last_warning = 0.0
        self._skip_until = 0.0  # after a failure, leave Redis alone for a while
        self._pending: dict = {}  # layer -> chunk names not yet recorded

    def _redis(self):
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def _key(self, *parts) -> str:
        return ":".join([PREFIX, self.graph_id] + [str(p) for p in parts])

    def _pattern(self) -> str:
        """Every key of this graph, as a Redis match pattern (the id's glob characters escaped)."""
        return ":".join([PREFIX, re.sub(r"([*?\[\]\\])", r"\\\1", self.graph_id), "*"])

    def _safely(self, what, fn, default=None):
        if time.time() < self._skip_until:
            return default
        try:
            return fn()
        except Exception as exc:  # redis errors, connection refused, timeouts
            now = time.time()
            self._skip_until = now + 30
            if now - self._last_warning > 60:
                log.warning("progress cache (Redis %s:%s) unavailable while %s: %s; the ingest goes on",
                            self.settings.host, self.settings.port, what, exc)
                self._last_warning = now
            return default

    def start(self, totals: dict, reset: bool = True) -> bool:
        """Record the chunk count of every layer; with `reset`, or when the recorded progress
        belongs to another run identity (another table, an earlier table of this graph),
        forget earlier progress first."""
        def go():
            client = self._redis()
            stored = client.get(self._key("identity"))
            stale = reset or (stored or b"").decode() != self.identity
            pipe = client.pipeline()
            for key in (client.scan_iter(match=self._pattern()) if stale else ()):
                pipe.delete(key)
            pipe.set(self._key("identity"), self.identity)
            pipe.hset(self._key("total"), mapping={str(k): int(v) for k, v in totals.items()})
            pipe.execute()
            return True
        return bool(self._safely("recording totals", go, False))

    def flush_pending(self) -> None:
        """Send marks kept while Redis was away (a worker's teardown: the last chance)."""
        if any(self._pending.values()):
            self._skip_until = 0.0
            self._send_pending()

    def finish(self) -> bool:
        """The launcher proved the table complete: record it, whatever marks were lost on the way."""
        self._skip_until = 0.0
        return bool(self._safely("recording completion",
                                 lambda: self._redis().set(self._key("complete"), self.identity), False))

    def mark_done(self, layer, coords) -> None:
        """Record chunks as done; what cannot be recorded now is kept and sent with a later call."""
        self._pending.setdefault(str(layer), []).extend(chunk_name(c) for c in coords)
        self._send_pending()

    def _send_pending(self) -> None:
        def go():
            pipe = self._redis().pipeline()
            for pending_layer, names in self._pending.items():
                if names:
                    pipe.sadd(self._key("done", pending_layer), *names)
            pipe.execute()
            self._pending = {}
            return True
        self._safely("marking chunks done", go)

    def status(self) -> dict | None:
        """`{layer: (done, total)}` in display order, or None if the graph is unknown."""
        def go():
            totals = self._redis().hgetall(self._key("total"))
            if not totals:
                return None
            pipe = self._redis().pipeline()
            layers = sorted((k.decode() for k in totals), key=stages.display_order)
            pipe.get(self._key("complete"))
            pipe.get(self._key("identity"))
            for layer in layers:
                pipe.scard(self._key("done", layer))
            complete, identity, *done = pipe.execute()
            if complete is not None and complete == identity:  # proven complete by the launcher
                done = [totals[layer.encode()] for layer in layers]
            return {layer: (int(d), int(totals[layer.encode()])) for layer, d in zip(layers, done)}
        return self._safely("reading status", go)

    def flush(self) -> int:
        def go():
            keys = list(self._redis().scan_iter(match=self._pattern()))
            return self._redis().delete(*keys) if keys else 0
        return int(self._safely("flushing", go, 0) or 0)


def format_status(status: dict) -> str:
    return "\n".join(f"{layer:<8}: {done} / {total}" for layer, (done, total) in status.items())


PROGRESS_FILES = "files"  # a directory on the launcher's machine, one file per worker process
PROGRESS_DASK = "dask"  # events through the Dask scheduler
LOG_EVERY_S = 10.0  # a progress line per running layer this often, when there are no bars
POLL_S = 0.5  # the launcher reads progress this often


@dataclasses.dataclass(frozen=True)
class ProgressChannel:
    """How workers tell the launcher which chunks are done, carried in the job: `files`
    (`where` is a directory on the launcher's machine: the in-process runner, worker
    processes, a Dask cluster the runner starts locally) or `dask` (`where` is an event topic
    of the Dask scheduler the job runs on)."""
    kind: str
    where: str


_FILES: dict = {}  # (directory, pid) -> this process's open progress file
_FILES_LOCK = threading.Lock()


class ProgressReporter:
    """A worker's side of a `ProgressChannel`: `started(layer)` when a stage's first chunk
    reaches its sink, `done(layer, coords)` once every row of those chunks is acknowledged.
    Progress is a courtesy: a message that cannot be sent is dropped with one warning."""

    def __init__(self, channel: ProgressChannel):
        self.channel = channel
        self._warned = False
        self._started: set = set()

    def started(self, layer) -> None:
        if str(layer) not in self._started:
            self._started.add(str(layer))
            self._send({"layer": str(layer), "t": time.time(), "started": True})

    def done(self, layer, coords) -> None:
        coords = [[int(c) for c in coord] for coord in coords]
        if coords:
            self._send({"layer": str(layer), "t": time.time(), "done": coords})

    def _send(self, message: dict) -> None:
        try:
            if self.channel.kind == PROGRESS_DASK:
                from distributed import get_worker
                get_worker().log_event(self.channel.where, message)
                return
            line = json.dumps(message, separators=(",", ":")) + "\n"
            with _FILES_LOCK:
                key = (self.channel.where, os.getpid())  # a forked worker opens its own
                handle = _FILES.get(key)
                if handle is None:
                    handle = _FILES[key] = open(os.path.join(self.channel.where, f"{os.getpid()}.jsonl"), "a",
                                                encoding="utf-8")
                handle.write(line)
                handle.flush()
        except Exception as exc:  # noqa: BLE001 - a lost progress message must not fail a write
            if not self._warned:
                self._warned = True
                log.warning("progress: could not report to the launcher (%s); the ingest goes on", exc)


class ProgressTally:
    """The launcher's side: which chunks of each layer are done (sets: a retried bundle
    reports the same chunks again), when each layer started and when its last chunk was done."""

    def __init__(self):
        self.done: dict = collections.defaultdict(set)
        self.started: dict = {}
        self.last: dict = {}
        self._lock = threading.Lock()

    def add(self, message: dict) -> None:
        layer, t = message["layer"], float(message["t"])
        with self._lock:
            self.started[layer] = min(t, self.started.get(layer, t))
            for coord in message.get("done", ()):
                self.done[layer].add(tuple(coord))
                self.last[layer] = max(t, self.last.get(layer, t))

    def snapshot(self) -> tuple[dict, dict, dict]:
        """`{layer: chunks done}`, `{layer: started at}`, `{layer: last chunk done at}`."""
        with self._lock:
            return ({layer: len(chunks) for layer, chunks in self.done.items()}, dict(self.started),
                    dict(self.last))


class ProgressListener:
    """Opens a `ProgressChannel` for one run and feeds what workers report into a tally:
    a temporary directory read every poll, or a subscription to the Dask scheduler's events."""

    def __init__(self, kind: str = PROGRESS_FILES, dask_address: str | None = None):
        self.kind, self.dask_address = kind, dask_address
        self.tally = ProgressTally()
        self.channel = None
        self._offsets: dict = {}
        self._client = None

    def __enter__(self):
        if self.kind == PROGRESS_DASK:
            import uuid

            from distributed import Client
            topic = f"beam_ingest-progress-{uuid.uuid4().hex}"
            self._client = Client(self.dask_address, timeout=30)
            self._client.subscribe_topic(topic, lambda event: self.tally.add(event[1]))
            self.channel = ProgressChannel(PROGRESS_DASK, topic)
        else:
            import tempfile
            self.channel = ProgressChannel(PROGRESS_FILES, tempfile.mkdtemp(prefix="beam_ingest-progress-"))
        return self

    def poll(self) -> None:
        """Read what workers wrote since the last poll (whole lines only)."""
        if self.kind != PROGRESS_FILES or self.channel is None:
            return
        for name in sorted(os.listdir(self.channel.where)):
            path = os.path.join(self.channel.where, name)
            with open(path, "rb") as handle:
                handle.seek(self._offsets.get(name, 0))
                data = handle.read()
            complete = data[:data.rfind(b"\n") + 1]
            self._offsets[name] = self._offsets.get(name, 0) + len(complete)
            for line in complete.splitlines():
                self.tally.add(json.loads(line))

    def __exit__(self, *exc):
        if self._client is not None:
            self._client.close()
        elif self.channel is not None:
            import shutil
            with _FILES_LOCK:  # this process's own file (the in-process runner)
                handle = _FILES.pop((self.channel.where, os.getpid()), None)
                if handle is not None:
                    handle.close()
            shutil.rmtree(self.channel.where, ignore_errors=True)


class ProgressMonitor:
    """Watches a run from the launcher: live bars per layer (only when stderr is a terminal),
    one log line when each layer starts and when it finishes, with its chunk count and the
    time from its first chunk at the sink to its last chunk acknowledged, and without bars a
    line per running layer every LOG_EVERY_S. Counts come from `listener` (what workers
    report), or else from the Redis progress cache."""

    def __init__(self, totals: dict, listener: ProgressListener | None = None, cache: ProgressCache | None = None,
                 interval: float | None = None, bars: bool | None = None):
        totals = {str(layer): totals[layer] for layer in sorted(totals, key=stages.display_order)}
        self.totals, self.listener, self.cache = totals, listener, cache
        self.interval = POLL_S if interval is None else interval
        self.bars_enabled = sys.stderr.isatty() if bars is None else bars
        self._stop = threading.Event()
        self._thread = None
        self.started: dict = {}
        self.finished: dict = {}
        self._logged: dict = {}

    def _state(self):
        """`{layer: done}`, `{layer: started at}`, `{layer: last chunk done at}`."""
        if self.listener is not None:
            self.listener.poll()
            return self.listener.tally.snapshot()
        status = (self.cache.status() or {}) if self.cache is not None else {}
        return {str(k): v[0] for k, v in status.items()}, {}, {}

    def _update(self, bars):
        now = time.time()
        done_by_layer, started_at, last_at = self._state()
        for layer, total in self.totals.items():
            done = min(done_by_layer.get(layer, 0), total)
            if (done or layer in started_at) and layer not in self.started:
                self.started[layer] = started_at.get(layer, now)
                self._logged[layer] = now
                log.info("%s: started", stages.label(layer))
            if total and done >= total and layer not in self.finished:
                self.finished[layer] = last_at.get(layer, now)
                log.info("%s: %d / %d chunks done in %.1f s", stages.label(layer), done, total,
                         self.finished[layer] - self.started.get(layer, now))
            elif (not self.bars_enabled and layer in self.started and layer not in self.finished
                  and now - self._logged[layer] >= LOG_EVERY_S):
                self._logged[layer] = now
                log.info("%s: %d / %d chunks done (%.0f%%) after %.1f s", stages.label(layer), done, total,
                         100.0 * done / max(total, 1), now - self.started[layer])
            bar = bars.get(layer)
            if bar is not None and done > bar.n:
                bar.update(done - bar.n)

    def _run(self):
        bars = {}
        if self.bars_enabled:
            from tqdm import tqdm
            bars = {layer: tqdm(total=total, desc=stages.label(layer), position=i, leave=True, unit="chunk",
                                dynamic_ncols=True)
                    for i, (layer, total) in enumerate(self.totals.items())}
        while True:
            stopping = self._stop.wait(self.interval)
            try:
                self._update(bars)
            except Exception as exc:  # noqa: BLE001 - the bars must never stop the run
                log.warning("progress: %s", exc)
            if stopping:
                break
        for bar in bars.values():
            bar.close()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
