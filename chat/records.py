"""
The records that pass between the store, the service and the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Kind(StrEnum):
    """
    Where a message was sent.
    """

    PRIVATE = "private"
    GROUP = "group"
    BROADCAST = "broadcast"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


BROADCAST_TARGET = "*"
GROUP_PREFIX = "#"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Message:
    """
    A stored message.

    C{target} is the recipient's name for a private message, C{#name} for a
    group message and C{*} for a broadcast.
    """

    id: int
    kind: Kind
    sender: str
    target: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    description: str
    is_private: bool
    member_count: int
    my_role: Role | None = None


@dataclass(frozen=True)
class Member:
    name: str
    role: Role
    joined_at: datetime


@dataclass(frozen=True)
class AwayCounts:
    """
    How many messages of each kind arrived while a person was offline.
    """

    private: int = 0
    group: int = 0
    broadcast: int = 0

    @property
    def total(self) -> int:
        return self.private + self.group + self.broadcast


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
