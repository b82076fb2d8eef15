"""
One event on its way to many connections.

A broadcast reaches every connection on the replica, and in JSON mode every
one of them gets the very same bytes.  A L{Fanout} renders the event once for
each group of viewers that see it alike (L{chat.render.Renderer.viewpoint})
and hands the same bytes to all of them.  It also counts the messages shown,
so that the delivery metric is updated once per fan-out rather than once per
connection.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from chat.events import Event, MessageEvent
from chat.records import Message
from chat.render import Renderer, wire


class DeliveryCounter(Protocol):
    """
    Where a fan-out reports its deliveries: L{chat.service.ChatService}.
    """

    def delivered(self, message: Message, count: int) -> None: ...


class Fanout:
    """
    The renderings of one event, and how many connections were shown it.

    @ivar shown: connections shown the event's message (not its sender's own).
    """

    def __init__(self, event: Event) -> None:
        self.event = event
        self.shown = 0
        self._counter: DeliveryCounter | None = None
        self._rendered: dict[tuple[type, Hashable], tuple[list[bytes], int]] = {}

    def rendered(
        self, renderer: Renderer, me: str, open_target: str
    ) -> tuple[list[bytes], int]:
        """
        The event's bytes for this viewer, and their length in total.
        """
        key = (type(renderer), renderer.viewpoint(self.event, me, open_target))
        found = self._rendered.get(key)
        if found is None:
            data = wire(renderer.event(self.event, me, open_target))
            found = self._rendered[key] = (data, sum(map(len, data)))
        return found

    def count(self, counter: DeliveryCounter) -> None:
        """
        Note one more connection shown the event's message; C{counter} is
        told the total when the fan-out ends.
        """
        self._counter = counter
        self.shown += 1

    def finish(self) -> None:
        """
        Record the deliveries counted, all at the time the fan-out ended.
        """
        if self._counter is not None and isinstance(self.event, MessageEvent):
            self._counter.delivered(self.event.message, self.shown)
