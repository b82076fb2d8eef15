"""
The daemon over real TCP on 127.0.0.1: start-up, chatting, drain and restart.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from chat.daemon import ChatDaemon, Settings
from chat.passwords import Passwords, cheap_hasher


class LineClient(Protocol):
    """
    A test peer that collects lines and can wait for one that matches.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[str] = []
        self.closed: Deferred[None] = Deferred()
        self._waiting: list[tuple[str, Deferred[str]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8")
            self.lines.append(text)
            for waiting in list(self._waiting):
                if waiting[0] in text:
                    self._waiting.remove(waiting)
                    waiting[1].callback(text)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)

    def send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def wait_for(self, fragment: str, timeout: float = 10.0) -> Deferred[str]:
        for line in self.lines:
            if fragment in line:
                return Deferred.fromCoroutine(_done(line))
        d: Deferred[str] = Deferred()
        self._waiting.append((fragment, d))
        d.addTimeout(timeout, reactor)
        return d


async def _done(line: str) -> str:
    return line


class DaemonTests(TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="chat-daemon-")

    def make(self, drain: float = 0.2) -> ChatDaemon:
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            database="sqlite:" + os.path.join(self.directory, "chat.db"),
            server_id="replica-a",
            passwords=Passwords(reactor, cheap_hasher()),
            drain=drain,
        )
        return ChatDaemon(reactor, settings)

    async def start(self, daemon: ChatDaemon) -> int:
        daemon.startService()
        await daemon.ready
        return daemon.ports[0].getHost().port

    async def connect(self, port: int) -> LineClient:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, LineClient())
        await client.wait_for("/signup")
        return client

    async def test_two_people_chat_and_history_survives_restart(self) -> None:
        """
        Two people chat over TCP; after a restart on the same database the
        history and the accounts are still there.
        """
        daemon = self.make()
        port = await self.start(daemon)
        alice = await self.connect(port)
        bob = await self.connect(port)
        alice.send("/signup alice password123")
        await alice.wait_for("Welcome, alice")
        bob.send("/signup bob password123")
        await bob.wait_for("Welcome, bob")
        bob.send("/msg alice over tcp")
        await alice.wait_for("bob (private): over tcp")
        await daemon.stopService()
        await alice.closed
        await bob.closed

        daemon = self.make()
        port = await self.start(daemon)
        self.addCleanup(daemon.stopService)
        again = await self.connect(port)
        again.send("/login alice password123")
        await again.wait_for("Welcome back, alice")
        again.send("/history bob")
        await again.wait_for("] bob: over tcp")

    async def test_drain_tells_everyone_before_closing(self) -> None:
        """
        On stop, every connection gets the maintenance notice, then is closed
        after the drain period; new connections are refused meanwhile.
        """
        daemon = self.make(drain=0.3)
        port = await self.start(daemon)
        alice = await self.connect(port)
        alice.send("/signup alice password123")
        await alice.wait_for("token:")
        anonymous = await self.connect(port)
        started = reactor.seconds()
        stopping = daemon.stopService()
        notice = await alice.wait_for("SERVER MAINTENANCE")
        self.assertEqual(
            notice, "*** SERVER MAINTENANCE: reconnecting in a few seconds"
        )
        await anonymous.wait_for("SERVER MAINTENANCE")
        self.assertTrue(daemon.draining)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        with self.assertRaises(error.ConnectionRefusedError):
            await connectProtocol(endpoint, LineClient())
        await alice.closed
        self.assertGreaterEqual(reactor.seconds() - started, 0.3)
        await stopping

    async def test_bad_database_url_fails_start(self) -> None:
        """
        A database URL of an unknown kind is refused at construction.
        """
        settings = Settings(database="mysql://nope")
        with self.assertRaises(ValueError):
            ChatDaemon(reactor, settings)


class FailedStartTests(TestCase):
    async def test_stop_after_failed_start_completes(self) -> None:
        """
        A daemon whose admin port is taken fails to start, and stopping it
        still completes (it never opened its database).
        """
        import socket

        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        directory = tempfile.mkdtemp(prefix="chat-failed-")
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            database="sqlite:" + os.path.join(directory, "chat.db"),
            admin=f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1",
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        with self.assertRaises(error.CannotListenError):
            await daemon.ready
        stopping = daemon.stopService()
        stopping.addTimeout(10, reactor)
        await stopping
        self.flushLoggedErrors(error.CannotListenError)


class KeepAliveTests(TestCase):
    async def test_connections_use_tcp_keepalive(self) -> None:
        """
        Accepted connections have TCP keepalive on, with short timers, so a
        vanished peer is noticed within minutes.
        """
        import socket

        from chat.guard import KEEPALIVE_IDLE

        directory = tempfile.mkdtemp(prefix="chat-keepalive-")
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            database="sqlite:" + os.path.join(directory, "chat.db"),
            passwords=Passwords(reactor, cheap_hasher()),
            drain=0,
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        await daemon.ready
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", daemon.ports[0].getHost().port
        )
        client = await connectProtocol(endpoint, LineClient())
        await client.wait_for("/signup")
        (server,) = daemon.registry.connections
        handle = server.transport.getHandle()
        self.assertEqual(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        self.assertEqual(
            handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), KEEPALIVE_IDLE
        )
        client.transport.loseConnection()
        await client.closed
