"""
The books of a run: every message sent, every acknowledgement and every
delivery, so that latency and exactly-once delivery can be reported.

Messages are numbered across the whole run; the number and the send time
travel inside the text (C{PREFIX/NUMBER t=NANOSECONDS}), so a delivery is
matched without waiting for the sender's acknowledgement, which may come
later.  Per-message facts live in flat arrays; each phase counts its own
deliveries and remembers, per recipient, which numbers it has seen, to tell a
duplicate from a first delivery.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

from chat.bench.clients import JsonClient
from chat.bench.scenarios import Topology

NANOSECONDS = 1_000_000_000
_MARK = " t="
_SENT, _ACKED, _REFUSED = 0, 1, 2


def message_text(prefix: str, number: int, sent_at: float, padding: str) -> str:
    return f"{prefix}/{number}{_MARK}{round(sent_at * NANOSECONDS)}{padding}"


def parse_text(text: str) -> tuple[str, int, float] | None:
    """
    The run prefix, message number and send time (seconds) carried by a
    benchmark message, or C{None} for any other text.
    """
    head, mark, rest = text.partition(_MARK)
    prefix, slash, number = head.rpartition("/")
    stamp = rest.split(" ", 1)[0]
    if not (mark and slash and number.isdigit() and stamp.isdigit()):
        return None
    return prefix, int(number), int(stamp) / NANOSECONDS


class Phase:
    """
    The counts of one measured phase.

    @ivar first: the number of the phase's first message.
    @ivar expected: deliveries owed for the messages acknowledged so far.
    @ivar unique: first deliveries to an intended recipient.
    """

    def __init__(self, label: str, topology: Topology, first: int) -> None:
        self.label = label
        self.topology = topology
        self.first = first
        self.sent = 0
        self.acked = 0
        self.resend_acks = 0
        self.refused: Counter[str] = Counter()
        self.expected = 0
        self.unique = 0
        self.duplicates = 0
        self.misdirected = 0
        self.echoes = 0
        self.late = 0
        self.latencies = array("d")
        self.first_arrival = 0.0
        self.last_arrival = 0.0
        self.last_ack = 0.0
        self.closed = False
        self.lost = 0
        self.unacked = 0
        self._seen: dict[int, set[int]] = {}

    @property
    def settled(self) -> bool:
        """
        Every message sent is acknowledged or refused.
        """
        return self.acked + sum(self.refused.values()) >= self.sent

    @property
    def complete(self) -> bool:
        """
        Settled, and every delivery owed has arrived.
        """
        return self.settled and self.unique >= self.expected

    def deliver(self, recipient: int, number: int, latency: float, at: float) -> bool:
        """
        Count a delivery to an intended recipient; C{False} for a duplicate.
        """
        seen = self._seen.setdefault(recipient, set())
        if number in seen:
            self.duplicates += 1
            return False
        seen.add(number)
        self.unique += 1
        self.latencies.append(latency)
        if not self.first_arrival:
            self.first_arrival = at
        self.last_arrival = at
        return True

    def has_seen(self, recipient: int, number: int) -> bool:
        return number in self._seen.get(recipient, ())

    def forget(self) -> None:
        self.closed = True
        self._seen = {}


class Books:
    """
    The L{chat.bench.clients.Listener} of every connection of a run.

    @ivar on_settled: called with the sender's slot when one of its messages
        is acknowledged or refused; the saturating load refills its window.
    @ivar on_closed: called with a connection that closed.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.phases: list[Phase] = []
        self.foreign = 0
        self.on_settled: Callable[[int, int], None] = lambda slot, number: None
        self.on_closed: Callable[[JsonClient], None] = lambda client: None
        self._sender = array("i")
        self._phase = array("i")
        self._state = bytearray()
        self._arrivals = array("i")
        self.sent_at = array("d")
        self.arrived_at = array("d")

    def open_phase(self, label: str, topology: Topology) -> Phase:
        phase = Phase(label, topology, len(self._sender))
        self.phases.append(phase)
        return phase

    def new_message(self, phase: Phase, sender: int, at: float) -> int:
        """
        Number a message that C{sender} sends in C{phase} at C{at}.
        """
        number = len(self._sender)
        self.sent_at.append(at)
        self._sender.append(sender)
        self._phase.append(len(self.phases) - 1)
        self._state.append(_SENT)
        self._arrivals.append(0)
        self.arrived_at.append(0.0)
        phase.sent += 1
        return number

    def sender_of(self, number: int) -> int:
        return self._sender[number]

    def is_acked(self, number: int) -> bool:
        return self._state[number] == _ACKED

    def close_phase(self, phase: Phase) -> None:
        """
        Stop counting deliveries for C{phase} and work out what was lost.
        """
        fanout = phase.topology.fanout
        end = phase.first + phase.sent
        for number in range(phase.first, end):
            state = self._state[number]
            if state == _ACKED:
                owed = fanout(self._sender[number]) - self._arrivals[number]
                phase.lost += max(0, owed)
            elif state == _SENT:
                phase.unacked += 1
        phase.forget()

    # Listener

    def delivered(
        self, client: JsonClient, message: dict[str, Any], arrival: float
    ) -> None:
        parsed = parse_text(str(message.get("text", "")))
        if parsed is None or parsed[0] != self.prefix or parsed[1] >= len(self._sender):
            self.foreign += 1
            return
        _, number, sent_at = parsed
        phase = self.phases[self._phase[number]]
        if phase.closed:
            phase.late += 1
        elif message.get("from") == client.name:
            # A resumed session replays the person's own messages too.
            phase.echoes += 1
        elif not phase.topology.intended(self._sender[number], client.index):
            phase.misdirected += 1
        elif phase.deliver(client.index, number, arrival - sent_at, arrival):
            self._arrivals[number] += 1
            self.arrived_at[number] = arrival

    def acked(self, client: JsonClient, tag: int, message: dict[str, Any]) -> None:
        if not 0 <= tag < len(self._state):
            self.foreign += 1
            return
        phase = self.phases[self._phase[tag]]
        if self._state[tag] != _SENT:
            phase.resend_acks += 1
            return
        self._state[tag] = _ACKED
        phase.acked += 1
        phase.last_ack = client.clock.seconds()
        phase.expected += phase.topology.fanout(self._sender[tag])
        self.on_settled(self._sender[tag], tag)

    def refused(self, client: JsonClient, tag: int, code: str) -> None:
        if not 0 <= tag < len(self._state) or self._state[tag] != _SENT:
            self.foreign += 1
            return
        self._state[tag] = _REFUSED
        self.phases[self._phase[tag]].refused[code] += 1
        self.on_settled(self._sender[tag], tag)

    def closed(self, client: JsonClient) -> None:
        self.on_closed(client)
