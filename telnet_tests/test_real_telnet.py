"""
Debian's real C{telnet} program, in a pseudo-terminal, against the real daemon.

These tests need the C{telnet} of the C{inetutils-telnet} package.  They live
outside the C{tests} package so that the default run does not need it; where
it is missing they fail and say what to install.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.process import start_daemon
from tests.servers import LOCALHOST
from tests.test_client_pty import ClientInPty

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
MISSING = (
    "the telnet program is not installed: install Debian's inetutils-telnet"
    " (apt-get install inetutils-telnet) to run these tests"
)


class RealTelnetTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:
        telnet = shutil.which("telnet")
        if telnet is None:
            self.fail(MISSING)
        self.telnet = telnet
        self.daemon = await start_daemon(self)

    def start_telnet(self) -> ClientInPty:
        session = ClientInPty()
        env = {**os.environ, "TERM": "xterm", "TZ": "UTC"}
        process = reactor.spawnProcess(
            session,
            self.telnet,
            [self.telnet, LOCALHOST, str(self.daemon.port)],
            env=env,
            usePTY=True,
        )

        async def stop() -> None:
            if not session.ended.called:
                process.signalProcess("KILL")
                await session.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return session

    async def sign_up(self, name: str) -> ClientInPty:
        """
        A telnet session that has signed up C{name} with the prompted /signup.
        """
        session = self.start_telnet()
        await session.expect("Connected to")
        await session.expect("/help lists every command.")
        session.type("/signup\r")
        for prompt, answer in [
            ("Name: ", name),
            ("Password: ", PASSWORDS[name]),
            ("Password again: ", PASSWORDS[name]),
        ]:
            await session.expect(prompt)
            session.type(answer + "\r")
        await session.expect(f"Welcome, {name}! Your account is ready.")
        return session

    async def test_prompted_signup_hides_the_password(self) -> None:
        """
        telnet echoes the typed name but not the password or its confirmation:
        the server asks it to stop echoing while they are typed.
        """
        alice = await self.sign_up("alice")
        self.assertIn("Name: alice", alice.output)
        self.assertNotIn(PASSWORDS["alice"], alice.output)
        alice.type("/who\r")
        await alice.expect("Online (1): alice")
        self.assertIn("/who", alice.output)

    async def test_two_people_chat(self) -> None:
        """
        Two telnet users sign up, exchange private messages with /msg, and one
        talks in an open conversation with /open.
        """
        alice = await self.sign_up("alice")
        bob = await self.sign_up("bob")

        alice.type("/msg bob hi bob, telnet here\r")
        await alice.expect("] alice -> bob: hi bob, telnet here")
        await bob.expect("] alice (private): hi bob, telnet here")

        bob.type("/open alice\r")
        await bob.expect("--- last 1 message with alice ---")
        await bob.expect("] alice: hi bob, telnet here")
        await bob.expect("--- now talking to alice")
        bob.type("hello alice, no slash needed\r")
        await bob.expect("] bob: hello alice, no slash needed")
        await alice.expect("] bob (private): hello alice, no slash needed")

        bob.type("/back\r")
        await bob.expect("ok: left the conversation with alice")
        bob.type("/quit\r")
        await bob.expect("Bye, bob.")
        await bob.expect("Connection closed by foreign host.")
        await bob.ended
        for name, session in (("alice", alice), ("bob", bob)):
            for password in PASSWORDS.values():
                self.assertNotIn(password, session.output, name)
