"""
The server factory and the registry of live connections.

The registry knows which connection belongs to which person on this process
and hands each event to the right ones.  In the embedded default it is also
the router: every person is local.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from chat import logs
from chat.events import Event
from chat.fanout import Fanout
from chat.guard import Limits, is_loopback
from chat.limits import CONNECTIONS_PER_ADDRESS, ConnectionCounter
from chat.protocol import ChatProtocol
from chat.service import ChatService


class ConnectionRegistry:
    """
    Every open connection, and the logged-in ones by folded user name.
    """

    log = Logger(observer=logs.observer)

    def __init__(self, per_address: int = CONNECTIONS_PER_ADDRESS) -> None:
        self.connections: set[ChatProtocol] = set()
        self._addresses = ConnectionCounter(per_address)
        self.by_user: dict[str, set[ChatProtocol]] = {}
        self._tasks: set[Deferred[Any]] = set()
        # Background tasks in flight, by name.
        self.running: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        """
        Count a connection from C{host}; C{False} if it has too many already.
        Loopback peers are not counted.
        """
        if not self._addresses.limit or is_loopback(host):
            return True
        return self._addresses.open(host)

    def leave(self, host: str) -> None:
        if self._addresses.limit and not is_loopback(host):
            self._addresses.close(host)

    def add(self, connection: ChatProtocol) -> None:
        self.connections.add(connection)

    def remove(self, connection: ChatProtocol) -> None:
        self.connections.discard(connection)

    def register(self, folded: str, connection: ChatProtocol) -> None:
        self.by_user.setdefault(folded, set()).add(connection)

    def unregister(self, folded: str, connection: ChatProtocol) -> None:
        held = self.by_user.get(folded)
        if held is not None:
            held.discard(connection)
            if not held:
                del self.by_user[folded]

    def deliver(self, folded_names: list[str], event: Event) -> None:
        by_user = self.by_user
        self.show([c for name in folded_names for c in by_user.get(name, ())], event)

    def replace(self, folded: str) -> None:
        for connection in list(self.by_user.pop(folded, ())):
            connection.replaced()

    def deliver_all(self, event: Event) -> None:
        self.show([c for held in self.by_user.values() for c in held], event)

    def show(self, connections: Iterable[ChatProtocol], event: Event) -> None:
        """
        Show C{event} on each of C{connections}, rendered once per viewpoint.

        C{connections} is read in full first, as showing may close some.
        """
        fanout = Fanout(event)
        for connection in list(connections):
            connection.show(fanout)
        fanout.finish()

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        """
        Run background work that nobody waits for; log it if it fails.

        The Deferred is kept until it fires, so that shutdown can wait for it.
        """
        d = Deferred.fromCoroutine(work)
        self._tasks.add(d)
        self.running[name] += 1

        def failed(failure: Any) -> None:
            self.log.failure("background task {task} failed", failure, task=name)

        def done(result: Any) -> Any:
            self._tasks.discard(d)
            self.running[name] -= 1
            return result

        d.addErrback(failed)
        d.addBoth(done)
        return d

    def pending(self) -> list[Deferred[Any]]:
        return list(self._tasks)


class ChatFactory(ServerFactory):
    """
    Builds a L{ChatProtocol} for each connection.
    """

    noisy = False

    def __init__(
        self,
        service: ChatService,
        registry: ConnectionRegistry,
        limits: Limits | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.limits = limits or Limits()

    def buildProtocol(self, addr: IAddress) -> ChatProtocol:
        protocol = ChatProtocol(self.service, self.registry, self.limits)
        protocol.factory = self
        return protocol
