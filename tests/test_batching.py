"""
Tests for L{chat.batching.BatchWriter} against a database whose commits the
test releases one at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from chat.batching import MAX_BATCH_ROWS, BatchWriter
from chat.db import (
    DatabaseUnavailable,
    IntegrityViolation,
    Params,
    Row,
    Transaction,
)

T = TypeVar("T")


class _RecordingTransaction:
    """
    Statements of one fake transaction: each is recorded, and one whose SQL
    is C{"FAIL"} breaks a constraint.
    """

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        if sql == "FAIL":
            raise IntegrityViolation("a constraint")
        self.statements.append((sql, tuple(params)))
        return [(sql, *params)]


class GatedDatabase:
    """
    A fake L{IDatabase}: each transaction runs its work at once, then waits
    until the test commits it with L{commit} or cuts it off with L{fail}.

    C{open} holds the statements of each transaction not yet committed, in
    the order they started; C{committed} those of each committed one.
    """

    dialect = "fake"

    def __init__(self) -> None:
        self.open: list[list[tuple[str, tuple[Any, ...]]]] = []
        self.committed: list[list[tuple[str, tuple[Any, ...]]]] = []
        self._gates: list[Deferred[None]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        txn = _RecordingTransaction()
        result = await work(txn)
        gate: Deferred[None] = Deferred()
        self.open.append(txn.statements)
        self._gates.append(gate)
        await gate
        self.committed.append(txn.statements)
        return result

    def commit(self) -> None:
        """
        Commit the oldest open transaction.
        """
        self.open.pop(0)
        self._gates.pop(0).callback(None)

    def fail(self, error: Exception) -> None:
        """
        Fail the oldest open transaction with C{error}.
        """
        self.open.pop(0)
        self._gates.pop(0).errback(error)

    def commit_all(self) -> None:
        """
        Commit transactions until none is open, new ones included.
        """
        while self.open:
            self.commit()


def insert(name: str) -> Callable[[Transaction], Awaitable[str]]:
    """
    A write of one row, which returns its name.
    """

    async def work(txn: Transaction) -> str:
        await txn.execute("INSERT", (name,))
        return name

    return work


async def faulty(txn: Transaction) -> str:
    """
    A write whose statement breaks a constraint.
    """
    await txn.execute("FAIL")
    return "never"


class BatchWriterTests(SynchronousTestCase):
    """
    L{BatchWriter} groups writes into transactions and answers each caller.
    """

    def setUp(self) -> None:
        self.db = GatedDatabase()
        self.writer = BatchWriter(self.db, max_rows=3)

    def submit(self, work: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        return Deferred.fromCoroutine(self.writer.submit(work))

    def rows(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        return [params[0] for _, params in statements]

    def test_first_write_starts_at_once(self) -> None:
        """
        A write to an idle writer starts its transaction at once, and its
        caller is answered only when that transaction commits.
        """
        done = self.submit(insert("a"))
        self.assertEqual([self.rows(t) for t in self.db.open], [["a"]])
        self.assertNoResult(done)
        self.db.commit()
        self.assertEqual(self.successResultOf(done), "a")
        self.assertEqual(self.writer.transactions, 1)

    def test_writes_queue_behind_the_running_transaction(self) -> None:
        """
        Writes submitted while a transaction runs wait, then go together into
        the next transaction, which starts as soon as the first commits.
        """
        first = self.submit(insert("a"))
        rest = [self.submit(insert(name)) for name in "bc"]
        self.assertEqual(len(self.db.open), 1)
        self.assertEqual(self.writer.pending(), 2)
        self.db.commit()
        self.assertEqual(self.successResultOf(first), "a")
        self.assertEqual([self.rows(t) for t in self.db.open], [["b", "c"]])
        for d in rest:
            self.assertNoResult(d)
        self.db.commit()
        self.assertEqual([self.successResultOf(d) for d in rest], ["b", "c"])
        self.assertEqual(self.writer.transactions, 2)
        self.assertEqual(self.writer.pending(), 0)

    def test_batch_size_is_capped(self) -> None:
        """
        No transaction takes more than C{max_rows} writes; the rest follow in
        later transactions, in the order they were submitted.
        """
        done = [self.submit(insert(str(i))) for i in range(8)]
        self.db.commit_all()
        self.assertEqual(
            [self.rows(t) for t in self.db.committed],
            [["0"], ["1", "2", "3"], ["4", "5", "6"], ["7"]],
        )
        self.assertEqual(
            [self.successResultOf(d) for d in done], [str(i) for i in range(8)]
        )

    def test_default_cap(self) -> None:
        """
        By default a transaction takes up to L{MAX_BATCH_ROWS} writes.
        """
        writer = BatchWriter(self.db)
        for i in range(MAX_BATCH_ROWS + 2):
            Deferred.fromCoroutine(writer.submit(insert(str(i))))
        self.db.commit_all()
        self.assertEqual([len(t) for t in self.db.committed], [1, MAX_BATCH_ROWS, 1])

    def test_write_submitted_by_an_answered_caller(self) -> None:
        """
        A caller that submits again as soon as it is answered gets its write
        into the next transaction.
        """
        again: list[Deferred[str]] = []
        first = self.submit(insert("a"))
        first.addCallback(lambda _: again.append(self.submit(insert("b"))))
        self.db.commit()
        self.assertEqual([self.rows(t) for t in self.db.open], [["b"]])
        self.db.commit()
        self.assertEqual(self.successResultOf(again[0]), "b")

    def test_faulty_write_fails_only_its_caller(self) -> None:
        """
        When one write of a batch fails, its caller gets the error and every
        other write of the batch is committed and answered, in order.
        """
        self.submit(insert("a"))
        batch = [
            self.submit(insert("b")),
            self.submit(faulty),
            self.submit(insert("c")),
        ]
        self.db.commit_all()
        self.assertEqual(self.successResultOf(batch[0]), "b")
        self.failureResultOf(batch[1], IntegrityViolation)
        self.assertEqual(self.successResultOf(batch[2]), "c")
        self.assertEqual(
            [self.rows(t) for t in self.db.committed], [["a"], ["b"], ["c"]]
        )

    def test_faulty_write_alone(self) -> None:
        """
        A faulty write in a transaction of its own fails with its own error,
        and the writer goes on with the next writes.
        """
        bad = self.submit(faulty)
        after = self.submit(insert("a"))
        self.db.commit_all()
        self.failureResultOf(bad, IntegrityViolation)
        self.assertEqual(self.successResultOf(after), "a")

    def test_unavailable_database_fails_the_whole_batch(self) -> None:
        """
        A database out of reach fails every caller of the batch with
        L{DatabaseUnavailable}, without trying each write again; writes
        queued behind go into the next transaction.
        """
        self.submit(insert("a"))
        batch = [self.submit(insert(name)) for name in "bc"]
        self.db.commit()
        later = self.submit(insert("d"))
        self.db.fail(DatabaseUnavailable("gone"))
        for d in batch:
            self.failureResultOf(d, DatabaseUnavailable)
        self.assertEqual([self.rows(t) for t in self.db.open], [["d"]])
        self.db.commit()
        self.assertEqual(self.successResultOf(later), "d")

    def test_other_transaction_failure_retries_each_write(self) -> None:
        """
        A batch whose transaction fails for another reason is tried again one
        write at a time, so that a fault of one write reaches only its caller.
        """
        self.submit(insert("a"))
        batch = [self.submit(insert(name)) for name in "bc"]
        self.db.commit()
        self.db.fail(IntegrityViolation("at commit"))
        self.assertEqual([self.rows(t) for t in self.db.open], [["b"]])
        self.db.commit_all()
        self.assertEqual([self.successResultOf(d) for d in batch], ["b", "c"])

    def test_cap_must_allow_a_row(self) -> None:
        """
        A writer that could take no row at all is refused.
        """
        self.assertRaises(ValueError, BatchWriter, self.db, 0)
