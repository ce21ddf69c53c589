"""`status` and `flush-redis`: an ingest's progress in Redis, and the table's completion mark."""
from __future__ import annotations

from ..errors import CommandError
from .args import graph_id_type, positive_float
from .tables import table_completion


def cmd_status(args):
    from ..pipeline.progress import RedisSettings
    settings = RedisSettings.from_env()
    table_line, identity, _ = table_completion(args.graph_id)
    if settings is None and table_line is None:
        raise CommandError("status needs the Redis progress cache (REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD "
                           "as for the ingest) or the Bigtable settings (BIGTABLE_PROJECT/BIGTABLE_INSTANCE or "
                           "BIGTABLE_EMULATOR_HOST) to read the table's completion mark")
    if settings is None and "does not exist" in table_line:
        raise CommandError(table_line.replace("table   : ", "table "))
    try:
        return _print_status(args, settings, table_line, identity)
    except KeyboardInterrupt:  # how --watch ends, wherever in a refresh it lands
        if args.watch is None:
            raise
        return 0


def _print_status(args, settings, table_line, identity):
    import time
    from ..pipeline.progress import ProgressCache, format_status
    while True:
        lines = []
        if settings is not None:
            cache = ProgressCache(settings, args.graph_id)
            try:
                status = cache.settings.client().ping() and cache.status()
                stored = cache.settings.client().get(cache._key("identity"))
            except Exception as exc:
                raise CommandError(f"Redis {settings.host}:{settings.port} unavailable: {exc}", code=1)
            if status is None and (table_line is None or "does not exist" in table_line):
                raise CommandError(f"no progress recorded for graph {args.graph_id!r} in Redis "
                                   f"{settings.host}:{settings.port} db {settings.db}")
            if status is not None:
                lines.append(format_status(status))
                if identity and stored and stored.decode() != identity:
                    lines.append("(this progress belongs to another run of the graph id, not to the table's)")
        if table_line is not None:
            lines.append(table_line)
        text = "\n".join(lines)
        if args.watch is None:
            print(text)
            return 0
        print("\033[2J\033[H" + f"Every {args.watch:g}s: graph {args.graph_id}\n\n" + text, flush=True)
        time.sleep(args.watch)
        table_line, identity, _ = table_completion(args.graph_id)


def cmd_flush_redis(args):
    from ..pipeline.progress import ProgressCache, RedisSettings
    settings = RedisSettings.from_env()
    if settings is None:
        raise CommandError("flush-redis needs REDIS_HOST (and REDIS_PORT, REDIS_DB, REDIS_PASSWORD)")
    if args.graph_id:
        table_completion(args.graph_id)  # a table of that name that is not a graph's: refused
    try:
        settings.client().ping()
        if args.graph_id:
            print(f"removed {ProgressCache(settings, args.graph_id).flush()} key(s) of graph {args.graph_id}")
        else:
            settings.client().flushdb()
            print(f"flushed Redis {settings.host}:{settings.port} db {settings.db}")
    except Exception as exc:
        raise CommandError(f"Redis {settings.host}:{settings.port} unavailable: {exc}", code=1)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("status", help="per-layer progress of an ingest (completed / total chunks), from Redis")
    p.add_argument("--graph_id", required=True, type=graph_id_type)
    p.add_argument("--watch", type=positive_float, nargs="?", const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until interrupted")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("flush-redis", help="clear the Redis progress cache (all of it, or one graph's keys)")
    p.add_argument("--graph_id", type=graph_id_type, help="only this graph's progress (a table id, never a pattern)")
    p.set_defaults(func=cmd_flush_redis)
