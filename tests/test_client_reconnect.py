"""
The screens over a reconnecting session, against the fake server, in memory.

Each connection the session opens is a new L{twisted.test.iosim} pump to a
fresh fake-server protocol sharing one state, so dropping every connection
of the fake and advancing the clock exercises the whole path a person sees:
the status line, the resume, the missed messages and the line being typed.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase

from client.api import ChatApi
from client.connection import JsonLineProtocol
from client.screens import Screens
from client.session import Address, Session
from client.terminal import LineEditor
from client.ui import ConsoleUi, Quit
from tests.fakeserver import FakeChatFactory, FakeChatProtocol, FakeChatState
from tests.test_client_screens import START
from tests.test_client_screens import Person as DirectPerson
from tests.test_client_terminal import Screen


class MemoryNetwork:
    """
    Connects protocols to a replica of the fake server through pumps.
    """

    def __init__(self, state: FakeChatState) -> None:
        self.replica = FakeChatFactory(state)
        self.pumps: list[IOPump] = []
        self.servers: list[FakeChatProtocol] = []
        self.down = False

    def __call__(self, address: Address, protocol: JsonLineProtocol) -> Deferred[Any]:
        if self.down:
            return fail(ConnectionRefusedError())
        server = self.replica.buildProtocol(None)
        self.servers.append(server)
        self.pumps.append(
            connect(
                server,
                FakeTransport(server, isServer=True),
                protocol,
                FakeTransport(protocol, isServer=False),
                greet=False,
            )
        )
        return succeed(protocol)

    def flush(self) -> None:
        for pump in list(self.pumps):
            pump.flush()


class Person:
    """
    A user at a client whose session reconnects by itself.
    """

    def __init__(self, state: FakeChatState, clock: Clock) -> None:
        self.network = MemoryNetwork(state)
        self.screen = Screen(columns=200)
        self.ui = ConsoleUi(LineEditor(self.screen.write, columns=200), tz=UTC)
        self.session = Session(
            clock, self.network, [Address("chat.test", 4000)], self.ui, lambda: 0.0
        )
        started = Deferred.fromCoroutine(self.session.start())
        self.network.flush()
        assert started.called
        self.screens = Deferred.fromCoroutine(
            Screens(ChatApi(self.session), self.ui).run()
        )

    def feed(self, keys: str) -> None:
        self.ui.editor.feed(keys.encode("utf-8"))
        self.network.flush()

    def type(self, *lines: str) -> None:
        for line in lines:
            self.feed(line + "\r")

    def sees(self, text: str) -> bool:
        return any(text in line for line in self.screen.lines)

    @property
    def bottom(self) -> str:
        return self.screen.lines[-1]


class ReconnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.state = FakeChatState(self.clock)
        for name in ("alice", "bob"):
            self.state.add_user(name, "secret")

    def alice_in_broadcast(self) -> Person:
        alice = Person(self.state, self.clock)
        alice.type("1", "alice", "secret", "2", "hello")
        self.assertTrue(alice.sees("[15:46] alice: hello"))
        return alice

    def bob_says(self, text: str) -> None:
        bob = DirectPerson(self.state)
        bob.log_in("bob")
        bob.type("2", text, "bye")
        self.failureResultOf(bob.session, Quit)

    def test_reconnect_keeps_screen(self) -> None:
        """
        After the server drops the connection the person stays in the
        conversation: a status line appears, lines typed meanwhile are
        queued, and after the resume the missed message, the queued line
        and the partially typed line are all there.
        """
        alice = self.alice_in_broadcast()
        self.state.drop_all()
        alice.network.flush()
        self.assertTrue(alice.sees("connection lost; reconnecting in 2 s..."))

        alice.type("typed while away")
        alice.feed("draft")
        self.bob_says("missed me?")
        self.assertTrue(alice.sees("(queued until reconnected) typed while away"))
        self.assertEqual(alice.bottom, "[broadcast] > draft")

        self.clock.advance(2.0)
        alice.network.flush()

        self.assertTrue(
            alice.sees("reconnected; 1 message arrived while you were away")
        )
        self.assertTrue(alice.sees("[15:46] bob: missed me?"))
        self.assertTrue(alice.sees("[15:46] alice: typed while away"))
        self.assertEqual(alice.bottom, "[broadcast] > draft")
        texts = [m["text"] for m in self.state.messages]
        self.assertEqual(texts, ["hello", "missed me?", "typed while away"])

        alice.type(" done")
        self.assertEqual(self.state.messages[-1]["text"], "draft done")
        self.assertNoResult(alice.screens)

    def test_unacknowledged_line_stored_once(self) -> None:
        """
        A line the server stored but whose acknowledgement was lost is sent
        again with the same ref, stored once and shown once.
        """
        self.lost_ack()

    def test_unacknowledged_line_replayed(self) -> None:
        """
        If the resume replays the person's own lost-ack line too, the line
        is still shown once.
        """
        self.state.replay_own = True
        self.lost_ack()

    def lost_ack(self) -> None:
        alice = self.alice_in_broadcast()
        alice.ui.editor.feed(b"lost ack\r")
        # The line reaches the server, which is cut before its reply leaves.
        self.state.drop_all()
        alice.network.flush()
        self.assertEqual(self.state.messages[-1]["text"], "lost ack")

        self.clock.advance(2.0)
        alice.network.flush()

        self.assertEqual(
            [m["text"] for m in self.state.messages], ["hello", "lost ack"]
        )
        msgs = [
            c for s in alice.network.servers for c in s.received if c["cmd"] == "msg"
        ]
        self.assertEqual(msgs[-1]["ref"], msgs[-2]["ref"])
        shown = [line for line in alice.screen.lines if "alice: lost ack" in line]
        self.assertEqual(len(shown), 1)

    def test_expired_session_asks_password(self) -> None:
        """
        When the token has expired, the password is asked once over the
        conversation, and after logging in again the typed line is intact.
        """
        alice = self.alice_in_broadcast()
        alice.feed("draft")
        self.state.drop_all()
        self.state.tokens.clear()
        alice.network.flush()

        self.clock.advance(2.0)
        alice.network.flush()
        self.assertTrue(alice.sees("The server no longer knows this session"))
        self.assertEqual(alice.bottom, "Password:")
        alice.type("secret")

        self.assertTrue(alice.sees("reconnected and logged in again as alice."))
        self.assertEqual(alice.bottom, "[broadcast] > draft")
        self.assertNotIn("secret", alice.screen.written)
        alice.type("")
        self.assertEqual(self.state.messages[-1]["text"], "draft")

    def test_silent_server(self) -> None:
        """
        A server that stops answering is given up after a minute of silence
        and the session resumes on a new connection.
        """
        alice = self.alice_in_broadcast()
        alice.network.servers[-1].go_silent()

        self.clock.advance(60.0)
        alice.network.flush()
        self.assertTrue(alice.sees("connection lost; reconnecting in 2 s..."))
        self.clock.advance(2.0)
        alice.network.flush()

        self.assertTrue(alice.sees("reconnected; 0 messages arrived"))
        self.assertEqual(alice.bottom, "[broadcast] >")

    def test_server_down_for_a_while(self) -> None:
        """
        While nobody answers the session keeps trying, waiting longer each
        time, and resumes once the server is back.
        """
        alice = self.alice_in_broadcast()
        alice.network.down = True
        self.state.drop_all()
        alice.network.flush()
        for wait in (2.0, 4.0, 8.0):
            self.clock.advance(wait)
        self.assertTrue(alice.sees("connection lost; reconnecting in 16 s..."))

        alice.network.down = False
        self.clock.advance(16.0)
        alice.network.flush()

        self.assertTrue(alice.sees("reconnected; 0 messages arrived"))
