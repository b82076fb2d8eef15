"""
The chat daemon as a twistd service: start-up and shutdown in order.

Start: open the database, apply migrations, start the password workers, then
listen.  Stop: stop listening, close every connection, let their logouts
finish, then close the database.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from chat import logs
from chat.db import IDatabase, open_database
from chat.factory import ChatFactory, ConnectionRegistry
from chat.passwords import Passwords
from chat.presence import LocalPresence
from chat.records import utc_from_timestamp
from chat.schema import migrate
from chat.service import ChatService
from chat.storage import Store, time_param

DEFAULT_LISTEN = "tcp:30080"
DEFAULT_DATABASE = "sqlite:chat-data/chat.db"


@dataclass
class Settings:
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    database: str = DEFAULT_DATABASE
    server_id: str = field(default_factory=socket.gethostname)
    passwords: Passwords | None = None


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
        self.registry = ConnectionRegistry()
        self.service = ChatService(
            Store(self.db),
            LocalPresence(),
            self.registry,
            self.passwords,
            reactor,
            settings.server_id,
        )
        self.factory = ChatFactory(self.service, self.registry)
        self.ports: list[IListeningPort] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    async def _start(self) -> None:
        await self.db.start()
        now = time_param(utc_from_timestamp(self.reactor.seconds()))
        await migrate(self.db, now)
        self.passwords.start()
        for description in self.settings.listen:
            endpoint = serverFromString(self.reactor, description)
            port = await endpoint.listen(self.factory)
            self.ports.append(port)
            self.log.info(
                "chat {server} listening on {address}",
                server=self.settings.server_id,
                address=port.getHost(),
            )

    def _failed_to_start(self, failure: Any) -> None:
        self.log.failure("chat could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await DeferredList([port.stopListening() for port in self.ports])
        self.ports = []
        for connection in list(self.registry.connections):
            connection.transport.loseConnection()
        await DeferredList(self.registry.pending())
        self.passwords.stop()
        await self.db.stop()
        self.log.info("chat {server} stopped", server=self.settings.server_id)
