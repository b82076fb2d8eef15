"""
The database runner: one small asynchronous interface over SQLite and PostgreSQL.

The store writes its SQL once, with C{?} placeholders, and runs it through an
L{IDatabase}.  Each runner translates placeholders and column types for its
engine and keeps every call off the reactor thread (SQLite) or non-blocking
(PostgreSQL).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlparse

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")
Row = tuple[Any, ...]
Params = Sequence[Any]


class DatabaseUnavailable(Exception):
    """
    The database could not be reached; the operation may be retried later.

    @cvar what: what could not be reached, in words for the person waiting.
    """

    what = "database"


class IntegrityViolation(Exception):
    """
    A statement broke a constraint (a unique name, a foreign key).
    """


class Transaction(Protocol):
    """
    A running transaction: statements run in order, all or nothing.
    """

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        """
        Run one statement and return the rows it produced (empty for none).
        """


class IDatabase(Protocol):
    """
    What the store needs from a database engine.

    C{dialect} names the engine (C{"sqlite"} or C{"postgres"}); the schema uses
    it to pick column types.
    """

    dialect: str

    async def start(self) -> None:
        """
        Open connections.
        """

    async def stop(self) -> None:
        """
        Close connections; pending work finishes first.
        """

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """
        Run C{work} inside one transaction, committed if it returns and rolled
        back if it raises.
        """

    async def ping(self) -> None:
        """
        Raise L{DatabaseUnavailable} unless the database answers.
        """


async def advisory_lock(txn: Transaction, key: int) -> None:
    """
    Take PostgreSQL's transaction-scoped advisory lock C{key} inside C{txn}.

    Waits until no other transaction holds the lock; PostgreSQL releases it
    when C{txn} commits or rolls back.

    @param key: any signed 64-bit integer that the cooperating transactions
        agree on.
    """
    if not -(2**63) <= key < 2**63:
        raise ValueError(f"advisory lock key {key} does not fit in 64 bits")
    await txn.execute("SELECT pg_advisory_xact_lock(?)", (key,))


async def one_at_a_time(db: IDatabase, txn: Transaction, key: int) -> None:
    """
    Keep C{txn} from overlapping any other transaction that makes this call
    with the same C{key}, from here until it ends.

    On PostgreSQL that is an advisory lock.  SQLite needs nothing: its runner
    begins every transaction with C{BEGIN IMMEDIATE}, which admits one writer
    at a time to the file, whichever process it runs in.
    """
    if db.dialect == "postgres":
        await advisory_lock(txn, key)


class _SQLiteTransaction:
    """
    Statements of a transaction that runs on the database thread: each one
    completes at once, so the transaction's coroutine never suspends.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        return self._db._execute(sql, tuple(params))


class SQLiteDatabase:
    """
    SQLite on one dedicated worker thread.

    SQLite allows one writer at a time, so a single connection on a single
    thread is both the simplest and the fastest arrangement.  A whole
    transaction (BEGIN, its statements, COMMIT) runs as one task on that
    thread: its coroutine is driven there to completion, which it reaches
    without suspending because its statements answer at once.  One task at a
    time means transactions never interleave, and one thread hop per
    transaction keeps the reactor's overhead low.
    """

    dialect = "sqlite"

    def __init__(self, reactor: IReactorThreads, path: str) -> None:
        self._reactor = reactor
        self._path = path
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="chat-sqlite")
        self._lock = DeferredLock()
        self._connection: sqlite3.Connection | None = None

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _open(self) -> None:
        if self._path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self._path))
            os.makedirs(directory, exist_ok=True)
        connection = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        self._connection = connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        assert self._connection is not None, "database is not started"
        try:
            cursor = self._connection.execute(sql, params)
            return cursor.fetchall()
        except sqlite3.IntegrityError as e:
            raise IntegrityViolation(str(e)) from e
        except sqlite3.OperationalError as e:
            raise DatabaseUnavailable(str(e)) from e

    async def start(self) -> None:
        self._pool.start()
        await self._in_thread(self._open)

    async def stop(self) -> None:
        if not self._pool.started:
            return
        await self._lock.acquire()
        try:
            await self._in_thread(self._close)
        finally:
            self._lock.release()
        self._pool.stop()

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        await self._lock.acquire()
        try:
            return await self._in_thread(self._run, work)
        finally:
            self._lock.release()

    def _run(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        self._execute("BEGIN IMMEDIATE", ())
        try:
            steps = work(_SQLiteTransaction(self)).__await__()
            try:
                steps.send(None)
            except StopIteration as done:
                result: T = done.value
            else:
                steps.close()
                raise RuntimeError("a SQLite transaction waited on something else")
        except BaseException:
            self._execute("ROLLBACK", ())
            raise
        self._execute("COMMIT", ())
        return result

    async def ping(self) -> None:
        await self.transaction(lambda txn: txn.execute("SELECT 1"))


def sqlite_path_from_url(url: str) -> str:
    """
    The file path named by a C{sqlite:} URL.

    C{sqlite:relative/path.db} and C{sqlite:///absolute/path.db} are both
    accepted, as is C{sqlite::memory:}.
    """
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        return unquote(urlparse(url).path) or ":memory:"
    return unquote(rest) or ":memory:"


def open_database(reactor: Any, url: str) -> IDatabase:
    """
    Make the runner that a database URL names.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteDatabase(reactor, sqlite_path_from_url(url))
    if scheme in ("postgres", "postgresql"):
        from chat.postgres import PostgresDatabase

        return PostgresDatabase(reactor, url)
    raise ValueError(f"unsupported database URL scheme {scheme!r}")
