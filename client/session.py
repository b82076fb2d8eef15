"""
A chat session that outlives its connections.

L{Session} sends commands for the screens the way a single connection would,
but when the connection ends (end of file, an error, or a silence noticed by
the L{Heartbeat}) it connects again, to the same address or the next one,
waiting longer after each failure.  On the new connection it resumes the
session with its token, or logs in again with a password the listener asks
for if the server no longer knows the token.  Commands typed meanwhile wait
in order; those that were sent but not answered are sent again when that is
safe, which for C{msg} is what its C{ref} is for.  Only C{quit}, L{close}, a
failed second login, a takeover by another connection or a server certificate
that fails verification end the session.
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from client.background import spawn
from client.backoff import Backoff
from client.connection import (
    CertificateRejected,
    ConnectionClosed,
    JsonLineProtocol,
    JsonObject,
    ServerError,
)
from client.heartbeat import PING_INTERVAL_SECONDS, SILENCE_LIMIT_SECONDS, Heartbeat
from client.model import Away

# How many message ids the session remembers having passed on.
SHOWN_MEMORY = 4096

CONNECT_TIMEOUT_SECONDS = 10.0
MODE_TIMEOUT_SECONDS = 10.0

# Commands that change nothing on the server, and msg, whose ref makes the
# server ignore a second copy: these are sent again after a reconnection.
# Others that were sent but not answered fail, since they may have been done.
RESENDABLE_COMMANDS = frozenset(
    {"msg", "history", "open", "who", "users", "groups", "groups_all"}
    | {"group_members", "help"}
)

# Error codes of a resume that mean the password is needed again; a server
# that does not know resume at all is treated the same way.
TOKEN_REFUSED_CODES = frozenset({"bad_token", "unknown_command"})

# Error codes of a second login that are worth trying again later.
LOGIN_TRANSIENT_CODES = frozenset({"already_online", "unavailable"})

REPLACED_TEXT = "This session was taken over by another connection."


@dataclass(frozen=True)
class Address:
    """
    Where a chat server listens.
    """

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


Connector = Callable[[Address, JsonLineProtocol], Deferred[Any]]


def tcp_connector(reactor: Any, timeout: float = CONNECT_TIMEOUT_SECONDS) -> Connector:
    """
    Connect protocols over TCP, resolving host names, through C{reactor}.
    """

    def connect(address: Address, protocol: JsonLineProtocol) -> Deferred[Any]:
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout)
        connected: Deferred[Any] = connectProtocol(endpoint, protocol)
        return connected

    return connect


class SessionListener(Protocol):
    """
    Whoever shows the user what happens to the session.
    """

    def event_received(self, event: JsonObject) -> None:
        """
        The server pushed C{event}.
        """

    def connection_interrupted(self, delay: float) -> None:
        """
        There is no connection; the next attempt comes in C{delay} seconds.
        """

    def reconnected(self, missed: int) -> None:
        """
        The session resumed; C{missed} messages follow as events.
        """

    def logged_in_again(self, away: Away) -> None:
        """
        The session could not resume, but logging in again worked.
        """

    def ask_password(self, user: str) -> Deferred[str]:
        """
        Ask the user for the password of C{user}, without showing it.
        """


class SessionOver(Exception):
    """
    The session cannot go on; the message says why.
    """


def message_id(event: JsonObject) -> int:
    """
    The id of the message a C{message} event carries, or 0 for other events.

    Only these count towards the id a resume starts after: messages reach a
    connection in id order, but the id in a C{sent} or C{history} reply can
    be higher than that of a message still on its way to this connection.
    """
    message = event.get("message") if event.get("type") == "message" else None
    id = message.get("id") if isinstance(message, dict) else None
    if isinstance(id, int) and not isinstance(id, bool):
        return id
    return 0


class _Request:
    """
    One command of the screens, kept until it is answered.

    @ivar attempt: the reply of the copy sent on the current connection, or
        None while the command waits for a connection.
    """

    def __init__(
        self, cmd: str, fields: dict[str, Any], cancel: Callable[[_Request], None]
    ) -> None:
        self.cmd = cmd
        self.fields = fields
        self.result: Deferred[JsonObject] = Deferred(lambda d: cancel(self))
        self.attempt: Deferred[JsonObject] | None = None

    @property
    def resendable(self) -> bool:
        return self.cmd in RESENDABLE_COMMANDS


class _Link:
    """
    One connection of a session; it tells the session which one spoke.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self.protocol = JsonLineProtocol(self)
        self.heartbeat: Heartbeat | None = None

    def event_received(self, event: JsonObject) -> None:
        self._session._event_received(self, event)

    def connection_lost(self, reason: Failure) -> None:
        self._session._connection_lost(self, reason)

    def drop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.protocol.close()


class Session:
    """
    Commands and events of one user across as many connections as it takes.

    @ivar ended: fires once the session is over for good: with None after
        C{quit} or L{close}, or with a sentence saying why it gave up.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        connect: Connector,
        addresses: Sequence[Address],
        listener: SessionListener,
        random: Callable[[], float] = _random.random,
        ping_interval: float = PING_INTERVAL_SECONDS,
        silence_limit: float = SILENCE_LIMIT_SECONDS,
        mode_timeout: float = MODE_TIMEOUT_SECONDS,
    ) -> None:
        if not addresses:
            raise ValueError("a session needs at least one address")
        self._clock = clock
        self._connect = connect
        self._addresses = list(addresses)
        self._listener = listener
        self._backoff = Backoff(random)
        self._ping_interval = ping_interval
        self._silence_limit = silence_limit
        self._mode_timeout = mode_timeout

        self._index = 0
        self._link: _Link | None = None
        self._usable = False
        self._waiting: deque[_Request] = deque()
        self._in_flight: list[_Request] = []
        self._reconnecting: Deferred[None] | None = None
        self._move_on = False
        self._replaced = False
        self._closing = False

        self.user: str | None = None
        self.token: str | None = None
        self.last_id = 0
        # Message ids already passed on: a replica catching up after losing
        # Redis can send one again, and it must not reach the screens twice.
        self._shown: OrderedDict[int, None] = OrderedDict()
        self._password: str | None = None
        self.ended: Deferred[str | None] = Deferred()

    @property
    def address(self) -> Address:
        """
        The address in use, or the one the next attempt goes to.
        """
        return self._addresses[self._index]

    @property
    def connected(self) -> bool:
        """
        Whether commands go out now rather than wait for a connection.
        """
        return self._usable

    async def start(self) -> None:
        """
        Connect for the first time, trying each address once, in order.

        Fails with the error of the last address if none of them works, or
        at once with L{CertificateRejected}: a server that cannot prove who
        it is stops the client rather than being quietly skipped.
        """
        error: Exception = ConnectionClosed("no address to connect to")
        for index in range(len(self._addresses)):
            self._index = index
            try:
                await self._open(self.address)
            except CancelledError:
                raise
            except CertificateRejected as e:
                self.log.warn(
                    "not connecting to {address}: {error}",
                    address=str(self.address),
                    error=str(e),
                )
                raise
            except Exception as e:
                self.log.info(
                    "cannot connect to {address}: {error}",
                    address=str(self.address),
                    error=str(e),
                )
                error = e
                continue
            self._usable = True
            return
        raise error

    def request(self, cmd: str, **fields: Any) -> Deferred[JsonObject]:
        """
        Send a command now, or once connected again; fire with its reply.

        A command that was sent but lost with its connection is sent again
        if it is in L{RESENDABLE_COMMANDS}; otherwise it fails with a
        L{ServerError} with code C{connection_lost}.  Everything fails with
        L{ConnectionClosed} once the session has ended.
        """
        if self._closing:
            return fail(ConnectionClosed("the session is over"))
        if cmd == "quit":
            # Whatever happens to the connection now, it is not reopened.
            self._closing = True
            if not self._usable:
                self._finish(None)
                return fail(ConnectionClosed("not connected; nothing to log out of"))

        request = _Request(cmd, fields, self._cancel)
        if self._usable:
            self._send(request)
        else:
            self._waiting.append(request)
        return request.result

    def close(self) -> None:
        """
        End the session without logging out; nothing is reconnected.
        """
        self._finish(None)

    # The connection underneath.

    async def _open(self, address: Address) -> _Link:
        """
        Connect to C{address}, wait for JSON mode and make it the connection.
        """
        link = _Link(self)
        await self._connect(address, link.protocol)
        try:
            await link.protocol.ready.addTimeout(self._mode_timeout, self._clock)
        except BaseException:
            link.drop()
            raise
        link.heartbeat = Heartbeat(
            self._clock,
            link.protocol,
            link.protocol.abort,
            ping_interval=self._ping_interval,
            silence_limit=self._silence_limit,
        )
        link.heartbeat.start()
        self._link = link
        self.log.info("connected to {address}", address=str(address))
        return link

    def _event_received(self, link: _Link, event: JsonObject) -> None:
        if link is not self._link or self._seen_before(event):
            return
        self.last_id = max(self.last_id, message_id(event))
        if event["type"] == "notice":
            self._notice(event)
        self._listener.event_received(event)

    def _seen_before(self, event: JsonObject) -> bool:
        """
        Whether C{event} is a message that was passed on already.
        """
        message = event.get("message") if event.get("type") == "message" else None
        id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(id, int):
            return False
        if id in self._shown:
            return True
        self._shown[id] = None
        if len(self._shown) > SHOWN_MEMORY:
            self._shown.popitem(last=False)
        return False

    def _notice(self, event: JsonObject) -> None:
        code = event.get("code")
        if code == "maintenance":
            # This server is going away: come back when it says, elsewhere.
            self._move_on = True
            retry_after = event.get("retry_after")
            if isinstance(retry_after, int | float) and not isinstance(
                retry_after, bool
            ):
                self._backoff.retry_after(float(retry_after))
        elif code == "replaced":
            self._replaced = True

    def _connection_lost(self, link: _Link, reason: Failure) -> None:
        if link is not self._link:
            return
        self.log.info(
            "lost the connection to {address}: {reason}",
            address=str(self.address),
            reason=reason.getErrorMessage(),
        )
        if link.heartbeat is not None:
            link.heartbeat.stop()
        self._link = None
        self._usable = False
        failed = self._take_back_in_flight()

        if self._closing:
            self._finish(None)
        elif self._replaced:
            self._finish(REPLACED_TEXT)
        elif self._reconnecting is None:
            self._reconnecting = spawn("reconnecting", self._reconnect())
        for request in failed:
            request.result.errback(
                ServerError(
                    "connection_lost",
                    "the connection was lost before the server answered;"
                    " it may or may not have been done",
                )
            )

    def _take_back_in_flight(self) -> list[_Request]:
        """
        Put the unanswered commands that may be resent at the head of the
        queue, in their order; return the others, which must fail.
        """
        resend: list[_Request] = []
        failed: list[_Request] = []
        for request in self._in_flight:
            # The protocol fails the old copies itself; they are ignored.
            request.attempt = None
            (resend if request.resendable else failed).append(request)
        self._in_flight = []
        self._waiting.extendleft(reversed(resend))
        return failed

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self._addresses)

    async def _reconnect(self) -> None:
        """
        Wait, connect, restore the session; again until it works.
        """
        try:
            while True:
                if self._move_on:
                    self._move_on = False
                    self._advance()
                delay = self._backoff.next_delay()
                self._listener.connection_interrupted(delay)
                await deferLater(self._clock, delay)
                try:
                    link = await self._open(self.address)
                except CancelledError:
                    raise
                except CertificateRejected as e:
                    self.log.warn(
                        "stopped reconnecting to {address}: {error}",
                        address=str(self.address),
                        error=str(e),
                    )
                    raise SessionOver(f"Cannot reconnect to {self.address}: {e}") from e
                except Exception as e:
                    self.log.info(
                        "reconnecting to {address} failed: {error}",
                        address=str(self.address),
                        error=str(e),
                    )
                    self._advance()
                    continue
                if await self._restore(link) and self._link is link:
                    break
                if self._link is link:
                    self._link = None
                    link.drop()
        except SessionOver as e:
            self._reconnecting = None
            self._finish(str(e))
            return
        finally:
            self._reconnecting = None

        self._backoff.reset()
        self._usable = True
        while self._waiting and self._usable:
            self._send(self._waiting.popleft())

    async def _restore(self, link: _Link) -> bool:
        """
        Make the new connection carry the session; False to try again later.
        """
        try:
            if self.token is not None and await self._resume(link.protocol):
                return True
            if self.user is not None:
                await self._log_in_again(link.protocol)
        except ConnectionClosed:
            return False
        except ServerError as e:
            self.log.info(
                "restoring the session failed for now: {code}: {message}",
                code=e.code,
                message=e.message,
            )
            return False
        return True

    async def _resume(self, protocol: JsonLineProtocol) -> bool:
        """
        Resume with the token; False if the server refuses the token.

        Without a message id seen yet, C{last_id} is left out: the server
        then replays from what it last showed this person, where 0 would
        mean the whole history.
        """
        fields: dict[str, Any] = {"token": self.token}
        if self.last_id > 0:
            fields["last_id"] = self.last_id
        try:
            reply = await protocol.request("resume", **fields)
        except ServerError as e:
            if e.code not in TOKEN_REFUSED_CODES:
                raise
            self.log.info("the server refused the session token: {code}", code=e.code)
            self.token = None
            return False

        token = reply.get("token")
        self.token = token if isinstance(token, str) else None
        missed = reply.get("missed")
        missed = missed if isinstance(missed, int) and missed > 0 else 0
        self.log.info(
            "resumed the session of {user}; {missed} messages missed",
            user=self.user,
            missed=missed,
        )
        self._listener.reconnected(missed)
        return True

    async def _log_in_again(self, protocol: JsonLineProtocol) -> None:
        """
        Log in with the password, asked for once and kept until it is used.
        """
        assert self.user is not None
        if self._password is None:
            self._password = await self._listener.ask_password(self.user)
        try:
            reply = await protocol.request(
                "login", name=self.user, password=self._password
            )
        except ServerError as e:
            if e.code in LOGIN_TRANSIENT_CODES:
                raise
            self._password = None
            raise SessionOver(f"Logging in again failed: {e.message}") from e
        self._password = None
        self._note_login(reply, self.user)
        self._listener.logged_in_again(Away.from_json(reply.get("away")))

    # Commands of the screens.

    def _send(self, request: _Request) -> None:
        assert self._link is not None
        attempt = self._link.protocol.request(request.cmd, **request.fields)
        request.attempt = attempt
        self._in_flight.append(request)
        attempt.addCallbacks(
            lambda reply: self._answered(request, attempt, reply),
            lambda failure: self._failed(request, attempt, failure),
        )

    def _answered(
        self, request: _Request, attempt: Deferred[JsonObject], reply: JsonObject
    ) -> None:
        if request.attempt is not attempt:
            return
        request.attempt = None
        self._in_flight.remove(request)
        if request.cmd in ("login", "signup"):
            name = request.fields.get("name")
            self._note_login(reply, name if isinstance(name, str) else "")
        request.result.callback(reply)

    def _failed(
        self, request: _Request, attempt: Deferred[JsonObject], failure: Failure
    ) -> None:
        if request.attempt is not attempt or failure.check(ConnectionClosed):
            # Either a copy that no longer matters, or the connection is
            # ending and _connection_lost is about to take the request back.
            return
        request.attempt = None
        self._in_flight.remove(request)
        request.result.errback(failure)

    def _cancel(self, request: _Request) -> None:
        if request in self._waiting:
            self._waiting.remove(request)
        elif request.attempt is not None:
            attempt, request.attempt = request.attempt, None
            self._in_flight.remove(request)
            attempt.cancel()

    def _note_login(self, reply: JsonObject, name: str) -> None:
        user, token = reply.get("user"), reply.get("token")
        self.user = user if isinstance(user, str) and user else name
        self.token = token if isinstance(token, str) else None

    def _finish(self, reason: str | None) -> None:
        if self.ended.called:
            return
        self._closing = True
        reconnecting, self._reconnecting = self._reconnecting, None
        if reconnecting is not None:
            reconnecting.cancel()
        link, self._link = self._link, None
        self._usable = False
        if link is not None:
            link.drop()

        requests = [*self._in_flight, *self._waiting]
        self._in_flight, self._waiting = [], deque()
        for request in requests:
            request.attempt = None
            request.result.errback(ConnectionClosed("the session is over"))
        self.log.info("the session ended: {reason}", reason=reason or "logged out")
        self.ended.callback(reason)
