"""
Each replica's figures in Redis, for operators and autoscalers to read.

Every heartbeat a replica writes a hash of its figures with a TTL and lists
itself in a sorted set scored by the hash's expiry, so a replica that died
drops out of the list within L{REPLICA_TTL_SECONDS}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.cluster.heartbeat import Heartbeat
from chat.cluster.keys import KEYS, Keys
from chat.cluster.redisconn import RedisClient, RedisUnavailable

REPLICA_TTL_SECONDS = 30.0
STATS_SECONDS = 10.0

# KEYS: the replica's hash, the index.  ARGV: TTL ms, replica id, then pairs
# of field and value.  Also drops expired replicas from the index.
_WRITE = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return 1
"""

# KEYS: the index.  ARGV: replica hash key prefix.  The live replicas and the
# flattened fields of each.
_READ = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  found[#found + 1] = {id, redis.call('HGETALL', ARGV[1] .. id)}
end
return found
"""


@dataclass
class Figures:
    connections: int
    users: int
    messages_in: int
    messages_out: int
    draining: bool


class ReplicaStats:
    """
    Writes this replica's figures on a heartbeat.

    @param figures: reads the current figures.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        redis: RedisClient,
        clock: IReactorTime,
        server_id: str,
        figures: Callable[[], Figures],
        keys: Keys = KEYS,
        ttl_seconds: float = REPLICA_TTL_SECONDS,
        interval_seconds: float = STATS_SECONDS,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._server_id = server_id
        self._figures = figures
        self._keys = keys
        self._ttl_ms = int(ttl_seconds * 1000)
        self._started_at = clock.seconds()
        self.heartbeat = Heartbeat(
            clock, interval_seconds, self.write, "writing the replica figures"
        )

    def start(self) -> None:
        self.heartbeat.start(now=True)

    async def stop(self) -> None:
        """
        Stop writing and remove this replica from the list.
        """
        self.heartbeat.stop()
        try:
            await self._redis.execute("DEL", self._keys.replica(self._server_id))
            await self._redis.execute("ZREM", self._keys.replicas, self._server_id)
        except RedisUnavailable as e:
            self.log.warn(
                "could not withdraw the replica figures: {error}", error=str(e)
            )

    async def write(self) -> None:
        figures = self._figures()
        fields: dict[str, Any] = {
            "connections": figures.connections,
            "users": figures.users,
            "messages_in": figures.messages_in,
            "messages_out": figures.messages_out,
            "started_at": self._started_at,
            "draining": int(figures.draining),
            "updated_at": self._clock.seconds(),
        }
        args: list[Any] = [self._ttl_ms, self._server_id]
        for name, value in fields.items():
            args += [name, value]
        await self._redis.eval(
            _WRITE, [self._keys.replica(self._server_id), self._keys.replicas], args
        )


async def live_replicas(
    redis: RedisClient, keys: Keys = KEYS
) -> dict[str, dict[str, str]]:
    """
    The figures of every replica whose hash has not expired, by replica id.
    """
    rows = await redis.eval(_READ, [keys.replicas], [keys.replica("")])
    return {row[0]: dict(zip(row[1][::2], row[1][1::2], strict=True)) for row in rows}
