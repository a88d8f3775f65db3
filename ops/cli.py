"""``python -m ops``: the ops page's failed-work tools for operators without a browser wallet.

    python -m ops list failed [--queue Q] [--actor A] [--limit N] [--json]
    python -m ops list dead [--shard S] [--limit N] [--json]
    python -m ops retry failed --queue Q ID...         (or: --all [--queue Q] [--actor A])
    python -m ops delete failed --queue Q ID... --yes  (or: --all ... --yes)
    python -m ops retry dead --shard S ID...           (or: --all [--shard S] [--stream trades])
    python -m ops delete dead --shard S ID... --yes    (or: --all ... --yes)

Same Redis, same logic (``ops.failed``, ``ops.dead``) and same audit trail as the page: every
batch of at most 100 ids is one ``ops:audit`` entry, by ``cli:<unix user>``. ``--all`` sweeps
everything matching that failed before the command started, in batches; deletes and sweeps ask
for confirmation on a terminal, or need ``--yes``. Settings come from the environment as for
every process (REDIS_URL, TP_NAMESPACE, TP_STREAM_SHARDS...). Exit status: 0 done, 1 some ids
were not acted on (missing, busy, corrupt...), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import orjson
import redis

from core.clock import now_ms
from core.config import Settings, load_settings
from core.keys import Keys
from core.logs import setup_logging
from core.redis_clients import market_client, sync_client
from ops import MAX_BATCH, MAX_LIST, audit
from ops import dead as dead_letters
from ops import failed as failed_messages

DONE = frozenset({"retried", "deleted"})


class UsageError(Exception):
    """Bad arguments: reported on stderr, exit status 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    verbs = p.add_subparsers(dest="verb", required=True)
    for verb in ("list", "retry", "delete"):
        v = verbs.add_parser(verb, help=f"{verb} failed Dramatiq messages or dead stream entries")
        kinds = v.add_subparsers(dest="kind", required=True)
        f = kinds.add_parser("failed", help="failed Dramatiq messages (dead letters)")
        f.add_argument("--queue", help="a Dramatiq queue (default: every queue)")
        f.add_argument("--actor", help="only this actor's messages")
        d = kinds.add_parser("dead", help="dead-lettered stream entries ({sN}:dead)")
        d.add_argument("--shard", type=int, help="one shard (default: every shard)")
        for k in (f, d):
            if verb == "list":
                k.add_argument("--limit", type=int, default=100, help=f"rows (1..{MAX_LIST})")
                k.add_argument("--json", action="store_true", help="one JSON object per line")
                continue
            k.add_argument("ids", nargs="*", help="Redis message ids / dead entry ids")
            k.add_argument("--all", action="store_true",
                           help="every one matching the filters (in batches)")  # fmt: skip
            k.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        d.add_argument("--stream", choices=dead_letters.STREAMS,
                       help="with --all: only entries from this stream")  # fmt: skip
    return p


class Cli:
    """One command's context: settings, Redis, who acts, where to print."""

    def __init__(self, settings: Settings, r: redis.Redis, *, who: str, out: TextIO,
                 confirm: Callable[[str], bool],
                 market: redis.Redis | None = None) -> None:  # fmt: skip
        self.settings, self.r, self.who, self.out, self.confirm = settings, r, who, out, confirm
        self.m = r if market is None else market  # dead letters: market data
        self.keys = Keys.of(settings)
        self.tally: Counter[str] = Counter()

    def print(self, text: str) -> None:
        print(text, file=self.out)

    def run(self, args: argparse.Namespace) -> int:
        if args.verb == "list":
            self.list_failed(args) if args.kind == "failed" else self.list_dead(args)
            return 0
        if args.all == bool(args.ids):
            raise UsageError("give ids, or --all (and filters), not both")
        if args.kind == "failed":
            self.act_failed(args)
        else:
            self.act_dead(args)
        done = ", ".join(f"{result} {n}" for result, n in sorted(self.tally.items()))
        self.print(f"{args.kind} {args.verb}: {done or 'nothing matched'}")
        return 0 if set(self.tally) <= DONE else 1

    # --- listing ------------------------------------------------------------------------------

    def _limit(self, args: argparse.Namespace) -> int:
        if not 1 <= args.limit <= MAX_LIST:
            raise UsageError(f"--limit must be within 1..{MAX_LIST}")
        return int(args.limit)

    def _emit(self, rows: list[dict[str, Any]], as_json: bool, line: Callable[[Any], str]) -> None:
        for row in rows:
            self.print(orjson.dumps(row).decode() if as_json else line(row))

    def list_failed(self, args: argparse.Namespace) -> None:
        limit, rows, totals = self._limit(args), list[dict[str, Any]](), {}
        for queue in self._queues(args.queue):
            got, totals[queue] = failed_messages.list_failed(self.r, self.keys, queue, args.actor,
                                                             limit)  # fmt: skip
            rows += got
        rows = sorted(rows, key=lambda row: row["failed_at"], reverse=True)[:limit]
        self._emit(rows, args.json, lambda row: "\t".join((
            row["queue"], row["id"], _utc(row["failed_at"]), row["actor"] or "(undecodable)",
            str(row.get("attempts", "-")), row["error"] or "(no traceback stored)",
            orjson.dumps(row.get("args", [])).decode()[:80])))  # fmt: skip
        if not args.json:
            self.print("total: " + " · ".join(f"{q} {n}" for q, n in totals.items()))

    def list_dead(self, args: argparse.Namespace) -> None:
        limit, rows, totals = self._limit(args), list[dict[str, Any]](), {}
        for s in self._shards(args.shard):
            got, totals[s] = dead_letters.list_dead(self.m, self.keys, s, limit)
            rows += got
        rows = sorted(rows, key=lambda row: row["dead_at"], reverse=True)[:limit]
        self._emit(rows, args.json, lambda row: "\t".join((
            str(row["shard"]), row["id"], _utc(row["dead_at"]), row["stream"] or "-",
            row["entry_id"] or "-", row["error"] or "-", (row["record"] or "")[:60])))  # fmt: skip
        if not args.json:
            self.print("total: " + " · ".join(f"shard {s} {n}" for s, n in totals.items()))

    # --- acting -------------------------------------------------------------------------------

    def _ask(self, args: argparse.Namespace, question: str) -> None:
        if (args.verb == "delete" or args.all) and not args.yes and not self.confirm(question):
            raise UsageError("not confirmed (--yes confirms without asking)")

    def _record(self, action: str, target: str, results: dict[str, str]) -> None:
        counts = audit.record(self.r, self.keys, self.who, action, target, results)
        self.tally.update(counts)

    def act_failed(self, args: argparse.Namespace) -> None:
        if args.ids:
            if args.queue is None or args.actor is not None:
                raise UsageError("ids need --queue (and no --actor: that filters --all)")
            queue = self._queue(args.queue)
            bad = [i for i in args.ids if not failed_messages.MESSAGE_ID.fullmatch(i)]
            if bad:
                raise UsageError(f"not Redis message ids: {' '.join(bad[:5])}")
            self._ask(args, f"{args.verb} {len(args.ids)} failed message(s) of {queue}?")
            for ids in _batches(list(dict.fromkeys(args.ids))):
                results = failed_messages.act_on_failed(self.r, self.keys, args.verb, queue, ids)
                self._record(f"failed.{args.verb}", queue, results)
            return
        queues = self._queues(args.queue)
        actor = f" of actor {args.actor}" if args.actor else ""
        self._ask(args, f"{args.verb} every failed message{actor} in {', '.join(queues)}?")
        before = now_ms()  # a message failing again after its retry waits
        for queue in queues:
            after = None
            while True:
                ids, after = failed_messages.select_failed(self.r, self.keys, queue,
                    actor=args.actor, before_ms=before, after=after)  # fmt: skip
                if ids:
                    results = failed_messages.act_on_failed(self.r, self.keys, args.verb, queue,
                                                            ids)  # fmt: skip
                    self._record(f"failed.{args.verb}", queue, results)
                if after is None:
                    break

    def act_dead(self, args: argparse.Namespace) -> None:
        maxlen = self.settings.stream_maxlen
        if args.ids:
            if args.shard is None or args.stream is not None:
                raise UsageError("ids need --shard (and no --stream: that filters --all)")
            s = self._shards(args.shard)[0]
            bad = [i for i in args.ids if not dead_letters.ENTRY_ID.fullmatch(i)]
            if bad:
                raise UsageError(f"not stream entry ids: {' '.join(bad[:5])}")
            self._ask(args, f"{args.verb} {len(args.ids)} dead entries of shard {s}?")
            for ids in _batches(list(dict.fromkeys(args.ids))):
                results = dead_letters.act_on_dead(self.m, self.keys, args.verb, s, ids,
                                                   stream_maxlen=maxlen)  # fmt: skip
                self._record(f"dead.{args.verb}", f"shard {s}", results)
            return
        shards = self._shards(args.shard)
        where = f"of {args.stream} " if args.stream else ""
        self._ask(args, f"{args.verb} every dead entry {where}in shard(s) "
                        f"{', '.join(map(str, shards))}?")  # fmt: skip
        ends = {s: dead_letters.newest_id(self.m, self.keys, s) for s in shards}
        for s, until in ends.items():
            stream = None if args.stream is None else getattr(self.keys, args.stream)(s)
            after = None
            while until is not None:
                ids, after = dead_letters.select_dead(self.m, self.keys, s, stream=stream,
                                                      until=until, after=after)  # fmt: skip
                if ids:
                    results = dead_letters.act_on_dead(self.m, self.keys, args.verb, s, ids,
                                                       stream_maxlen=maxlen)  # fmt: skip
                    self._record(f"dead.{args.verb}", f"shard {s}", results)
                if after is None:
                    break

    # --- arguments ----------------------------------------------------------------------------

    def _queue(self, name: str) -> str:
        if not failed_messages.valid_queue(name):
            raise UsageError(f"{name[:80]!r} is not a Dramatiq queue name")
        return name

    def _queues(self, name: str | None) -> list[str]:
        if name is not None:
            return [self._queue(name)]
        return failed_messages.queues(self.r, self.keys)

    def _shards(self, shard: int | None) -> list[int]:
        if shard is None:
            return list(range(self.keys.shards))
        if not 0 <= shard < self.keys.shards:
            raise UsageError(f"--shard must be within 0..{self.keys.shards - 1}")
        return [shard]


def _batches(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), MAX_BATCH):
        yield ids[i : i + MAX_BATCH]


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = parser().parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, process="ops")
    r = sync_client(settings.require_redis_url(), max_connections=2, client_name="ops")
    m = market_client(settings.market_redis(), r, max_connections=2, client_name="ops")
    cli = Cli(settings, r, who=f"cli:{getpass.getuser()}", out=sys.stdout, confirm=_confirm,
              market=m)  # fmt: skip
    try:
        return cli.run(args)
    except UsageError as exc:
        print(f"python -m ops: {exc}", file=sys.stderr)
        return 2
    finally:
        if m is not r:
            m.close()
        r.close()
