"""
A client that stops reading, over real TCP: it is cut off, memory stays
bounded, and the people around it notice nothing.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from chat.daemon import ChatDaemon, Settings
from chat.guard import Limits
from chat.passwords import Passwords, cheap_hasher
from tests.test_daemon import LineClient

# Enough to overflow the kernel's socket buffers on loopback and then the
# server's own limit for the connection.
MESSAGES = 4000
BODY = "x" * 1900
BATCH = 40


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class SlowReaderTests(TestCase):
    async def test_slow_reader_is_cut_off_over_tcp(self) -> None:
        """
        While one client stops reading and another sends it a large volume,
        the server cuts the slow one off, its memory stays bounded, and a
        third client gets every message promptly.
        """
        directory = tempfile.mkdtemp(prefix="chat-slow-")
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            database="sqlite:" + os.path.join(directory, "chat.db"),
            server_id="slow",
            passwords=Passwords(reactor, cheap_hasher()),
            drain=0,
            limits=Limits(command_rate=0),
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        await daemon.ready
        port = daemon.ports[0].getHost().port
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)

        clients = {}
        for name in ("slow", "sender", "watcher"):
            client = await connectProtocol(endpoint, LineClient())
            client.send(f"/signup {name} password123")
            await client.wait_for(f"Welcome, {name}")
            clients[name] = client
        slow, sender, watcher = clients["slow"], clients["sender"], clients["watcher"]
        slow.transport.pauseProducing()
        before = rss_kib()

        slow.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        latencies = []
        for first in range(0, MESSAGES, BATCH):
            started = time.monotonic()
            for n in range(first, first + BATCH):
                sender.send(f"/msg * {n} {BODY}")
            await watcher.wait_for(f"sender to everyone: {first + BATCH - 1} ")
            latencies.append((time.monotonic() - started) / BATCH)
            watcher.lines.clear()
            await deferLater(reactor, 0, lambda: None)
        peak = rss_kib()
        held = {c.user for c in daemon.registry.connections if c.login}

        print(
            f"\nslow reader: {MESSAGES} broadcasts of {len(BODY)} bytes;"
            f" server RSS {before // 1024} MiB -> {peak // 1024} MiB;"
            f" watcher: per message p50 {statistics.median(latencies) * 1000:.2f} ms,"
            f" worst batch {max(latencies) * 1000:.2f} ms"
        )
        self.assertNotIn("slow", held)
        self.assertEqual(held, {"sender", "watcher"})
        self.assertLess(peak - before, 64 * 1024)
        self.assertEqual(await daemon.service.store.count_messages(), MESSAGES)
