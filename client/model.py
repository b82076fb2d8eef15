"""
What the server sends, as small typed objects.

Every parser checks the fields it needs and raises L{MalformedData} otherwise,
so the screens never index into raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from client.connection import JsonObject

BROADCAST = "*"
GROUP_PREFIX = "#"


class MalformedData(ValueError):
    """
    The server sent an object without the fields the contract promises.
    """


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _field(obj: Any, key: str, kind: type) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not _is(value, kind):
        raise MalformedData(f"{key!r} should be {kind.__name__}: {value!r}")
    return value


def _optional(obj: Any, key: str, kind: type, default: Any) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if _is(value, kind) else default


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True)
class Message:
    """
    One stored message; C{to} is a user, C{#group} or C{*}.
    """

    id: int
    kind: str
    sender: str
    to: str
    text: str
    sent_at: datetime | None

    @classmethod
    def from_json(cls, obj: Any) -> Message:
        return cls(
            id=_field(obj, "id", int),
            kind=_field(obj, "kind", str),
            sender=_field(obj, "from", str),
            to=_field(obj, "to", str),
            text=_field(obj, "text", str),
            sent_at=_timestamp(obj.get("ts")),
        )

    def conversation(self, me: str) -> str:
        """
        The target that names this message's conversation as seen by C{me}.
        """
        if self.kind == "private":
            return self.to if self.sender == me else self.sender
        return self.to


@dataclass(frozen=True)
class Away:
    """
    How many messages arrived while the user was away, by kind.
    """

    private: int
    group: int
    broadcast: int

    @classmethod
    def from_json(cls, obj: Any) -> Away:
        kinds = ("private", "group", "broadcast")
        return cls(*(max(_optional(obj, kind, int, 0), 0) for kind in kinds))

    @property
    def total(self) -> int:
        return self.private + self.group + self.broadcast


@dataclass(frozen=True)
class Contact:
    """
    A registered user and whether they are online now.
    """

    name: str
    online: bool

    @classmethod
    def from_json(cls, obj: Any) -> Contact:
        return cls(name=_field(obj, "name", str), online=_field(obj, "online", bool))


@dataclass(frozen=True)
class Group:
    """
    A group; C{role} is None when the user is not a member.
    """

    name: str
    description: str
    private: bool
    members: int
    role: str | None

    @classmethod
    def from_json(cls, obj: Any) -> Group:
        return cls(
            name=_field(obj, "name", str),
            description=_optional(obj, "description", str, ""),
            private=_optional(obj, "private", bool, False),
            members=_optional(obj, "members", int, 0),
            role=_optional(obj, "role", str, None),
        )

    @property
    def target(self) -> str:
        return GROUP_PREFIX + self.name


@dataclass(frozen=True)
class Member:
    """
    One member of a group.
    """

    name: str
    role: str
    joined_at: datetime | None

    @classmethod
    def from_json(cls, obj: Any) -> Member:
        return cls(
            name=_field(obj, "name", str),
            role=_optional(obj, "role", str, "member"),
            joined_at=_timestamp(_optional(obj, "joined_at", str, None)),
        )


@dataclass(frozen=True)
class MessageEvent:
    message: Message


@dataclass(frozen=True)
class PresenceEvent:
    user: str
    online: bool


@dataclass(frozen=True)
class GroupEvent:
    event: str
    group: str
    by: str


@dataclass(frozen=True)
class NoticeEvent:
    """
    A notice from the server; C{code} is empty unless the server gave one.
    """

    text: str
    code: str = ""


Event = MessageEvent | PresenceEvent | GroupEvent | NoticeEvent


def _group_name(value: Any) -> str:
    # The contract leaves open whether an event names the group or sends it.
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        raise MalformedData(f"'group' should name a group: {value!r}")
    return value.removeprefix(GROUP_PREFIX)


def parse_event(obj: JsonObject) -> Event | None:
    """
    Turn a pushed object into an event; None for types this client ignores.
    """
    kind = obj["type"]
    if kind == "message":
        return MessageEvent(Message.from_json(obj.get("message")))
    if kind == "presence":
        return PresenceEvent(_field(obj, "user", str), _field(obj, "online", bool))
    if kind == "group":
        return GroupEvent(
            event=_field(obj, "event", str),
            group=_group_name(obj.get("group")),
            by=_optional(obj, "by", str, ""),
        )
    if kind == "notice":
        code = _optional(obj, "code", str, "")
        text = _optional(obj, "text", str, "")
        if not (code or text):
            raise MalformedData("a notice should have a text or a code")
        return NoticeEvent(text, code)
    return None
