"""
Tests for L{chat.cluster.sequence.Sequencer}, with a fake clock and a fake
store of messages.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chat.cluster.sequence import (
    PAGE,
    PATIENCE,
    RETRY_FIRST,
    Audience,
    Sequencer,
)
from chat.db import DatabaseUnavailable
from chat.records import Kind, Message

WHEN = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def message(message_id: int) -> Message:
    return Message(message_id, Kind.PRIVATE, "alice", "bob", f"m{message_id}", WHEN)


class StoredMessages:
    """
    The messages the fake store holds, and the reads made of it.  A read
    waits until the test calls L{answer}, unless C{prompt} is set.
    """

    def __init__(self, ids: list[int], prompt: bool = True) -> None:
        self.ids = ids
        self.prompt = prompt
        self.reads: list[tuple[int, int, int]] = []
        self.down = False
        self._answers: list[Deferred[None]] = []

    async def between(
        self, after: int, before: int, limit: int
    ) -> list[tuple[Message, Audience]]:
        self.reads.append((after, before, limit))
        if not self.prompt:
            gate: Deferred[None] = Deferred()
            self._answers.append(gate)
            await gate
        if self.down:
            raise DatabaseUnavailable("connection refused")
        found = [i for i in self.ids if after < i < before][:limit]
        return [(message(i), ["bob"]) for i in found]

    def answer(self) -> None:
        self._answers.pop(0).callback(None)


class SequencerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stored = StoredMessages([])
        self.shown: list[int] = []
        self.sequencer = Sequencer(
            self.clock, self.stored.between, self.show, self.spawn
        )

    def show(self, shown: Message, to: Audience) -> None:
        self.shown.append(shown.id)

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> object:
        d = Deferred.fromCoroutine(work)
        d.addErrback(self.fail)
        return d

    def feed(self, *ids: int) -> None:
        for message_id in ids:
            self.sequencer.feed(message(message_id), ["bob"])

    def test_in_order_at_once(self) -> None:
        """
        Messages that arrive in id order are handed on as they arrive,
        without waiting and without reading the store.
        """
        self.sequencer.start_after(4)
        self.feed(5, 6, 7)
        self.assertEqual(self.shown, [5, 6, 7])
        self.assertEqual(self.stored.reads, [])
        self.assertEqual(self.sequencer.high, 7)

    def test_first_arrival_sets_start(self) -> None:
        """
        With no starting point, the first message to arrive is handed on at
        once and later ones follow in order from it.
        """
        self.feed(40, 41)
        self.assertEqual(self.shown, [40, 41])

    def test_late_arrival_within_patience(self) -> None:
        """
        A lower id that arrives within the patience period goes first, and
        the store is not read.
        """
        self.sequencer.start_after(1)
        self.feed(3, 4)
        self.assertEqual(self.shown, [])
        self.clock.advance(PATIENCE / 2)
        self.feed(2)
        self.assertEqual(self.shown, [2, 3, 4])
        self.assertEqual(self.stored.reads, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gap_read_from_store(self) -> None:
        """
        A gap that is still open after the patience period is filled from
        the store, in order, before the arrival that revealed it; the
        missing message, if it arrives later after all, is not shown again.
        """
        self.stored.ids = [2, 3]
        self.sequencer.start_after(1)
        self.feed(4)
        self.clock.advance(PATIENCE)
        self.assertEqual(self.shown, [2, 3, 4])
        self.assertEqual(self.stored.reads, [(1, 4, PAGE)])
        self.assertEqual(self.sequencer.filled, 2)
        self.feed(3, 5)
        self.assertEqual(self.shown, [2, 3, 4, 5])

    def test_ids_that_never_exist(self) -> None:
        """
        Ids that no committed message took leave nothing to show; the
        arrival goes on after the patience period.
        """
        self.sequencer.start_after(1)
        self.feed(5)
        self.clock.advance(PATIENCE)
        self.assertEqual(self.shown, [5])
        self.assertEqual(self.sequencer.high, 5)

    def test_arrivals_while_reading(self) -> None:
        """
        Messages that arrive while the store is being read wait their turn;
        one of the missing ids arriving then is shown once.
        """
        self.stored = StoredMessages([2], prompt=False)
        self.sequencer = Sequencer(
            self.clock, self.stored.between, self.show, self.spawn
        )
        self.sequencer.start_after(1)
        self.feed(3)
        self.clock.advance(PATIENCE)
        self.feed(5, 2, 4)
        self.assertEqual(self.shown, [])
        self.stored.answer()
        self.assertEqual(self.shown, [2, 3, 4, 5])

    def test_long_gap_in_pages(self) -> None:
        """
        A gap wider than one read is read page by page.
        """
        self.stored.ids = list(range(2, PAGE + 12))
        self.sequencer.start_after(1)
        self.feed(PAGE + 12)
        self.clock.advance(PATIENCE)
        self.assertEqual(self.shown, list(range(2, PAGE + 13)))
        self.assertEqual(
            self.stored.reads, [(1, PAGE + 12, PAGE), (PAGE + 1, PAGE + 12, PAGE)]
        )

    def test_store_unavailable(self) -> None:
        """
        While the store cannot be read, the messages after the gap wait, and
        the read is tried again, less and less often, until it works.
        """
        self.stored.ids = [2]
        self.stored.down = True
        self.sequencer.start_after(1)
        self.feed(4, 3)
        self.clock.advance(PATIENCE)
        self.clock.advance(RETRY_FIRST)
        self.assertEqual(len(self.stored.reads), 2)
        self.clock.advance(RETRY_FIRST)
        self.assertEqual(len(self.stored.reads), 2)
        self.assertEqual(self.shown, [])
        self.stored.down = False
        self.clock.advance(RETRY_FIRST)
        self.assertEqual(self.shown, [2, 3, 4])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_ends_the_wait(self) -> None:
        """
        Stopping gives up a read that waits for the store, so that shutdown
        is not held up; the messages after the gap are handed on.
        """
        self.stored.down = True
        self.sequencer.start_after(1)
        self.feed(3)
        self.clock.advance(PATIENCE)
        self.sequencer.stop()
        self.assertEqual(self.shown, [3])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_old_and_repeated_ids(self) -> None:
        """
        Ids at or below the starting point, and ids already handed on, are
        dropped.
        """
        self.sequencer.start_after(10)
        self.feed(9, 10, 11, 11, 12, 11)
        self.assertEqual(self.shown, [11, 12])
