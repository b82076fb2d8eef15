"""
Tests for L{client.main}: the command line and how a session ends.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stderr
from datetime import UTC

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from client.main import parse_address, parse_args, session
from client.session import Address
from client.terminal import LineEditor
from client.ui import ConsoleUi
from tests.fakeserver import FakeChatState
from tests.test_client_reconnect import MemoryNetwork
from tests.test_client_screens import START
from tests.test_client_terminal import Screen


class CommandLineTests(SynchronousTestCase):
    def test_host_and_port(self) -> None:
        """
        C{chat-client HOST PORT} still works and gives one address.
        """
        options = parse_args(["chat.example", "4000"])
        self.assertEqual(options.addresses, [Address("chat.example", 4000)])

    def test_more_addresses(self) -> None:
        """
        Further servers come as HOST:PORT, IPv6 hosts in brackets, in order.
        """
        options = parse_args(["a.example", "4000", "b.example:4001", "[::1]:4002"])
        self.assertEqual(
            options.addresses,
            [
                Address("a.example", 4000),
                Address("b.example", 4001),
                Address("::1", 4002),
            ],
        )
        self.assertEqual(str(options.addresses[2]), "[::1]:4002")

    def test_bad_address(self) -> None:
        """
        A further address without a usable port is refused.
        """
        for text in ("b.example", "b.example:", ":4000", "b.example:http", "h:0"):
            self.assertRaises(argparse.ArgumentTypeError, parse_address, text)
        with redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, parse_args, ["a", "1", "b.example"])


class SessionEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.state = FakeChatState(self.clock)
        self.state.add_user("alice", "secret")
        self.network = MemoryNetwork(self.state)
        self.screen = Screen(columns=200)
        self.ui = ConsoleUi(LineEditor(self.screen.write, columns=200), tz=UTC)
        self.status = Deferred.fromCoroutine(
            session(self.clock, [Address("chat.test", 4000)], self.ui, self.network)
        )
        self.network.flush()
        self.type("1", "alice", "secret", "2")

    def type(self, *lines: str) -> None:
        for line in lines:
            self.ui.editor.feed(line.encode("utf-8") + b"\r")
            self.network.flush()

    def sees(self, text: str) -> bool:
        return any(text in line for line in self.screen.lines)

    def test_bye_while_offline(self) -> None:
        """
        C{bye} while waiting to reconnect ends the program normally and no
        attempt follows.
        """
        self.state.drop_all()
        self.network.flush()
        attempts = len(self.network.servers)

        self.type("bye")
        self.clock.advance(120.0)

        self.assertEqual(self.successResultOf(self.status), 0)
        self.assertTrue(self.sees("Goodbye."))
        self.assertEqual(len(self.network.servers), attempts)

    def test_taken_over(self) -> None:
        """
        When the session is resumed elsewhere, the program says so and stops
        instead of taking it back.
        """
        [token] = self.state.tokens
        elsewhere = self.network.replica.buildProtocol(None)
        elsewhere.makeConnection(StringTransport())
        elsewhere.dataReceived(b"/mode json\n")
        command = {"cmd": "resume", "token": token, "last_id": 0}
        elsewhere.dataReceived(json.dumps(command).encode("utf-8") + b"\n")
        self.network.flush()

        self.assertEqual(self.successResultOf(self.status), 1)
        self.assertTrue(self.sees("taken over by another connection"))
        self.clock.advance(120.0)
        self.assertEqual(len(self.network.servers), 1)
