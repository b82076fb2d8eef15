"""
The chat-bench program: options, the server to load, the run, the report.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import string
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from chat.bench.addresses import BadTarget, parse_targets
from chat.bench.procstat import ProcessStats
from chat.bench.reconnect import CannotKill, reconnect
from chat.bench.report import PhaseResult, medians, table, write_json
from chat.bench.runner import Plan, Run
from chat.bench.scenarios import MESSAGE_SCENARIOS
from chat.bench.seed import seed_accounts
from chat.bench.spawn import SpawnedServer, SpawnFailed
from chat.bench.storm import login_storm

SCENARIOS = (*MESSAGE_SCENARIOS, "login", "reconnect")
MAX_CONNECTIONS = 20_000
MAX_DURATION_SECONDS = 3600.0
PREFIX_LETTERS = string.ascii_lowercase + string.digits
T = TypeVar("T")


class UsageError(Exception):
    """
    The command line cannot be run; the text says why.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The options, checked.

    @raise UsageError: for options that do not go together or are out of range.
    """
    parser = _Parser(
        prog="chat-bench",
        description=(
            "Load a chat daemon over its JSON mode and report throughput,"
            " end-to-end latency, server CPU and memory, and whether every"
            " message arrived exactly once."
        ),
    )
    where = parser.add_argument_group("the server")
    where.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="HOST:PORT[,HOST:PORT...]",
        help="a running daemon; more addresses are the replicas that the"
        " reconnect scenario moves to",
    )
    where.add_argument(
        "--spawn",
        action="store_true",
        help="start a throwaway twistd -n chat on 127.0.0.1 and stop it at the end",
    )
    where.add_argument("--database", default="", help="with --spawn: database URL")
    where.add_argument("--redis", default="", help="with --spawn: Redis URL")
    where.add_argument(
        "--keep-limits",
        action="store_true",
        help="with --spawn: keep the daemon's command rate limit and login"
        " timeout (by default they are off, so that the tool measures capacity)",
    )
    where.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="with --spawn: the listen backlog of the daemons (by default"
        " Twisted's, 50)",
    )
    where.add_argument(
        "--seed-accounts",
        action="store_true",
        help="with --spawn: write the accounts into the database before the"
        " daemon starts, with a cheap password hash, and log in instead of"
        " signing up (for runs with many connections)",
    )
    where.add_argument(
        "--spread",
        action="store_true",
        help="connect to every target in turn rather than all to the first"
        " (not with the reconnect scenario, which kills the first)",
    )
    where.add_argument(
        "--server-pid",
        type=int,
        help="PID of the local daemon behind the first target: its CPU and"
        " memory are reported, and the reconnect scenario may kill it",
    )
    where.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow targets that are not loopback addresses",
    )
    what = parser.add_argument_group("the load")
    what.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help=f"one or more of {', '.join(SCENARIOS)} (default: private)",
    )
    what.add_argument("--connections", type=int, default=20)
    what.add_argument(
        "--senders",
        action="append",
        default=[],
        metavar="[SCENARIO=]N",
        help="how many connections send (default: all; for login, how many"
        " chat during the storm, default 10); repeat with SCENARIO= to set"
        " one scenario's",
    )
    what.add_argument("--group-size", type=int, default=10)
    what.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="[SCENARIO=]N",
        help="paced: messages per second across all senders (default 100;"
        " for login, the background load, default 20); repeat with SCENARIO="
        " to set one scenario's",
    )
    what.add_argument(
        "--saturate",
        action="store_true",
        help="each sender keeps --window messages unanswered",
    )
    what.add_argument("--window", type=int, default=1)
    what.add_argument(
        "--duration", type=float, default=5.0, help="seconds of sending per phase"
    )
    what.add_argument(
        "--messages", type=int, default=100_000, help="at most this many per phase"
    )
    what.add_argument("--repeat", type=int, default=1, help="runs of each phase")
    what.add_argument(
        "--size", type=int, default=0, help="extra characters in each message"
    )
    what.add_argument("--drain-timeout", type=float, default=10.0)
    what.add_argument("--setup-timeout", type=float, default=600.0)
    out = parser.add_argument_group("the report")
    out.add_argument("--json", type=Path, help="also write the results here")
    out.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.spawn == bool(args.target):
        parser.error("give either --spawn or --target")
    spawn_only = [
        args.database,
        args.redis,
        args.keep_limits,
        args.seed_accounts,
        args.backlog,
    ]
    if any(spawn_only) and not args.spawn:
        parser.error(
            "--database, --redis, --keep-limits, --seed-accounts and --backlog"
            " go with --spawn"
        )
    if args.backlog < 0:
        parser.error("--backlog cannot be negative")
    args.scenarios = tuple(
        name.strip()
        for text in args.scenario or ["private"]
        for name in text.split(",")
    )
    if args.spread and "reconnect" in args.scenarios:
        parser.error("--spread does not go with the reconnect scenario")
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {SCENARIOS}")
    if not 2 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 2 to {MAX_CONNECTIONS}")
    if not 0 < args.duration <= MAX_DURATION_SECONDS:
        parser.error(
            f"--duration must be more than 0 and at most {MAX_DURATION_SECONDS}"
        )
    try:
        args.rates = per_scenario(args.rate, float)
        args.sender_counts = per_scenario(args.senders, int)
    except ValueError as e:
        parser.error(str(e))
    if any(value <= 0 for value in args.rates.values()):
        parser.error("--rate must be positive")
    if any(value < 0 for value in args.sender_counts.values()):
        parser.error("--senders cannot be negative")
    for name in ("messages", "window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.size < 0:
        parser.error("--size cannot be negative")
    if args.group_size < 2:
        parser.error("--group-size must be at least 2")
    try:
        args.addresses = parse_targets(args.target, args.allow_remote)
    except BadTarget as e:
        parser.error(str(e))


def per_scenario(texts: list[str], kind: Callable[[str], T]) -> dict[str, T]:
    """
    C{N} or C{SCENARIO=N} values by scenario; C{""} holds the one for all.

    @raise ValueError: for an unknown scenario or a value that is no number.
    """
    values: dict[str, T] = {}
    for text in texts:
        scenario, _, value = text.rpartition("=")
        if scenario and scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} in {text!r}")
        try:
            values[scenario] = kind(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    return values


def kinds(args: argparse.Namespace) -> tuple[str, ...]:
    """
    Paced, saturating or both: paced unless only --saturate was given.
    """
    chosen = []
    if args.rate or not args.saturate:
        chosen.append("paced")
    if args.saturate:
        chosen.append("saturate")
    return tuple(chosen)


def new_prefix() -> str:
    return "b" + "".join(secrets.choice(PREFIX_LETTERS) for _ in range(5))


async def execute(run: Run) -> None:
    """
    Connect, sign up, then every phase: message scenarios, the login storm,
    and last the reconnect scenario, which kills the server.
    """
    plan = run.plan
    await run.join_all()
    for number in range(1, plan.repeat + 1):
        for scenario in plan.scenarios:
            if scenario in MESSAGE_SCENARIOS:
                for kind in plan.kinds:
                    await run.message_phase(scenario, kind, number)
        if "login" in plan.scenarios:
            await login_storm(run, number)
    if "reconnect" in plan.scenarios:
        await reconnect(run, 1)
    await run.quit_all()


async def main_async(reactor: Any, args: argparse.Namespace) -> int:
    directory: Path | None = None
    servers: list[SpawnedServer] = []
    addresses = list(args.addresses)
    pid = args.server_pid
    kill: Callable[[], Awaitable[None]] | None = None
    prefix = new_prefix()
    try:
        if args.spawn:
            directory = Path(tempfile.mkdtemp(prefix="chat-bench-"))
            count = 2 if "reconnect" in args.scenarios else 1
            servers = [
                SpawnedServer(
                    reactor,
                    directory,
                    f"bench-{n}",
                    args.database,
                    args.redis,
                    limits=args.keep_limits,
                    backlog=args.backlog,
                )
                for n in range(count)
            ]
            if args.seed_accounts:
                await _seed(reactor, servers[0].database, prefix, args.connections)
            for server in servers:
                await server.start()
                print(
                    f"chat-bench: started {server.server_id}, pid {server.pid},"
                    f" on {server.address}",
                    file=sys.stderr,
                    flush=True,
                )
            addresses = [s.address for s in servers]
            pid = servers[0].pid
            kill = servers[0].kill
        elif pid is not None:
            kill = _killer(pid)
        plan = Plan(
            targets=addresses,
            prefix=prefix,
            connections=args.connections,
            scenarios=args.scenarios,
            kinds=kinds(args),
            rates=args.rates,
            window=args.window,
            senders=args.sender_counts,
            group_size=args.group_size,
            duration=args.duration,
            messages=args.messages,
            repeat=args.repeat,
            size=args.size,
            drain_timeout=args.drain_timeout,
            setup_timeout=args.setup_timeout,
            progress=not args.quiet,
            seeded=args.seed_accounts,
            spread=args.spread,
        )
        run = Run(reactor, plan, ProcessStats(pid) if pid else None, kill)
        try:
            await execute(run)
        except (CannotKill, TimeoutError) as e:
            print(f"chat-bench: {e}", file=sys.stderr)
            _report(run, args)
            return 1
        return 0 if _report(run, args) else 1
    except SpawnFailed as e:
        print(f"chat-bench: {e}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            await server.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


async def _seed(reactor: Any, database: str, prefix: str, count: int) -> None:
    plan = Plan(targets=[], prefix=prefix, connections=count)
    started = reactor.seconds()
    await seed_accounts(
        reactor, database, [plan.name(n) for n in range(count)], plan.password
    )
    print(
        f"chat-bench: {count} accounts seeded in {reactor.seconds() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _killer(pid: int) -> Callable[[], Awaitable[None]]:
    async def kill() -> None:
        os.kill(pid, signal.SIGKILL)

    return kill


def _report(run: Run, args: argparse.Namespace) -> bool:
    """
    Print the table (and the medians of repeated runs), write the JSON; true
    when every phase was correct.
    """
    results = run.results
    print(table(results))
    summary = medians(results) if args.repeat > 1 else []
    if summary:
        print(f"\nmedians of {args.repeat} runs:")
        print(table(summary))
    setup = run.setup
    print(
        f"\nsetup: {len(run.clients)} connections connected and"
        f" {'logged in' if args.seed_accounts else 'signed up'} in"
        f" {setup.signup_seconds:.1f} s ({setup.signup_rate:.1f}/s)"
    )
    for result in results:
        if result.extra and set(result.extra) != {"errors"}:
            print(f"{result.scenario} #{result.run}: {_extra(result)}")
    if args.json:
        write_json(args.json, _document(run, results, summary))
    return all(r.correct for r in results)


def _extra(result: PhaseResult) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in result.extra.items())


def _short(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _document(
    run: Run, results: list[PhaseResult], summary: list[PhaseResult]
) -> dict[str, Any]:
    plan = run.plan
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "plan": {
            "targets": [str(a) for a in plan.targets],
            "prefix": plan.prefix,
            "connections": plan.connections,
            "scenarios": list(plan.scenarios),
            "modes": list(plan.kinds),
            "rates": plan.rates,
            "window": plan.window,
            "senders": plan.senders,
            "group_size": plan.group_size,
            "duration": plan.duration,
            "messages": plan.messages,
            "repeat": plan.repeat,
            "size": plan.size,
        },
        "setup": vars(run.setup),
        "phases": [r.as_dict() for r in results],
        "medians": [r.as_dict() for r in summary],
    }


def main(argv: Sequence[str] | None = None) -> None:
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"chat-bench: {e} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2) from None
    warnings = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([warnings], redirectStandardIO=False)
    react(lambda reactor: _run(reactor, args))


def _run(reactor: Any, args: argparse.Namespace) -> Any:
    from twisted.internet.defer import Deferred

    d = Deferred.fromCoroutine(main_async(reactor, args))

    def exit_status(code: int) -> None:
        if code:
            raise SystemExit(code)

    return d.addCallback(exit_status)
