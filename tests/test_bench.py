"""
Tests for chat-bench: its statistics, /proc parsing, target rule, books and
senders in isolation, and a small run of the message scenarios against a
real daemon in this process, which must deliver every message exactly once.

The run is a regression guard for correctness, not a timed benchmark: it
asserts counts only and prints the figures for whoever reads the log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.bench import cli
from chat.bench.addresses import Address, BadTarget, is_loopback, parse_targets
from chat.bench.clients import JsonClient, Quiet
from chat.bench.load import Mode, Paced, Saturating, make_load
from chat.bench.procstat import BadProcFile, ProcessStats, parse_stat, parse_vmrss
from chat.bench.report import PhaseResult, medians, table
from chat.bench.runner import Plan, Run
from chat.bench.scenarios import Broadcast, Groups, Private
from chat.bench.seed import seed_accounts
from chat.bench.stats import median, percentile, summarize
from chat.bench.tracker import Books, message_text, parse_text
from chat.daemon import ChatDaemon, Settings
from chat.guard import Limits
from chat.passwords import Passwords, cheap_hasher
from tests.failover import flush_redis
from tests.servers import shared_postgres, shared_redis

# A Redis database of its own, emptied before use.
BENCH_REDIS_DATABASE = 13

STAT_TAIL = "S 1 2 3 4 5 6 7 8 9 10 {utime} {stime} 0 0 20 0 1 0 100 2000 30"


class PercentileTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """
        Of 1 to 100, the pth percentile is p itself: the smallest sample that
        p percent of the samples do not exceed.
        """
        values = [float(n) for n in range(1, 101)]
        self.assertEqual(
            [percentile(values, q) for q in (1, 50, 95, 99, 100)],
            [1.0, 50.0, 95.0, 99.0, 100.0],
        )

    def test_small_samples_round_up(self) -> None:
        """
        With few samples the percentile is always one of them, ranked up.
        """
        self.assertEqual(percentile([10.0, 20.0, 30.0], 50), 20.0)
        self.assertEqual(percentile([10.0, 20.0, 30.0], 99), 30.0)
        self.assertEqual(percentile([10.0, 20.0, 30.0], 0), 10.0)
        self.assertEqual(percentile([7.0], 99), 7.0)

    def test_refuses_nonsense(self) -> None:
        """
        No samples, or a percentile outside 0 to 100, is an error.
        """
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1.0], 101)
        self.assertRaises(ValueError, percentile, [1.0], -1)

    def test_median(self) -> None:
        """
        The median is the middle value, or the mean of the two middle ones.
        """
        self.assertEqual(median([3.0, 1.0, 2.0]), 2.0)
        self.assertEqual(median([4.0, 1.0, 2.0, 3.0]), 2.5)
        self.assertRaises(ValueError, median, [])

    def test_summary_in_milliseconds(self) -> None:
        """
        Samples in seconds are summarised in milliseconds; none gives zeros.
        """
        summary = summarize([0.001 * n for n in range(1, 101)])
        self.assertEqual(summary.count, 100)
        self.assertAlmostEqual(summary.p50, 50.0)
        self.assertAlmostEqual(summary.p99, 99.0)
        self.assertAlmostEqual(summary.max, 100.0)
        self.assertAlmostEqual(summary.mean, 50.5)
        self.assertEqual(summarize([]).count, 0)


class ProcTests(SynchronousTestCase):
    def test_stat_times(self) -> None:
        """
        utime and stime are read from fields 14 and 15, counted after the
        command name even when the name holds spaces and parentheses.
        """
        line = "4242 (twistd (a) b) " + STAT_TAIL.format(utime=150, stime=25)
        self.assertEqual(parse_stat(line), (150, 25))

    def test_stat_malformed(self) -> None:
        """
        A stat line without a command name or without enough fields is an
        error, not a zero.
        """
        self.assertRaises(BadProcFile, parse_stat, "4242 twistd S 1 2")
        self.assertRaises(BadProcFile, parse_stat, "4242 (twistd) S 1 2")

    def test_vmrss(self) -> None:
        """
        VmRSS in kB becomes bytes; a status without it (a zombie) gives None.
        """
        status = "Name:\ttwistd\nVmPeak:\t  9000 kB\nVmRSS:\t   51200 kB\nThreads: 3\n"
        self.assertEqual(parse_vmrss(status), 51200 * 1024)
        self.assertIsNone(parse_vmrss("Name:\ttwistd\nState:\tZ (zombie)\n"))
        self.assertRaises(BadProcFile, parse_vmrss, "VmRSS:\t12 MB\n")

    def test_process_stats_from_files(self) -> None:
        """
        L{ProcessStats} reads CPU seconds (user plus system, in clock ticks)
        and RSS from a proc directory, and gives None once the process is gone.
        """
        root = Path(self.mktemp())
        (root / "77").mkdir(parents=True)
        (root / "77" / "stat").write_text(
            "77 (twistd) " + STAT_TAIL.format(utime=250, stime=50)
        )
        (root / "77" / "status").write_text("VmRSS:\t2048 kB\n")
        stats = ProcessStats(77, root=root, ticks_per_second=100)
        self.assertEqual(stats.cpu_seconds(), 3.0)
        self.assertEqual(stats.rss_bytes(), 2048 * 1024)
        gone = ProcessStats(78, root=root, ticks_per_second=100).read()
        self.assertEqual((gone.cpu_seconds, gone.rss_bytes), (None, None))

    def test_this_process(self) -> None:
        """
        On this machine the readings of the test process itself are real.
        """
        reading = ProcessStats(os.getpid()).read()
        assert reading.cpu_seconds is not None and reading.rss_bytes is not None
        self.assertGreater(reading.cpu_seconds, 0)
        self.assertGreater(reading.rss_bytes, 1024 * 1024)


class TargetTests(SynchronousTestCase):
    def test_loopback_only(self) -> None:
        """
        Loopback addresses and localhost pass; anything else, including a
        name that would need a lookup, is refused without --allow-remote.
        """
        self.assertEqual(
            parse_targets(["127.0.0.1:30080,[::1]:30081", "localhost:1"], False),
            [
                Address("127.0.0.1", 30080),
                Address("::1", 30081),
                Address("localhost", 1),
            ],
        )
        self.assertFalse(is_loopback("10.0.0.1"))
        self.assertFalse(is_loopback("chat.example"))
        self.assertRaises(BadTarget, parse_targets, ["10.0.0.1:30080"], False)
        self.assertRaises(BadTarget, parse_targets, ["chat.example:30080"], False)
        self.assertEqual(
            parse_targets(["10.0.0.1:30080"], True), [Address("10.0.0.1", 30080)]
        )

    def test_malformed(self) -> None:
        """
        A target without a port, or with a port out of range, is refused.
        """
        for text in ("127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", ":80"):
            self.assertRaises(BadTarget, parse_targets, [text], True)

    def test_cli_refuses_remote(self) -> None:
        """
        The command line stops at a remote target unless told otherwise.
        """
        self.assertRaises(cli.UsageError, cli.parse_args, ["--target", "192.0.2.1:1"])
        args = cli.parse_args(["--target", "192.0.2.1:1", "--allow-remote"])
        self.assertEqual(args.addresses, [Address("192.0.2.1", 1)])

    def test_cli_per_scenario_values(self) -> None:
        """
        --rate and --senders take a value for all and values per scenario;
        --rate with --saturate runs both modes.
        """
        args = cli.parse_args(
            ["--spawn", "--rate", "200", "--rate", "broadcast=5", "--saturate"]
            + ["--senders", "broadcast=10"]
        )
        self.assertEqual(args.rates, {"": 200.0, "broadcast": 5.0})
        self.assertEqual(args.sender_counts, {"broadcast": 10})
        self.assertEqual(cli.kinds(args), ("paced", "saturate"))
        self.assertRaises(cli.UsageError, cli.parse_args, ["--spawn", "--rate", "x=1"])
        self.assertRaises(
            cli.UsageError,
            cli.parse_args,
            ["--target", "127.0.0.1:1", "--seed-accounts"],
        )
        self.assertRaises(
            cli.UsageError, cli.parse_args, ["--spawn", "--target", "127.0.0.1:1"]
        )
        self.assertTrue(cli.parse_args(["--spawn", "--spread"]).spread)
        self.assertRaises(
            cli.UsageError,
            cli.parse_args,
            ["--spawn", "--spread", "--scenario", "private,reconnect"],
        )


def _client(books: Books, index: int, name: str) -> JsonClient:
    client = JsonClient(Clock(), books, index)
    client.name = name
    client.makeConnection(StringTransport())
    return client


def _event(sender: str, text: str, id: int = 1) -> dict[str, Any]:
    return {"id": id, "kind": "private", "from": sender, "to": "x", "text": text}


class BooksTests(SynchronousTestCase):
    def test_text_round_trip(self) -> None:
        """
        The run prefix, message number and send time survive the text, with
        or without padding; other text is not taken for a benchmark message.
        """
        text = message_text("babc12", 42, 1234.5, " xxxx")
        self.assertEqual(parse_text(text), ("babc12", 42, 1234.5))
        self.assertIsNone(parse_text("hello t=12"))
        self.assertIsNone(parse_text("babc12/4x t=12"))

    def test_exactly_once(self) -> None:
        """
        The books count a first delivery, a duplicate, a delivery to someone
        the message was not for, and what never arrived.
        """
        names = ["u0", "u1", "u2", "u3"]
        books = Books("bp")
        topology = Private(names, range(4))
        phase = books.open_phase("private", topology)
        clients = [_client(books, n, names[n]) for n in range(4)]
        first = books.new_message(phase, 0, 10.0)
        second = books.new_message(phase, 2, 10.0)
        for number in (first, second):
            books.acked(clients[0], number, {})
        books.delivered(clients[1], _event("u0", message_text("bp", first, 10, "")), 11)
        books.delivered(clients[1], _event("u0", message_text("bp", first, 10, "")), 12)
        books.delivered(clients[2], _event("u0", message_text("bp", first, 10, "")), 12)
        books.delivered(clients[1], _event("zed", "not ours t=1"), 12)
        self.assertFalse(phase.complete)
        books.close_phase(phase)
        self.assertEqual(
            (phase.unique, phase.duplicates, phase.misdirected, phase.lost),
            (1, 1, 1, 1),
        )
        self.assertEqual(books.foreign, 1)
        self.assertEqual(list(phase.latencies), [1.0])

    def test_refused_and_unanswered(self) -> None:
        """
        A refused message is counted by its error code, one never answered
        as unacknowledged, and neither is owed to anyone.
        """
        books = Books("bp")
        phase = books.open_phase("broadcast", Broadcast(3))
        client = _client(books, 0, "u0")
        books.refused(client, books.new_message(phase, 0, 1.0), "unavailable")
        books.new_message(phase, 0, 1.0)
        books.close_phase(phase)
        self.assertEqual(dict(phase.refused), {"unavailable": 1})
        self.assertEqual((phase.unacked, phase.lost, phase.expected), (1, 0, 0))


class TopologyTests(SynchronousTestCase):
    def test_private_pairs(self) -> None:
        """
        Slots pair up in twos; an odd one out only listens.
        """
        private = Private(["a", "b", "c", "d", "e"], range(5))
        self.assertEqual(private.senders(), [0, 1, 2, 3])
        self.assertEqual(private.target(2), "d")
        self.assertTrue(private.intended(3, 2))
        self.assertFalse(private.intended(3, 1))
        self.assertEqual(private.fanout(4), 0)

    def test_groups_absorb_a_small_remainder(self) -> None:
        """
        Eleven people in groups of five make two groups, the last of six.
        """
        groups = Groups([f"u{n}" for n in range(11)], 5, "bp")
        self.assertEqual(list(groups.members(1)), [5, 6, 7, 8, 9, 10])
        self.assertEqual(groups.target(10), "#bpg1")
        self.assertEqual((groups.fanout(0), groups.fanout(10)), (4, 5))
        self.assertTrue(groups.intended(5, 10))
        self.assertFalse(groups.intended(4, 5))


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.books = Books("bp")
        self.topology = Private(["u0", "u1", "u2", "u3"], range(4))
        self.phase = self.books.open_phase("private", self.topology)
        self.transports = [StringTransport() for _ in range(4)]
        self.clients: list[JsonClient | None] = []
        for n, transport in enumerate(self.transports):
            client = JsonClient(self.clock, Quiet(), n)
            client.makeConnection(transport)
            transport.clear()
            self.clients.append(client)

    def sent(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for t in self.transports
            for line in t.value().decode().splitlines()
        ]

    def make(self, mode: Mode, budget: int = 1000) -> Any:
        return make_load(
            mode,
            clock=self.clock,
            books=self.books,
            phase=self.phase,
            clients=self.clients,
            topology=self.topology,
            senders=self.topology.senders(),
            budget=budget,
        )

    def test_paced_rate(self) -> None:
        """
        Paced at 100 per second, one second of the clock sends about a
        hundred messages, shared round-robin, each to the sender's partner.
        """
        load = self.make(Mode("paced", rate=100))
        self.assertIsInstance(load, Paced)
        running = _start(load, 1.0)
        self.clock.pump([0.005] * 200)
        self.assertTrue(running.called)
        messages = self.sent()
        self.assertIn(len(messages), range(100, 103))
        self.assertEqual({m["target"] for m in messages[:1]}, {"u1"})
        self.assertEqual(len(self.transports[3].value().decode().splitlines()), 25)

    def test_paced_budget(self) -> None:
        """
        The message budget ends a paced phase early.
        """
        running = _start(self.make(Mode("paced", rate=1000), budget=7), 60.0)
        self.clock.pump([0.005] * 10)
        self.assertTrue(running.called)
        self.assertEqual(len(self.sent()), 7)

    def test_saturating_window(self) -> None:
        """
        Saturating with a window of 2, each sender has two messages out; an
        answer lets it send one more.
        """
        load = self.make(Mode("saturate", window=2))
        self.assertIsInstance(load, Saturating)
        _start(load, 10.0)
        self.assertEqual(load.outstanding, {0: 2, 1: 2, 2: 2, 3: 2})
        first = self.sent()[0]
        client = self.clients[0]
        assert client is not None
        self.books.acked(client, first["id"], {})
        self.assertEqual(load.outstanding[0], 2)
        self.assertEqual(self.phase.sent, 9)

    def test_down_connection_skipped(self) -> None:
        """
        A sender whose connection is down is passed over, not queued.
        """
        self.clients[1] = None
        load = self.make(Mode("saturate", window=1))
        _start(load, 10.0)
        self.assertEqual(load.skipped, 1)
        self.assertEqual(self.phase.sent, 3)


def _start(load: Any, duration: float) -> Deferred[None]:
    return Deferred.fromCoroutine(load.run(duration))


class ReportTests(SynchronousTestCase):
    def test_medians_and_table(self) -> None:
        """
        Repeated runs reduce to medians per scenario and mode, losses and
        errors add up, and the table shows one line per result.
        """
        runs = [
            PhaseResult("private", "paced 100/s", n, 20, 20, send_rate=r, lost=n)
            for n, r in ((1, 90.0), (2, 100.0), (3, 120.0))
        ]
        [middle] = medians(runs)
        self.assertEqual((middle.send_rate, middle.lost, middle.run), (100.0, 6, 3))
        self.assertFalse(middle.correct)
        self.assertEqual(len(table(runs).splitlines()), 4)


class RunTests(TestCase):
    """
    A small run of the message scenarios against a real daemon (in this
    process, with cheap password hashing so that sign-up is quick, and
    without the per-connection limits, as C{--spawn} runs it).
    """

    timeout = 120

    async def start_daemon(
        self, database: str = "", redis: str | None = None, server_id: str = "bench"
    ) -> int:
        if not database:
            directory = self.mktemp()
            os.makedirs(directory)
            database = "sqlite:" + os.path.join(directory, "chat.db")
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            database=database,
            redis=redis,
            server_id=server_id,
            passwords=Passwords(reactor, cheap_hasher()),
            drain=0.0,
            limits=Limits(command_rate=0, login_timeout=0),
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        await daemon.ready
        return int(daemon.ports[0].getHost().port)

    async def test_message_scenarios_exactly_once(self) -> None:
        """
        Private, group and broadcast traffic among 20 connections, 200
        messages each, paced and saturating: every message is acknowledged
        and reaches each intended recipient exactly once, with no error.
        """
        port = await self.start_daemon()
        await self.exactly_once([Address("127.0.0.1", port)])

    async def test_cluster_message_scenarios_exactly_once(self) -> None:
        """
        The same traffic across two replicas in cluster mode, sharing a real
        PostgreSQL and Redis, with the connections spread over both: every
        message crosses Redis and each replica's in-order hand-on, and still
        reaches each intended recipient exactly once.
        """
        postgres, redis = shared_postgres(), shared_redis()
        database = postgres.create_database()
        self.addCleanup(postgres.drop_database, database)
        flush_redis(redis.port, BENCH_REDIS_DATABASE)
        redis_url = f"redis://127.0.0.1:{redis.port}/{BENCH_REDIS_DATABASE}"
        targets = [
            Address("127.0.0.1", await self.start_daemon(database, redis_url, name))
            for name in ("bench-a", "bench-b")
        ]
        await self.exactly_once(targets)

    async def exactly_once(self, targets: list[Address]) -> None:
        plan = Plan(
            targets=targets,
            spread=True,
            prefix="btest",
            connections=20,
            scenarios=("private", "group", "broadcast"),
            kinds=("paced", "saturate"),
            rates={"": 1000.0},
            window=2,
            group_size=5,
            duration=20.0,
            messages=200,
            drain_timeout=20.0,
            setup_timeout=60.0,
            progress=False,
        )
        run = Run(reactor, plan, ProcessStats(os.getpid()))
        await run.join_all()
        for scenario in plan.scenarios:
            for kind in plan.kinds:
                await run.message_phase(scenario, kind, 1)
        await run.quit_all()
        print("\n" + table(run.results))
        fanout = {"private": 1, "group": 4, "broadcast": 19}
        for result in run.results:
            self.assertEqual(result.acked, 200, result.as_dict())
            self.assertEqual(result.deliveries, 200 * fanout[result.scenario])
            self.assertEqual(result.expected, result.deliveries)
            self.assertEqual(
                (result.errors, result.duplicates, result.lost, result.misdirected),
                (0, 0, 0, 0),
                result.as_dict(),
            )
            self.assertEqual(result.latency.count, result.deliveries)
            self.assertTrue(result.correct)

    async def test_seeded_accounts_log_in(self) -> None:
        """
        Accounts seeded into the database before the daemon starts log in
        with the run's password, and a second seeding finds the schema there.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        database = "sqlite:" + os.path.join(directory, "chat.db")
        plan = Plan(
            targets=[], prefix="bseed", connections=30, seeded=True, progress=False
        )
        names = [plan.name(slot) for slot in range(plan.connections)]
        await seed_accounts(reactor, database, names[:10], plan.password)
        await seed_accounts(reactor, database, names[10:], plan.password)
        plan.targets = [Address("127.0.0.1", await self.start_daemon(database))]
        run = Run(reactor, plan)
        await run.join_all()
        self.assertEqual(len(run.live()), plan.connections)
        await run.quit_all()
