"""
The real client program in a pseudo-terminal against the real daemon.

The daemon is a C{twistd chat} child process (L{tests.process}); the client
runs as C{python -m client} with a pty for its terminal, driven the way
L{tests.test_client_pty} drives it against the fake server; bob is a raw
text-mode socket, as a telnet user would be.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.process import CHECKOUT, LineClient, connect, start_daemon
from tests.test_client_pty import ClientInPty

PASSWORD = "hunter2-but-longer"


class ClientAgainstDaemonTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:
        self.daemon = await start_daemon(self)

    def start_client(self) -> ClientInPty:
        client = ClientInPty()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in [str(CHECKOUT), os.environ.get("PYTHONPATH", "")] if p
            ),
            "TZ": "UTC",
            "TERM": "xterm",
        }
        process = reactor.spawnProcess(
            client,
            sys.executable,
            [sys.executable, "-m", "client", "127.0.0.1", str(self.daemon.port)],
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

    async def answer(self, client: ClientInPty, prompt: str, text: str) -> None:
        await client.expect(prompt)
        client.type(text + "\r")

    async def test_private_chat_session(self) -> None:
        """
        Sign up through the menu without the password ever showing, chat
        privately with bob, see his message appear above the partly typed
        line, then go back and say bye.
        """
        bob = await connect(self.daemon.port)
        bob.send(f"/signup bob {PASSWORD}")
        await bob.expect("Welcome, bob!")

        client = self.start_client()
        await self.answer(client, "Choose 1 or 2: ", "2")
        await self.answer(client, "Choose a username (or back): ", "alice")
        await self.answer(client, "Choose a password: ", PASSWORD)
        await self.answer(client, "Type the password again: ", PASSWORD)
        await client.expect("Welcome, alice!")

        await self.answer(client, "Choose 1-5: ", "1")
        await client.expect("Users:")
        await client.expect("1. bob [online]")
        await self.answer(client, "Talk to (number or name, or back): ", "bob")
        await client.expect("=== private chat with bob ===")
        await client.expect("No messages yet.")
        await self.answer(client, "[to bob] > ", "hi bob, it is alice")
        await client.expect("] alice: hi bob, it is alice")
        await bob.expect("] alice (private): hi bob, it is alice")

        await self.bob_interrupts(client, bob)

        client.type("\x15back\r")
        await self.answer(client, "Talk to (number or name, or back): ", "back")
        await self.answer(client, "Choose 1-5: ", "bye")
        await client.expect("Goodbye.")
        self.assertEqual(await client.ended, 0)
        self.assertNotIn(PASSWORD, client.output)

        bob.send("/who")
        self.assertEqual(await bob.expect("Online"), "Online (1): bob")
        bob.send("/history alice")
        await bob.expect("--- last 2 messages with alice ---")

    async def bob_interrupts(self, client: ClientInPty, bob: LineClient) -> None:
        client.type("half a thou")
        await client.expect("[to bob] > half a thou")
        bob.send("/msg alice are you typing?")
        await bob.expect("] bob -> alice: are you typing?")
        await client.expect("] bob: are you typing?")
        await client.expect("[to bob] > half a thou")
