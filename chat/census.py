"""
What the autoscaler reads from Redis, and what it leaves there.

It reads, in one script so that everything is seen at the same instant of
Redis's clock: the people whose presence has not run out, counted by the
replica that holds them, and the age of each live replica's figures
(L{chat.cluster.keys} describes the layout).  A person held by a replica that
publishes no live figures is not counted: that replica is gone, and its
entries are only waiting to run out.

It writes its decisions to a capped list, newest first, and a heartbeat key
whose TTL runs out if it stops polling: the dashboard reads both.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger

from chat import logs
from chat.cluster.keys import KEYS, Keys
from chat.cluster.presence import LUA_NOW_MS, LUA_PRESENCE_ENTRIES
from chat.cluster.redisconn import RedisClient, RedisUnavailable
from chat.scaling import Observation, Reading, Unreadable

# The recent decisions kept for the dashboard.
DECISIONS_KEPT = 200

# KEYS: the index of people online, the index of replicas.  ARGV: presence
# key prefix, replica hash key prefix.  Answers JSON: Redis's time in ms, the
# people counted by replica, and the updated_at of each live replica.
_CENSUS = (
    LUA_NOW_MS
    + LUA_PRESENCE_ENTRIES
    + """
local replicas = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  local updated = redis.call('HGET', ARGV[2] .. id, 'updated_at')
  if updated then
    replicas[id] = updated
  end
end
local people = {}
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
for _, entry in ipairs(presence_entries(names, ARGV[1])) do
  local server = cjson.decode(entry).server
  people[server] = (people[server] or 0) + 1
end
return cjson.encode({now = now, people = people, replicas = replicas})
"""
)


class BadCensus(ValueError):
    """
    Redis answered with something the replicas would not have written.
    """


def observation(answer: str) -> Observation:
    """
    The observation in the census script's answer.

    @raise BadCensus: for an answer that does not add up.
    """
    try:
        data = json.loads(answer)
        now = float(data["now"]) / 1000
        # cjson writes an empty table as an object, which is what is wanted.
        people = {str(k): int(v) for k, v in (data["people"] or {}).items()}
        updated = {str(k): float(v) for k, v in (data["replicas"] or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadCensus(f"the census does not add up: {e!r}") from None
    live = {server: people.get(server, 0) for server in updated}
    ages = [now - at for at in updated.values()]
    return Observation(
        users=sum(live.values()),
        by_server=live,
        replicas=len(updated),
        stats_age=max(0.0, max(ages)) if ages else None,
        orphans=sum(n for server, n in people.items() if server not in updated),
    )


class Census:
    """
    Reads the cluster's state and keeps the autoscaler's records, in Redis.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys = KEYS,
        decisions_kept: int = DECISIONS_KEPT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._decisions_kept = decisions_kept

    async def read(self) -> Reading:
        """
        What Redis says now; never raises.
        """
        try:
            answer = await self._redis.eval(
                _CENSUS,
                [self._keys.online, self._keys.replicas],
                [self._keys.presence_prefix, self._keys.replica("")],
            )
            return observation(str(answer))
        except RedisUnavailable as e:
            return Unreadable(f"cannot read Redis: {e}")
        except BadCensus as e:
            return Unreadable(str(e))
        except Exception as e:
            # A script error: an entry that is not JSON, a key of the wrong
            # type.  Nothing to act on, and worth a traceback.
            self.log.failure("the census script failed")
            return Unreadable(f"Redis answered with an error: {e}")

    async def record(self, decision: dict[str, Any]) -> None:
        """
        Add a decision to the capped list, newest first.

        @raise RedisUnavailable: if Redis cannot be reached.
        """
        key = self._keys.scaler_decisions
        await self._redis.execute("LPUSH", key, json.dumps(decision))
        await self._redis.execute("LTRIM", key, 0, self._decisions_kept - 1)

    async def beat(self, state: dict[str, Any], ttl_seconds: float) -> None:
        """
        Replace the heartbeat, to run out after C{ttl_seconds}.

        @raise RedisUnavailable: if Redis cannot be reached.
        """
        await self._redis.execute(
            "SET",
            self._keys.scaler_heartbeat,
            json.dumps(state),
            "PX",
            int(ttl_seconds * 1000),
        )

    async def withdraw(self) -> None:
        """
        Remove the heartbeat, for a clean stop.

        @raise RedisUnavailable: if Redis cannot be reached.
        """
        await self._redis.execute("DEL", self._keys.scaler_heartbeat)
