"""
Session tokens: how a person gets back into their session without a password.

A token is 256 random bits from L{secrets}, shown to its owner once and kept
only as a SHA-256 digest.  It stays valid for L{SESSION_IDLE} seconds after the
last sign of life (a command or a heartbeat).  Resuming with a token rotates
it: the old one stops working at once, so a token that leaked from a dead
connection is useless after its owner comes back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

SESSION_IDLE = 600.0
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    """
    The form in which a token is stored and looked up.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ITokens(Protocol):
    async def issue(self, folded: str) -> str:
        """
        A new token for C{folded}'s session.
        """

    async def owner(self, token: str) -> str | None:
        """
        The folded name whose live token this is, or C{None}.
        """

    async def rotate(self, token: str) -> tuple[str, str] | None:
        """
        Exchange a live token for a new one: C{(folded name, new token)}, or
        C{None} if the token is unknown or expired.
        """

    async def touch(self, token: str) -> bool:
        """
        Keep a token alive; C{False} if it has already expired.
        """

    async def revoke(self, token: str) -> None: ...


@dataclass
class _Entry:
    folded: str
    expires: float


class LocalTokens:
    """
    Tokens for a single process, expiring by the injected clock.
    """

    def __init__(self, clock: IReactorTime, idle: float = SESSION_IDLE) -> None:
        self._clock = clock
        self._idle = idle
        self._entries: dict[str, _Entry] = {}

    def _live(self, token: str) -> _Entry | None:
        key = digest(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock.seconds():
            del self._entries[key]
            return None
        return entry

    def _sweep(self) -> None:
        now = self._clock.seconds()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]

    async def issue(self, folded: str) -> str:
        if len(self._entries) % 256 == 0:
            self._sweep()
        token = new_token()
        self._entries[digest(token)] = _Entry(
            folded, self._clock.seconds() + self._idle
        )
        return token

    async def owner(self, token: str) -> str | None:
        entry = self._live(token)
        return None if entry is None else entry.folded

    async def rotate(self, token: str) -> tuple[str, str] | None:
        entry = self._live(token)
        if entry is None:
            return None
        del self._entries[digest(token)]
        return entry.folded, await self.issue(entry.folded)

    async def touch(self, token: str) -> bool:
        entry = self._live(token)
        if entry is None:
            return False
        entry.expires = self._clock.seconds() + self._idle
        return True

    async def revoke(self, token: str) -> None:
        self._entries.pop(digest(token), None)

    def __len__(self) -> int:
        return len(self._entries)
