"""
The chat daemon as a twistd service: start-up and shutdown in order.

Start: open the database, apply migrations, start the password workers, join
the cluster when there is one, then listen.  Stop: stop listening, close every
connection, let their logouts finish, leave the cluster, then close the
database.

With a Redis URL the replica runs in cluster mode: presence, routing and
session tokens live in Redis (L{chat.cluster}) instead of in the process.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from chat import logs
from chat.admin import Readiness, admin_resource, listen_admin
from chat.db import DatabaseUnavailable, IDatabase, open_database
from chat.events import NoticeEvent
from chat.factory import ChatFactory, ConnectionRegistry
from chat.guard import Limits
from chat.metrics import CONTENT_TYPE
from chat.options import exit_failed_after_shutdown
from chat.passwords import Passwords
from chat.presence import IPresence, LocalPresence
from chat.records import utc_from_timestamp
from chat.schema import migrate
from chat.service import ChatService, IRouter
from chat.sessions import ITokens
from chat.storage import Store, time_param

if TYPE_CHECKING:
    from chat.cluster.node import Cluster

DEFAULT_LISTEN = "tcp:30080:backlog=1024"
DEFAULT_DATABASE = "sqlite:chat-data/chat.db"
# Seconds between the maintenance notice and closing the connections.
DEFAULT_DRAIN = 3.0
# How long closed connections may take to go before they are aborted.
CLOSE_GRACE = 5.0
# Seconds between records of how far each person has been shown messages.
SEEN_SAVE_INTERVAL = 5.0
MAINTENANCE = "SERVER MAINTENANCE: reconnecting in a few seconds"


@dataclass
class Settings:
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    database: str = DEFAULT_DATABASE
    server_id: str = field(default_factory=socket.gethostname)
    drain: float = DEFAULT_DRAIN
    redis: str | None = None
    passwords: Passwords | None = None
    limits: Limits = field(default_factory=Limits)
    # Under twistd, a replica that cannot start ends the process.
    exit_on_failure: bool = False
    # The endpoint of /healthz, /readyz and /metrics; None for none.
    admin: str | None = None


class ChatDaemon(Service):
    """
    One chat replica.

    @ivar ports: the listening ports, once started; tests read the port
        numbers from them.
    @ivar ready: fires when the daemon is listening.
    """

    log = Logger(observer=logs.observer)

    def __init__(self, reactor: Any, settings: Settings) -> None:
        self.reactor = reactor
        self.settings = settings
        self.db: IDatabase = open_database(reactor, settings.database)
        self.passwords = settings.passwords or Passwords(reactor)
        self.registry = ConnectionRegistry(settings.limits.per_address)
        store = Store(self.db)
        self.cluster: Cluster | None = None
        presence: IPresence = LocalPresence()
        router: IRouter = self.registry
        tokens: ITokens | None = None
        if settings.redis:
            from chat.cluster.node import Cluster

            self.cluster = Cluster(
                reactor,
                settings.redis,
                settings.server_id,
                store,
                self.registry,
                draining=lambda: self.draining,
            )
            presence = self.cluster.presence
            router = self.cluster.router
            tokens = self.cluster.tokens
        self.service = ChatService(
            store,
            presence,
            router,
            self.passwords,
            reactor,
            settings.server_id,
            tokens,
        )
        self.factory = ChatFactory(self.service, self.registry, settings.limits)
        self.service.metrics.watch(self.registry)
        self.ports: list[IListeningPort] = []
        self.admin_port: IListeningPort | None = None
        self.ready: Deferred[None] = Deferred()
        self.started = False
        self.draining = False
        self._saving_seen = LoopingCall(
            lambda: self.registry.spawn("save seen", self._save_seen())
        )
        self._saving_seen.clock = reactor

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    async def _start(self) -> None:
        if self.settings.admin:
            await self._listen_admin(self.settings.admin)
        await self.db.start()
        now = time_param(utc_from_timestamp(self.reactor.seconds()))
        await migrate(self.db, now)
        self.passwords.start()
        if self.cluster is not None:
            await self.cluster.start()
        for description in self.settings.listen:
            endpoint = serverFromString(self.reactor, description)
            port = await endpoint.listen(self.factory)
            self.ports.append(port)
            self.log.info(
                "chat {server} listening on {address}",
                server=self.settings.server_id,
                address=port.getHost(),
            )
        self._saving_seen.start(SEEN_SAVE_INTERVAL, now=False)
        self.started = True

    async def _save_seen(self) -> None:
        try:
            await self.service.save_seen()
        except DatabaseUnavailable as e:
            self.log.warn(
                "could not record what people were shown: {error}", error=str(e)
            )

    async def _listen_admin(self, description: str) -> None:
        """
        Serve /healthz, /readyz and /metrics; ready needs the database and,
        in cluster mode, Redis.
        """
        checks = {"database": self.db.ping}
        if self.cluster is not None:
            redis = self.cluster.redis
            checks["redis"] = lambda: redis.execute("PING")
        readiness = Readiness(
            self.reactor, checks, lambda: self.started, lambda: self.draining
        )
        metrics = self.service.metrics.exposition
        resource = admin_resource(readiness, metrics, CONTENT_TYPE)
        self.admin_port = await listen_admin(self.reactor, description, resource)
        self.log.info("admin endpoint on {address}", address=self.admin_port.getHost())

    async def _drain(self) -> None:
        """
        Tell everyone connected that this replica is going away, give their
        clients time to read it, then close every connection, its output
        flushed.
        """
        connections = list(self.registry.connections)
        if not connections:
            return
        self.log.info(
            "draining {count} connections for {seconds} s",
            count=len(connections),
            seconds=self.settings.drain,
        )
        notice = NoticeEvent(MAINTENANCE, "maintenance", retry_after=2.0)
        for connection in connections:
            connection.deliver(notice)
        await deferLater(self.reactor, self.settings.drain, lambda: None)
        for connection in list(self.registry.connections):
            connection.transport.loseConnection()
        waited = 0.0
        while self.registry.connections and waited < CLOSE_GRACE:
            await deferLater(self.reactor, 0.05, lambda: None)
            waited += 0.05
        for connection in list(self.registry.connections):
            connection.transport.abortConnection()

    def _failed_to_start(self, failure: Any) -> None:
        self.log.failure("chat could not start", failure)
        self.ready.errback(failure)
        if self.settings.exit_on_failure and self.reactor.running:
            exit_failed_after_shutdown(self.reactor)
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.draining = True
        if self._saving_seen.running:
            self._saving_seen.stop()
        if self.cluster is not None:
            self.registry.spawn("replica figures", self.cluster.stats.heartbeat.beat())
        await DeferredList([port.stopListening() for port in self.ports])
        self.ports = []
        await self._drain()
        if self.cluster is not None:
            # Every connection is closed: no message is owed to anyone here.
            self.cluster.router.in_order.stop()
        await DeferredList(self.registry.pending())
        if self.cluster is not None:
            # The logouts just finished handed presence events to the router.
            await DeferredList(self.registry.pending())
            await self.cluster.stop()
        self.passwords.stop()
        await self.db.stop()
        if self.admin_port is not None:
            stopped = self.admin_port.stopListening()
            if stopped is not None:
                await stopped
        self.log.info("chat {server} stopped", server=self.settings.server_id)
