"""
The real client program in a pseudo-terminal, against the fake server.

The fake server listens on 127.0.0.1 in the test's reactor; the client runs
as C{python -m client} in a child process whose terminal is a pty, so its raw
mode, prompts and redrawing are exercised as a person would see them.  A
second user, bob, talks to the server through the client's own connection
classes, so replacing the fake by the real server only changes the listener.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
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
        self.port = reactor.listenTCP(
            0, FakeChatFactory(self.state), interface="127.0.0.1"
        )
        self.addCleanup(self.port.stopListening)

    def start_client(self) -> ClientInPty:
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
            [sys.executable, "-m", "client", "127.0.0.1", port],
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

    async def bob_says(self, text: str) -> None:
        listener = QuietListener()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
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

    async def broadcast_session(self) -> None:
        client = self.start_client()
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
