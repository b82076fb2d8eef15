"""
The wire side of the client: JSON lines, request ids and replies.

The protocol switches the server into JSON mode, numbers every command it
sends and fires the matching L{Deferred} when the reply with that id comes
back.  Everything else the server pushes is handed to a listener as an event.
Nothing here knows about screens; reconnecting and resuming a session is the
job of L{client.session}, one layer up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionAborted
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

JsonObject = dict[str, Any]

MAX_SERVER_LINE_BYTES = 4 * 1024 * 1024
LOGGED_LINE_CHARS = 200


class ServerError(Exception):
    """
    The server refused a command.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class ConnectionClosed(Exception):
    """
    The connection ended before the reply arrived, or was already closed.
    """


class CertificateRejected(Exception):
    """
    The server's TLS certificate failed verification, so the server may not
    be who it claims to be; trying again would not change that.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(f"the server's certificate could not be verified: {detail}")
        self.detail = detail


class ConnectionListener(Protocol):
    """
    Whoever shows the user what the server pushes.
    """

    def event_received(self, event: JsonObject) -> None:
        """
        The server pushed C{event}, an object that is not a reply.
        """

    def connection_lost(self, reason: Failure) -> None:
        """
        The connection to the server ended.
        """


class Requester(Protocol):
    """
    Whatever sends commands and hands back their replies.
    """

    def request(self, cmd: str, **fields: Any) -> Deferred[JsonObject]:
        """
        Send C{cmd} with C{fields}; fire with the reply or fail with the error.
        """

    def close(self) -> None:
        """
        Drop the connection without saying goodbye.
        """


class JsonLineProtocol(LineReceiver):
    """
    One connection to the chat server in JSON mode.

    @ivar ready: fires once the server has confirmed JSON mode.
    @ivar on_line: called for every line received, whatever it holds, so a
        watcher can tell a live connection from a silent one.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_SERVER_LINE_BYTES
    log = Logger()

    def __init__(self, listener: ConnectionListener) -> None:
        self._listener = listener
        self._pending: dict[int, Deferred[JsonObject]] = {}
        self._next_id = 1
        self._json_mode = False
        self._closed = False
        self.ready: Deferred[None] = Deferred()
        self.on_line: Callable[[], None] = lambda: None

    def connectionMade(self) -> None:
        self.sendLine(b"/mode json")

    def request(self, cmd: str, **fields: Any) -> Deferred[JsonObject]:
        """
        Send a command and return a Deferred for its reply.

        It fails with L{ServerError} on an error reply and with
        L{ConnectionClosed} if the connection ends first.  Cancelling it
        forgets the request; a late reply is then ignored.
        """
        if self._closed or not self._json_mode:
            return fail(ConnectionClosed("not connected in JSON mode"))

        request_id = self._next_id
        self._next_id += 1

        def forget(d: Deferred[JsonObject]) -> None:
            self._pending.pop(request_id, None)

        reply: Deferred[JsonObject] = Deferred(canceller=forget)
        self._pending[request_id] = reply
        command = {**fields, "cmd": cmd, "id": request_id}
        self.sendLine(json.dumps(command, ensure_ascii=False).encode("utf-8"))
        return reply

    def close(self) -> None:
        """
        Drop the connection without saying goodbye.
        """
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """
        Give up on a connection that went silent: drop it at once and fail
        the waiting requests now rather than when the transport notices.
        """
        if self.transport is not None:
            self.transport.abortConnection()
        self.connectionLost(Failure(ConnectionAborted("the server went silent")))

    def lineReceived(self, line: bytes) -> None:
        self.on_line()
        text = line.rstrip(b"\r").decode("utf-8", errors="replace")
        obj = self._parse(text)
        if not self._json_mode:
            self._await_mode(obj)
        elif obj is None:
            self.log.warn(
                "ignored a malformed server line of {length} characters: {start!r}",
                length=len(text),
                start=text[:LOGGED_LINE_CHARS],
            )
        else:
            self._dispatch(obj)

    def lineLengthExceeded(self, line: bytes) -> None:
        # The rest of the oversized line arrives later and is skipped as
        # malformed, so the connection survives.
        self.log.warn("ignored a server line over {limit} bytes", limit=self.MAX_LENGTH)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._closed:
            # An aborted connection is reported once, when it was aborted.
            return
        self._closed = True
        pending, self._pending = self._pending, {}
        for reply in pending.values():
            reply.errback(ConnectionClosed("the connection to the server was lost"))
        if not self.ready.called:
            self.ready.errback(ConnectionClosed("the server never entered JSON mode"))
        self._listener.connection_lost(reason)

    @staticmethod
    def _parse(text: str) -> JsonObject | None:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(obj, dict) and isinstance(obj.get("type"), str):
            return obj
        return None

    def _await_mode(self, obj: JsonObject | None) -> None:
        # The banner and anything else before the mode reply is plain text.
        if obj is not None and obj["type"] == "mode" and obj.get("mode") == "json":
            self._json_mode = True
            self.ready.callback(None)

    def _dispatch(self, obj: JsonObject) -> None:
        request_id = obj.get("id")
        if request_id is not None:
            reply = self._pending.pop(request_id, None) if _is_id(request_id) else None
            if reply is None:
                self.log.debug("dropped an unexpected reply {id!r}", id=request_id)
                return
        elif obj["type"] == "error" and self._pending:
            # An error without an id answers a line the server could not read;
            # commands are answered in order, so it belongs to the oldest one.
            reply = self._pending.pop(next(iter(self._pending)))
        else:
            self._listener.event_received(obj)
            return

        if obj["type"] == "error":
            code, message = obj.get("code"), obj.get("message")
            reply.errback(
                ServerError(
                    code if isinstance(code, str) else "unknown",
                    message if isinstance(message, str) else "the server refused",
                )
            )
        else:
            reply.callback(obj)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
