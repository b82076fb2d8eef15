"""
The reconnect scenario: the replica everyone is on dies, and they come back
on another.

Everyone is connected to the first target, in private pairs, sending with
client references.  A third of the way into the phase the server is killed
with SIGKILL; each connection then connects to the next target and resumes
with its token and the last message id it was shown, and sends again what
was unanswered (the references make the server store each message once).
A replica that cannot resume the session (in the embedded default, tokens
live in the dead replica's memory) gets a password login instead, and the
connection catches up from the conversation's history.

The figures: how long until every connection had resumed, how long until
each had every message sent to it before the kill, and, as in every phase,
whether each message arrived exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater

from chat.bench.clients import JsonClient, ReplyError
from chat.bench.load import Load, Saturating
from chat.bench.report import PhaseResult
from chat.bench.scenarios import Private
from chat.bench.stats import summarize
from chat.bench.tracker import parse_text

if TYPE_CHECKING:
    from chat.bench.runner import Run

# The kill comes this far into the phase.
KILL_AT_FRACTION = 1 / 3
RETRY_SECONDS = 0.1
HISTORY_LIMIT = 500


class CannotKill(RuntimeError):
    """
    The scenario needs a server the tool may kill and a second address.
    """


async def reconnect(run: Run, number: int) -> PhaseResult:
    if run.kill is None:
        raise CannotKill(
            "reconnect kills the server: start it with --spawn or name it"
            " with --server-pid"
        )
    if len(run.plan.targets) < 2:
        raise CannotKill("reconnect needs a second address in --target")
    topology = Private(run.names, range(len(run.clients)))
    recovery = _Recovery(run, topology)
    result = await run.measure(
        "reconnect",
        run.plan.mode(run.plan.kinds[0], "reconnect"),
        number,
        topology,
        topology.senders(),
        refs=True,
        during=recovery.during,
    )
    caught_up = summarize(recovery.caught_up())
    result.extra["caught_up"] = caught_up.count
    result.extra["caught_up_p50_ms"] = caught_up.p50
    result.extra["caught_up_p95_ms"] = caught_up.p95
    result.extra["caught_up_max_ms"] = caught_up.max
    return result


class _Recovery:
    def __init__(self, run: Run, topology: Private) -> None:
        self.run = run
        self.topology = topology
        self.resumed_at: dict[int, float] = {}
        self.fallbacks = 0
        self.replayed = 0
        self.resent = 0
        self.failures: dict[str, int] = {}
        self.killed_at = 0.0

    async def during(self, load: Load) -> dict[str, Any]:
        run = self.run
        await deferLater(
            run.reactor, run.plan.duration * KILL_AT_FRACTION, lambda: None
        )
        assert run.kill is not None
        run.books.on_closed = lambda client: None
        doomed = list(run.clients)
        self.killed_at = run.now()
        await run.kill()
        recovering = [
            Deferred.fromCoroutine(self.recover(load, client))
            for client in doomed
            if client is not None
        ]
        await run.bounded(gatherResults(recovering), "reconnecting")
        return self.figures(load)

    async def recover(self, load: Load, old: JsonClient) -> None:
        run = self.run
        slot = old.index
        await old.gone
        run.clients[slot] = None
        try:
            client = await self.connect(slot)
            await self.resume(client, old)
        except Exception as e:
            reason = getattr(e, "code", type(e).__name__)
            self.failures[reason] = self.failures.get(reason, 0) + 1
            return
        run.clients[slot] = client
        self.resumed_at[slot] = run.now()
        self.resent += load.resend(slot)
        if isinstance(load, Saturating):
            load.refill(slot)

    async def connect(self, slot: int) -> JsonClient:
        run = self.run
        targets = run.plan.targets[1:]
        attempt = 0
        while True:
            try:
                return await run.open(slot, targets[attempt % len(targets)])
            except ConnectError:
                attempt += 1
                if run.now() - self.killed_at > run.plan.setup_timeout:
                    raise
                await deferLater(run.reactor, RETRY_SECONDS, lambda: None)

    async def resume(self, client: JsonClient, old: JsonClient) -> None:
        client.name = old.name
        try:
            reply = await client.resume(old.token, old.last_id)
        except ReplyError as e:
            if e.code != "bad_token":
                raise
            await client.login(old.name, old.password)
            self.fallbacks += 1
            await self.catch_up(client, old.last_id)
            return
        client.password = old.password
        self.replayed += int(reply.get("missed", 0))

    async def catch_up(self, client: JsonClient, after: int) -> None:
        """
        Count as delivered what the history holds beyond C{after} that this
        connection has not been shown yet.
        """
        partner = self.topology.partner(client.index)
        if partner is None:
            return
        reply = await client.request(
            "history", target=self.run.names[partner], limit=HISTORY_LIMIT
        )
        phase = self.run.books.phases[-1]
        books = self.run.books
        for message in reply.get("messages", []):
            if message["id"] <= after or message.get("from") == client.name:
                continue
            number = _number(books.prefix, message)
            if number is None or phase.has_seen(client.index, number):
                continue
            books.delivered(client, message, self.run.now())

    def figures(self, load: Load) -> dict[str, Any]:
        resumed = [at - self.killed_at for at in self.resumed_at.values()]
        return {
            "resumed": len(self.resumed_at),
            "all_resumed_seconds": max(resumed, default=0.0),
            "resume_p50_ms": summarize(resumed).p50,
            "resume_p95_ms": summarize(resumed).p95,
            "password_fallbacks": self.fallbacks,
            "replayed_by_resume": self.replayed,
            "resent": self.resent,
            "reconnect_failures": self.failures,
            "errors": sum(self.failures.values()),
        }

    def caught_up(self) -> list[float]:
        """
        For each connection that got every message sent to it before the
        kill: how long after the kill the last of them arrived (zero if all
        had arrived before).
        """
        books = self.run.books
        phase = books.phases[-1]
        last: dict[int, float] = {}
        missing: set[int] = set()
        for number in range(phase.first, phase.first + phase.sent):
            if books.sent_at[number] >= self.killed_at or not books.is_acked(number):
                continue
            recipient = self.topology.partner(books.sender_of(number))
            if recipient is None:
                continue
            arrived = books.arrived_at[number]
            if not arrived:
                missing.add(recipient)
            last[recipient] = max(last.get(recipient, 0.0), arrived - self.killed_at)
        return [max(0.0, t) for slot, t in last.items() if slot not in missing]


def _number(prefix: str, message: dict[str, Any]) -> int | None:
    parsed = parse_text(str(message.get("text", "")))
    return parsed[1] if parsed and parsed[0] == prefix else None
