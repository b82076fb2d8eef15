"""
Tests for L{chat.postgres} against a real PostgreSQL, and a smoke test of the
Redis test server with the txredisapi client.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.db import (
    DatabaseUnavailable,
    IDatabase,
    IntegrityViolation,
    Transaction,
    advisory_lock,
    open_database,
)
from chat.postgres import (
    KEEPALIVES,
    SESSION_SETTINGS,
    PostgresDatabase,
    connect_keywords,
    describe,
    forget_descriptor,
    translate_placeholders,
)
from tests.servers import LOCALHOST, free_port, shared_postgres, shared_redis

E = TypeVar("E", bound=BaseException)

TEST_TIMEOUT_SECONDS = 30
LOCK_KEY = 0x7E57_10C4
REDIS_RETRIES = 50
REDIS_RETRY_SECONDS = 0.1


class TranslatePlaceholdersTests(SynchronousTestCase):
    def test_placeholders(self) -> None:
        """
        Each bare C{?} becomes C{%s}.
        """
        self.assertEqual(
            translate_placeholders("SELECT a FROM t WHERE b = ? AND c IN (?, ?)"),
            "SELECT a FROM t WHERE b = %s AND c IN (%s, %s)",
        )

    def test_quoted(self) -> None:
        """
        A C{?} in a string, a quoted identifier or a dollar-quoted body stays.
        """
        sql = "SELECT 'why?', 'it''s ?', E'\\'?', \"odd?\", $$ ? $$, $f$ ? $f$, ?"
        self.assertEqual(
            translate_placeholders(sql),
            "SELECT 'why?', 'it''s ?', E'\\'?', \"odd?\", $$ ? $$, $f$ ? $f$, %s",
        )

    def test_comments(self) -> None:
        """
        A C{?} in a line or block comment stays.
        """
        self.assertEqual(
            translate_placeholders("SELECT ? -- one?\n, /* two? */ ?"),
            "SELECT %s -- one?\n, /* two? */ %s",
        )

    def test_percent(self) -> None:
        """
        Every C{%} is doubled, inside quotes too, since psycopg2 formats the
        whole statement.
        """
        self.assertEqual(
            translate_placeholders("SELECT 7 % 2, '100%' WHERE x LIKE ?"),
            "SELECT 7 %% 2, '100%%' WHERE x LIKE %s",
        )

    def test_positional_parameter_is_not_dollar_quote(self) -> None:
        """
        C{$1} does not open a dollar-quoted string.
        """
        self.assertEqual(
            translate_placeholders("SELECT $1, ?, $2"), "SELECT $1, %s, $2"
        )


class ConnectKeywordsTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """
        User, password, host, port and database come from the URL, decoded.
        """
        self.assertEqual(
            connect_keywords("postgresql://ch%40t:p%3Ass@db.local:5433/chat%2Fx"),
            {
                "user": "ch@t",
                "password": "p:ss",
                "host": "db.local",
                "port": "5433",
                "dbname": "chat/x",
                **KEEPALIVES,
                "options": SESSION_SETTINGS,
            },
        )

    def test_unix_socket(self) -> None:
        """
        A C{host} query parameter names the socket directory.
        """
        self.assertEqual(
            connect_keywords("postgres://chat@/chat?host=/run/pg&sslmode=disable"),
            {
                "user": "chat",
                "dbname": "chat",
                "host": "/run/pg",
                "sslmode": "disable",
                **KEEPALIVES,
                "options": SESSION_SETTINGS,
            },
        )

    def test_url_settings_win(self) -> None:
        """
        Keepalive and server settings given in the URL come after, so ahead
        of, the defaults.
        """
        keywords = connect_keywords(
            "postgresql://u@h/d?keepalives_idle=60&options=-c%20lock_timeout%3D1s"
        )
        self.assertEqual(keywords["keepalives_idle"], "60")
        self.assertEqual(keywords["options"], f"{SESSION_SETTINGS} -c lock_timeout=1s")

    def test_other_scheme(self) -> None:
        """
        A URL of another scheme is refused.
        """
        self.assertRaises(ValueError, connect_keywords, "mysql://u@h/d")

    def test_malformed_hides_password(self) -> None:
        """
        The error for a malformed URL does not repeat the password.
        """
        error = self.assertRaises(
            ValueError, connect_keywords, "postgresql://u:s3cret@h/d?bogus=1"
        )
        self.assertNotIn("s3cret", str(error))
        self.assertIsNone(error.__cause__)

    def test_descriptions_hide_password(self) -> None:
        """
        Neither the description used in logs nor the runner's repr holds the
        password.
        """
        url = "postgresql://chat:s3cret@127.0.0.1:5/chat"
        self.assertEqual(describe(connect_keywords(url)), "chat@127.0.0.1:5/chat")
        self.assertNotIn("s3cret", repr(PostgresDatabase(reactor, url)))


async def _insert(txn: Transaction, name: str) -> None:
    await txn.execute("INSERT INTO items (name) VALUES (?)", (name,))


async def _names(txn: Transaction) -> list[str]:
    rows = await txn.execute("SELECT name FROM items ORDER BY name")
    return [row[0] for row in rows]


async def raised(awaitable: Awaitable[object], kind: type[E]) -> E:
    """
    The exception of type C{kind} that C{awaitable} raises.
    """
    try:
        await awaitable
    except kind as e:
        return e
    raise AssertionError(f"{kind.__name__} was not raised")


class _Socket:
    """
    A reader for the reactor, standing for a database connection's socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        pass

    def logPrefix(self) -> str:
        return "socket"


class ForgetDescriptorTests(SynchronousTestCase):
    def test_closed_descriptor_number_is_watched_again(self) -> None:
        """
        After the epoll reactor failed to unregister a socket that was closed
        under it, L{forget_descriptor} lets a new socket with the same number
        be watched.
        """
        from twisted.internet.epollreactor import EPollReactor

        poller = EPollReactor()
        self.addCleanup(poller._poller.close)
        first, peer = socket.socketpair()
        self.addCleanup(peer.close)
        reader = _Socket(first)
        poller.addReader(reader)
        fd = first.fileno()
        first.close()
        self.assertRaises(OSError, poller.removeReader, reader)
        forget_descriptor(poller, fd)
        second, other = socket.socketpair()
        self.addCleanup(second.close)
        self.addCleanup(other.close)
        self.assertEqual(second.fileno(), fd)
        poller.addReader(_Socket(second))
        self.assertIn(fd, poller._selectables)


class Boom(Exception):
    pass


class RecordingTransaction:
    """
    A transaction that records its statements and returns no rows.
    """

    def __init__(self) -> None:
        self.statements: list[str] = []

    async def execute(self, sql: str, params: Any = ()) -> list[Any]:
        self.statements.append(sql)
        return []


class PostgresDatabaseTests(TestCase):
    """
    L{PostgresDatabase} on a fresh database of the shared test server.
    """

    timeout = TEST_TIMEOUT_SECONDS

    async def setUp(self) -> None:  # type: ignore[override]
        self.server = shared_postgres()
        url = self.server.create_database()
        self.database_name = url.rsplit("/", 1)[1]
        self.addCleanup(self.server.drop_database, url)
        self.db: IDatabase = open_database(reactor, url)
        await self.db.start()
        self.addCleanup(self.db.stop)
        await self.db.transaction(
            lambda txn: txn.execute(
                "CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT UNIQUE)"
            )
        )

    def test_opened_by_url(self) -> None:
        """
        L{open_database} picks this runner for a C{postgresql://} URL.
        """
        self.assertIsInstance(self.db, PostgresDatabase)
        self.assertEqual(self.db.dialect, "postgres")

    def crash_and_recover_on_cleanup(self) -> None:
        self.addCleanup(self.server.start)

    async def test_round_trip(self) -> None:
        """
        Parameters go in through C{?} and rows come back as tuples; a C{?} and
        a C{%} in literals survive.
        """

        async def work(txn: Transaction) -> list[Any]:
            inserted = await txn.execute(
                "INSERT INTO items (name) VALUES (?) RETURNING id, name", ("a?%",)
            )
            selected = await txn.execute(
                "SELECT name, '?', '100%' FROM items WHERE name = ?", ("a?%",)
            )
            return [inserted, selected]

        inserted, selected = await self.db.transaction(work)
        self.assertEqual(inserted, [(1, "a?%")])
        self.assertEqual(selected, [("a?%", "?", "100%")])

    async def test_unix_socket(self) -> None:
        """
        A runner reaches the server through the Unix socket that a C{host}
        query parameter names.
        """
        await self.db.transaction(lambda txn: _insert(txn, "via tcp"))
        url = self.server.socket_url_for(self.database_name)
        over_socket = PostgresDatabase(reactor, url, pool_size=1)
        await over_socket.start()
        self.addCleanup(over_socket.stop)
        self.assertEqual(await over_socket.transaction(_names), ["via tcp"])

    async def test_statement_without_rows(self) -> None:
        """
        A statement that produces no result set returns an empty list.
        """
        rows = await self.db.transaction(
            lambda txn: txn.execute("UPDATE items SET name = ?", ("x",))
        )
        self.assertEqual(rows, [])

    async def test_rollback(self) -> None:
        """
        When the work raises, its statements are rolled back and the exception
        reaches the caller unchanged.
        """

        async def work(txn: Transaction) -> None:
            await _insert(txn, "lost")
            raise Boom()

        await raised(self.db.transaction(work), Boom)
        self.assertEqual(await self.db.transaction(_names), [])

    async def test_commit(self) -> None:
        """
        Statements of a transaction that returns are visible afterwards.
        """

        async def work(txn: Transaction) -> None:
            await _insert(txn, "a")
            await _insert(txn, "b")

        await self.db.transaction(work)
        self.assertEqual(await self.db.transaction(_names), ["a", "b"])

    async def test_integrity_violation(self) -> None:
        """
        Breaking a unique constraint raises L{IntegrityViolation}, rolls the
        transaction back, and leaves the runner usable.
        """
        await self.db.transaction(lambda txn: _insert(txn, "taken"))

        async def work(txn: Transaction) -> None:
            await _insert(txn, "other")
            await _insert(txn, "taken")

        await raised(self.db.transaction(work), IntegrityViolation)
        self.assertEqual(await self.db.transaction(_names), ["taken"])

    async def test_caught_failure_not_committed(self) -> None:
        """
        When the work catches a failed statement and returns, nothing commits
        and the caller gets the statement's exception.
        """
        await self.db.transaction(lambda txn: _insert(txn, "taken"))

        async def work(txn: Transaction) -> str:
            await _insert(txn, "other")
            try:
                await _insert(txn, "taken")
            except IntegrityViolation:
                pass
            return "carried on"

        await raised(self.db.transaction(work), IntegrityViolation)
        self.assertEqual(await self.db.transaction(_names), ["taken"])

    async def test_concurrent_transactions(self) -> None:
        """
        More transactions than pooled connections all complete.
        """
        names = [f"n{i:02}" for i in range(12)]
        await Deferred.fromCoroutine(self._insert_all(names))
        self.assertEqual(await self.db.transaction(_names), names)

    async def _insert_all(self, names: list[str]) -> None:
        def one(name: str) -> Deferred[None]:
            return Deferred.fromCoroutine(
                self.db.transaction(lambda txn: _insert(txn, name))
            )

        await gatherResults([one(name) for name in names])

    async def test_settings_reach_the_server(self) -> None:
        """
        The server applies the session settings that bound how long a
        vanished replica keeps its locks.
        """

        async def show(txn: Transaction) -> list[Any]:
            found = []
            for name in ("idle_in_transaction_session_timeout", "lock_timeout"):
                rows = await txn.execute(f"SHOW {name}")
                found.append(rows[0][0])
            return found

        self.assertEqual(await self.db.transaction(show), ["10s", "20s"])

    async def test_advisory_lock(self) -> None:
        """
        L{advisory_lock} holds the lock until its transaction ends.
        """
        release: Deferred[None] = Deferred()
        locked: Deferred[None] = Deferred()

        async def holder(txn: Transaction) -> None:
            await advisory_lock(txn, LOCK_KEY)
            locked.callback(None)
            await release

        async def try_lock(txn: Transaction) -> bool:
            rows = await txn.execute("SELECT pg_try_advisory_xact_lock(?)", (LOCK_KEY,))
            return bool(rows[0][0])

        holding = Deferred.fromCoroutine(self.db.transaction(holder))
        await locked
        self.assertFalse(await self.db.transaction(try_lock))
        release.callback(None)
        await holding
        self.assertTrue(await self.db.transaction(try_lock))

    def test_advisory_lock_key_range(self) -> None:
        """
        A key outside 64 signed bits is refused before reaching the server.
        """
        txn = RecordingTransaction()
        d = Deferred.fromCoroutine(advisory_lock(txn, 2**63))
        self.failureResultOf(d, ValueError)
        self.assertEqual(txn.statements, [])

    async def test_stop_waits(self) -> None:
        """
        L{PostgresDatabase.stop} lets a running transaction commit first.
        """
        release: Deferred[None] = Deferred()

        async def slow(txn: Transaction) -> None:
            await _insert(txn, "late")
            await release

        running = Deferred.fromCoroutine(self.db.transaction(slow))
        stopping = Deferred.fromCoroutine(self.db.stop())
        await deferLater(reactor, 0.05, lambda: None)
        self.assertNoResult(stopping)
        release.callback(None)
        await running
        await stopping
        await raised(self.db.transaction(_names), DatabaseUnavailable)

    async def test_unavailable_then_restart(self) -> None:
        """
        While the server is down, calls raise L{DatabaseUnavailable}; once it
        is back the same runner works again.
        """
        self.crash_and_recover_on_cleanup()
        await self.db.transaction(lambda txn: _insert(txn, "kept"))
        self.server.stop()
        for _ in range(2):
            await raised(self.db.ping(), DatabaseUnavailable)
        self.server.start()
        self.assertEqual(await self.db.transaction(_names), ["kept"])

    async def test_restart_noticed_while_idle(self) -> None:
        """
        Connections that the server closed while they sat idle are opened again
        without an error reaching the caller or the log.
        """
        self.crash_and_recover_on_cleanup()
        self.server.restart()
        # Let the reactor read the server's goodbye on the idle connections.
        await deferLater(reactor, 0.1, lambda: None)
        await self._use_every_connection()

    async def test_restart_not_yet_noticed(self) -> None:
        """
        Connections closed by a restart the reactor has not seen yet are
        opened again at C{BEGIN}, without an error reaching the caller.
        """
        self.crash_and_recover_on_cleanup()
        self.server.restart()
        await self._use_every_connection()

    async def _use_every_connection(self) -> None:
        # One transaction per pooled connection, all at once.
        pings = [Deferred.fromCoroutine(self.db.ping()) for _ in range(3)]
        await gatherResults(pings)

    async def test_crash_during_transaction(self) -> None:
        """
        A server crash in the middle of a transaction raises
        L{DatabaseUnavailable} to its caller, and the runner recovers when the
        server is back.
        """
        self.crash_and_recover_on_cleanup()

        async def work(txn: Transaction) -> None:
            await _insert(txn, "doomed")
            self.server.kill()
            await _insert(txn, "never")

        await raised(self.db.transaction(work), DatabaseUnavailable)
        self.server.start()
        self.assertEqual(await self.db.transaction(_names), [])


class StartTests(TestCase):
    """
    L{PostgresDatabase.start} against servers that do not answer.
    """

    timeout = TEST_TIMEOUT_SECONDS

    async def test_refused(self) -> None:
        """
        With nothing listening, start fails with L{DatabaseUnavailable}
        naming the target but not the password.
        """
        url = f"postgresql://chat:s3cret@{LOCALHOST}:{free_port()}/chat"
        db = PostgresDatabase(reactor, url)
        error = await raised(db.start(), DatabaseUnavailable)
        self.assertIn("cannot connect", str(error))
        self.assertNotIn("s3cret", str(error))

    async def test_silent_server(self) -> None:
        """
        A server that accepts connections but never answers makes start fail
        with L{DatabaseUnavailable} after the connect timeout.
        """
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.bind((LOCALHOST, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        db = PostgresDatabase(
            reactor, f"postgresql://chat@{LOCALHOST}:{port}/chat", connect_timeout=0.2
        )
        error = await raised(db.start(), DatabaseUnavailable)
        self.assertIn("no answer", str(error))


class RedisServerTests(TestCase):
    """
    The Redis test server works with the client the daemon uses.
    """

    timeout = TEST_TIMEOUT_SECONDS

    async def test_set_get_restart(self) -> None:
        """
        A txredisapi client stores and reads a value, and after a server
        restart it reconnects on its own to an empty server.
        """
        server = shared_redis()
        self.assertEqual(server.url, f"redis://{LOCALHOST}:{server.port}/0")
        redis = await txredisapi.Connection(LOCALHOST, server.port, reconnect=True)
        self.addCleanup(redis.disconnect)

        await redis.set("greeting", "hello")
        self.assertEqual(await redis.get("greeting"), "hello")

        server.restart()
        # The first command may still go out on the connection that the
        # restart closed; the client reports that and reconnects by itself.
        self.assertIsNone(await self._retry(lambda: redis.get("greeting")))
        await redis.set("greeting", "again")
        self.assertEqual(await redis.get("greeting"), "again")

    async def _retry(self, command: Callable[[], Deferred[Any]]) -> Any:
        for _ in range(REDIS_RETRIES - 1):
            try:
                return await command()
            except txredisapi.ConnectionError:
                await deferLater(reactor, REDIS_RETRY_SECONDS, lambda: None)
        return await command()
