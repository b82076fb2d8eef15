"""
One benchmark run: connect and sign up every connection once, then measure
each phase in turn over those same connections.

A phase is a scenario in one mode.  Its figures run from the first message
sent until every delivery owed has arrived (or the drain gives up); the
connections, accounts and groups are made beforehand and not measured,
except by the login storm, which measures exactly that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from chat.bench import clients as connections
from chat.bench.addresses import Address
from chat.bench.clients import JsonClient
from chat.bench.load import Load, Mode, make_load
from chat.bench.procstat import ProcessStats, Reading, cpu_used
from chat.bench.report import PhaseResult, progress_line
from chat.bench.scenarios import Broadcast, Groups, Private, Topology
from chat.bench.stats import percentile, rate, summarize
from chat.bench.tracker import Books, Phase

# Sign-ups in flight at once; the server hashes two passwords at a time.
JOIN_CONCURRENCY = 16
DRAIN_POLL_SECONDS = 0.02
PROGRESS_SECONDS = 1.0
# Runs at least this long print a progress line every second.
PROGRESS_AFTER_SECONDS = 3.0
QUIT_TIMEOUT_SECONDS = 30.0
DEFAULT_RATE = 100.0


@dataclass
class Plan:
    """
    What to run, as the command line gave it.
    """

    targets: list[Address]
    prefix: str
    connections: int = 20
    scenarios: tuple[str, ...] = ("private",)
    kinds: tuple[str, ...] = ("paced",)
    rates: dict[str, float] = field(default_factory=dict)
    window: int = 1
    senders: dict[str, int] = field(default_factory=dict)
    group_size: int = 10
    duration: float = 5.0
    messages: int = 100_000
    repeat: int = 1
    size: int = 0
    drain_timeout: float = 10.0
    setup_timeout: float = 600.0
    progress: bool = True
    # The accounts exist already (chat.bench.seed): log in, do not sign up.
    seeded: bool = False
    # Connections go to every target in turn, not all to the first.
    spread: bool = False

    @property
    def password(self) -> str:
        return f"bench-{self.prefix}-password"

    def name(self, slot: int) -> str:
        return f"{self.prefix}u{slot}"

    def mode(self, kind: str, scenario: str) -> Mode:
        """
        The mode C{kind} with its settings for C{scenario}; a rate or a
        sender count given for a scenario wins over the one given for all.
        """
        if kind == "paced":
            rate = self.rates.get(scenario, self.rates.get("", DEFAULT_RATE))
            return Mode("paced", rate=rate)
        return Mode("saturate", window=self.window)

    def senders_for(self, scenario: str) -> int:
        """
        How many connections send in C{scenario}; 0 for all that can.
        """
        return self.senders.get(scenario, self.senders.get("", 0))


@dataclass
class Setup:
    """
    How long the connections and accounts took; not part of any phase.
    """

    signup_seconds: float = 0.0
    signup_rate: float = 0.0
    groups_seconds: float = 0.0


class Run:
    """
    The connections of one run and the phases measured over them.

    @param server: readings of the server process, when it is local and known.
    @param kill: kills the server that the connections use, for the
        reconnect scenario; C{None} when the tool may not.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        plan: Plan,
        server: ProcessStats | None = None,
        kill: Callable[[], Awaitable[None]] | None = None,
        err: TextIO = sys.stderr,
    ) -> None:
        self.reactor = reactor
        self.plan = plan
        self.server = server
        self.kill = kill
        self.err = err
        self.books = Books(plan.prefix)
        self.clients: list[JsonClient | None] = []
        self.names = [plan.name(slot) for slot in range(plan.connections)]
        self.setup = Setup()
        self.results: list[PhaseResult] = []
        self._self = ProcessStats(os.getpid())
        self._groups: Groups | None = None
        self._closed_in_phase = 0

    def now(self) -> float:
        return float(self.reactor.seconds())

    def live(self) -> list[JsonClient]:
        return [c for c in self.clients if c is not None]

    # Setup

    async def open(self, slot: int, address: Address) -> JsonClient:
        return await connections.connect(self.reactor, address, self.books, slot)

    async def join_all(self) -> None:
        """
        Connect every slot and sign it up (log it in when the accounts were
        seeded), a few at a time: a connection opened long before its sign-up
        could meet the server's login timeout.
        """
        started = self.now()
        gate = DeferredSemaphore(JOIN_CONCURRENCY)
        targets = self.plan.targets if self.plan.spread else self.plan.targets[:1]
        self.clients = [None] * self.plan.connections

        async def join(slot: int) -> None:
            client = await self.open(slot, targets[slot % len(targets)])
            if self.plan.seeded:
                await client.login(self.names[slot], self.plan.password)
            else:
                await client.signup(self.names[slot], self.plan.password)
            self.clients[slot] = client

        def start(slot: int) -> Deferred[None]:
            return Deferred.fromCoroutine(join(slot))

        joining = gatherResults(
            [gate.run(start, slot) for slot in range(self.plan.connections)],
            consumeErrors=True,
        )
        ticker = self._every_second(
            lambda: (
                f"[setup] {'logged in' if self.plan.seeded else 'signed up'}"
                f" {len(self.live())}/{len(self.clients)}"
                f" in {self.now() - started:.0f} s"
            )
        )
        try:
            await self.bounded(joining, "connecting and signing up")
        finally:
            ticker.stop()
        self.setup.signup_seconds = self.now() - started
        self.setup.signup_rate = rate(len(self.clients), self.setup.signup_seconds)

    def _every_second(self, line: Callable[[], str]) -> LoopingCall:
        """
        Print C{line()} to the error stream every second (unless quiet),
        starting a second from now.
        """

        def show() -> None:
            if self.plan.progress:
                print(line(), file=self.err, flush=True)

        ticker = LoopingCall(show)
        ticker.clock = self.reactor
        ticker.start(PROGRESS_SECONDS, now=False).addErrback(
            lambda f: self.log.failure("progress line failed", f)
        )
        return ticker

    async def bounded(self, work: Deferred[Any], what: str) -> Any:
        def late(result: object, timeout: float) -> None:
            raise TimeoutError(f"{what} took more than {timeout} s")

        return await work.addTimeout(
            self.plan.setup_timeout, self.reactor, onTimeoutCancel=late
        )

    async def quit_all(self) -> None:
        """
        Log every connection out, so the server's sessions end cleanly.
        """
        leaving = gatherResults(
            [Deferred.fromCoroutine(c.quit()) for c in self.live()],
            consumeErrors=True,
        )
        try:
            await leaving.addTimeout(QUIT_TIMEOUT_SECONDS, self.reactor)
        except Exception as e:
            self.log.warn("not every connection logged out: {error}", error=e)
            for client in self.live():
                client.kill()

    async def groups(self) -> Groups:
        if self._groups is None:
            started = self.now()
            clients = [c for c in self.clients if c is not None]
            groups = Groups(self.names, self.plan.group_size, self.plan.prefix)
            await self.bounded(
                Deferred.fromCoroutine(groups.prepare(clients)), "creating groups"
            )
            self._groups = groups
            self.setup.groups_seconds = self.now() - started
        return self._groups

    async def topology(self, scenario: str) -> Topology:
        if scenario == "group":
            return await self.groups()
        if scenario == "broadcast":
            return Broadcast(len(self.clients))
        return Private(self.names, range(len(self.clients)))

    def choose_senders(self, scenario: str, topology: Topology) -> list[int]:
        senders = topology.senders()
        limit = self.plan.senders_for(scenario)
        return senders[:limit] if limit else senders

    # Phases

    async def message_phase(self, scenario: str, kind: str, run: int) -> PhaseResult:
        topology = await self.topology(scenario)
        return await self.measure(
            scenario,
            self.plan.mode(kind, scenario),
            run,
            topology,
            self.choose_senders(scenario, topology),
        )

    async def measure(
        self,
        scenario: str,
        mode: Mode,
        run: int,
        topology: Topology,
        senders: Sequence[int],
        duration: float | None = None,
        refs: bool = False,
        during: Callable[[Load], Awaitable[dict[str, Any]]] | None = None,
    ) -> PhaseResult:
        """
        Send and count one phase; C{during} runs beside the load (a login
        storm, a server kill) and returns extra figures for the result.
        """
        label = f"{scenario} {mode} #{run}"
        duration = self.plan.duration if duration is None else duration
        phase = self.books.open_phase(label, topology)
        load = make_load(
            mode,
            clock=self.reactor,
            books=self.books,
            phase=phase,
            clients=self.clients,
            topology=topology,
            senders=senders,
            budget=self.plan.messages,
            padding=" " + "x" * self.plan.size if self.plan.size else "",
            refs=refs,
        )
        self._closed_in_phase = 0
        self.books.on_closed = self._closed
        before, mine = self._read(), self._self.read()
        ticker = self._progress(label, phase, duration)
        sending = Deferred.fromCoroutine(load.run(duration))
        extra: dict[str, Any] = {}
        try:
            if during is not None:
                extra = await during(load)
            await sending
            await self.drain(phase)
        finally:
            load.finish()
            if ticker is not None and ticker.running:
                ticker.stop()
        after, mine_after = self._read(), self._self.read()
        self.books.close_phase(phase)
        extra["errors"] = extra.get("errors", 0) + self._closed_in_phase
        result = self.result(scenario, mode, run, phase, load, before, after)
        result.client_cpu_seconds = cpu_used(mine, mine_after)
        result.load_average = os.getloadavg()[0]
        result.extra.update(extra)
        self.results.append(result)
        return result

    def _closed(self, client: JsonClient) -> None:
        self._closed_in_phase += 1

    def _read(self) -> Reading:
        return self.server.read() if self.server else Reading(None, None)

    async def drain(self, phase: Phase) -> None:
        deadline = self.now() + self.plan.drain_timeout
        while not phase.complete and self.now() < deadline:
            await deferLater(self.reactor, DRAIN_POLL_SECONDS, lambda: None)

    def _progress(
        self, label: str, phase: Phase, duration: float
    ) -> LoopingCall | None:
        if duration <= PROGRESS_AFTER_SECONDS:
            return None
        started = self.now()
        seen = [0]

        def line() -> str:
            fresh = sorted(phase.latencies[seen[0] :])
            seen[0] = len(phase.latencies)
            p99 = percentile(fresh, 99) * 1000 if fresh else 0.0
            return progress_line(
                label, self.now() - started, duration, phase.sent, phase.unique, p99
            )

        return self._every_second(line)

    def result(
        self,
        scenario: str,
        mode: Mode,
        run: int,
        phase: Phase,
        load: Load,
        before: Reading,
        after: Reading,
    ) -> PhaseResult:
        seconds = load.stopped_at - load.started_at
        storing = max(phase.last_ack, load.stopped_at) - load.started_at
        delivering = (phase.last_arrival or load.stopped_at) - load.started_at
        cpu = cpu_used(before, after)
        return PhaseResult(
            scenario=scenario,
            mode=str(mode),
            run=run,
            connections=len(self.clients),
            senders=len(load.senders),
            seconds=seconds,
            sent=phase.sent,
            acked=phase.acked,
            skipped=load.skipped,
            send_rate=rate(phase.acked, storing),
            deliveries=phase.unique,
            expected=phase.expected,
            delivery_rate=rate(phase.unique, delivering),
            latency=summarize(phase.latencies),
            server_cpu_seconds=cpu,
            cpu_per_1k_messages=_per_1k(cpu, phase.acked),
            cpu_per_1k_deliveries=_per_1k(cpu, phase.unique),
            rss_before=before.rss_bytes,
            rss_after=after.rss_bytes,
            refused=dict(phase.refused),
            unacked=phase.unacked,
            duplicates=phase.duplicates,
            lost=phase.lost,
            misdirected=phase.misdirected,
            late=phase.late,
        )


def _per_1k(cpu: float | None, count: int) -> float | None:
    return cpu / count * 1000 if cpu is not None and count else None
