"""
What the service pushes to connected people, independent of how it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.records import Message


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
