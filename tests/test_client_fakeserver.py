"""
Tests for the session part of L{tests.fakeserver}, the client tests' server.

If the fake drifts from the contract, the client's tests prove nothing, so
its tokens, resume, refs, maintenance and takeover are checked here over
L{StringTransport}s.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeserver import (
    MAINTENANCE_TEXT,
    TOKEN_IDLE_SECONDS,
    FakeChatFactory,
    FakeChatProtocol,
    FakeChatState,
)

JsonObject = dict[str, Any]


class Line:
    """
    One raw connection to the fake, already in JSON mode.
    """

    def __init__(self, factory: FakeChatFactory) -> None:
        self.transport = StringTransport()
        self.protocol: FakeChatProtocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(b"/mode json\n")
        self.transport.clear()

    def send(self, cmd: str, **fields: Any) -> list[JsonObject]:
        """
        Send a command and return everything the server wrote back.
        """
        command = {"cmd": cmd, "id": 1, **fields}
        self.protocol.dataReceived(json.dumps(command).encode("utf-8") + b"\n")
        return self.read()

    def read(self) -> list[JsonObject]:
        lines = self.transport.value().splitlines()
        self.transport.clear()
        return [json.loads(line) for line in lines]

    def hang_up(self) -> None:
        self.protocol.connectionLost(None)


class FakeSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = FakeChatState(self.clock)
        for name in ("alice", "bob"):
            self.state.add_user(name, "secret")
        self.replica = FakeChatFactory(self.state)

    def line(self) -> Line:
        return Line(self.replica)

    def log_in(self, name: str) -> tuple[Line, str]:
        line = self.line()
        [reply] = line.send("login", name=name, password="secret")
        return line, reply["token"]

    def test_login_carries_token(self) -> None:
        """
        The login reply carries a long opaque token.
        """
        _, token = self.log_in("alice")
        self.assertIsInstance(token, str)
        self.assertGreaterEqual(len(token), 40)

    def test_ping(self) -> None:
        """
        A ping is answered with a pong carrying the same id.
        """
        self.assertEqual(self.line().send("ping"), [{"type": "pong", "id": 1}])

    def test_resume_replays_and_rotates(self) -> None:
        """
        A resume replays the messages after last_id in order, hands out a
        new token and makes the old one useless.
        """
        alice, token = self.log_in("alice")
        bob, _ = self.log_in("bob")
        [sent] = bob.send("msg", target="alice", text="one")
        alice.read()
        alice.hang_up()
        bob.send("msg", target="*", text="two")
        bob.send("msg", target="alice", text="three")

        again = self.line()
        ok, *events = again.send("resume", token=token, last_id=sent["message"]["id"])

        self.assertEqual((ok["type"], ok["user"], ok["missed"]), ("ok", "alice", 2))
        self.assertFalse(ok["gap"])
        self.assertNotEqual(ok["token"], token)
        self.assertEqual([e["message"]["text"] for e in events], ["two", "three"])
        [refused] = self.line().send("resume", token=token, last_id=0)
        self.assertEqual(refused["code"], "bad_token")

    def test_resume_without_last_id(self) -> None:
        """
        Without last_id a resume replays only what was not delivered before.
        """
        alice, token = self.log_in("alice")
        bob, _ = self.log_in("bob")
        bob.send("msg", target="alice", text="seen")
        alice.hang_up()
        bob.send("msg", target="alice", text="missed")

        ok, *events = self.line().send("resume", token=token)

        self.assertEqual(ok["missed"], 1)
        self.assertEqual([e["message"]["text"] for e in events], ["missed"])

    def test_token_expires_when_idle(self) -> None:
        """
        A token unused for longer than the idle limit is refused.
        """
        alice, token = self.log_in("alice")
        alice.hang_up()
        self.clock.advance(TOKEN_IDLE_SECONDS + 1)

        [refused] = self.line().send("resume", token=token, last_id=0)

        self.assertEqual(refused["code"], "bad_token")

    def test_quit_revokes_token(self) -> None:
        """
        After quit the token no longer resumes anything.
        """
        alice, token = self.log_in("alice")
        alice.send("quit")

        [refused] = self.line().send("resume", token=token, last_id=0)

        self.assertEqual(refused["code"], "bad_token")

    def test_ref_dedup(self) -> None:
        """
        A msg sent again with the same ref is not stored twice and the reply
        carries the original message marked as a duplicate.
        """
        alice, _ = self.log_in("alice")
        [first] = alice.send("msg", target="*", text="once", ref="r-1")
        [second] = alice.send("msg", target="*", text="once", ref="r-1")

        self.assertEqual(second["message"], first["message"])
        self.assertTrue(second["duplicate"])
        self.assertNotIn("duplicate", first)
        self.assertEqual(len(self.state.messages), 1)

    def test_takeover(self) -> None:
        """
        A resume while the old connection is open tells the old one it was
        replaced and closes it; a fresh login is still refused meanwhile.
        """
        old, token = self.log_in("alice")
        [refused] = self.line().send("login", name="alice", password="secret")
        self.assertEqual(refused["code"], "already_online")

        [ok] = self.line().send("resume", token=token, last_id=0)

        self.assertEqual(ok["type"], "ok")
        [notice] = old.read()
        self.assertEqual(notice["code"], "replaced")
        self.assertTrue(old.transport.disconnecting)

    def test_gap(self) -> None:
        """
        When more messages were missed than the fake may replay, the newest
        ones come, the reply says there is a gap and a notice explains it.
        """
        self.state.replay_limit = 1
        alice, token = self.log_in("alice")
        bob, _ = self.log_in("bob")
        alice.hang_up()
        bob.send("msg", target="alice", text="old")
        bob.send("msg", target="alice", text="new")

        ok, notice, event = self.line().send("resume", token=token, last_id=0)

        self.assertEqual((ok["missed"], ok["gap"]), (1, True))
        self.assertEqual(notice["type"], "notice")
        self.assertEqual(event["message"]["text"], "new")

    def test_maintenance(self) -> None:
        """
        Maintenance warns every connection of the replica with retry_after
        and closes them a little later.
        """
        alice, _ = self.log_in("alice")
        self.replica.announce_maintenance(retry_after=3, close_after=2.0)

        [notice] = alice.read()
        self.assertEqual(
            notice,
            {
                "type": "notice",
                "code": "maintenance",
                "text": MAINTENANCE_TEXT,
                "retry_after": 3,
            },
        )
        self.assertFalse(alice.transport.disconnecting)
        self.clock.advance(2.0)
        self.assertTrue(alice.transport.disconnecting)

    def test_drop_all(self) -> None:
        """
        Dropping all connections aborts each of them.
        """
        lines = [self.line(), self.line()]
        self.state.drop_all()
        self.assertTrue(all(line.transport.disconnecting for line in lines))
