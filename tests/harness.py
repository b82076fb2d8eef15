"""
A whole chat service in memory, driven through L{StringTransport}s.

The store is real (SQLite in a temporary file, on its worker thread), the
clock is a L{task.Clock} and password hashing is cheap, so tests are quick
and their timestamps are fixed.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chat.db import SQLiteDatabase
from chat.factory import ChatFactory, ConnectionRegistry
from chat.passwords import Passwords, cheap_hasher
from chat.presence import LocalPresence
from chat.protocol import ChatProtocol
from chat.schema import migrate
from chat.service import ChatService
from chat.storage import Store

# 2026-12-04T15:00:00Z
START = 1_796_396_400.0


async def fired(d: Deferred[Any]) -> None:
    """
    Wait for C{d} without taking its result from whoever else waits on it.
    """
    waiter: Deferred[None] = Deferred()

    def passthrough(result: Any) -> Any:
        waiter.callback(None)
        return result

    d.addBoth(passthrough)
    await waiter


class Client:
    """
    One connection to the harness's service.
    """

    def __init__(self, harness: Harness) -> None:
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)
        )
        protocol = harness.factory.buildProtocol(self.transport.getPeer())
        assert isinstance(protocol, ChatProtocol)
        self.protocol = protocol
        self.harness = harness
        protocol.makeConnection(self.transport)

    def output(self) -> bytes:
        """
        Everything written since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        return [line for line in self.output().decode("utf-8").split("\r\n") if line]

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    async def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        await self.settle()

    async def send(self, line: str) -> list[str]:
        """
        Send one line, wait for its reply, and return what was written.
        """
        await self.send_bytes(line.encode("utf-8") + b"\r\n")
        return self.lines()

    async def send_json(self, **command: Any) -> list[dict[str, Any]]:
        await self.send_bytes(json.dumps(command).encode() + b"\n")
        return self.json()

    async def settle(self) -> None:
        while self.protocol.busy is not None:
            await fired(self.protocol.busy)
        await self.harness.settle()

    async def disconnect(self) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost()
        await self.settle()


class Harness:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="chat-test-")
        self.clock = Clock()
        self.clock.advance(START)
        self.db = SQLiteDatabase(reactor, os.path.join(self.directory, "chat.db"))
        self.passwords = Passwords(reactor, cheap_hasher())
        self.registry = ConnectionRegistry()
        self.store = Store(self.db)
        self.service = ChatService(
            self.store,
            LocalPresence(),
            self.registry,
            self.passwords,
            self.clock,
            "test-server",
        )
        self.factory = ChatFactory(self.service, self.registry)

    async def start(self) -> None:
        await self.db.start()
        await migrate(self.db, "2026-12-04T15:00:00+00:00")
        self.passwords.start()

    async def stop(self) -> None:
        await self.settle()
        self.passwords.stop()
        await self.db.stop()

    async def settle(self) -> None:
        await DeferredList(self.registry.pending())

    def connect(self) -> Client:
        return Client(self)

    async def user(self, name: str, password: str = "password123") -> Client:
        """
        A new connection with a freshly signed-up, logged-in user.
        """
        client = self.connect()
        client.output()
        lines = await client.send(f"/signup {name} {password}")
        assert lines and lines[0].startswith("Welcome"), lines
        return client
