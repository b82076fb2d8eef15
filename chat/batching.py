"""
Group commit: writes that arrive together share one transaction.

Every commit waits for the disk (an fsync on SQLite with C{synchronous=FULL},
a WAL flush on PostgreSQL), so a transaction per message caps the rate at a
few hundred messages per second.  A L{BatchWriter} takes writes from many
callers and runs them in as few transactions as it can, without ever waiting
on a timer: the first write starts a transaction at once, and whatever is
submitted while that transaction runs goes into the next one.  Under light
load each write is still its own transaction; under heavy load many share
one commit.

Each write is a function of the transaction, like the work given to
L{IDatabase.transaction}.  Its result reaches its own caller only once the
transaction that ran it has committed.  A write must not catch the failure of
its own statements: on PostgreSQL a failed statement spoils the rest of the
transaction.  An expected per-row outcome, such as a row left out by
C{ON CONFLICT DO NOTHING}, is better returned as a value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chat.db import DatabaseUnavailable, IDatabase, Transaction

T = TypeVar("T")

# Enough to turn hundreds of commits into a handful, few enough that one
# transaction stays short and holds its locks briefly.
MAX_BATCH_ROWS = 200


@dataclass
class _Write:
    """
    One caller's write and the Deferred that its caller waits on.
    """

    work: Callable[[Transaction], Awaitable[Any]]
    done: Deferred[Any] = field(default_factory=Deferred)


class BatchWriter:
    """
    Runs submitted writes in shared transactions, one transaction at a time.

    @param db: the database the writes go to.
    @param max_rows: the most writes that one transaction takes; the rest
        wait for the next.
    @param opening: run at the start of every transaction, before the writes.
    """

    log = Logger()

    def __init__(
        self,
        db: IDatabase,
        max_rows: int = MAX_BATCH_ROWS,
        opening: Callable[[Transaction], Awaitable[None]] | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"a batch needs room for at least one row, not {max_rows}")
        self._db = db
        self._max_rows = max_rows
        self._opening = opening
        self._queue: deque[_Write] = deque()
        self._busy = False
        self.transactions = 0

    async def submit(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """
        Run C{work} in the next transaction and return its result once that
        transaction has committed.

        Writes run in the order they were submitted, so rows inserted with
        increasing ids get them in that order.

        @raise DatabaseUnavailable: if the database could not be reached; every
            write of the same transaction fails with it.
        """
        write = _Write(work)
        self._queue.append(write)
        if not self._busy:
            # Set before draining starts: a caller answered during the drain
            # may submit again, and that write joins this drain's queue.
            self._busy = True
            Deferred.fromCoroutine(self._drain()).addErrback(self._broken)
        result: T = await write.done
        return result

    def pending(self) -> int:
        """
        How many writes wait for a transaction that has not started yet.
        """
        return len(self._queue)

    async def _drain(self) -> None:
        try:
            while self._queue:
                count = min(len(self._queue), self._max_rows)
                batch = [self._queue.popleft() for _ in range(count)]
                try:
                    await self._write(batch)
                except Exception as e:
                    # A bug in this module: answer the batch rather than
                    # leave its callers waiting, and go on with the queue.
                    self.log.failure("a batch of {rows} writes broke", rows=count)
                    for write in batch:
                        if not write.done.called:
                            write.done.errback(e)
        finally:
            self._busy = False

    async def _write(self, batch: list[_Write]) -> None:
        """
        Run C{batch} in one transaction and tell each caller how it went.

        When the shared transaction fails for a reason other than the
        database being out of reach, one write was at fault and took the
        others down with it; each then runs again alone, so that only the
        faulty one fails.
        """
        self.transactions += 1
        try:
            results = await self._db.transaction(self._run_all(batch))
        except DatabaseUnavailable as e:
            for write in batch:
                write.done.errback(e)
            return
        except Exception as e:
            if len(batch) == 1:
                batch[0].done.errback(e)
                return
            self.log.debug(
                "a batch of {rows} writes failed ({error}); writing each alone",
                rows=len(batch),
                error=e,
            )
            for write in batch:
                await self._write([write])
            return
        for write, result in zip(batch, results, strict=True):
            write.done.callback(result)

    def _run_all(
        self, batch: list[_Write]
    ) -> Callable[[Transaction], Awaitable[list[Any]]]:
        async def work(txn: Transaction) -> list[Any]:
            if self._opening is not None:
                await self._opening(txn)
            return [await write.work(txn) for write in batch]

        return work

    def _broken(self, failure: Any) -> None:
        self.log.failure("the batch writer stopped", failure)
        while self._queue:
            self._queue.popleft().done.errback(failure)


__all__ = ["MAX_BATCH_ROWS", "BatchWriter"]
