"""
What the dashboard knows about the system at one moment.

L{Overview.snapshot} reads everything at once: a ping of PostgreSQL and of
Redis, the account and message counts, who is online, each replica's figures
and the autoscaler's heartbeat and decisions.  Each part has its own time
limit and fails on its own: with Redis down the snapshot still has the
counts, with PostgreSQL down it still has the people online.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.admin import CHECK_TIMEOUT_SECONDS, CheckResult, run_check, within
from chat.cluster.keys import KEYS, Keys
from chat.cluster.presence import (
    LUA_NOW_MS,
    LUA_PRESENCE_ENTRIES,
    decode_presence,
)
from chat.cluster.redisconn import RedisClient
from chat.cluster.replicas import live_replicas
from chat.db import IDatabase
from chat.presence import Presence
from chat.storage import Store

# Replicas write their figures every 10 s; older figures than this mean a
# replica missed two writes in a row.
REPLICA_STALE_SECONDS = 25.0
DECISIONS_READ = 50

# KEYS: the index of people online.  ARGV: entry key prefix.  The entries
# of everyone whose presence has not run out; changes nothing.
_ONLINE = (
    LUA_NOW_MS
    + LUA_PRESENCE_ENTRIES
    + """
return presence_entries(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf'), ARGV[1])
"""
)


@dataclass(frozen=True)
class Replica:
    """
    One replica's figures as it last wrote them, and what they say.
    """

    id: str
    connections: int
    users: int
    messages_in: int
    messages_out: int
    started_at: float
    draining: bool
    updated_at: float
    age_seconds: float

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        if self.age_seconds > REPLICA_STALE_SECONDS:
            return "stale"
        return "up"

    @property
    def ready(self) -> bool:
        return self.status == "up"


@dataclass(frozen=True)
class Scaler:
    """
    The autoscaler as Redis shows it: its last poll, if its heartbeat key has
    not run out, and its recent decisions, newest first.
    """

    heartbeat: dict[str, Any] | None
    decisions: list[dict[str, Any]]

    @property
    def running(self) -> bool:
        return self.heartbeat is not None


@dataclass(frozen=True)
class Snapshot:
    """
    Everything read at C{time}; a part is C{None} when it could not be read.
    """

    time: float
    engine: str
    database: CheckResult
    redis: CheckResult
    total_users: int | None = None
    total_messages: int | None = None
    online: list[Presence] | None = None
    replicas: list[Replica] | None = None
    scaler: Scaler | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ready_replicas(self) -> int | None:
        if self.replicas is None:
            return None
        return sum(replica.ready for replica in self.replicas)

    @property
    def desired_replicas(self) -> int | None:
        """
        The size the autoscaler last chose, if it has chosen one.
        """
        if self.scaler is None:
            return None
        for source in [self.scaler.heartbeat, *self.scaler.decisions]:
            if source is not None:
                value = _number(source.get("target"))
                if value is not None:
                    return int(value)
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _json_object(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def replica_from_figures(server_id: str, fields: dict[str, str], now: float) -> Replica:
    """
    A L{Replica} from the hash that L{chat.cluster.replicas} writes.
    """

    def number(name: str) -> float:
        return _number(fields.get(name)) or 0.0

    updated_at = number("updated_at")
    return Replica(
        id=server_id,
        connections=int(number("connections")),
        users=int(number("users")),
        messages_in=int(number("messages_in")),
        messages_out=int(number("messages_out")),
        started_at=number("started_at"),
        draining=number("draining") != 0,
        updated_at=updated_at,
        age_seconds=max(0.0, now - updated_at),
    )


class Overview:
    """
    Reads the system's state for the dashboard.

    @param store: counts accounts and messages in the chat's database.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        clock: IReactorTime,
        database: IDatabase,
        store: Store,
        redis: RedisClient,
        keys: Keys = KEYS,
        timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self.clock = clock
        self.database = database
        self.store = store
        self.redis = redis
        self.keys = keys
        self.timeout = timeout

    @property
    def engine(self) -> str:
        """
        The database engine: C{postgresql} or C{sqlite}.
        """
        dialect = self.database.dialect
        return "postgresql" if dialect == "postgres" else dialect

    async def ping_database(self) -> CheckResult:
        return await run_check(self.clock, self.database.ping, self.timeout)

    async def ping_redis(self) -> CheckResult:
        return await run_check(
            self.clock, lambda: self.redis.execute("PING"), self.timeout
        )

    async def counts(self) -> tuple[int, int]:
        """
        How many accounts and how many messages there are.
        """
        return (await self.store.count_users(), await self.store.count_messages())

    async def online(self) -> list[Presence]:
        entries = await self.redis.eval(
            _ONLINE, [self.keys.online], [self.keys.presence_prefix]
        )
        found = []
        for entry in entries:
            try:
                found.append(decode_presence(entry))
            except (ValueError, KeyError, TypeError):
                self.log.warn("skipped a presence entry that is not valid JSON")
        return found

    async def replicas(self) -> list[Replica]:
        figures = await live_replicas(self.redis, self.keys)
        now = self.clock.seconds()
        return sorted(
            (replica_from_figures(id, fields, now) for id, fields in figures.items()),
            key=lambda replica: replica.id,
        )

    async def scaler(self) -> Scaler:
        heartbeat = await self.redis.execute("GET", self.keys.scaler_heartbeat)
        entries = await self.redis.execute(
            "LRANGE", self.keys.scaler_decisions, 0, DECISIONS_READ - 1
        )
        decisions = [d for d in map(_json_object, entries or []) if d is not None]
        return Scaler(_json_object(heartbeat), decisions)

    async def snapshot(self) -> Snapshot:
        """
        Read every part at once, each within the time limit.
        """
        parts = {
            "database": self.ping_database(),
            "redis": self.ping_redis(),
            "counts": self.counts(),
            "online": self.online(),
            "replicas": self.replicas(),
            "scaler": self.scaler(),
        }
        names = list(parts)
        outcomes = await gatherResults(
            [ensureDeferred(self._bounded(parts[name])) for name in names]
        )
        found = dict(zip(names, outcomes, strict=True))
        errors = {
            name: str(outcome)
            for name, outcome in found.items()
            if isinstance(outcome, Exception)
        }

        def part(name: str) -> Any:
            outcome = found[name]
            return None if isinstance(outcome, Exception) else outcome

        counts = part("counts") or (None, None)
        return Snapshot(
            time=self.clock.seconds(),
            engine=self.engine,
            database=found["database"],
            redis=found["redis"],
            total_users=counts[0],
            total_messages=counts[1],
            online=part("online"),
            replicas=part("replicas"),
            scaler=part("scaler"),
            errors=errors,
        )

    async def _bounded(self, work: Any) -> Any:
        """
        The result of C{work}, or the exception it raised or timed out with.
        """
        try:
            return await within(self.clock, self.timeout, work)
        except Exception as e:
            return e
