"""
Who is online, and the rule that one person has at most one live connection.

The embedded default keeps this in the process.  Cluster mode replaces it with
a Redis-backed twin that offers the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Presence:
    name: str
    server_id: str
    since: float


class IPresence(Protocol):
    async def claim(self, folded: str, presence: Presence) -> bool:
        """
        Mark a person online unless they already are; C{True} if claimed.
        """

    async def take_over(self, folded: str, presence: Presence) -> None:
        """
        Mark a person online here, whoever held them before.
        """

    async def release(self, folded: str, server_id: str) -> None:
        """
        Mark a person offline, if C{server_id} still holds them.
        """

    async def online(self) -> list[Presence]:
        """
        Everyone online, in no particular order.
        """

    async def is_online(self, folded: str) -> bool: ...


class LocalPresence:
    """
    Presence for a single process.
    """

    def __init__(self) -> None:
        self._online: dict[str, Presence] = {}

    async def claim(self, folded: str, presence: Presence) -> bool:
        if folded in self._online:
            return False
        self._online[folded] = presence
        return True

    async def take_over(self, folded: str, presence: Presence) -> None:
        self._online[folded] = presence

    async def release(self, folded: str, server_id: str) -> None:
        held = self._online.get(folded)
        if held is not None and held.server_id == server_id:
            del self._online[folded]

    async def online(self) -> list[Presence]:
        return list(self._online.values())

    async def is_online(self, folded: str) -> bool:
        return folded in self._online
