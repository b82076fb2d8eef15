"""
Property-based tests of the line protocol and of whole sessions.

Each example builds a fresh service over an in-memory SQLite that answers
synchronously, so that hypothesis can run thousands of sessions quickly and
deterministically.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chat import telnet
from chat.factory import ChatFactory, ConnectionRegistry
from chat.presence import LocalPresence
from chat.protocol import ChatProtocol
from chat.schema import migrate
from chat.service import ChatService
from chat.storage import Store
from tests.fakes import SyncPasswords, SyncSQLiteDatabase
from tests.harness import START

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=200)
settings.register_profile("dev", deadline=None, max_examples=1000)
settings.load_profile("ci")


def now(coroutine: Any) -> Any:
    """
    The result of a coroutine that must complete synchronously.
    """
    d = Deferred.fromCoroutine(coroutine)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the coroutine waited on something"
    return results[0]


class World:
    """
    A whole chat service whose every call completes synchronously.
    """

    def __init__(self) -> None:
        self.db = SyncSQLiteDatabase()
        now(migrate(self.db, "2026-12-04T15:00:00+00:00"))
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = ConnectionRegistry()
        self.presence = LocalPresence()
        self.store = Store(self.db)
        self.service = ChatService(
            self.store,
            self.presence,
            self.registry,
            SyncPasswords(),  # type: ignore[arg-type]
            self.clock,
            "prop",
        )
        self.factory = ChatFactory(self.service, self.registry)

    def connect(self) -> tuple[ChatProtocol, StringTransport]:
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return protocol, transport


def mask_tokens(data: bytes) -> bytes:
    """
    Replace session tokens, which are random, by a fixed mark.
    """
    return re.sub(rb"[A-Za-z0-9_-]{43}", b"TOKEN", data)


def strip_telnet(data: bytes) -> bytes:
    return data.replace(telnet.WILL_ECHO, b"").replace(telnet.WONT_ECHO, b"")


INTERESTING = [
    b"/signup alice password123\r\n",
    b"/login alice password123\n",
    b"/signup\r\n",
    b"/login\n",
    b"bob\r\n",
    b"/msg * hello\n",
    b"/msg alice hi\r\n",
    b"/open *\n",
    b"plain text\n",
    b"/back\n",
    b"/group create devs d\n",
    b"/group invite devs alice\n",
    b"/msg #devs x\n",
    b"/mode json\n",
    b"/mode text\n",
    b'{"cmd":"msg","target":"*","text":"j","id":1}\n',
    b'{"cmd":"who"}\n',
    b"{broken\n",
    b"\xff\xfb\x01",
    b"\xff\xfa\x18\x00",
    b"\xff\xf0",
    b"\xff\xff",
    b"\r",
    b"\r\x00",
    b"\x1b[31m",
    b"\xe9\n",
    b"\xc3",
    b"\xa9\n",
    b"x" * 5000,
    b"/history * 3\n",
    b"/who\n",
    b"/help group\n",
]

chunks = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from(INTERESTING)), max_size=30
)


class ParserProperties(SynchronousTestCase):
    @given(chunks)
    def test_any_bytes_leave_the_server_sane(self, pieces: list[bytes]) -> None:
        """
        Whatever bytes arrive, in whatever pieces, the server never fails
        internally, writes only UTF-8 lines (besides echo negotiation), and
        keeps the connection open.
        """
        world = World()
        protocol, transport = world.connect()
        for piece in pieces:
            protocol.dataReceived(piece)
        output = strip_telnet(transport.value())
        output.decode("utf-8")
        self.assertNotIn(b"something went wrong", output)
        self.assertNotIn(b"Traceback", output)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])

    @given(
        st.lists(st.sampled_from(INTERESTING[:17]), min_size=1, max_size=12),
        st.data(),
    )
    def test_splitting_does_not_change_meaning(
        self, lines: list[bytes], data: st.DataObject
    ) -> None:
        """
        A stream cut into packets at arbitrary points gets the same replies
        as the stream sent whole.
        """
        stream = b"".join(lines)
        cuts = sorted(
            data.draw(
                st.lists(st.integers(0, len(stream)), max_size=len(stream) // 2 + 1)
            )
        )
        whole_world = World()
        protocol, transport = whole_world.connect()
        protocol.dataReceived(stream)
        split_world = World()
        split_protocol, split_transport = split_world.connect()
        start = 0
        for cut in [*cuts, len(stream)]:
            split_protocol.dataReceived(stream[start:cut])
            start = cut
        self.assertEqual(
            mask_tokens(split_transport.value()), mask_tokens(transport.value())
        )


users = st.sampled_from(["ann", "ben", "cat"])
actions = st.lists(
    st.one_of(
        st.tuples(st.just("msg"), users, st.sampled_from(["ann", "ben", "cat", "*"])),
        st.tuples(st.just("group"), users, st.sampled_from(["g1", "g2"])),
        st.tuples(st.just("invite"), users, st.sampled_from(["ann", "ben", "cat"])),
        st.tuples(st.just("join"), users, st.sampled_from(["g1", "g2"])),
        st.tuples(st.just("leave"), users, st.sampled_from(["g1", "g2"])),
        st.tuples(st.just("post"), users, st.sampled_from(["g1", "g2"])),
        st.tuples(st.just("drop"), users, st.just("")),
    ),
    max_size=40,
)


class SessionProperties(SynchronousTestCase):
    @given(actions)
    def test_sessions_keep_their_invariants(self, steps: list[Any]) -> None:
        """
        Under random commands from several people, every acknowledged message
        is in history exactly once, each recipient is shown it at most once,
        and presence matches the connections.
        """
        world = World()
        connections: dict[str, tuple[ChatProtocol, StringTransport]] = {}
        acknowledged: list[dict[str, Any]] = []

        def send(user: str, command: dict[str, Any]) -> list[dict[str, Any]]:
            if user not in connections:
                protocol, transport = world.connect()
                protocol.dataReceived(b"/mode json\n")
                verb = "login" if now(world.store.find_user(user)) else "signup"
                line = json.dumps({"cmd": verb, "name": user, "password": "pw-12345"})
                protocol.dataReceived(line.encode() + b"\n")
                connections[user] = (protocol, transport)
            protocol, transport = connections[user]
            transport.clear()
            protocol.dataReceived(json.dumps(command).encode() + b"\n")
            return [json.loads(x) for x in transport.value().splitlines()]

        received: dict[str, list[int]] = {}
        for kind, user, arg in steps:
            if kind == "drop":
                if user in connections:
                    protocol, transport = connections.pop(user)
                    received.setdefault(user, []).extend(
                        self._events(transport.value())
                    )
                    protocol.connectionLost()
                continue
            command = {
                "msg": {"cmd": "msg", "target": arg, "text": "m"},
                "group": {"cmd": "group_create", "name": arg},
                "invite": {"cmd": "group_invite", "group": "g1", "user": arg},
                "join": {"cmd": "group_join", "group": arg},
                "leave": {"cmd": "group_leave", "group": arg},
                "post": {"cmd": "msg", "target": "#" + arg, "text": "p"},
            }[kind]
            for reply in send(user, command):
                self.assertNotEqual(reply.get("code"), "internal")
                if reply["type"] == "sent":
                    acknowledged.append(reply["message"])
            for other, (_, transport) in connections.items():
                received.setdefault(other, []).extend(self._events(transport.value()))
                transport.clear()

        rows = now(
            world.db.transaction(lambda txn: txn.execute("SELECT id FROM messages"))
        )
        stored_ids = [row[0] for row in rows]
        self.assertEqual(sorted(stored_ids), sorted(m["id"] for m in acknowledged))
        self.assertEqual(len(stored_ids), len(set(stored_ids)))
        for ids in received.values():
            self.assertEqual(len(ids), len(set(ids)))
        online = {p.name for p in now(world.presence.online())}
        self.assertEqual(online, set(connections))

    def _events(self, data: bytes) -> list[int]:
        ids = []
        for line in data.splitlines():
            obj = json.loads(line)
            if obj.get("type") == "message":
                ids.append(obj["message"]["id"])
        return ids
