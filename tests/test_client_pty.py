"""
The real client program in a pseudo-terminal, against the fake server.

The fake server listens on 127.0.0.1 in the test's reactor; the client runs
as C{python -m client} in a child process whose terminal is a pty, so its raw
mode, prompts and redrawing are exercised as a person would see them.  A
second user, bob, talks to the server through the client's own connection
classes, so replacing the fake by the real server only changes the listener.

The reconnection tests restart the fake on the same port (its state, like a
real server's database, survives) or announce maintenance on one replica of
two, and watch the client come back by itself with the conversation intact.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from client.api import ChatApi
from client.connection import JsonLineProtocol, JsonObject
from tests.fakeserver import FakeChatFactory, FakeChatState

CHECKOUT = Path(__file__).resolve().parent.parent
EXPECT_TIMEOUT_SECONDS = 15.0


class ClientInPty(ProcessProtocol):
    """
    The client process: collects its output and waits for expected text.
    """

    def __init__(self) -> None:
        self.output = ""
        self._searched_to = 0
        self._waiting: tuple[str, Deferred[None]] | None = None
        self.ended: Deferred[int | None] = Deferred()

    def type(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(text.encode("utf-8"))

    def expect(self, text: str) -> Deferred[None]:
        """
        Fire once C{text} appears after whatever the previous expect matched.
        """
        found: Deferred[None] = Deferred()
        self._waiting = (text, found)
        self._check()

        def timed_out(result: object, timeout: float) -> None:
            recent = self.output[self._searched_to :][-1500:]
            raise AssertionError(
                f"{text!r} not seen in {timeout}s; output:\n{recent!r}"
            )

        return found.addTimeout(
            EXPECT_TIMEOUT_SECONDS, reactor, onTimeoutCancel=timed_out
        )

    def _check(self) -> None:
        if self._waiting is None:
            return
        text, found = self._waiting
        position = self.output.find(text, self._searched_to)
        if position >= 0:
            self._searched_to = position + len(text)
            self._waiting = None
            found.callback(None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data.decode("utf-8", errors="replace")
        self._check()

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(reason.value.exitCode)
        else:
            self.ended.errback(reason)


class QuietListener:
    """
    Bob's listener: keeps events and notices when the connection ends.
    """

    def __init__(self) -> None:
        self.events: list[JsonObject] = []
        self.lost: Deferred[None] = Deferred()

    def event_received(self, event: JsonObject) -> None:
        self.events.append(event)

    def connection_lost(self, reason: Failure) -> None:
        self.lost.callback(None)


class ClientInPtyTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.state = FakeChatState(reactor)
        for name in ("alice", "bob"):
            self.state.add_user(name, "secret")
        self.replica = FakeChatFactory(self.state)
        self.port = self.listen(self.replica)

    def listen(self, replica: FakeChatFactory, port: int = 0) -> IListeningPort:
        """
        Serve C{replica} on 127.0.0.1 until the test ends.
        """
        listening = reactor.listenTCP(port, replica, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return listening

    def start_client(self, *more: str) -> ClientInPty:
        client = ClientInPty()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(CHECKOUT), os.environ.get("PYTHONPATH", "")]
            ),
            "TZ": "UTC",
            "TERM": "xterm",
        }
        port = str(self.port.getHost().port)
        process = reactor.spawnProcess(
            client,
            sys.executable,
            [sys.executable, "-m", "client", "127.0.0.1", port, *more],
            env=env,
            path=str(CHECKOUT),
            usePTY=True,
        )

        async def stop() -> None:
            if not client.ended.called:
                process.signalProcess("KILL")
                await client.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return client

    async def bob_says(self, text: str, port: IListeningPort | None = None) -> None:
        listener = QuietListener()
        port = port or self.port
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        protocol = await connectProtocol(endpoint, JsonLineProtocol(listener))
        await protocol.ready
        api = ChatApi(protocol)
        await api.login("bob", "secret")
        await api.send("*", text)
        await api.quit()
        await listener.lost

    def test_broadcast_session(self) -> Deferred[None]:
        """
        Log in, open the broadcast channel, send a line, see bob's message
        arrive above the partly typed input, and leave with C{bye}.
        """
        return Deferred.fromCoroutine(self.broadcast_session())

    async def log_in_to_broadcast(self, client: ClientInPty) -> None:
        for prompt, answer in [
            ("Choose 1 or 2: ", "1"),
            ("Username (or back): ", "alice"),
            ("Password: ", "secret"),
            ("Choose 1-5: ", "2"),
            ("[broadcast] > ", "hello from alice"),
        ]:
            await client.expect(prompt)
            client.type(answer + "\r")
        await client.expect("] alice: hello from alice")

    async def log_out(self, client: ClientInPty) -> None:
        client.type("\x15bye\r")
        await client.expect("Goodbye.")
        self.assertEqual(await client.ended, 0)
        self.assertNotIn("alice", self.state.online)

    async def broadcast_session(self) -> None:
        client = self.start_client()
        await self.log_in_to_broadcast(client)
        self.assertNotIn("secret", client.output)

        client.type("draft")
        await client.expect("[broadcast] > draft")
        await self.bob_says("hello alice")
        await client.expect("] bob: hello alice")
        await client.expect("[broadcast] > draft")

        client.type("\x15bye\r")
        await client.expect("Goodbye.")
        self.assertEqual(await client.ended, 0)
        self.assertEqual(self.state.messages[0]["text"], "hello from alice")
        self.assertNotIn("alice", self.state.online)

    def test_reconnect_after_server_restart(self) -> None:
        """
        When the server goes away and comes back on the same port, the
        client reconnects by itself, resumes, shows what bob said meanwhile,
        sends the line typed while offline and keeps the line being typed.
        """
        return Deferred.fromCoroutine(self.server_restart())

    async def server_restart(self) -> None:
        client = self.start_client()
        await self.log_in_to_broadcast(client)
        port_number = self.port.getHost().port
        # A second replica on the same state lets bob talk meanwhile.
        elsewhere = self.listen(FakeChatFactory(self.state))

        await self.port.stopListening()
        self.state.drop_all()
        await client.expect("connection lost; reconnecting in ")
        await self.bob_says("did you miss me?", elsewhere)
        client.type("typed while away\r")
        await client.expect("(queued until reconnected) typed while away")
        client.type("draft")
        await client.expect("[broadcast] > draft")

        self.port = self.listen(FakeChatFactory(self.state), port_number)
        await client.expect("reconnected; 1 message arrived while you were away")
        await client.expect("] bob: did you miss me?")
        await client.expect("] alice: typed while away")
        await client.expect("[broadcast] > draft")

        client.type(" done\r")
        await client.expect("] alice: draft done")
        texts = [message["text"] for message in self.state.messages]
        self.assertEqual(
            texts,
            ["hello from alice", "did you miss me?", "typed while away", "draft done"],
        )
        await self.log_out(client)

    def test_maintenance_moves_to_next_server(self) -> None:
        """
        A maintenance notice on the first server sends the client, after
        retry_after, to the next address given on the command line, where
        it resumes with the partly typed line intact.
        """
        return Deferred.fromCoroutine(self.maintenance())

    async def maintenance(self) -> None:
        second = FakeChatFactory(self.state)
        second_port = self.listen(second).getHost().port
        client = self.start_client(f"127.0.0.1:{second_port}")
        await self.log_in_to_broadcast(client)
        client.type("draft")
        await client.expect("[broadcast] > draft")

        self.replica.announce_maintenance(retry_after=1, close_after=0.5)

        await client.expect("** SERVER: SERVER MAINTENANCE")
        await client.expect("connection lost; reconnecting in 1 s...")
        await client.expect("reconnected; 0 messages arrived while you were away")
        await client.expect("[broadcast] > draft")
        self.assertEqual([c.user for c in second.connections], ["alice"])
        await self.log_out(client)
