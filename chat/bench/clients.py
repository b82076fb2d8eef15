"""
One benchmark connection: the chat's JSON mode over TCP, built for volume.

A L{JsonClient} switches the connection to JSON mode, then does account
commands as requests that return a Deferred, and sends messages without one:
the acknowledgement of a message and every message event go straight to a
L{Listener}, which keeps the books.  Presence events, which a thousand
connections produce by the hundred thousand, are recognised by their first
bytes and dropped unparsed.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chat.bench.addresses import Address

CONNECT_TIMEOUT_SECONDS = 10.0
_PRESENCE = b'{"type":"presence"'
_MODE = b'{"type":"mode"'


class ReplyError(Exception):
    """
    The server answered a request with an error.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Listener(Protocol):
    """
    What a L{JsonClient} reports as traffic arrives.
    """

    def delivered(
        self, client: JsonClient, message: dict[str, Any], arrival: float
    ) -> None:
        """
        A message event arrived at C{arrival} (the reactor's clock).
        """

    def acked(self, client: JsonClient, tag: int, message: dict[str, Any]) -> None:
        """
        The message sent with C{tag} is stored.
        """

    def refused(self, client: JsonClient, tag: int, code: str) -> None:
        """
        The message sent with C{tag} was refused with an error C{code}.
        """

    def closed(self, client: JsonClient) -> None:
        """
        The connection is gone.
        """


class Quiet:
    """
    A L{Listener} that ignores everything.
    """

    def delivered(
        self, client: JsonClient, message: dict[str, Any], arrival: float
    ) -> None:
        pass

    def acked(self, client: JsonClient, tag: int, message: dict[str, Any]) -> None:
        pass

    def refused(self, client: JsonClient, tag: int, code: str) -> None:
        pass

    def closed(self, client: JsonClient) -> None:
        pass


class JsonClient(LineReceiver):
    """
    A connection in JSON mode.

    @ivar index: this connection's slot in the run.
    @ivar last_id: the highest message id shown to this connection.
    @ivar notices: the notice events received, newest last.
    """

    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self, clock: IReactorTime, listener: Listener, index: int) -> None:
        self.clock = clock
        self.listener = listener
        self.index = index
        self.name = ""
        self.password = ""
        self.token = ""
        self.last_id = 0
        self.notices: list[dict[str, Any]] = []
        self.presence_events = 0
        self.unreadable = 0
        self.connected_at = clock.seconds()
        self.ready: Deferred[JsonClient] = Deferred()
        self.gone: Deferred[None] = Deferred()
        self._json = False
        self._ids = itertools.count(1)
        self._pending: dict[str, Deferred[dict[str, Any]]] = {}

    # Bytes in

    def connectionMade(self) -> None:
        self.sendLine(b"/mode json")

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(_PRESENCE):
            self.presence_events += 1
            return
        if not self._json:
            if line.startswith(_MODE):
                self._json = True
                self.ready.callback(self)
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self.unreadable += 1
            return
        kind = obj.get("type")
        if kind == "message":
            message = obj["message"]
            if message["id"] > self.last_id:
                self.last_id = message["id"]
            self.listener.delivered(self, message, self.clock.seconds())
        elif "id" in obj:
            self._reply(obj)
        elif kind == "notice":
            self.notices.append(obj)

    def _reply(self, obj: dict[str, Any]) -> None:
        id = obj["id"]
        if isinstance(id, int):
            if obj["type"] == "sent":
                self.listener.acked(self, id, obj["message"])
            else:
                self.listener.refused(self, id, str(obj.get("code")))
            return
        waiting = self._pending.pop(str(id), None)
        if waiting is None:
            self.unreadable += 1
        elif obj["type"] == "error":
            waiting.errback(ReplyError(obj.get("code", ""), obj.get("message", "")))
        else:
            waiting.callback(obj)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(ConnectionLost("the connection closed before a reply"))
        if not self.ready.called:
            self.ready.errback(ConnectionLost("closed before JSON mode"))
        self.listener.closed(self)
        self.gone.callback(None)

    # Bytes out

    def request(self, cmd: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """
        Send a command and return its reply; an error reply fails it with
        L{ReplyError}.
        """
        id = f"r{next(self._ids)}"
        reply: Deferred[dict[str, Any]] = Deferred()
        self._pending[id] = reply
        self.sendLine(json.dumps({"cmd": cmd, "id": id, **fields}).encode())
        return reply

    def send_msg(self, tag: int, target: str, text: str, ref: str = "") -> None:
        """
        Send a message; its acknowledgement goes to the listener under C{tag}.
        """
        command: dict[str, Any] = {"cmd": "msg", "id": tag, "target": target}
        command["text"] = text
        if ref:
            command["ref"] = ref
        self.sendLine(json.dumps(command).encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def kill(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    # Accounts

    async def signup(self, name: str, password: str) -> None:
        reply = await self.request("signup", name=name, password=password)
        self._logged_in(name, password, reply)

    async def login(self, name: str, password: str) -> None:
        reply = await self.request("login", name=name, password=password)
        self._logged_in(name, password, reply)

    async def resume(self, token: str, last_id: int) -> dict[str, Any]:
        """
        Resume a session; the reply says how many messages were missed.
        """
        reply = await self.request("resume", token=token, last_id=last_id)
        self.token = str(reply.get("token", ""))
        return reply

    def _logged_in(self, name: str, password: str, reply: dict[str, Any]) -> None:
        self.name = str(reply.get("user", name))
        self.password = password
        self.token = str(reply.get("token", ""))

    async def quit(self) -> None:
        """
        Log out with C{quit} and wait until the server closes.
        """
        if self.gone.called:
            return
        self.sendLine(b'{"cmd":"quit"}')
        await self.gone


async def connect(
    reactor: Any, address: Address, listener: Listener, index: int
) -> JsonClient:
    """
    A new connection to C{address}, switched to JSON mode.
    """
    endpoint = HostnameEndpoint(
        reactor, address.host, address.port, timeout=CONNECT_TIMEOUT_SECONDS
    )
    client = JsonClient(reactor, listener, index)
    await connectProtocol(endpoint, client)
    try:
        await client.ready.addTimeout(CONNECT_TIMEOUT_SECONDS, reactor)
    except BaseException:
        client.kill()
        raise
    return client
