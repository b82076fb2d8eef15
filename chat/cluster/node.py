"""
One replica's share of the cluster: its Redis connections, presence, router
and figures, started and stopped together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.cluster.keys import KEYS, Keys
from chat.cluster.presence import RedisPresence
from chat.cluster.redisconn import RedisClient, RedisSubscriber, parse_redis_url
from chat.cluster.replicas import Figures, ReplicaStats
from chat.cluster.router import RedisRouter
from chat.cluster.tokens import RedisTokens
from chat.storage import Store

if TYPE_CHECKING:
    from chat.factory import ConnectionRegistry


class Cluster:
    """
    Everything cluster mode adds to one replica.

    @param draining: tells whether the replica is shutting down.
    @param clock: times the heartbeats; the reactor unless given.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        reactor: Any,
        redis_url: str,
        server_id: str,
        store: Store,
        registry: ConnectionRegistry,
        draining: Callable[[], bool] = lambda: False,
        keys: Keys = KEYS,
        clock: IReactorTime | None = None,
    ) -> None:
        clock = clock or reactor
        address = parse_redis_url(redis_url)
        self.server_id = server_id
        self._registry = registry
        self._draining = draining
        self.redis = RedisClient(reactor, address)
        self.tokens = RedisTokens(self.redis, keys)
        self.presence = RedisPresence(
            self.redis,
            clock,
            server_id,
            registry.spawn,
            keys,
            on_lost=self._held_elsewhere,
        )
        self.router = RedisRouter(
            registry, self.presence, self.redis, store, server_id, clock, keys
        )
        self.subscriber = RedisSubscriber(
            reactor, address, self.router.channels, self.router.received
        )
        self.subscriber.on_ping.append(self.router.heard)
        self.redis.on_lost.append(self.router.cut_off)
        self.subscriber.on_lost.append(self.router.cut_off)
        self.subscriber.on_connect.append(lambda: self.router.subscribed(self._whole()))
        self.presence.on_restored.append(lambda: self.router.restored(self._whole()))
        self.stats = ReplicaStats(self.redis, clock, server_id, self.figures, keys)

    def _whole(self) -> bool:
        """
        Whether this replica is fully back in the cluster: both connections
        up and its presence restored.
        """
        return (
            self.redis.connected
            and self.subscriber.connected
            and self.presence.restored
        )

    def figures(self) -> Figures:
        return Figures(
            connections=len(self._registry.connections),
            users=len(self._registry.by_user),
            messages_in=self.router.traffic.sent,
            messages_out=self.router.traffic.shown,
            draining=self._draining(),
        )

    def _held_elsewhere(self, folded: str) -> None:
        if folded in self._registry.by_user:
            self.log.info(
                "{user} is held by another replica now; closing here", user=folded
            )
            self._registry.replace(folded)

    async def start(self) -> None:
        """
        Connect to Redis and start the heartbeats.

        @raise chat.cluster.redisconn.RedisUnavailable: if Redis cannot be
            reached.
        """
        await self.router.start()
        await self.redis.connect()
        try:
            await self.subscriber.connect()
            await self.presence.start()
        except BaseException:
            await self.subscriber.stop()
            await self.redis.stop()
            raise
        self.stats.start()
        self.log.info(
            "replica {server} joined the cluster through Redis {address}",
            server=self.server_id,
            address=str(self.redis.address),
        )

    async def stop(self) -> None:
        """
        Give up this replica's presence entries and figures, then disconnect.
        """
        await self.presence.stop()
        await self.stats.stop()
        await self.subscriber.stop()
        await self.redis.stop()
