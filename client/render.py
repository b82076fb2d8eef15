"""
Turning what the server sent into lines that are safe to print.

Every piece of text that came over the network goes through L{clean} here, so
a message cannot move the cursor, recolour the screen or fake a prompt.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from chat.text import neutralise
from client.model import (
    BROADCAST,
    Away,
    Event,
    GroupEvent,
    Message,
    MessageEvent,
    PresenceEvent,
)

PREVIEW_CHARS = 40


def clean(text: str) -> str:
    """
    Replace whatever could act on the terminal with a visible mark.
    """
    return neutralise(text)


def clock(moment: datetime | None, tz: tzinfo | None = None) -> str:
    """
    C{HH:MM} in C{tz}, the local time zone when None.
    """
    if moment is None:
        return "--:--"
    return moment.astimezone(tz).strftime("%H:%M")


def conversation_title(target: str) -> str:
    if target == BROADCAST:
        return "the broadcast channel"
    if target.startswith("#"):
        return clean(target)
    return f"private chat with {clean(target)}"


def message_line(message: Message, tz: tzinfo | None = None) -> str:
    """
    A message in full, as shown inside its conversation.
    """
    when = clock(message.sent_at, tz)
    return f"[{when}] {clean(message.sender)}: {clean(message.text)}"


def _preview(text: str) -> str:
    text = clean(text)
    if len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"


def notification_line(message: Message, tz: tzinfo | None = None) -> str:
    """
    One line announcing a message that belongs to another conversation.
    """
    if message.kind == "private":
        origin = "private message"
    elif message.to == BROADCAST:
        origin = "broadcast"
    else:
        origin = f"message in {clean(message.to)}"
    sender = clean(message.sender)
    when = clock(message.sent_at, tz)
    return f">> [{when}] {origin} from {sender}: {_preview(message.text)}"


def event_line(
    event: Event, me: str, open_target: str | None, tz: tzinfo | None = None
) -> str:
    """
    The line that shows a pushed event, given the conversation on screen.
    """
    if isinstance(event, MessageEvent):
        message = event.message
        if message.conversation(me) == open_target:
            return message_line(message, tz)
        return notification_line(message, tz)
    if isinstance(event, PresenceEvent):
        state = "online" if event.online else "offline"
        return f"-- {clean(event.user)} is now {state}"
    if isinstance(event, GroupEvent):
        return _group_event_line(event)
    return f"** SERVER: {clean(event.text or event.code)}"


def _group_event_line(event: GroupEvent) -> str:
    group = clean("#" + event.group)
    by = f" by {clean(event.by)}" if event.by else ""
    if event.event == "invited":
        return f"-- you were added to {group}{by}"
    if event.event == "removed":
        return f"-- you were removed from {group}{by}"
    return f"-- {group}: {clean(event.event)}{by}"


def away_line(away: Away) -> str | None:
    """
    The welcome-back summary, or None when nothing arrived.
    """
    if away.total == 0:
        return None
    noun = "message" if away.total == 1 else "messages"
    parts = [
        f"{count} {kind}"
        for kind, count in (
            ("private", away.private),
            ("group", away.group),
            ("broadcast", away.broadcast),
        )
        if count
    ]
    return f"{away.total} {noun} arrived while you were away ({', '.join(parts)})."


def interrupted_line(delay: float) -> str:
    """
    The status shown while there is no connection.
    """
    return f"connection lost; reconnecting in {max(round(delay), 1)} s..."


def reconnected_line(missed: int) -> str:
    """
    The status shown once the session has resumed.
    """
    noun = "message" if missed == 1 else "messages"
    return f"reconnected; {missed} {noun} arrived while you were away"
