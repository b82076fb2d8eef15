"""
Telling a live connection from a dead one when nothing is being said.

A connection can die without either side hearing about it (a laptop lid
closed, a NAT forgetting the mapping).  The watcher asks the server for a
C{pong} at a steady interval and gives up on the connection once nothing at
all has arrived for a longer while.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from client.connection import ConnectionClosed, JsonLineProtocol, ServerError

PING_INTERVAL_SECONDS = 30.0
SILENCE_LIMIT_SECONDS = 60.0


class Heartbeat:
    """
    Pings one connection and calls C{on_silence} when it has gone quiet.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        protocol: JsonLineProtocol,
        on_silence: Callable[[], None],
        ping_interval: float = PING_INTERVAL_SECONDS,
        silence_limit: float = SILENCE_LIMIT_SECONDS,
    ) -> None:
        self._clock = clock
        self._protocol = protocol
        self._on_silence = on_silence
        self._ping_interval = ping_interval
        self._silence_limit = silence_limit
        self._ping_call: IDelayedCall | None = None
        self._silence_call: IDelayedCall | None = None

    def start(self) -> None:
        """
        Begin pinging and watching; every line received counts as a sign of life.
        """
        self._protocol.on_line = self.heard
        self._ping_call = self._clock.callLater(self._ping_interval, self._ping)
        self._silence_call = self._clock.callLater(self._silence_limit, self._silent)

    def heard(self) -> None:
        """
        Something arrived: the silence starts again from now.
        """
        if self._silence_call is not None and self._silence_call.active():
            self._silence_call.reset(self._silence_limit)

    def stop(self) -> None:
        """
        Stop pinging and watching; safe to call more than once.
        """
        self._protocol.on_line = lambda: None
        for call in (self._ping_call, self._silence_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._silence_call = None

    def _ping(self) -> None:
        self._ping_call = self._clock.callLater(self._ping_interval, self._ping)
        pong = self._protocol.request("ping")
        # The pong itself does not matter: any line that arrives is enough.
        pong.addErrback(self._ping_failed)

    def _ping_failed(self, failure: Failure) -> None:
        if failure.check(ConnectionClosed, CancelledError):
            return
        if failure.check(ServerError):
            # A server that refuses the ping is still alive; heard() saw it.
            self.log.debug("the server refused a ping: {error}", error=failure.value)
            return
        self.log.failure("a ping failed unexpectedly", failure)

    def _silent(self) -> None:
        self._silence_call = None
        self.stop()
        self.log.info(
            "nothing heard for {seconds} s; giving up on the connection",
            seconds=self._silence_limit,
        )
        self._on_silence()
