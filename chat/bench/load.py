"""
The two ways of sending: paced at a fixed offered rate, or saturating with a
window of messages in flight per sender.

Both send from the sender slots of a topology over the run's connections, stop
at the phase's duration or message budget, whichever comes first, and read
time only from the reactor.  A slot whose connection is down (during a
reconnect) is passed over; with C{refs} each message carries a client
reference, so that what was in flight when a connection died can be sent
again and stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall

from chat.bench.clients import JsonClient
from chat.bench.scenarios import Topology
from chat.bench.tracker import Books, Phase, message_text

# How often the paced load looks at the clock to send what is due.
PACED_TICK_SECONDS = 0.005
# A paced sender with this many messages unanswered skips its turn.
PACED_MAX_OUTSTANDING = 500


@dataclass(frozen=True)
class Mode:
    """
    C{paced} at C{rate} messages per second across all senders, or
    C{saturate} with C{window} messages in flight per sender.
    """

    kind: str
    rate: float = 0.0
    window: int = 1

    def __str__(self) -> str:
        if self.kind == "paced":
            return f"paced {self.rate:g}/s"
        return f"saturate w={self.window}"


class Load:
    """
    Sends one phase's messages.

    @ivar skipped: turns passed over because the sender's connection was down
        or had too much unanswered.
    """

    def __init__(
        self,
        clock: Any,
        books: Books,
        phase: Phase,
        clients: Sequence[JsonClient | None],
        topology: Topology,
        senders: Sequence[int],
        budget: int,
        padding: str = "",
        refs: bool = False,
    ) -> None:
        self.clock = clock
        self.books = books
        self.phase = phase
        self.clients = clients
        self.topology = topology
        self.senders = list(senders)
        self.budget = budget
        self.padding = padding
        self.refs = refs
        self.outstanding = dict.fromkeys(self.senders, 0)
        self.in_flight: dict[int, dict[int, tuple[str, str]]] = {
            s: {} for s in self.senders
        }
        self.skipped = 0
        self.running = False
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._finished: Deferred[None] = Deferred()
        self._timer: IDelayedCall | None = None

    def send(self, slot: int) -> bool:
        """
        Send one message from C{slot} now, if its connection is up.
        """
        client = self.clients[slot]
        if client is None or client.gone.called:
            self.skipped += 1
            return False
        now = self.clock.seconds()
        number = self.books.new_message(self.phase, slot, now)
        prefix = self.books.prefix
        text = message_text(prefix, number, now, self.padding)
        target = self.topology.target(slot)
        ref = f"{prefix}.{number}" if self.refs else ""
        if self.refs:
            self.in_flight[slot][number] = (target, text)
        client.send_msg(number, target, text, ref)
        self.outstanding[slot] += 1
        return True

    def resend(self, slot: int) -> int:
        """
        Send again, with the same references, what C{slot} has in flight;
        return how many.
        """
        client = self.clients[slot]
        assert client is not None
        prefix = self.books.prefix
        pending = sorted(self.in_flight.get(slot, {}).items())
        for number, (target, text) in pending:
            client.send_msg(number, target, text, f"{prefix}.{number}")
        return len(pending)

    def settled(self, slot: int, number: int) -> None:
        if slot in self.outstanding:
            self.outstanding[slot] -= 1
            self.in_flight[slot].pop(number, None)

    async def run(self, duration: float) -> None:
        """
        Send until C{duration} seconds pass or the budget is spent.
        """
        self.books.on_settled = self.settled
        self.running = True
        self.started_at = self.clock.seconds()
        self._timer = self.clock.callLater(duration, self.finish)
        self.start()
        await self._finished

    def start(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        if not self.running:
            return
        self.running = False
        self.stopped_at = self.clock.seconds()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.stop()
        self._finished.callback(None)

    def stop(self) -> None:
        pass


class Paced(Load):
    """
    A fixed offered rate, shared round-robin by the senders.

    At each tick it sends what the rate says is due since the start, so a
    late tick catches up instead of lowering the rate.
    """

    rate = 1.0

    def start(self) -> None:
        self.offered = 0
        self._turn = 0
        self._ticker = LoopingCall(self.tick)
        self._ticker.clock = self.clock
        self._ticker.start(PACED_TICK_SECONDS, now=True)

    def tick(self) -> None:
        if not self.senders:
            self.finish()
            return
        elapsed = self.clock.seconds() - self.started_at
        due = min(self.budget, int(elapsed * self.rate) + 1)
        while self.offered < due:
            slot = self.senders[self._turn % len(self.senders)]
            self._turn += 1
            self.offered += 1
            if self.outstanding[slot] >= PACED_MAX_OUTSTANDING:
                self.skipped += 1
            else:
                self.send(slot)
        if self.offered >= self.budget:
            self.finish()

    def stop(self) -> None:
        if self._ticker.running:
            self._ticker.stop()


class Saturating(Load):
    """
    Each sender keeps C{window} messages unanswered, sending the next as soon
    as one is answered.
    """

    window = 1

    def start(self) -> None:
        if not self.senders:
            self.finish()
            return
        for _ in range(self.window):
            for slot in self.senders:
                self._next(slot)

    def settled(self, slot: int, number: int) -> None:
        super().settled(slot, number)
        self._next(slot)

    def refill(self, slot: int) -> None:
        """
        Top up C{slot}'s window, after its connection came back.
        """
        while self.running and self.outstanding.get(slot, self.window) < self.window:
            if not self._next(slot):
                return

    def _next(self, slot: int) -> bool:
        if not self.running:
            return False
        if self.phase.sent >= self.budget:
            self.finish()
            return False
        return self.send(slot)


def make_load(mode: Mode, **arguments: Any) -> Load:
    if mode.kind == "paced":
        paced = Paced(**arguments)
        paced.rate = mode.rate
        return paced
    saturating = Saturating(**arguments)
    saturating.window = mode.window
    return saturating
