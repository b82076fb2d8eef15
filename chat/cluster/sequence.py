"""
Handing messages on in id order.

Each replica publishes a message as soon as it is committed, so a message
from a replica that is a moment slower can arrive after one with a higher id,
and a replica that dies between its commit and its PUBLISH never sends its
message at all.  The store commits messages in id order, so when an id
arrives, every lower id is either committed already or will never exist.

A L{Sequencer} therefore hands a message on only once every lower id has been
dealt with.  When an arrival leaves a gap it waits a moment for the missing
ids to come in the usual way; whatever is still missing then is read from the
store, handed on in order, and dropped if it arrives later.  While the store
cannot be read, the messages after the gap wait and the read is tried again.
Every replica sees every message for this to work, whether or not anyone here
receives it.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.db import DatabaseUnavailable
from chat.records import Message

# How long an arrival that leaves a gap waits for the missing ids, in
# seconds, before they are read from the store.
PATIENCE = 0.05
# The most messages read from the store at once to fill a gap.
PAGE = 500
# While the store cannot be read, the seconds between tries: doubling from
# the first to the most.
RETRY_FIRST = 1.0
RETRY_MAX = 10.0

# Folded names of the people a message is for, or None for everyone.
Audience = list[str] | None
Missed = Callable[[int, int, int], Awaitable[list[tuple[Message, Audience]]]]


@dataclass(frozen=True, order=True)
class _Arrival:
    id: int
    message: Message = field(compare=False)
    to: Audience = field(compare=False)


class Sequencer:
    """
    Takes messages in any order and hands them on in id order, each once.

    @param missed: reads the stored messages with an id between its first two
        arguments (both excluded), at most its third, in id order, with the
        people each is for.
    @param hand_on: shows a message to the people here it is for.
    @ivar clock: what times the wait for missing ids.
    @param spawn: runs background work that nobody waits for.
    @ivar high: the highest id dealt with so far.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        clock: IReactorTime,
        missed: Missed,
        hand_on: Callable[[Message, Audience], None],
        spawn: Callable[[str, Coroutine[Any, Any, Any]], object],
        patience: float = PATIENCE,
    ) -> None:
        self.clock = clock
        self._missed = missed
        self._hand_on = hand_on
        self._spawn = spawn
        self._patience = patience
        self.high = 0
        # Whether high is known; until then the first arrival sets it.
        self._anchored = False
        self.filled = 0
        self._waiting: list[_Arrival] = []
        self._working = False
        self._paused: Deferred[None] | None = None
        self._stopped = False

    def start_after(self, message_id: int) -> None:
        """
        Count every id up to C{message_id} as dealt with: it was stored before
        anyone here could receive it.
        """
        self.high = max(self.high, message_id)
        self._anchored = True

    def feed(self, message: Message, to: Audience) -> None:
        """
        Take a message, from this replica or another, to hand on in turn.
        """
        if message.id <= self.high:
            return
        heapq.heappush(self._waiting, _Arrival(message.id, message, to))
        if message.id == self.high + 1:
            # The gap, if one is being waited on, is closed.
            self._wake()
        if not self._working:
            self._working = True
            self._spawn("in order", self._work())

    async def _work(self) -> None:
        try:
            while self._waiting:
                first = self._waiting[0]
                if first.id <= self.high:
                    heapq.heappop(self._waiting)
                elif self._anchored and first.id > self.high + 1:
                    await self._gap()
                else:
                    heapq.heappop(self._waiting)
                    self.high = first.id
                    self._anchored = True
                    self._hand_on(first.message, first.to)
        finally:
            self._working = False

    async def _gap(self) -> None:
        await self._pause(self._patience)
        delay = RETRY_FIRST
        while self._waiting[0].id > self.high + 1:
            before = self._waiting[0].id
            try:
                await self._fill(before)
            except DatabaseUnavailable as e:
                if not self._stopped:
                    self.log.warn(
                        "messages {after} to {before} wait for the database,"
                        " trying again in {delay}s: {error}",
                        after=self.high + 1,
                        before=before - 1,
                        delay=delay,
                        error=str(e),
                    )
                    await self._pause(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
            self.high = max(self.high, before - 1)

    async def _fill(self, before: int) -> None:
        after = self.high
        while True:
            page = await self._missed(self.high, before, PAGE)
            for message, to in page:
                if message.id > self.high:
                    self.high = message.id
                    self.filled += 1
                    self._hand_on(message, to)
            if len(page) < PAGE:
                break
        self.log.debug(
            "read messages {after} to {before} to fill a gap",
            after=after + 1,
            before=before - 1,
        )

    def stop(self) -> None:
        """
        Stop waiting for the database: the replica is shutting down and its
        connections are closed.
        """
        self._stopped = True
        self._wake()

    async def _pause(self, seconds: float) -> None:
        """
        Wait C{seconds}, or less if the gap closes or the sequencer stops.
        """
        paused: Deferred[None] = Deferred()
        self._paused = paused
        timer = self.clock.callLater(seconds, self._wake)
        await paused
        if timer.active():
            timer.cancel()

    def _wake(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)
