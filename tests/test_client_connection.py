"""
Tests for L{client.connection}: JSON lines, request ids and events.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from client.connection import (
    ConnectionClosed,
    JsonLineProtocol,
    JsonObject,
    ServerError,
)


class RecordingListener:
    """
    Keeps what the protocol hands to its listener.
    """

    def __init__(self) -> None:
        self.events: list[JsonObject] = []
        self.lost: list[Failure] = []

    def event_received(self, event: JsonObject) -> None:
        self.events.append(event)

    def connection_lost(self, reason: Failure) -> None:
        self.lost.append(reason)


class JsonLineProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.listener = RecordingListener()
        self.protocol = JsonLineProtocol(self.listener)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def receive(self, *lines: Any) -> None:
        for line in lines:
            if not isinstance(line, bytes):
                line = json.dumps(line).encode("utf-8")
            self.protocol.dataReceived(line + b"\n")

    def enter_json_mode(self) -> None:
        self.transport.clear()
        self.receive(b"Welcome", {"type": "mode", "mode": "json"})

    def sent(self) -> list[JsonObject]:
        lines = self.transport.value().splitlines()
        self.transport.clear()
        return [json.loads(line) for line in lines]

    def test_asks_for_json_mode(self) -> None:
        """
        The first line the client sends switches the server to JSON mode.
        """
        self.assertEqual(self.transport.value(), b"/mode json\n")

    def test_banner_skipped_until_mode_reply(self) -> None:
        """
        Plain-text and even JSON lines before the mode reply are not events.
        """
        self.receive(b"Welcome to chat", b"", {"type": "notice", "text": "early"})
        self.assertNoResult(self.protocol.ready)

        self.receive({"type": "mode", "mode": "json"})

        self.successResultOf(self.protocol.ready)
        self.assertEqual(self.listener.events, [])

    def test_request_before_json_mode_fails(self) -> None:
        """
        A command cannot be sent before the server is in JSON mode.
        """
        self.failureResultOf(self.protocol.request("who"), ConnectionClosed)

    def test_request_line(self) -> None:
        """
        A request is one JSON line with the command, its fields and a fresh id.
        """
        self.enter_json_mode()

        self.protocol.request("msg", target="bob", text="héllo")
        self.protocol.request("who")

        first, second = self.sent()
        self.assertEqual(first["cmd"], "msg")
        self.assertEqual((first["target"], first["text"]), ("bob", "héllo"))
        self.assertEqual(second["cmd"], "who")
        self.assertNotEqual(first["id"], second["id"])

    def test_replies_matched_by_id(self) -> None:
        """
        Each reply fires the Deferred of the request with the same id.
        """
        self.enter_json_mode()
        who = self.protocol.request("who")
        users = self.protocol.request("users")
        who_id, users_id = (line["id"] for line in self.sent())

        self.receive({"type": "users", "users": [], "id": users_id})
        self.assertNoResult(who)
        self.receive({"type": "who", "users": ["bob"], "id": who_id})

        self.assertEqual(self.successResultOf(who)["users"], ["bob"])
        self.assertEqual(self.successResultOf(users)["type"], "users")
        self.assertEqual(self.listener.events, [])

    def test_error_reply(self) -> None:
        """
        An error reply fails the request with its code and message.
        """
        self.enter_json_mode()
        login = self.protocol.request("login", name="a", password="b")
        [line] = self.sent()

        error = {"type": "error", "code": "bad_credentials", "message": "no"}
        self.receive({**error, "id": line["id"]})

        failure = self.failureResultOf(login, ServerError)
        self.assertEqual(
            (failure.value.code, failure.value.message), ("bad_credentials", "no")
        )

    def test_error_without_id_fails_oldest_request(self) -> None:
        """
        An error that carries no id answers the oldest request still waiting.
        """
        self.enter_json_mode()
        first = self.protocol.request("who")
        second = self.protocol.request("users")

        self.receive({"type": "error", "code": "line_too_long", "message": "long"})

        self.failureResultOf(first, ServerError)
        self.assertNoResult(second)

    def test_events_dispatched(self) -> None:
        """
        Objects without an id go to the listener and answer no request.
        """
        self.enter_json_mode()
        pending = self.protocol.request("who")
        presence = {"type": "presence", "user": "bob", "online": True}
        notice = {"type": "notice", "text": "maintenance"}

        self.receive(presence, notice)

        self.assertEqual(self.listener.events, [presence, notice])
        self.assertNoResult(pending)

    def test_malformed_lines_tolerated(self) -> None:
        """
        Lines that are not JSON objects with a type are skipped, not fatal.
        """
        self.enter_json_mode()
        notice = {"type": "notice", "text": "still here"}

        self.receive(
            b"not json",
            b"[1, 2]",
            b'{"no": "type"}',
            b'{"type": 5}',
            b"\xff\xfe{",
            b"[" * 100_000,
            b'{"type": "sent", "id": [1]}',
            notice,
        )

        self.assertEqual(self.listener.events, [notice])
        self.assertFalse(self.transport.disconnecting)

    def test_overlong_line_skipped(self) -> None:
        """
        A line over the size limit is dropped and later lines still arrive.
        """
        self.enter_json_mode()
        self.protocol.MAX_LENGTH = 100
        notice = {"type": "notice", "text": "after"}

        self.receive({"type": "notice", "text": "x" * 500}, notice)

        self.assertEqual(self.listener.events, [notice])
        self.assertFalse(self.transport.disconnecting)

    def test_crlf_lines(self) -> None:
        """
        Lines ending in CRLF are read like lines ending in LF.
        """
        self.protocol.dataReceived(b'Hi\r\n{"type": "mode", "mode": "json"}\r\n')
        self.successResultOf(self.protocol.ready)

    def test_cancelled_request_reply_ignored(self) -> None:
        """
        A reply to a cancelled request is dropped, not taken for an event.
        """
        self.enter_json_mode()
        request = self.protocol.request("who")
        [line] = self.sent()
        request.cancel()
        self.failureResultOf(request)

        self.receive({"type": "who", "users": [], "id": line["id"]})

        self.assertEqual(self.listener.events, [])

    def test_connection_lost(self) -> None:
        """
        Losing the connection fails waiting requests and tells the listener.
        """
        self.enter_json_mode()
        pending = self.protocol.request("who")

        self.protocol.connectionLost(Failure(ConnectionLost()))

        self.failureResultOf(pending, ConnectionClosed)
        self.assertEqual(len(self.listener.lost), 1)
        self.failureResultOf(self.protocol.request("who"), ConnectionClosed)

    def test_lost_before_json_mode(self) -> None:
        """
        If the server never confirms JSON mode, C{ready} fails when it hangs up.
        """
        ready: Deferred[None] = self.protocol.ready

        self.protocol.connectionLost(Failure(ConnectionLost()))

        self.failureResultOf(ready, ConnectionClosed)

    def test_abort(self) -> None:
        """
        Aborting drops the transport and fails waiting requests at once; the
        transport's own report of the loss later is not passed on again.
        """
        self.enter_json_mode()
        pending = self.protocol.request("who")

        self.protocol.abort()

        self.assertTrue(self.transport.disconnecting)
        self.failureResultOf(pending, ConnectionClosed)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(self.listener.lost), 1)

    def test_every_line_reported(self) -> None:
        """
        Every line received, even one that is skipped, is reported as life.
        """
        heard: list[None] = []
        self.protocol.on_line = lambda: heard.append(None)

        self.receive(b"banner", {"type": "mode", "mode": "json"}, b"junk")

        self.assertEqual(len(heard), 3)
