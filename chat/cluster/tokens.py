"""
Session tokens in Redis, so that a session can be resumed on any replica.

Each token is a key named by its digest, holding the folded user name, with a
TTL of L{chat.sessions.SESSION_IDLE} that every sign of life renews.
"""

from __future__ import annotations

from chat.cluster.keys import KEYS, Keys
from chat.cluster.redisconn import RedisClient
from chat.sessions import SESSION_IDLE, digest, new_token

# KEYS: the old token, the new one.  ARGV: TTL ms.  Moves the owner from the
# old key to the new one; nothing if the old one is gone.
_ROTATE = """
local folded = redis.call('GET', KEYS[1])
if not folded then
  return false
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], folded, 'PX', ARGV[1])
return folded
"""


class RedisTokens:
    """
    L{chat.sessions.ITokens} shared by every replica.
    """

    def __init__(
        self, redis: RedisClient, keys: Keys = KEYS, idle: float = SESSION_IDLE
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._idle_ms = int(idle * 1000)

    def _key(self, token: str) -> str:
        return self._keys.token(digest(token))

    async def issue(self, folded: str) -> str:
        token = new_token()
        await self._redis.execute("SET", self._key(token), folded, "PX", self._idle_ms)
        return token

    async def owner(self, token: str) -> str | None:
        folded = await self._redis.execute("GET", self._key(token))
        return str(folded) if folded else None

    async def rotate(self, token: str) -> tuple[str, str] | None:
        fresh = new_token()
        folded = await self._redis.eval(
            _ROTATE, [self._key(token), self._key(fresh)], [self._idle_ms]
        )
        if not folded:
            return None
        return str(folded), fresh

    async def touch(self, token: str) -> bool:
        renewed = await self._redis.execute("PEXPIRE", self._key(token), self._idle_ms)
        return bool(renewed)

    async def revoke(self, token: str) -> None:
        await self._redis.execute("DEL", self._key(token))
