"""
Work that a replica repeats on a clock for as long as it runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chat import logs
from chat.cluster.redisconn import RedisUnavailable


class Heartbeat:
    """
    Runs C{work} every C{interval} seconds; a failure is logged and the next
    beat tries again.

    @param what: names the work in the log, as in C{"presence heartbeat"}.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        work: Callable[[], Awaitable[None]],
        what: str,
    ) -> None:
        self._interval = interval
        self._work = work
        self._what = what
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.beat()))
        self._loop.clock = clock

    def start(self, now: bool) -> None:
        self._loop.start(self._interval, now=now)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def beat(self) -> None:
        """
        Do the work once; log, never raise, if it fails.
        """
        try:
            await self._work()
        except RedisUnavailable as e:
            self.log.warn("{what} failed: {error}", what=self._what, error=str(e))
        except Exception:
            self.log.failure("{what} failed", what=self._what)
