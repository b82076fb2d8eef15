"""
Per-connection defences: how much a connection may send, and how much may wait
for it to read.

A connection that floods gets a clear error, then is cut off if it keeps
going.  A connection that stops reading is cut off once what waits for it
passes a limit; everything it missed stays in history, so resuming later
loses nothing.  Loopback peers (tests, benchmarks, sidecars) are not counted
against the per-address limit.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from chat.limits import (
    COMMAND_BURST,
    COMMAND_RATE,
    CONNECTIONS_PER_ADDRESS,
    LOGIN_TIMEOUT,
    TokenBucket,
)

# Bytes that may wait for a connection that stopped reading, beyond what the
# transport itself buffers, before it is cut off.
MAX_QUEUED_BYTES = 1 << 20

# Lines dropped in one flood before the connection is closed.
FLOOD_DISCONNECT = 200


@dataclass(frozen=True)
class Limits:
    """
    The defences' settings; zero turns a count or a timeout off.
    """

    command_burst: int = COMMAND_BURST
    command_rate: float = COMMAND_RATE
    per_address: int = CONNECTIONS_PER_ADDRESS
    login_timeout: float = LOGIN_TIMEOUT
    max_queued: int = MAX_QUEUED_BYTES
    flood_disconnect: int = FLOOD_DISCONNECT


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == ""


class FloodGuard:
    """
    Decides, line by line, whether a connection is sending too fast.
    """

    OK, REFUSE, QUIET, CUT = range(4)

    def __init__(self, clock: IReactorTime, limits: Limits) -> None:
        self._limits = limits
        self._bucket = (
            TokenBucket(clock, limits.command_burst, limits.command_rate)
            if limits.command_rate > 0
            else None
        )
        self._dropped = 0

    def check(self) -> int:
        """
        C{OK} to run the line; C{REFUSE} to drop it with an error; C{QUIET} to
        drop it silently (the error was given); C{CUT} to close the connection.
        """
        if self._bucket is None or self._bucket.take():
            self._dropped = 0
            return self.OK
        self._dropped += 1
        if (
            self._limits.flood_disconnect
            and self._dropped > self._limits.flood_disconnect
        ):
            return self.CUT
        return self.REFUSE if self._dropped == 1 else self.QUIET

    def wait(self) -> float:
        return self._bucket.wait() if self._bucket is not None else 0.0


@implementer(IPushProducer)
class OutputGuard:
    """
    Watches a transport's write buffer and calls C{overflow} once more than
    C{limit} bytes were written while the peer was not reading.

    The transport calls L{pauseProducing} when its buffer is full and
    L{resumeProducing} once it drained.
    """

    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        self._limit = limit
        self._overflow = overflow
        self.blocked = False
        self.queued = 0

    def pauseProducing(self) -> None:
        self.blocked = True

    def resumeProducing(self) -> None:
        self.blocked = False
        self.queued = 0

    def stopProducing(self) -> None:
        self.blocked = False

    def wrote(self, size: int) -> None:
        if not self.blocked or not self._limit:
            return
        self.queued += size
        if self.queued > self._limit:
            self._overflow()


# TCP keepalive: a peer that vanished (a laptop put to sleep, a NAT that
# forgot the connection) is noticed after about IDLE + INTERVAL * COUNT
# seconds, so its presence is released and its owner can log in again.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6


def keep_alive(transport: object) -> None:
    """
    Turn on TCP keepalive with short timers, where the transport allows it.
    """
    set_keep_alive = getattr(transport, "setTcpKeepAlive", None)
    if set_keep_alive is None:
        return
    set_keep_alive(True)
    handle = transport.getHandle()  # type: ignore[attr-defined]
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option) and hasattr(handle, "setsockopt"):
            handle.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
