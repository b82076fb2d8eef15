"""
PostgreSQL through txpostgres: a small pool of non-blocking connections.

Each transaction borrows one connection from a C{txpostgres} pool and runs
C{BEGIN}, the caller's statements and C{COMMIT} (or C{ROLLBACK}) on it.
Connections that the server dropped are opened again the next time they are
borrowed, so a PostgreSQL restart costs the calls made while it was down and
nothing after.

Differences from SQLite that the store has to live with: a failed statement
aborts the whole transaction, so later statements in it fail too and, should
the work catch the exception and return, the transaction raises it again
instead of committing; C{TIMESTAMPTZ} columns come back as C{datetime}
objects; C{BOOLEAN} columns want C{bool} parameters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import psycopg2
from psycopg2.extensions import parse_dsn
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredLock,
    FirstError,
    gatherResults,
)
from twisted.internet.error import ConnectionClosed
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres

from chat.db import (
    DatabaseUnavailable,
    IntegrityViolation,
    Params,
    Row,
    Transaction,
)

T = TypeVar("T")

POOL_SIZE = 3
CONNECT_TIMEOUT_SECONDS = 10.0

_CONNECTION_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    ConnectionClosed,
)

# The pieces of SQL whose text must not be rewritten (quoted strings and
# identifiers, comments), then the two characters that must be.
_SQL_TOKEN = re.compile(
    r"""
      (?P<verbatim>
          (?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'
        | '(?:[^']|'')*'
        | "(?:[^"]|"")*"
        | --[^\n]*
        | /\*.*?\*/
        | (?<![\w$])\$(?P<tag>(?:[A-Za-z_][A-Za-z_0-9]*)?)\$.*?\$(?P=tag)\$
      )
    | (?P<placeholder>\?)
    | (?P<percent>%)
    """,
    re.VERBOSE | re.DOTALL,
)


def _rewrite_token(match: re.Match[str]) -> str:
    if match.group("placeholder"):
        return "%s"
    # psycopg2 formats the whole statement, quoted parts included.
    return match.group(0).replace("%", "%%")


@functools.lru_cache(maxsize=512)
def translate_placeholders(sql: str) -> str:
    """
    Rewrite C{?} placeholders as psycopg2's C{%s}.

    A C{?} inside a quoted string, a quoted identifier, a dollar-quoted body or
    a comment is left alone.  Every C{%} is doubled, because psycopg2 reads
    C{%} as the start of a placeholder anywhere in the statement.
    """
    return _SQL_TOKEN.sub(_rewrite_token, sql)


# A replica that freezes or loses its network in the middle of a transaction
# must not keep its locks for long: while one holds the lock that orders
# message commits, no replica can store a message.  TCP keepalives notice a
# vanished peer within about 25 s, the server ends a transaction left idle
# for 10 s, and a wait for a lock gives up after 20 s.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
SESSION_SETTINGS = "-c idle_in_transaction_session_timeout=10s -c lock_timeout=20s"


def connect_keywords(url: str) -> dict[str, str]:
    """
    The psycopg2 connect keywords that a C{postgresql://} URL names.

    libpq does the parsing, so every form it accepts works, among them
    C{postgresql://user:password@host:port/dbname?sslmode=require} and
    C{postgresql://user@/dbname?host=/path/to/socket/dir} for a Unix socket.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL (scheme {scheme!r})")
    try:
        keywords: dict[str, str] = parse_dsn(url)
    except psycopg2.ProgrammingError:
        # libpq's message may quote the URL, password and all.
        raise ValueError("malformed PostgreSQL URL") from None
    for name, value in KEEPALIVES.items():
        keywords.setdefault(name, value)
    # The URL's own settings come last, so they win.
    keywords["options"] = f"{SESSION_SETTINGS} {keywords.get('options', '')}".strip()
    return keywords


def describe(keywords: Mapping[str, str]) -> str:
    """
    Name the server and database of some connect keywords, for logs and
    errors: C{user@host:port/dbname}, never the password.
    """
    user = keywords.get("user", "")
    host = keywords.get("host", "localhost")
    port = keywords.get("port", "5432")
    dbname = keywords.get("dbname", user)
    return f"{user}@{host}:{port}/{dbname}"


class RolledBack(Exception):
    """
    PostgreSQL undid a transaction that was meant to commit.
    """


def _translate_error(error: BaseException) -> BaseException:
    """
    The exception that callers of L{PostgresDatabase} see for C{error}.
    """
    if isinstance(error, psycopg2.IntegrityError):
        return IntegrityViolation(str(error).strip())
    if isinstance(error, _CONNECTION_ERRORS):
        return DatabaseUnavailable(
            f"PostgreSQL connection failed: {str(error).strip() or type(error)}"
        )
    return error


def _raise_translated(
    error: Exception, translated: BaseException | None = None
) -> NoReturn:
    if translated is None:
        translated = _translate_error(error)
    if translated is error:
        raise error
    raise translated from error


class _PostgresTransaction:
    """
    The statements of one transaction, run one after the other on one cursor.

    C{failure} keeps what the first failed statement raised: PostgreSQL
    aborts the transaction then, even if the work catches the exception.
    """

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        # One connection runs one statement at a time.
        self._lock = DeferredLock()
        self.failure: Exception | None = None

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        query = translate_placeholders(sql)
        async with self._lock:
            try:
                await self._cursor.execute(query, tuple(params))
            except Exception as e:
                translated = _translate_error(e)
                if self.failure is None and isinstance(translated, Exception):
                    self.failure = translated
                _raise_translated(e, translated)
            if self._cursor.description is None:
                return []
            rows: list[Row] = self._cursor.fetchall()
            return rows


def forget_descriptor(reactor: Any, fd: int) -> None:
    """
    Remove every trace of file descriptor C{fd} from the reactor's books.

    The epoll and poll reactors drop a descriptor from their map before they
    unregister it from the kernel, and from their read and write sets after;
    when the descriptor was closed already, the unregistering fails and the
    number stays in those sets.  A new socket that gets the same number is
    then never watched, so a connection opened later would hang.
    """
    if fd == -1:
        return
    for books in ("_reads", "_writes", "_selectables"):
        kept = getattr(reactor, books, None)
        if isinstance(kept, set):
            kept.discard(fd)
        elif isinstance(kept, dict):
            kept.pop(fd, None)


class _Connection(txpostgres.Connection):  # type: ignore[misc]
    """
    A txpostgres connection that opens itself again once the server has
    dropped it, and that runs coroutine transactions.
    """

    log = Logger()

    def __init__(self, reactor: Any, cooperator: Any = None) -> None:
        super().__init__(reactor, cooperator)
        self.keywords: dict[str, str] = {}
        self.connect_timeout = CONNECT_TIMEOUT_SECONDS
        self.target = "PostgreSQL"
        self._lost = False
        self._fd = -1

    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def fileno(self) -> int:
        fd: int = super().fileno()
        if fd != -1:
            self._fd = fd
        return fd

    def close(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            super().close()
        except (KeyError, OSError) as e:
            # libpq closed the socket itself when the server went away, and
            # the reactor failed to unregister it halfway through.
            self.log.debug("closing a dropped connection: {error!r}", error=e)
            forget_descriptor(self.reactor, self._fd)
            if not connection.closed:
                connection.close()
            for cursor in set(self._cursors):
                cursor.connectionLost(Failure(CONNECTION_DONE))
            self.connectionLost(Failure(CONNECTION_DONE))

    def doRead(self) -> None:
        try:
            super().doRead()
        except (psycopg2.Error, ValueError) as e:
            # An idle connection whose server went away (a ValueError when
            # txpostgres tries to watch the socket libpq has just closed).
            # txpostgres would let this reach the reactor, which logs it as an
            # unhandled error.
            self._noticed_loss(e)
            self.close()

    def _noticed_loss(self, reason: BaseException) -> None:
        if not self._lost:
            self._lost = True
            self.log.warn(
                "lost a connection to {target}: {reason}",
                target=self.target,
                reason=str(reason).strip(),
            )

    async def ensure_open(self) -> None:
        """
        Open the connection unless it is open, within L{connect_timeout}.
        """
        if self.is_open():
            return
        self.close()
        timed_out = []

        def give_up() -> None:
            timed_out.append(True)
            # Closing fails the pending connection attempt.
            self.close()

        timer = self.reactor.callLater(self.connect_timeout, give_up)
        try:
            await self.connect(**self.keywords)
        except Exception as e:
            if timed_out:
                raise DatabaseUnavailable(
                    f"no answer from {self.target} within {self.connect_timeout}s"
                ) from None
            error = _translate_error(e)
            if isinstance(error, DatabaseUnavailable):
                raise DatabaseUnavailable(
                    f"cannot connect to {self.target}: {str(e).strip()}"
                ) from e
            raise error from e
        finally:
            if timer.active():
                timer.cancel()
        if self._lost:
            self._lost = False
            self.log.info("reconnected to {target}", target=self.target)

    def runInteraction(
        self, work: Callable[[Transaction], Awaitable[T]], *args: Any, **kwargs: Any
    ) -> Deferred[T]:
        """
        Run C{work} in a transaction; the pool calls this.
        """
        return self.lock.run(  # type: ignore[no-any-return]
            lambda: Deferred.fromCoroutine(self._transact(work))
        )

    async def _begin(self) -> Any:
        await self.ensure_open()
        cursor = self.cursor()
        await cursor.execute("BEGIN")
        return cursor

    async def _transact(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        try:
            cursor = await self._begin()
        except _CONNECTION_ERRORS as e:
            # The server dropped this connection while it sat in the pool and
            # nothing has been sent yet, so one more try is safe.
            self._noticed_loss(e)
            self.close()
            cursor = await self._begin()
        txn = _PostgresTransaction(cursor)
        try:
            result = await work(txn)
        except BaseException:
            await self._rollback(cursor)
            raise
        await cursor.execute("COMMIT")
        if cursor.statusmessage == "ROLLBACK":
            # The work caught a failed statement and returned as if nothing
            # happened; PostgreSQL has undone all of it.
            raise txn.failure or RolledBack("PostgreSQL rolled back at COMMIT")
        return result

    async def _rollback(self, cursor: Any) -> None:
        try:
            await cursor.execute("ROLLBACK")
        except Exception as e:
            # The caller hears about the failure that led here; a connection
            # that cannot roll back is not fit to be reused.
            self._noticed_loss(e)
            self.close()


class _Pool(txpostgres.ConnectionPool):  # type: ignore[misc]
    connectionFactory = _Connection

    def __init__(
        self, reactor: Any, size: int, keywords: dict[str, str], timeout: float
    ) -> None:
        self.reactor = reactor
        super().__init__(None, min=size, **keywords)
        for connection in self.connections:
            connection.keywords = keywords
            connection.connect_timeout = timeout
            connection.target = describe(keywords)


class PostgresDatabase:
    """
    L{chat.db.IDatabase} on PostgreSQL, with a few pooled connections.

    @param reactor: provides C{IReactorFDSet} and C{IReactorTime}.
    @param url: C{postgresql://user:password@host:port/dbname}; see
        L{connect_keywords} for the other forms.
    @param pool_size: how many connections to keep, so how many
        transactions can run at once.
    @param connect_timeout: seconds to wait for a connection to open.
    """

    dialect = "postgres"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        pool_size: int = POOL_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        keywords = connect_keywords(url)
        self._target = describe(keywords)
        self._pool = _Pool(reactor, pool_size, keywords, connect_timeout)
        self._running: set[Deferred[Any]] = set()
        self._stopped = False

    def __repr__(self) -> str:
        return f"<PostgresDatabase {self._target}>"

    def _connections(self) -> list[_Connection]:
        return list(self._pool.connections)

    async def start(self) -> None:
        """
        Open every connection of the pool, or raise L{DatabaseUnavailable}.
        """
        opening = [Deferred.fromCoroutine(c.ensure_open()) for c in self._connections()]
        try:
            await gatherResults(opening, consumeErrors=True)
        except FirstError as e:
            for connection in self._connections():
                connection.close()
            error = e.subFailure.value
            if isinstance(error, DatabaseUnavailable):
                raise error from None
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self._target}: {error}"
            ) from error
        self.log.info(
            "connected to PostgreSQL at {target} with {size} connections",
            target=self._target,
            size=len(opening),
        )

    async def stop(self) -> None:
        """
        Let running transactions finish, then close every connection.
        """
        self._stopped = True
        await DeferredList(list(self._running), consumeErrors=True)
        self._pool.close()
        self.log.info("disconnected from PostgreSQL at {target}", target=self._target)

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """
        Run C{work} in one PostgreSQL transaction on one pooled connection.

        A C{psycopg2} integrity error reaches the caller as
        L{IntegrityViolation}; a lost or refused connection as
        L{DatabaseUnavailable}.
        """
        if self._stopped:
            raise DatabaseUnavailable("the PostgreSQL runner is stopped")

        running: Deferred[T] = self._pool.runInteraction(work)
        self._running.add(running)
        try:
            return await running
        except Exception as e:
            _raise_translated(e)
        finally:
            self._running.discard(running)

    async def ping(self) -> None:
        """
        Raise L{DatabaseUnavailable} unless PostgreSQL answers a query.
        """
        await self.transaction(lambda txn: txn.execute("SELECT 1"))


__all__ = [
    "PostgresDatabase",
    "RolledBack",
    "connect_keywords",
    "translate_placeholders",
]
