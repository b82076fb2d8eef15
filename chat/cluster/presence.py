"""
Presence in Redis: who is online, on which replica, for the whole cluster.

Each person online has one entry, set with C{SET NX}, so two replicas racing
to log the same person in cannot both win.  Entries carry a TTL that the
replica holding them renews on a heartbeat; the entries of a replica that died
run out within L{PRESENCE_TTL_SECONDS}, sooner if someone logs in meanwhile:
a claim replaces an entry whose replica no longer listens to its pub/sub
channel.  A Redis that restarted empty gets the entries back as soon as each
replica reconnects.  A sorted set scored by expiry time lists the
people online, so listing them needs no key scan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.cluster.heartbeat import Heartbeat
from chat.cluster.keys import KEYS, Keys
from chat.cluster.redisconn import RedisClient, RedisUnavailable
from chat.presence import Presence

PRESENCE_TTL_SECONDS = 30.0
HEARTBEAT_SECONDS = 10.0
# Names per script call, so that no single call holds Redis for long.
BATCH = 500

Spawn = Callable[[str, Coroutine[Any, Any, Any]], Deferred[Any]]

# The Redis time in milliseconds, as scripts compute it.
# Sets the local "now" to the Redis server's time in milliseconds.
LUA_NOW_MS = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

# KEYS: entry, index.  ARGV: entry JSON, TTL ms, folded name, replica
# channel prefix.  An entry whose replica no longer listens to its channel is
# left by a replica that died: the claim replaces it rather than wait for it
# to run out.
_CLAIM = (
    """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local held = redis.call('GET', KEYS[1])
  if not held then
    return 0
  end
  local holder = cjson.decode(held).server
  if holder == cjson.decode(ARGV[1]).server then
    return 0
  end
  local listening = redis.call('PUBSUB', 'NUMSUB', ARGV[4] .. holder)
  if tonumber(listening[2]) > 0 then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
"""
    + LUA_NOW_MS
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

# KEYS: entry, index.  ARGV: entry JSON, TTL ms, folded name.
_TAKE_OVER = (
    """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
    + LUA_NOW_MS
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
"""
)

# KEYS: entry, index.  ARGV: server id, folded name.
_RELEASE = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held).server == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS: index.  ARGV: entry key prefix, server id, TTL ms, then pairs of
# folded name and entry JSON.  Renews the entries this server holds, puts
# back those that are gone, and names those that another server now holds.
_REFRESH = (
    LUA_NOW_MS
    + """
local ttl = tonumber(ARGV[3])
local rebuilt, lost = {}, {}
for i = 4, #ARGV, 2 do
  local name = ARGV[i]
  local key = ARGV[1] .. name
  local held = redis.call('GET', key)
  if held and cjson.decode(held).server ~= ARGV[2] then
    lost[#lost + 1] = name
  else
    if held then
      redis.call('PEXPIRE', key, ttl)
    else
      redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
      rebuilt[#rebuilt + 1] = name
    end
    redis.call('ZADD', KEYS[1], now + ttl, name)
  end
end
return {rebuilt, lost}
"""
)

# A Lua function for every script that reads presence entries: the entries
# of the given folded names that still exist, fetched 500 keys at a time.
LUA_PRESENCE_ENTRIES = """
local function presence_entries(names, prefix)
  local found = {}
  for first = 1, #names, 500 do
    local keys = {}
    for i = first, math.min(first + 499, #names) do
      keys[#keys + 1] = prefix .. names[i]
    end
    for _, entry in ipairs(redis.call('MGET', unpack(keys))) do
      if entry then
        found[#found + 1] = entry
      end
    end
  end
  return found
end
"""

# KEYS: index.  ARGV: entry key prefix.  Drops expired names from the index,
# then returns the entries of the others.
_ONLINE = (
    LUA_NOW_MS
    + LUA_PRESENCE_ENTRIES
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return presence_entries(redis.call('ZRANGE', KEYS[1], 0, -1), ARGV[1])
"""
)

# KEYS: index.  ARGV: entry key prefix, server id.  Removes every entry that
# names the server, for a replica that starts again under the same id.
_FORGET = """
local count = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. name
  local held = redis.call('GET', key)
  if held and cjson.decode(held).server == ARGV[2] then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], name)
    count = count + 1
  end
end
return count
"""


def encode_presence(presence: Presence) -> str:
    return json.dumps(
        {"name": presence.name, "server": presence.server_id, "since": presence.since}
    )


def decode_presence(text: str) -> Presence:
    entry = json.loads(text)
    return Presence(entry["name"], entry["server"], float(entry["since"]))


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RedisPresence:
    """
    L{chat.presence.IPresence} for a cluster, in Redis.

    @param spawn: runs named background work and logs its failure.
    @param on_lost: called with a folded name when the heartbeat finds that
        another replica holds someone this replica thought it held.
    @ivar restored: whether Redis has the entries of everyone this replica
        holds, as far as it knows: false from the loss of the connection
        until they are put back after it returns.
    @ivar on_restored: called with no argument when they are put back.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        redis: RedisClient,
        clock: IReactorTime,
        server_id: str,
        spawn: Spawn,
        keys: Keys = KEYS,
        ttl_seconds: float = PRESENCE_TTL_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        on_lost: Callable[[str], None] = lambda folded: None,
    ) -> None:
        self._redis = redis
        self._server_id = server_id
        self._spawn = spawn
        self._keys = keys
        self._ttl_ms = int(ttl_seconds * 1000)
        self._on_lost = on_lost
        self.held: dict[str, Presence] = {}
        self.restored = True
        self.on_restored: list[Callable[[], None]] = []
        self._heartbeat = Heartbeat(
            clock, heartbeat_seconds, self.refresh, "presence heartbeat"
        )
        redis.on_connect.append(self._reconnected)
        redis.on_lost.append(self._cut_off)

    # IPresence

    async def claim(self, folded: str, presence: Presence) -> bool:
        claimed = await self._redis.eval(
            _CLAIM,
            [self._keys.presence(folded), self._keys.online],
            [encode_presence(presence), self._ttl_ms, folded, self._keys.replica("")],
        )
        if claimed:
            self.held[folded] = presence
        return bool(claimed)

    async def take_over(self, folded: str, presence: Presence) -> None:
        await self._redis.eval(
            _TAKE_OVER,
            [self._keys.presence(folded), self._keys.online],
            [encode_presence(presence), self._ttl_ms, folded],
        )
        self.held[folded] = presence

    async def release(self, folded: str, server_id: str) -> None:
        """
        Remove the entry if C{server_id} holds it.

        When Redis cannot be reached the entry is left to run out: a logout
        must not fail for it.
        """
        held = self.held.get(folded)
        if held is not None and held.server_id == server_id:
            del self.held[folded]
        try:
            await self._redis.eval(
                _RELEASE,
                [self._keys.presence(folded), self._keys.online],
                [server_id, folded],
            )
        except RedisUnavailable as e:
            self.log.warn(
                "could not release {user}; the entry runs out in {ttl}s: {error}",
                user=folded,
                ttl=self._ttl_ms / 1000,
                error=str(e),
            )

    async def online(self) -> list[Presence]:
        entries = await self._redis.eval(
            _ONLINE, [self._keys.online], [self._keys.presence_prefix]
        )
        return [decode_presence(entry) for entry in entries]

    async def is_online(self, folded: str) -> bool:
        found = await self._redis.execute("EXISTS", self._keys.presence(folded))
        return bool(found)

    # For the router

    async def where(self, folded_names: list[str]) -> dict[str, str]:
        """
        The replica that holds each of C{folded_names} who is online.
        """
        if not folded_names:
            return {}
        keys = [self._keys.presence(name) for name in folded_names]
        entries = await self._redis.execute("MGET", *keys)
        return {
            name: decode_presence(entry).server_id
            for name, entry in zip(folded_names, entries, strict=True)
            if entry
        }

    # The heartbeat

    async def start(self) -> None:
        """
        Drop entries left by an earlier run under this server id, then start
        the heartbeat.
        """
        forgotten = await self._redis.eval(
            _FORGET, [self._keys.online], [self._keys.presence_prefix, self._server_id]
        )
        if forgotten:
            self.log.info(
                "dropped {count} presence entries of an earlier run of {server}",
                count=forgotten,
                server=self._server_id,
            )
        self._heartbeat.start(now=False)

    async def stop(self) -> None:
        """
        Stop the heartbeat and release every entry this replica holds.
        """
        self._heartbeat.stop()
        for folded in list(self.held):
            await self.release(folded, self._server_id)

    def _cut_off(self) -> None:
        self.restored = False

    def _reconnected(self) -> None:
        if not self.restored:
            self._spawn("presence rebuild", self._restore())

    async def _restore(self) -> None:
        try:
            await self.refresh()
        except RedisUnavailable as e:
            # Lost again: the next connection tries again.
            self.log.warn("could not put presence back: {error}", error=str(e))
            return
        self.restored = True
        for callback in list(self.on_restored):
            callback()

    async def refresh(self) -> None:
        """
        Renew the entry of everyone this replica holds; put back missing ones.
        """
        held = list(self.held.items())
        for batch in _batches(held, BATCH):
            args: list[Any] = [self._keys.presence_prefix, self._server_id]
            args.append(self._ttl_ms)
            for folded, presence in batch:
                args += [folded, encode_presence(presence)]
            rebuilt, lost = await self._redis.eval(_REFRESH, [self._keys.online], args)
            if rebuilt:
                self.log.info(
                    "put back the presence of {count} people", count=len(rebuilt)
                )
            for folded in lost:
                self._lost(folded)

    def _lost(self, folded: str) -> None:
        if self.held.pop(folded, None) is None:
            return
        self.log.warn(
            "{user} is now held by another replica; closing here", user=folded
        )
        self._on_lost(folded)
