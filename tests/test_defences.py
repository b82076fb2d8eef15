"""
Floods, connection limits, idle anonymous connections and slow readers.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chat.guard import OutputGuard
from chat.limits import COMMAND_BURST, CONNECTIONS_PER_ADDRESS, LOGIN_TIMEOUT
from chat.protocol import ChatProtocol
from tests.harness import Client, Harness
from tests.test_protocol import ProtocolTestCase


class RemoteClient(Client):
    """
    A harness connection that seems to come from another machine.
    """

    def __init__(self, harness: Harness, host: str) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol = harness.factory.buildProtocol(self.transport.getPeer())
        assert isinstance(protocol, ChatProtocol)
        self.protocol = protocol
        self.harness = harness
        protocol.makeConnection(self.transport)


class FloodTests(ProtocolTestCase):
    async def test_burst_then_refusal_then_recovery(self) -> None:
        """
        A connection may send a burst; past it each line is dropped, with one
        error for the whole flood; after a pause it may send again.
        """
        alice = await self.harness.user("alice")
        spent = 1  # the signup
        for _ in range(COMMAND_BURST - spent):
            self.assertEqual(await alice.send("/who"), ["Online (1): alice"])
        refused = await alice.send("/who")
        self.assertEqual(len(refused), 1)
        self.assertTrue(refused[0].startswith("error: slow down"), refused)
        self.assertEqual(await alice.send("/who"), [])
        self.harness.clock.advance(1)
        self.assertEqual(await alice.send("/who"), ["Online (1): alice"])
        self.assertFalse(alice.transport.disconnecting)

    async def test_endless_flood_is_cut_off(self) -> None:
        """
        A connection that keeps flooding after the error is disconnected,
        with a reason.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"/who\n" * 300)
        self.assertTrue(alice.transport.disconnecting)
        self.assertEqual(alice.lines()[-1], "error: flooding; disconnected")

    async def test_resume_is_not_limited(self) -> None:
        """
        A resume is answered even from a connection that used up its burst.
        """
        client = self.harness.connect()
        client.output()
        for _ in range(COMMAND_BURST):
            await client.send("/ping")
        lines = await client.send("/resume no-such-token")
        self.assertTrue(lines[0].startswith("error: that session has expired"))

    async def test_flooder_does_not_disturb_others(self) -> None:
        """
        While one person floods, another's messages go through.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        await alice.send_bytes(b"/msg * spam\n" * 100)
        sent = await bob.send("/msg alice hello")
        self.assertEqual(sent[-1], "[15:00] bob -> alice: hello")
        self.assertEqual(await self.harness.store.count_messages(), COMMAND_BURST)


class ConnectionLimitTests(ProtocolTestCase):
    async def test_per_address_limit(self) -> None:
        """
        One remote address may hold only so many connections; the next is
        told why and closed, and closing one frees a place.
        """
        clients = [
            RemoteClient(self.harness, "192.0.2.7")
            for _ in range(CONNECTIONS_PER_ADDRESS)
        ]
        extra = RemoteClient(self.harness, "192.0.2.7")
        self.assertEqual(
            extra.lines(),
            ["error: too many connections from your address; close one first"],
        )
        self.assertTrue(extra.transport.disconnecting)
        other = RemoteClient(self.harness, "192.0.2.8")
        self.assertFalse(other.transport.disconnecting)
        await clients[0].disconnect()
        again = RemoteClient(self.harness, "192.0.2.7")
        self.assertFalse(again.transport.disconnecting)

    async def test_loopback_is_not_counted(self) -> None:
        """
        Local peers (tests, benchmarks, sidecars) are not limited by address.
        """
        clients = [self.harness.connect() for _ in range(CONNECTIONS_PER_ADDRESS + 5)]
        self.assertFalse(any(c.transport.disconnecting for c in clients))


class LoginTimeoutTests(ProtocolTestCase):
    async def test_anonymous_connection_times_out(self) -> None:
        """
        A connection that does not log in is closed after the timeout, with
        a reason; one that logged in stays.
        """
        idle = self.harness.connect()
        alice = await self.harness.user("alice")
        idle.output()
        self.harness.clock.advance(LOGIN_TIMEOUT + 1)
        self.assertEqual(idle.lines(), ["error: no login within the time allowed; bye"])
        self.assertTrue(idle.transport.disconnecting)
        self.assertFalse(alice.transport.disconnecting)


class SlowReaderTests(ProtocolTestCase):
    async def test_slow_reader_is_cut_off_and_loses_nothing(self) -> None:
        """
        A connection whose transport stopped draining is cut off once too much
        waits for it; the others go on, and the messages stay in history.
        """
        slow = await self.harness.user("slow")
        bob = await self.harness.user("bob")
        fast = await self.harness.user("fast")
        slow.protocol._output.pauseProducing()
        text = "x" * 1000
        sent = 0
        while not slow.transport.disconnecting and sent < 3000:
            self.harness.clock.advance(1)
            await bob.send(f"/msg * {text}")
            sent += 1
        self.assertTrue(slow.transport.disconnecting)
        self.assertLess(sent, 1200)
        fast.output()
        self.harness.clock.advance(1)
        await bob.send("/msg * after")
        after = fast.lines()
        self.assertEqual(len(after), 1)
        self.assertTrue(after[0].endswith("bob to everyone: after"))
        self.assertEqual(await self.harness.store.count_messages(), sent + 1)


class OutputGuardTests(SynchronousTestCase):
    def test_counts_only_while_blocked(self) -> None:
        """
        Bytes written while the peer reads are free; while it does not, they
        add up to the limit, and draining resets the count.
        """
        overflowed: list[bool] = []
        guard = OutputGuard(100, lambda: overflowed.append(True))
        guard.wrote(1000)
        guard.pauseProducing()
        guard.wrote(60)
        guard.resumeProducing()
        guard.pauseProducing()
        guard.wrote(60)
        self.assertEqual(overflowed, [])
        guard.wrote(60)
        self.assertEqual(overflowed, [True])
