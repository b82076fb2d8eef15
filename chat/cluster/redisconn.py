"""
Connections to Redis over txredisapi: one for commands, one for subscriptions.

Both reconnect by themselves, with a short capped backoff, for as long as the
replica runs.  A command sent while the connection is down fails at once with
L{RedisUnavailable} instead of waiting for Redis to come back, so a person's
request never hangs on it.  The subscriber subscribes again on every new
connection and then tells its owner, which is how the router notices a gap in
what it heard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from chat import logs
from chat.db import DatabaseUnavailable

DEFAULT_PORT = 6379
CONNECT_TIMEOUT_SECONDS = 5.0
REPLY_TIMEOUT_SECONDS = 5.0
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0
SUBSCRIBER_PING_SECONDS = 5.0


class RedisUnavailable(DatabaseUnavailable):
    """
    Redis could not be reached; the request may be retried later.

    It is a kind of L{DatabaseUnavailable} so that a person whose request
    needed Redis gets the same C{unavailable} answer as for PostgreSQL.
    """

    what = "shared state (Redis)"


@dataclass(frozen=True)
class RedisAddress:
    """
    Where a Redis server listens: a host and port, or a Unix socket path.
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    path: str | None = None
    db: int = 0
    password: str | None = field(default=None, repr=False)

    def endpoint(self, reactor: Any) -> IStreamClientEndpoint:
        if self.path is not None:
            return UNIXClientEndpoint(
                reactor, self.path, timeout=CONNECT_TIMEOUT_SECONDS
            )
        return HostnameEndpoint(
            reactor, self.host, self.port, timeout=CONNECT_TIMEOUT_SECONDS
        )

    def __str__(self) -> str:
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"{where} db {self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """
    The address that a Redis URL names.

    Accepted: C{redis://[:password@]host[:port][/db]}, C{unix:/path} and
    C{unix:/path?db=N}.

    @raise ValueError: for anything else; the message never holds a password.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "unix":
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise ValueError("a unix: Redis URL needs an absolute socket path")
        return RedisAddress(path=path, db=_db_number(_query_db(parsed.query)))
    if scheme != "redis":
        raise ValueError(f"a Redis URL starts with redis:// or unix:, not {scheme!r}")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port of the Redis URL is not a number") from None
    password = unquote(parsed.password) if parsed.password else None
    return RedisAddress(
        host=parsed.hostname or "localhost",
        port=port,
        db=_db_number(parsed.path.lstrip("/") or _query_db(parsed.query)),
        password=password,
    )


def _query_db(query: str) -> str:
    return parse_qs(query).get("db", ["0"])[-1]


def _db_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the Redis database must be a number, not {text!r}")
    return int(text)


class _SubscriberProtocol(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    on_message: Callable[[str, str], None] = staticmethod(lambda c, m: None)

    def messageReceived(self, pattern: str | None, channel: str, message: str) -> None:
        self.on_message(channel, message)


class _Factory(Factory):
    """
    Builds txredisapi protocols for a L{ClientService}.

    txredisapi calls C{stopTrying} and C{connectionError} on the factory when
    Redis refuses the password or database; the service keeps retrying, so
    those only log.
    """

    log = Logger(observer=logs.observer)
    isLazy = True
    noisy = False

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def buildProtocol(self, addr: Any) -> Any:
        link = self._link
        protocol = link.protocol_class(
            charset="utf-8",
            replyTimeout=REPLY_TIMEOUT_SECONDS,
            password=link.address.password,
            dbid=link.address.db or None,
            convertNumbers=False,
        )
        protocol.callLater = link.reactor.callLater
        protocol.factory = self
        link.configure(protocol)
        return protocol

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self.log.error(
            "Redis {address} refused the {role} connection: {why}",
            address=str(self._link.address),
            role=self._link.role,
            why=why,
        )


class RedisLink:
    """
    One Redis connection, kept open by a L{ClientService}.

    @ivar on_connect: called with no argument each time the connection is
        ready for use.
    @ivar on_lost: called with no argument each time the connection is lost,
        unless the link is being stopped.
    """

    log = Logger(observer=logs.observer)
    protocol_class: type[Any] = txredisapi.RedisProtocol
    role = "command"

    def __init__(self, reactor: Any, address: RedisAddress) -> None:
        self.reactor = reactor
        self.address = address
        self.on_connect: list[Callable[[], None]] = []
        self.on_lost: list[Callable[[], None]] = []
        self._protocol: Any = None
        self._ever_connected = False
        self._stopping = False
        self._service = ClientService(
            address.endpoint(reactor),
            _Factory(self),
            retryPolicy=backoffPolicy(
                RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, factor=2.0
            ),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def start(self) -> None:
        self._service.startService()

    async def connect(self) -> None:
        """
        Start, and wait for the first connection.

        @raise RedisUnavailable: if the first attempt fails; the link is
            stopped then.
        """
        self.start()
        failure: Exception | None = None
        try:
            await self._service.whenConnected(failAfterFailures=1)
        except Exception as e:
            failure = e
        # whenConnected fires in the middle of the service's state change,
        # where stopping it is refused: leave that first.
        await deferLater(self.reactor, 0, lambda: None)
        if failure is not None:
            await self.stop()
            raise RedisUnavailable(
                f"cannot connect to Redis at {self.address}: {failure}"
            ) from None

    async def stop(self) -> None:
        self._stopping = True
        await self._service.stopService()

    def _prepare(self, protocol: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ready(protocol))

    def configure(self, protocol: Any) -> None:
        """
        Prepare a protocol that was just built.
        """

    async def _ready(self, proxy: Any) -> None:
        # ClientService hands over a proxy; the protocol itself is what
        # txredisapi passes to its callbacks.
        protocol = await _ready_or_lost(proxy)
        await self._set_up(protocol)
        protocol.whenDisconnected().addCallback(self._lost)
        self._protocol = protocol
        if self._ever_connected:
            self.log.info(
                "reconnected to Redis {address} ({role})",
                address=str(self.address),
                role=self.role,
            )
        self._ever_connected = True
        for callback in list(self.on_connect):
            callback()

    async def _set_up(self, protocol: Any) -> None:
        """
        Whatever a new connection needs before it is used.
        """

    def _lost(self, protocol: Any) -> None:
        if self._protocol is not protocol:
            return
        self._protocol = None
        if self._stopping:
            return
        self.log.warn(
            "lost the {role} connection to Redis {address}",
            address=str(self.address),
            role=self.role,
        )
        for callback in list(self.on_lost):
            callback()

    def _current(self) -> Any:
        if self._protocol is None:
            raise RedisUnavailable(f"not connected to Redis {self.address}")
        return self._protocol


async def _ready_or_lost(protocol: Any) -> Any:
    """
    Wait until txredisapi has authenticated and selected the database.
    """
    ready: Deferred[Any] = Deferred()

    def connected(protocol: object) -> None:
        if not ready.called:
            ready.callback(protocol)

    def lost(_: object) -> None:
        if not ready.called:
            ready.errback(ConnectionLost("closed before it was ready"))

    protocol.whenConnected().addCallback(connected)
    protocol.whenDisconnected().addCallback(lost)
    return await ready


class RedisClient(RedisLink):
    """
    The connection that runs commands and scripts.
    """

    async def execute(self, *args: Any) -> Any:
        """
        Run one command and return its reply.

        @raise RedisUnavailable: when not connected, or when the connection is
            lost or times out before the reply.
        """
        protocol = self._current()
        try:
            return await protocol.execute_command(*args)
        except txredisapi.ConnectionError as e:
            raise RedisUnavailable(f"Redis {self.address}: {e}") from e

    async def eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """
        Run a Lua script, by its hash once Redis knows it.
        """
        protocol = self._current()
        try:
            return await protocol.eval(script, list(keys), list(args))
        except txredisapi.ConnectionError as e:
            raise RedisUnavailable(f"Redis {self.address}: {e}") from e


class RedisSubscriber(RedisLink):
    """
    The connection that listens to some channels.

    C{on_message(channel, message)} is called for each message.  The
    subscriber pings Redis now and then, so that a connection that went
    silent is dropped and made again instead of hiding a gap.
    """

    protocol_class = _SubscriberProtocol
    role = "subscriber"

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        channels: Sequence[str],
        on_message: Callable[[str, str], None],
        ping_seconds: float = SUBSCRIBER_PING_SECONDS,
    ) -> None:
        super().__init__(reactor, address)
        self.channels = list(channels)
        self._on_message = on_message
        self._ping_seconds = ping_seconds
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self.on_ping: list[Callable[[], None]] = []

    def configure(self, protocol: Any) -> None:
        protocol.on_message = self._on_message

    async def _set_up(self, protocol: Any) -> None:
        await protocol.subscribe(self.channels)

    def start(self) -> None:
        super().start()
        self._pinger.start(self._ping_seconds, now=False)

    async def stop(self) -> None:
        if self._pinger.running:
            self._pinger.stop()
        await super().stop()

    def _ping(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ping_once())

    async def _ping_once(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            await protocol.ping()
        except txredisapi.ConnectionError:
            # txredisapi closes a connection whose reply timed out; the
            # service then makes a new one.
            return
        for callback in list(self.on_ping):
            callback()
