"""
Tests for L{client.session}: reconnecting, resuming and resending.

Time is a L{Clock}, each connection a L{StringTransport} that the test plays
the server on, and connecting goes through L{FakeConnector}, which lets the
test accept or refuse every attempt and see which address it went to.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from client.connection import (
    ConnectionClosed,
    JsonLineProtocol,
    JsonObject,
    ServerError,
)
from client.model import Away
from client.session import Address, Session

ADDRESSES = [Address("one.example", 4000), Address("two.example", 4001)]
TOKEN = "t" * 43


class Attempt:
    """
    One connection attempt; the test plays the server behind it.
    """

    def __init__(self, address: Address, protocol: JsonLineProtocol) -> None:
        self.address = address
        self.protocol = protocol
        self.connected: Deferred[Any] = Deferred()
        self.transport = StringTransport()

    def accept(self) -> Attempt:
        self.protocol.makeConnection(self.transport)
        self.connected.callback(self.protocol)
        self.transport.clear()
        self.push({"type": "mode", "mode": "json"})
        return self

    def refuse(self) -> None:
        self.connected.errback(ConnectionRefusedError())

    def push(self, *objects: JsonObject) -> None:
        for obj in objects:
            self.protocol.dataReceived(json.dumps(obj).encode("utf-8") + b"\n")

    def commands(self) -> list[JsonObject]:
        """
        The commands received since the last call.
        """
        lines = self.transport.value().splitlines()
        self.transport.clear()
        return [json.loads(line) for line in lines]

    def answer(self, command: JsonObject, reply: JsonObject) -> None:
        self.push({**reply, "id": command["id"]})

    def hang_up(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeConnector:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def __call__(self, address: Address, protocol: JsonLineProtocol) -> Deferred[Any]:
        attempt = Attempt(address, protocol)
        self.attempts.append(attempt)
        return attempt.connected


class RecordingSessionListener:
    def __init__(self) -> None:
        self.events: list[JsonObject] = []
        self.waits: list[float] = []
        self.resumed: list[int] = []
        self.logins_again: list[Away] = []
        self.password_asked: list[tuple[str, Deferred[str]]] = []

    def event_received(self, event: JsonObject) -> None:
        self.events.append(event)

    def connection_interrupted(self, delay: float) -> None:
        self.waits.append(delay)

    def reconnected(self, missed: int) -> None:
        self.resumed.append(missed)

    def logged_in_again(self, away: Away) -> None:
        self.logins_again.append(away)

    def ask_password(self, user: str) -> Deferred[str]:
        answer: Deferred[str] = Deferred()
        self.password_asked.append((user, answer))
        return answer


def message(message_id: int, text: str = "hi") -> JsonObject:
    return {
        "id": message_id,
        "kind": "broadcast",
        "from": "bob",
        "to": "*",
        "text": text,
        "ts": "2026-12-04T15:46:37.123Z",
    }


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.listener = RecordingSessionListener()
        self.session = Session(
            self.clock,
            self.connector,
            ADDRESSES,
            self.listener,
            random=lambda: 0.0,
            ping_interval=30.0,
            silence_limit=60.0,
        )

    @property
    def latest(self) -> Attempt:
        return self.connector.attempts[-1]

    def connect(self) -> Attempt:
        started = Deferred.fromCoroutine(self.session.start())
        server = self.latest.accept()
        self.successResultOf(started)
        return server

    def logged_in(self, token: str = TOKEN) -> Attempt:
        """
        A connected session logged in as alice.
        """
        server = self.connect()
        login = self.session.request("login", name="alice", password="secret")
        [command] = server.commands()
        reply = {"type": "ok", "cmd": "login", "user": "alice", "token": token}
        server.answer(command, reply)
        self.successResultOf(login)
        return server

    def reconnect(self, wait: float = 2.0) -> Attempt:
        """
        Let the next attempt start after C{wait} and accept it.
        """
        before = len(self.connector.attempts)
        self.clock.advance(wait)
        self.assertEqual(len(self.connector.attempts), before + 1)
        return self.latest.accept()

    def resume(self, server: Attempt, command: JsonObject | None = None) -> None:
        """
        Answer the resume (read now unless already read) with a new token.
        """
        if command is None:
            [command] = server.commands()
        self.assertEqual(command["cmd"], "resume")
        reply = {"type": "ok", "cmd": "resume", "user": "alice", "token": "new"}
        server.answer(command, {**reply, "missed": 0, "gap": False})

    def test_start_tries_each_address(self) -> None:
        """
        The first connection goes to the first address that answers.
        """
        started = Deferred.fromCoroutine(self.session.start())
        self.latest.refuse()
        self.latest.accept()

        self.successResultOf(started)
        self.assertEqual([a.address for a in self.connector.attempts], ADDRESSES)
        self.assertTrue(self.session.connected)

    def test_start_fails_when_none_answers(self) -> None:
        """
        If no address answers the first time, starting fails with the error.
        """
        started = Deferred.fromCoroutine(self.session.start())
        self.latest.refuse()
        self.latest.refuse()
        self.failureResultOf(started, ConnectionRefusedError)

    def test_backoff_timing(self) -> None:
        """
        After a loss the attempts come about 2 s, then 4, 8, 16 and 30 s
        apart, never earlier, and stay at 30 s.
        """
        self.logged_in().hang_up()

        for wait in (2.0, 4.0, 8.0, 16.0, 30.0, 30.0):
            count = len(self.connector.attempts)
            self.clock.advance(wait - 0.01)
            self.assertEqual(len(self.connector.attempts), count)
            self.clock.advance(0.01)
            self.assertEqual(len(self.connector.attempts), count + 1)
            self.latest.refuse()
        self.assertEqual(self.listener.waits, [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])

    def test_backoff_jitter(self) -> None:
        """
        The random draw takes up to a fifth off each wait.
        """
        session = Session(
            self.clock, self.connector, ADDRESSES, self.listener, random=lambda: 0.5
        )
        Deferred.fromCoroutine(session.start())
        self.latest.accept().hang_up()
        self.assertEqual(self.listener.waits, [1.8])

    def test_addresses_rotate(self) -> None:
        """
        The first attempt after a loss goes to the same address; each failed
        attempt moves on to the next, wrapping around.
        """
        self.logged_in().hang_up()
        for wait in (2.0, 4.0, 8.0):
            self.clock.advance(wait)
            self.latest.refuse()

        tried = [attempt.address for attempt in self.connector.attempts]
        self.assertEqual(
            tried, [ADDRESSES[0], ADDRESSES[0], ADDRESSES[1], ADDRESSES[0]]
        )

    def test_resume_with_token_and_last_id(self) -> None:
        """
        The new connection resumes with the token and the highest message id
        seen in message events, then keeps the new token and hands the missed
        messages on.  Ids in history and sent replies do not count: a lower
        id may still be on its way to this connection.
        """
        server = self.logged_in()
        server.push({"type": "message", "message": message(7)})
        history = self.session.request("history", target="*")
        sent = self.session.request("msg", target="*", text="hi", ref="r1")
        asked_history, asked_msg = server.commands()
        reply = {"type": "history", "target": "*", "messages": [message(3), message(9)]}
        server.answer(asked_history, reply)
        server.answer(asked_msg, {"type": "sent", "message": message(12, "hi")})
        self.successResultOf(history)
        self.successResultOf(sent)
        server.hang_up()

        server = self.reconnect()
        [command] = server.commands()
        self.assertEqual(command["cmd"], "resume")
        self.assertEqual((command["token"], command["last_id"]), (TOKEN, 7))
        ok = {"type": "ok", "cmd": "resume", "user": "alice", "token": "new"}
        server.answer(command, {**ok, "missed": 2, "gap": False})
        server.push(
            {"type": "message", "message": message(10, "a")},
            {"type": "message", "message": message(11, "b")},
        )

        self.assertEqual(self.session.token, "new")
        self.assertEqual(self.session.last_id, 11)
        self.assertEqual(self.listener.resumed, [2])
        self.assertEqual(
            [e["message"]["text"] for e in self.listener.events[-2:]], ["a", "b"]
        )
        self.assertTrue(self.session.connected)

    def test_resend_unacknowledged(self) -> None:
        """
        A msg sent but not acknowledged is sent again after the resume with
        the same ref, before lines typed while offline, and answers once.
        """
        server = self.logged_in()
        acked = self.session.request("msg", target="*", text="one", ref="r1")
        lost = self.session.request("msg", target="*", text="two", ref="r2")
        first, second = server.commands()
        server.answer(first, {"type": "sent", "message": message(1, "one")})
        self.successResultOf(acked)
        server.hang_up()
        typed = self.session.request("msg", target="*", text="three", ref="r3")
        self.assertNoResult(lost)

        server = self.reconnect()
        [resume] = server.commands()
        self.assertNoResult(typed)
        self.resume(server, resume)
        resent, queued = server.commands()

        self.assertEqual(
            {k: v for k, v in resent.items() if k != "id"},
            {k: v for k, v in second.items() if k != "id"},
        )
        self.assertEqual((queued["text"], queued["ref"]), ("three", "r3"))
        reply = {"type": "sent", "message": message(2, "two"), "duplicate": True}
        server.answer(resent, reply)
        self.assertEqual(self.successResultOf(lost)["message"]["id"], 2)
        self.assertNoResult(typed)

    def test_resume_without_messages_seen(self) -> None:
        """
        With no message seen yet, the resume leaves last_id out rather than
        asking for the whole history with 0.
        """
        self.logged_in().hang_up()
        server = self.reconnect()

        [command] = server.commands()

        self.assertEqual((command["cmd"], command["token"]), ("resume", TOKEN))
        self.assertNotIn("last_id", command)

    def test_unsafe_command_fails(self) -> None:
        """
        A command that changes something and lost its answer is not sent
        again: it fails with connection_lost, and the session goes on.
        """
        server = self.logged_in()
        created = self.session.request("group_create", name="devs")
        server.hang_up()

        failure = self.failureResultOf(created, ServerError)
        self.assertEqual(failure.value.code, "connection_lost")
        self.assertEqual(self.listener.waits, [2.0])

    def test_heartbeat_timeout(self) -> None:
        """
        A connection silent for 60 s is given up and a reconnection starts;
        pings went out meanwhile.
        """
        server = self.logged_in()
        self.clock.advance(59.0)
        self.assertEqual([c["cmd"] for c in server.commands()], ["ping"])
        self.assertEqual(self.listener.waits, [])

        self.clock.advance(1.0)

        self.assertTrue(server.transport.disconnecting)
        self.assertEqual(self.listener.waits, [2.0])
        self.assertFalse(self.session.connected)
        self.reconnect()

    def test_pongs_keep_session(self) -> None:
        """
        A connection that answers its pings is never given up.
        """
        server = self.logged_in()
        for _ in range(10):
            self.clock.advance(30.0)
            [ping] = server.commands()
            server.answer(ping, {"type": "pong"})
        self.assertEqual(self.listener.waits, [])
        self.assertEqual(len(self.connector.attempts), 1)

    def test_requests_wait_for_resume(self) -> None:
        """
        A command asked for while offline goes out only after the resume.
        """
        self.logged_in().hang_up()
        users = self.session.request("users")
        server = self.reconnect()

        [resume] = server.commands()
        self.resume(server, resume)
        [command] = server.commands()
        self.assertEqual(command["cmd"], "users")
        server.answer(command, {"type": "users", "users": []})
        self.successResultOf(users)

    def test_bad_token_asks_password_once(self) -> None:
        """
        A refused token makes the session ask for the password once, log in
        with it, keep the new token and go on with the waiting commands.
        """
        self.logged_in().hang_up()
        users = self.session.request("users")
        server = self.reconnect()
        [resume] = server.commands()
        server.answer(resume, {"type": "error", "code": "bad_token", "message": "x"})

        [(user, answer)] = self.listener.password_asked
        self.assertEqual(user, "alice")
        answer.callback("secret")
        [login] = server.commands()
        self.assertEqual(
            (login["cmd"], login["name"], login["password"]),
            ("login", "alice", "secret"),
        )
        away = {"private": 1, "group": 0, "broadcast": 0}
        reply = {"type": "ok", "cmd": "login", "user": "alice", "away": away}
        server.answer(login, {**reply, "token": "fresh"})

        self.assertEqual(self.listener.logins_again, [Away(1, 0, 0)])
        self.assertEqual(self.session.token, "fresh")
        [command] = server.commands()
        self.assertEqual(command["cmd"], "users")
        self.assertNoResult(users)
        self.assertEqual(len(self.listener.password_asked), 1)

    def test_password_kept_across_another_loss(self) -> None:
        """
        If the connection drops while the password is being asked, the next
        connection logs in with it without asking again.
        """
        self.logged_in().hang_up()
        server = self.reconnect()
        [resume] = server.commands()
        server.answer(resume, {"type": "error", "code": "bad_token", "message": "x"})
        server.hang_up()
        [(_, answer)] = self.listener.password_asked
        answer.callback("secret")

        server = self.reconnect(wait=4.0)
        [login] = server.commands()

        self.assertEqual((login["cmd"], login["password"]), ("login", "secret"))
        self.assertEqual(len(self.listener.password_asked), 1)

    def test_wrong_password_ends_session(self) -> None:
        """
        If logging in again is refused, the session ends and says why.
        """
        self.logged_in().hang_up()
        users = self.session.request("users")
        server = self.reconnect()
        [resume] = server.commands()
        server.answer(resume, {"type": "error", "code": "bad_token", "message": "x"})
        self.listener.password_asked[0][1].callback("wrong")
        [login] = server.commands()
        error = {"type": "error", "code": "bad_credentials", "message": "wrong"}
        server.answer(login, error)

        reason = self.successResultOf(self.session.ended)
        self.assertIn("wrong", reason or "")
        self.failureResultOf(users, ConnectionClosed)
        self.clock.advance(120.0)
        self.assertEqual(len(self.connector.attempts), 2)

    def test_quit_does_not_reconnect(self) -> None:
        """
        After quit the closed connection is not reopened.
        """
        server = self.logged_in()
        quitting = self.session.request("quit")
        [command] = server.commands()
        server.answer(command, {"type": "bye"})
        server.hang_up()

        self.successResultOf(quitting)
        self.assertIsNone(self.successResultOf(self.session.ended))
        self.clock.advance(120.0)
        self.assertEqual((len(self.connector.attempts), self.listener.waits), (1, []))
        self.failureResultOf(self.session.request("users"), ConnectionClosed)

    def test_quit_while_offline(self) -> None:
        """
        Quitting while waiting to reconnect stops the attempts at once.
        """
        self.logged_in().hang_up()
        waiting = self.session.request("users")

        self.failureResultOf(self.session.request("quit"), ConnectionClosed)

        self.failureResultOf(waiting, ConnectionClosed)
        self.clock.advance(120.0)
        self.assertEqual(len(self.connector.attempts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_maintenance(self) -> None:
        """
        After a maintenance notice the next attempt waits retry_after and
        goes to the next address.
        """
        server = self.logged_in()
        notice = {"type": "notice", "code": "maintenance", "text": "bye"}
        server.push({**notice, "retry_after": 0.5})
        server.hang_up()

        self.assertEqual(self.listener.waits, [0.5])
        self.clock.advance(0.5)
        self.assertEqual(self.latest.address, ADDRESSES[1])
        self.assertEqual(self.listener.events[-1]["code"], "maintenance")

    def test_replaced_ends_session(self) -> None:
        """
        A session taken over by another connection does not fight back.
        """
        server = self.logged_in()
        server.push({"type": "notice", "code": "replaced", "text": "elsewhere"})
        server.hang_up()

        self.assertIn("taken over", self.successResultOf(self.session.ended) or "")
        self.clock.advance(120.0)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_close_while_offline(self) -> None:
        """
        Closing stops reconnecting and fails what waits.
        """
        self.logged_in().hang_up()
        waiting = self.session.request("users")

        self.session.close()

        self.failureResultOf(waiting, ConnectionClosed)
        self.clock.advance(120.0)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_cancel_waiting_request(self) -> None:
        """
        A cancelled command that waited for a connection is never sent.
        """
        self.logged_in().hang_up()
        users = self.session.request("users")
        users.cancel()
        self.failureResultOf(users)

        server = self.reconnect()
        self.resume(server)

        self.assertEqual(server.commands(), [])

    def test_never_logged_in(self) -> None:
        """
        A connection lost before login comes back without a resume.
        """
        self.connect().hang_up()
        users = self.session.request("users")
        server = self.reconnect()

        [command] = server.commands()
        self.assertEqual(command["cmd"], "users")
        self.assertNoResult(users)
