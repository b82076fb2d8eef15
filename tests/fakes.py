"""
Synchronous stand-ins for the database runner and the password hasher.

With them every coroutine of the service completes without waiting for a
thread, so whole sessions run inside a L{SynchronousTestCase}, which is what
property-based tests need.  The SQL is still real: SQLite in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed

from chat.db import DatabaseUnavailable, IntegrityViolation, Params, Row

T = TypeVar("T")


class SyncSQLiteDatabase:
    """
    An L{chat.db.IDatabase} over an in-memory SQLite, on the calling thread.
    """

    dialect = "sqlite"

    def __init__(self) -> None:
        self._connection = sqlite3.connect(":memory:", isolation_level=None)
        self._connection.execute("PRAGMA foreign_keys=ON")

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return self._connection.execute(sql, tuple(params)).fetchall()
        except sqlite3.IntegrityError as e:
            raise IntegrityViolation(str(e)) from e
        except sqlite3.OperationalError as e:
            raise DatabaseUnavailable(str(e)) from e

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._connection.close()

    async def transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        self._connection.execute("BEGIN")
        try:
            result = await work(self)
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
        return result

    async def ping(self) -> None:
        pass


class SyncPasswords:
    """
    A password checker that answers at once; it compares plain text.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def hash(self, password: str) -> Deferred[str]:
        return succeed("plain:" + password)

    def verify(self, stored: str | None, password: str) -> Deferred[bool]:
        return succeed(stored == "plain:" + password)
