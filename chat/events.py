"""
What the service pushes to connected people, independent of how it is shown.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from chat.records import Message

# How many message ids a connection remembers having shown.
DELIVERED_MEMORY = 1024


@dataclass(frozen=True)
class MessageEvent:
    message: Message


@dataclass(frozen=True)
class PresenceEvent:
    user: str
    online: bool


@dataclass(frozen=True)
class GroupEvent:
    """
    Someone changed C{user}'s membership of a group: C{invited} or C{removed}.
    """

    change: str
    group: str
    by: str


@dataclass(frozen=True)
class NoticeEvent:
    """
    A word from the server.  C{code} is C{maintenance} before a shutdown (with
    C{retry_after} seconds as a hint for reconnecting), C{replaced} when a
    resumed session elsewhere took this connection's place, or empty.
    """

    text: str
    code: str = ""
    retry_after: float | None = None


Event = MessageEvent | PresenceEvent | GroupEvent | NoticeEvent


class DeliveryLog:
    """
    The messages one session has been shown, so that each is shown once.

    A message can reach a connection twice in cluster mode: over pub/sub and
    again when the replica catches up after losing Redis.  The log keeps the
    last L{DELIVERED_MEMORY} ids; anything at or below C{horizon}, which starts
    at the last message id when the session began, counts as shown.

    @ivar last: the highest id shown so far.
    """

    def __init__(self, start: int, memory: int = DELIVERED_MEMORY) -> None:
        self.last = start
        self.horizon = start
        self._memory = memory
        self._ids: set[int] = set()
        self._oldest: list[int] = []

    def __contains__(self, message_id: int) -> bool:
        return message_id <= self.horizon or message_id in self._ids

    def first_time(self, message_id: int) -> bool:
        """
        Record C{message_id} as shown; C{False} if it was shown before.
        """
        if message_id in self:
            return False
        self._ids.add(message_id)
        heapq.heappush(self._oldest, message_id)
        if len(self._ids) > self._memory:
            forgotten = heapq.heappop(self._oldest)
            self._ids.discard(forgotten)
            self.horizon = forgotten
        self.last = max(self.last, message_id)
        return True
