"""
Tests for the client's screens, driven by keystrokes against the fake server.

Everything runs in memory: the client and the fake server talk through
L{twisted.test.iosim}, and the screen is the model from the editor's tests.
"""

from __future__ import annotations

from datetime import UTC

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from client.api import ChatApi
from client.connection import JsonLineProtocol
from client.screens import Screens
from client.terminal import LineEditor
from client.ui import ConsoleUi, Quit
from tests.fakeserver import FakeChatProtocol, FakeChatState
from tests.test_client_terminal import Screen

START = 1_796_485_597.0  # 2026-12-04 15:46:37 UTC


class Person:
    """
    One user at a client, connected in memory to the fake server.
    """

    def __init__(self, state: FakeChatState) -> None:
        self.screen = Screen(columns=200)
        self.ui = ConsoleUi(LineEditor(self.screen.write, columns=200), tz=UTC)
        self.protocol = JsonLineProtocol(self.ui)
        server = FakeChatProtocol(state)
        self.pump = connect(
            server,
            FakeTransport(server, isServer=True),
            self.protocol,
            FakeTransport(self.protocol, isServer=False),
        )
        self.session = Deferred.fromCoroutine(
            Screens(ChatApi(self.protocol), self.ui).run()
        )

    def type(self, *lines: str) -> None:
        for line in lines:
            self.ui.editor.feed(line.encode("utf-8") + b"\r")
            self.pump.flush()

    def log_in(self, name: str, password: str = "secret") -> None:
        self.type("1", name, password)

    def sees(self, text: str) -> bool:
        return any(text in line for line in self.screen.lines)


class ScreensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.state = FakeChatState(self.clock)
        for name in ("alice", "bob", "carol"):
            self.state.add_user(name, "secret")

    def person(self) -> Person:
        return Person(self.state)

    def flush(self, *people: Person) -> None:
        for person in people:
            person.pump.flush()

    def test_login_error_then_retry(self) -> None:
        """
        A refused login is explained and the user is asked again.
        """
        alice = self.person()
        alice.type("1", "alice", "wrong")
        self.assertTrue(alice.sees("Login failed: wrong name or password"))
        self.assertFalse(alice.sees("Welcome"))

        alice.type("alice", "secret")

        self.assertTrue(alice.sees("Welcome, alice!"))
        self.assertTrue(alice.sees("5. Create New Group"))
        self.assertFalse(alice.sees("secret"))

    def test_signup_compares_passwords(self) -> None:
        """
        Sign-up asks for the password twice and refuses a mismatch locally.
        """
        dave = self.person()
        dave.type("2", "dave", "pass1", "pass2")
        self.assertTrue(dave.sees("do not match"))
        self.assertNotIn("dave", self.state.passwords)

        dave.type("dave", "pass1", "pass1")

        self.assertTrue(dave.sees("Welcome, dave!"))
        self.assertEqual(self.state.passwords["dave"], "pass1")

    def test_away_summary(self) -> None:
        """
        Messages that arrived while away are counted at login.
        """
        self.state.deliver("private", "bob", "alice", ["alice"], "while you slept")
        alice = self.person()
        alice.log_in("alice")
        self.assertTrue(
            alice.sees("1 message arrived while you were away (1 private).")
        )

    def test_private_conversation(self) -> None:
        """
        A private chat lists contacts, shows history, sends lines and shows
        the partner's messages in full while others become notifications.
        """
        self.state.deliver("private", "bob", "alice", ["alice"], "earlier")
        alice = self.person()
        alice.log_in("alice")
        alice.type("1")
        self.assertTrue(alice.sees("bob [offline]"))
        self.assertFalse(alice.sees("alice [o"))

        alice.type("bob", "hi bob")

        self.assertTrue(alice.sees("[15:46] bob: earlier"))
        self.assertTrue(alice.sees("[15:46] alice: hi bob"))
        self.assertEqual(self.state.messages[-1]["text"], "hi bob")

        bob = self.person()
        bob.log_in("bob")
        bob.type("1", "alice", "yo")
        bob.type("back", "back", "2", "to all")
        self.flush(alice)

        self.assertTrue(alice.sees("-- bob is now online"))
        self.assertTrue(alice.sees("[15:46] bob: yo"))
        self.assertTrue(alice.sees(">> [15:46] broadcast from bob: to all"))
        self.assertTrue(bob.sees("1 message arrived while you were away (1 private)."))
        self.assertTrue(bob.sees("[15:46] alice: hi bob"))

    def test_group_commands(self) -> None:
        """
        A group is created from the menu and managed with slash commands.
        """
        alice, bob = self.person(), self.person()
        alice.log_in("alice")
        bob.log_in("bob")
        alice.type("5", "devs", "Developers", "3")
        self.assertTrue(alice.sees("#devs - Developers (1 member, public, admin)"))

        alice.type("1", "/invite bob", "/members", "/private on", "hello devs")
        self.flush(bob)

        self.assertTrue(bob.sees("-- you were added to #devs by alice"))
        self.assertTrue(bob.sees(">> [15:46] message in #devs from alice: hello devs"))
        self.assertTrue(alice.sees("  bob (member)"))
        self.assertTrue(alice.sees("#devs is now private."))
        self.assertTrue(self.state.groups["devs"].private)

        bob.type("3", "devs", "/private off")
        self.assertTrue(bob.sees("!! only admins of #devs may do that"))

        bob.type("/leave")
        self.assertTrue(bob.sees("You left #devs."))
        self.assertTrue(bob.sees("You are not in any group yet."))
        self.assertNotIn("bob", self.state.groups["devs"].roles)

    def test_browse_and_join(self) -> None:
        """
        Browsing lists matching groups and picking one joins and opens it.
        """
        alice, bob = self.person(), self.person()
        alice.log_in("alice")
        alice.type("5", "devs", "Developers", "5", "cooks", "Kitchen")
        bob.log_in("bob")

        bob.type("4", "kitch")
        self.assertTrue(bob.sees("1. #cooks - Kitchen (1 member, public)"))
        self.assertFalse(bob.sees("#devs"))

        bob.type("1", "hi cooks")

        self.assertTrue(bob.sees("You joined #cooks."))
        self.assertEqual(self.state.groups["cooks"].roles["bob"], "member")
        self.assertEqual(self.state.messages[-1]["to"], "#cooks")

    def test_back_and_bye(self) -> None:
        """
        C{back} climbs one screen at a time and C{bye} ends the session.
        """
        alice = self.person()
        alice.log_in("alice")
        alice.type("1", "back", "2", "back")
        self.assertNoResult(alice.session)

        alice.type("bye")

        self.failureResultOf(alice.session, Quit)

    def test_server_text_neutralised(self) -> None:
        """
        Escape sequences in messages from others never reach the screen.
        """
        alice, bob = self.person(), self.person()
        alice.log_in("alice")
        alice.type("2")
        bob.log_in("bob")
        bob.type("2", "\x1b[2Jgotcha")
        self.flush(alice)

        self.assertTrue(alice.sees("gotcha"))
        self.assertNotIn("\x1b[2J", alice.screen.written)
