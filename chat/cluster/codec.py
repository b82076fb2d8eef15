"""
Events as JSON, for the trip from one replica to another over Redis.

An envelope names the replica that sent it and carries either an event, with
the folded names of the people on the receiving replica it is for (none: for
everyone), or the folded name of a person whose connections must close because
a resumed session took their place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chat.events import Event, GroupEvent, MessageEvent, NoticeEvent, PresenceEvent
from chat.records import Kind, Message

_TYPES: dict[str, type[Any]] = {
    "message": MessageEvent,
    "presence": PresenceEvent,
    "group": GroupEvent,
    "notice": NoticeEvent,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


class BadEnvelope(ValueError):
    """
    A pub/sub message that is not an envelope this code wrote.
    """


@dataclass(frozen=True)
class Envelope:
    origin: str
    event: Event | None = None
    to: list[str] | None = None
    replace: str | None = None


def _message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind.value,
        "sender": m.sender,
        "target": m.target,
        "body": m.body,
        "created_at": m.created_at.isoformat(),
    }


def _message_from_json(data: dict[str, Any]) -> Message:
    return Message(
        id=int(data["id"]),
        kind=Kind(data["kind"]),
        sender=data["sender"],
        target=data["target"],
        body=data["body"],
        created_at=datetime.fromisoformat(data["created_at"]),
    )


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, MessageEvent):
        return {"type": "message", "message": _message_json(event.message)}
    return {"type": _NAMES[type(event)], **dataclasses.asdict(event)}


def event_from_json(data: dict[str, Any]) -> Event:
    cls = _TYPES.get(data.get("type", ""))
    if cls is None:
        raise BadEnvelope(f"unknown event type {data.get('type')!r}")
    if cls is MessageEvent:
        return MessageEvent(_message_from_json(data["message"]))
    fields = {f.name for f in dataclasses.fields(cls)}
    event: Event = cls(**{k: v for k, v in data.items() if k in fields})
    return event


def encode(envelope: Envelope) -> str:
    data: dict[str, Any] = {"origin": envelope.origin}
    if envelope.event is not None:
        data["event"] = event_json(envelope.event)
        data["to"] = envelope.to
    if envelope.replace is not None:
        data["replace"] = envelope.replace
    return json.dumps(data, separators=(",", ":"))


def decode(text: str) -> Envelope:
    """
    @raise BadEnvelope: for text that is not an envelope.
    """
    try:
        data = json.loads(text)
        event = data.get("event")
        to = data.get("to")
        replace = data.get("replace")
        envelope = Envelope(
            origin=str(data["origin"]),
            event=None if event is None else event_from_json(event),
            to=None if to is None else [str(name) for name in to],
            replace=None if replace is None else str(replace),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadEnvelope(f"not an envelope: {e}") from e
    if (envelope.event is None) == (envelope.replace is None):
        raise BadEnvelope("an envelope carries an event or a replacement")
    return envelope
