"""
Tests for L{client.heartbeat}: pings, and giving up on a silent connection.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from client.connection import ConnectionClosed, JsonLineProtocol
from client.heartbeat import PING_INTERVAL_SECONDS, SILENCE_LIMIT_SECONDS, Heartbeat
from tests.test_client_connection import RecordingListener


class HeartbeatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.listener = RecordingListener()
        self.protocol = JsonLineProtocol(self.listener)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(b'{"type": "mode", "mode": "json"}\n')
        self.transport.clear()
        self.heartbeat = Heartbeat(
            self.clock,
            self.protocol,
            self.protocol.abort,
            ping_interval=30.0,
            silence_limit=60.0,
        )
        self.heartbeat.start()

    def sent(self) -> list[str]:
        lines = self.transport.value().splitlines()
        self.transport.clear()
        return [json.loads(line)["cmd"] for line in lines]

    def test_defaults(self) -> None:
        """
        By default a ping goes every 30 s and 60 s of silence is fatal.
        """
        self.assertEqual((PING_INTERVAL_SECONDS, SILENCE_LIMIT_SECONDS), (30.0, 60.0))

    def test_pings_every_interval(self) -> None:
        """
        A ping goes out every interval, not before.
        """
        self.clock.advance(29.9)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.sent(), ["ping"])
        self.protocol.dataReceived(b'{"type": "pong", "id": 1}\n')
        self.clock.advance(30.0)
        self.assertEqual(self.sent(), ["ping"])

    def test_answered_pings_keep_connection(self) -> None:
        """
        A connection that answers its pings is kept for as long as it does.
        """
        for request_id in range(1, 11):
            self.clock.advance(30.0)
            reply = {"type": "pong", "id": request_id}
            self.protocol.dataReceived(json.dumps(reply).encode() + b"\n")
        self.assertEqual(self.listener.lost, [])
        self.assertFalse(self.transport.disconnecting)

    def test_silence_is_fatal(self) -> None:
        """
        After 60 s without any line the connection is aborted, the listener
        hears of it and waiting requests fail, without waiting for TCP.
        """
        waiting = self.protocol.request("users")
        self.clock.advance(59.9)
        self.assertEqual(self.listener.lost, [])

        self.clock.advance(0.1)

        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.listener.lost), 1)
        self.failureResultOf(waiting, ConnectionClosed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_any_line_counts(self) -> None:
        """
        Any line, not only a pong, restarts the silence.
        """
        self.clock.advance(50.0)
        self.protocol.dataReceived(b"not even json\n")
        self.clock.advance(50.0)
        self.assertEqual(self.listener.lost, [])
        self.clock.advance(10.0)
        self.assertEqual(len(self.listener.lost), 1)

    def test_refused_ping_is_life(self) -> None:
        """
        A server that answers a ping with an error is alive and no error is
        left unhandled.
        """
        self.clock.advance(30.0)
        error = {"type": "error", "code": "not_logged_in", "message": "no", "id": 1}
        self.protocol.dataReceived(json.dumps(error).encode() + b"\n")
        self.clock.advance(59.0)
        self.assertEqual(self.listener.lost, [])

    def test_stop(self) -> None:
        """
        A stopped heartbeat neither pings nor gives up.
        """
        self.heartbeat.stop()
        self.clock.advance(120.0)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.listener.lost, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
