"""
Tests for the client over TLS: the command line, what a failed handshake
means, the session's answer to a rejected certificate, and the real daemon on
an ssl: endpoint reached through L{client.tls}.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr
from datetime import UTC
from typing import Any

from OpenSSL.SSL import Error as OpenSSLError
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.daemon import ChatDaemon, Settings
from chat.passwords import Passwords, cheap_hasher
from client.api import ChatApi
from client.connection import CertificateRejected, JsonObject
from client.main import connector_for, parse_args, session
from client.session import Address, Session
from client.terminal import LineEditor
from client.tls import explain_handshake_failure
from client.ui import ConsoleUi
from tests.test_client_session import (
    ADDRESSES,
    TOKEN,
    FakeConnector,
    RecordingSessionListener,
)
from tests.test_client_terminal import Screen
from tests.test_tls import self_signed

PASSWORD = "correct-horse-battery"
REJECTED = "the server's certificate could not be verified: "


def certificate_in(test: SynchronousTestCase) -> tuple[str, str]:
    """
    A fresh self-signed certificate for localhost and its key, in a
    directory of C{test}'s own.
    """
    directory = test.mktemp()
    os.makedirs(directory)
    return self_signed(directory)


class CommandLineTests(SynchronousTestCase):
    def parse_error(self, argv: list[str]) -> str:
        """
        What the parser says when it refuses C{argv}.
        """
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            self.assertRaises(SystemExit, parse_args, argv)
        return stderr.getvalue()

    def test_plain_by_default(self) -> None:
        """
        Without C{--tls} the client connects over plain TCP, as before.
        """
        options = parse_args(["chat.example", "4000", "b.example:4001"])
        self.assertFalse(options.tls)
        self.assertIsNone(options.trust_root)
        self.assertEqual(
            options.addresses,
            [Address("chat.example", 4000), Address("b.example", 4001)],
        )

    def test_tls_with_system_trust(self) -> None:
        """
        C{--tls} alone asks for TLS and leaves the trust root to the system.
        """
        options = parse_args(["--tls", "chat.example", "4000", "b.example:4001"])
        self.assertTrue(options.tls)
        self.assertIsNone(options.trust_root)
        self.assertEqual(len(options.addresses), 2)

    def test_tls_with_cafile(self) -> None:
        """
        C{--cafile} reads the PEM file into the trust root at start-up.
        """
        cert_path, _ = certificate_in(self)
        options = parse_args(["--tls", "--cafile", cert_path, "localhost", "4000"])
        self.assertTrue(options.tls)
        self.assertTrue(IOpenSSLTrustRoot.providedBy(options.trust_root))

    def test_cafile_needs_tls(self) -> None:
        """
        C{--cafile} without C{--tls} is refused rather than silently ignored.
        """
        cert_path, _ = certificate_in(self)
        error = self.parse_error(["--cafile", cert_path, "localhost", "4000"])
        self.assertIn("--cafile only makes sense with --tls", error)

    def test_cafile_unusable(self) -> None:
        """
        A C{--cafile} that is missing or holds no certificate is refused with
        its name.
        """
        missing = self.mktemp()
        error = self.parse_error(["--tls", "--cafile", missing, "h", "4000"])
        self.assertIn(f"cannot use {missing!r}", error)

        cert_path, key_path = certificate_in(self)
        error = self.parse_error(["--tls", "--cafile", key_path, "h", "4000"])
        self.assertIn("holds no PEM certificate", error)


class HandshakeFailureTests(SynchronousTestCase):
    def test_wrong_name(self) -> None:
        """
        A certificate for another name is a rejection naming the host dialled.
        """
        error = explain_handshake_failure(
            Failure(VerificationError(errors=[])), "chat.example"
        )
        self.assertIsInstance(error, CertificateRejected)
        self.assertEqual(
            str(error), REJECTED + "it is not valid for the name chat.example"
        )

    def test_untrusted_chain(self) -> None:
        """
        OpenSSL's failed chain check is a rejection.
        """
        failed = OpenSSLError([("SSL routines", "", "certificate verify failed")])
        error = explain_handshake_failure(Failure(failed), "chat.example")
        self.assertIsInstance(error, CertificateRejected)
        self.assertTrue(str(error).startswith(REJECTED))

    def test_other_tls_error(self) -> None:
        """
        A handshake that fails for another reason, such as a server that does
        not speak TLS, is an ordinary connection failure.
        """
        garbled = OpenSSLError([("SSL routines", "", "wrong version number")])
        error = explain_handshake_failure(Failure(garbled), "chat.example")
        self.assertNotIsInstance(error, CertificateRejected)
        self.assertIn("wrong version number", str(error))

    def test_network_error_passes_through(self) -> None:
        """
        A connection lost before any TLS happened keeps its own error.
        """
        refused = ConnectionRefusedError()
        self.assertIs(explain_handshake_failure(Failure(refused), "h"), refused)


class SessionRejectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.session = Session(
            self.clock,
            self.connector,
            ADDRESSES,
            RecordingSessionListener(),
            random=lambda: 0.0,
        )

    def test_start_stops_at_rejection(self) -> None:
        """
        A rejected certificate ends the first connection at once, without
        trying the next address.
        """
        started = Deferred.fromCoroutine(self.session.start())
        self.connector.attempts[-1].connected.errback(CertificateRejected("no"))

        self.failureResultOf(started, CertificateRejected)
        self.assertEqual(len(self.connector.attempts), 1)

    def test_reconnect_stops_at_rejection(self) -> None:
        """
        A certificate rejected on reconnecting ends the session with the
        reason; no further attempt follows.
        """
        started = Deferred.fromCoroutine(self.session.start())
        server = self.connector.attempts[-1].accept()
        self.successResultOf(started)
        login = self.session.request("login", name="alice", password="secret")
        [command] = server.commands()
        server.answer(command, {"type": "ok", "user": "alice", "token": TOKEN})
        self.successResultOf(login)

        server.hang_up()
        self.clock.advance(2.0)
        self.connector.attempts[-1].connected.errback(CertificateRejected("forged"))

        reason = self.successResultOf(self.session.ended)
        self.assertEqual(
            reason, f"Cannot reconnect to one.example:4000: {REJECTED}forged"
        )
        attempts = len(self.connector.attempts)
        self.clock.advance(600.0)
        self.assertEqual(len(self.connector.attempts), attempts)


class EventWaiter(RecordingSessionListener):
    """
    A session listener that lets a test wait for a pushed event.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[str, Deferred[JsonObject]]] = []

    def event_received(self, event: JsonObject) -> None:
        super().event_received(event)
        for kind, waiter in list(self._waiting):
            if event.get("type") == kind:
                self._waiting.remove((kind, waiter))
                waiter.callback(event)

    def next_event(self, kind: str) -> Deferred[JsonObject]:
        waiter: Deferred[JsonObject] = Deferred()
        self._waiting.append((kind, waiter))
        return waiter.addTimeout(10.0, reactor)


class DaemonOverTLSTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.cert_path, key_path = certificate_in(self)
        directory = os.path.dirname(self.cert_path)
        listen = (
            f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={self.cert_path}"
        )
        settings = Settings(
            listen=[listen],
            database="sqlite:" + os.path.join(directory, "chat.db"),
            server_id="tls-client",
            passwords=Passwords(reactor, cheap_hasher()),
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        await daemon.ready
        self.port = daemon.ports[0].getHost().port

    def options(self, cafile: str, host: str = "localhost") -> Any:
        return parse_args(["--tls", "--cafile", cafile, host, str(self.port)])

    async def signed_up(self, name: str, listener: EventWaiter) -> ChatApi:
        """
        A session of C{name}, connected through the TLS connector of the
        command line with C{--cafile} naming the daemon's own certificate.
        """
        options = self.options(self.cert_path)
        chat = Session(
            reactor, connector_for(reactor, options), options.addresses, listener
        )
        await chat.start()
        self.addCleanup(chat.close)
        api = ChatApi(chat)
        await api.signup(name, PASSWORD)
        return api

    async def test_chat_over_verified_tls(self) -> None:
        """
        Trusting the daemon's certificate, two sessions sign up over TLS and
        a private message goes from one to the other.
        """
        alice = await self.signed_up("alice", EventWaiter())
        bob_listener = EventWaiter()
        await self.signed_up("bob", bob_listener)

        arrived = bob_listener.next_event("message")
        sent = await alice.send("bob", "hello over tls")
        event = await arrived

        self.assertEqual(sent.text, "hello over tls")
        self.assertEqual(event["message"]["from"], "alice")
        self.assertEqual(event["message"]["text"], "hello over tls")

    async def test_other_certificate_refused(self) -> None:
        """
        A client that trusts a different certificate refuses the daemon,
        says why, and exits with status 1.
        """
        other_cert, _ = certificate_in(self)
        options = self.options(other_cert)
        screen = Screen(columns=400)
        ui = ConsoleUi(LineEditor(screen.write, columns=400), tz=UTC)

        status = await session(
            reactor, options.addresses, ui, connector_for(reactor, options)
        )

        self.assertEqual(status, 1)
        expected = f"Cannot connect to localhost:{self.port}: {REJECTED}it is not"
        self.assertTrue(
            any(line.startswith(expected) for line in screen.lines), screen.lines
        )

    async def test_wrong_name_refused(self) -> None:
        """
        The right certificate reached under a name it does not carry is
        rejected too.
        """
        options = self.options(self.cert_path, host="127.0.0.1")
        chat = Session(
            reactor, connector_for(reactor, options), options.addresses, EventWaiter()
        )
        with self.assertRaises(CertificateRejected) as caught:
            await chat.start()
        self.assertEqual(
            str(caught.exception), REJECTED + "it is not valid for the name 127.0.0.1"
        )
