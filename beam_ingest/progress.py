"""Progress of an ingest: per layer, how many chunks are done (their rows written).

Two places hold it: an optional Redis cache (REDIS_HOST, REDIS_PORT, REDIS_DB,
REDIS_PASSWORD), which `python -m beam_ingest status` reads from anywhere, and an
in-process tally that drives the progress bars of a local run. Redis is a cache, never a
dependency: when it is down the ingest warns and goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

PREFIX = "beam_ingest"
ROOTS = "roots"  # the root-id buckets, shown after the layers
L2CACHE = "l2cache"  # the L2 cache's layer-2 chunks (--l2cache_table), shown after layer 2

# (graph id, layer) -> chunks done, for bars of an in-process run
LOCAL_DONE: collections.Counter = collections.Counter()
_LOCAL_LOCK = threading.Lock()


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
        from .config import ConfigError
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
            for key in (client.scan_iter(match=self._key("*")) if stale else ()):
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
            layers = sorted((k.decode() for k in totals), key=display_order)
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
            keys = list(self._redis().scan_iter(match=self._key("*")))
            return self._redis().delete(*keys) if keys else 0
        return int(self._safely("flushing", go, 0) or 0)


def display_order(layer) -> tuple:
    """Layers ascending, the L2 cache right after layer 2, the root buckets last."""
    layer = str(layer)
    if layer == ROOTS:
        return (float("inf"), 0)
    return (2, 1) if layer == L2CACHE else (int(layer), 0)


def _label(layer) -> str:
    return {ROOTS: "roots", L2CACHE: "L2 cache"}.get(str(layer), f"layer {layer}")


def format_status(status: dict) -> str:
    return "\n".join(f"{layer:<8}: {done} / {total}" for layer, (done, total) in status.items())


def layer_totals(layout) -> dict:
    totals = {layer: layout.chunk_count(layer) for layer in range(2, layout.layer_count + 1)}
    totals[ROOTS] = 256
    return totals


def record_local(graph_id: str, layer, n: int) -> None:
    with _LOCAL_LOCK:
        LOCAL_DONE[(graph_id, str(layer))] += n


class ProgressMonitor:
    """Watches a local run: live bars per layer (only when stderr is a terminal) and one
    log line when each layer starts and finishes, with its chunk count and time."""

    def __init__(self, graph_id: str, totals: dict, cache: ProgressCache | None = None, interval: float = 0.5,
                 bars: bool | None = None):
        totals = {str(layer): totals[layer] for layer in sorted(totals, key=display_order)}
        self.graph_id, self.totals, self.cache, self.interval = graph_id, totals, cache, interval
        self.bars_enabled = sys.stderr.isatty() if bars is None else bars
        self._stop = threading.Event()
        self._thread = None
        self.started: dict = {}
        self.finished: dict = {}

    def _done(self) -> dict:
        with _LOCAL_LOCK:
            local = {str(layer): LOCAL_DONE[(self.graph_id, str(layer))] for layer in self.totals}
        if self.cache is not None and not any(local.values()):
            status = self.cache.status() or {}
            return {str(k): v[0] for k, v in status.items()}
        return local

    def _update(self, bars):
        now = time.time()
        for layer, done in self._done().items():
            total = self.totals.get(layer, 0)
            if done and layer not in self.started:
                self.started[layer] = now
                log.info("%s: started", _label(layer))
            if total and done >= total and layer not in self.finished:
                self.finished[layer] = now
                log.info("%s: %d / %d chunks done in %.1f s", _label(layer), done, total,
                         now - self.started.get(layer, now))
            bar = bars.get(layer)
            if bar is not None and done > bar.n:
                bar.update(min(done, bar.total) - bar.n)

    def _run(self):
        bars = {}
        if self.bars_enabled:
            from tqdm import tqdm
            bars = {layer: tqdm(total=total, desc=_label(layer), position=i, leave=True, unit="chunk",
                                dynamic_ncols=True)
                    for i, (layer, total) in enumerate(self.totals.items())}
        while True:
            stopping = self._stop.wait(self.interval)
            self._update(bars)
            if stopping:
                break
        for bar in bars.values():
            bar.close()

    def __enter__(self):
        with _LOCAL_LOCK:
            for layer in self.totals:
                LOCAL_DONE.pop((self.graph_id, str(layer)), None)
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
