"""
A running chat system for the dashboard's tests: a fresh PostgreSQL database,
a Redis server of its own, real C{twistd -n chat} replicas, and the dashboard
in this process or as a real C{twistd -n chat-dashboard}.

The Redis server belongs to one test, so the test can stop it, and nothing
that killed replicas leave behind reaches another test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from chat.cluster.keys import KEYS
from chat.cluster.presence import encode_presence
from chat.cluster.redisconn import RedisClient, parse_redis_url
from chat.dashboard_tap import DashboardService
from chat.presence import Presence
from tests.httpclient import Answer, fetch
from tests.process import (
    PASSWORD,
    TWISTD,
    DaemonProcess,
    LineClient,
    connect,
    start_daemon,
)
from tests.servers import LOCALHOST, PostgresServer, RedisServer, shared_postgres

# The dashboard samples fast in tests, so that charts fill within seconds.
SAMPLE_SECONDS = 0.5
SCALER_HEARTBEAT_TTL_MS = 60_000
POLL_SECONDS = 0.25
# Replicas write their figures every 10 s.
FIGURES_BOUND_SECONDS = 25.0

# KEYS: presence entry, index.  ARGV: entry JSON, TTL ms, folded name.
_PRESENCE = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""


class DashboardProcess(DaemonProcess):
    """
    A C{twistd -n chat-dashboard} child, serving on 127.0.0.1.
    """

    @property
    def command(self) -> list[str]:
        command = [*TWISTD, "-n", "--pidfile=", "chat-dashboard"]
        if self.listen:
            command += ["--listen", f"tcp:{self.port}:interface={LOCALHOST}"]
        return command + self.args

    @property
    def base(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"


class System:
    """
    One test's chat system.  Build it in C{setUp}: it starts servers.
    """

    def __init__(self, case: TestCase, postgres: PostgresServer | None = None) -> None:
        self.case = case
        self.postgres = postgres or shared_postgres()
        self.database = self.postgres.create_database()
        case.addCleanup(self.postgres.drop_database, self.database)
        self.redis_server = RedisServer()
        case.addCleanup(self.redis_server.destroy)
        self.redis_url = self.redis_server.url
        self.replicas: dict[str, DaemonProcess] = {}
        self.dashboards: list[DashboardService] = []

    async def replica(self, server_id: str, *extra: str) -> DaemonProcess:
        args = ["--database", self.database, "--redis", self.redis_url]
        args += ["--server-id", server_id, "--drain", "0", *extra]
        replica = await start_daemon(self.case, args)
        self.replicas[server_id] = replica
        return replica

    async def person(self, server_id: str, name: str) -> LineClient:
        """
        A new account C{name}, logged in on replica C{server_id}.
        """
        client = await connect(self.replicas[server_id].port)
        client.send(f"/signup {name} {PASSWORD}")
        await client.expect(f"Welcome, {name}!")
        self.case.addCleanup(_close, client)
        return client

    async def redis(self) -> RedisClient:
        """
        A Redis connection of the test's own, closed when the test ends.
        """
        client = RedisClient(reactor, parse_redis_url(self.redis_url))
        await client.connect()
        self.case.addCleanup(lambda: Deferred.fromCoroutine(client.stop()))
        return client

    async def dashboard(self, sample_seconds: float = SAMPLE_SECONDS) -> str:
        """
        Start the dashboard in this process; return its base URL.
        """
        service = DashboardService(
            reactor,
            f"tcp:0:interface={LOCALHOST}",
            self.redis_url,
            self.database,
            sample_seconds,
        )
        service.startService()
        self.dashboards.append(service)
        self.case.addCleanup(self.stop_dashboards)
        await service.ready
        assert service.port is not None
        return f"http://{LOCALHOST}:{service.port.getHost().port}"

    async def stop_dashboards(self) -> None:
        """
        Stop the dashboards started in this process.
        """
        while self.dashboards:
            await self.dashboards.pop().stopService()

    async def dashboard_process(self, *extra: str) -> DashboardProcess:
        """
        Start C{twistd -n chat-dashboard} for this system.
        """
        args = ["--redis", self.redis_url, "--database", self.database]
        args += ["--sample-seconds", str(SAMPLE_SECONDS), *extra]
        process = DashboardProcess(args)
        self.case.addCleanup(lambda: Deferred.fromCoroutine(process.destroy()))
        await process.start()
        return process


async def _close(client: LineClient) -> None:
    if client.transport is not None and client.transport.connected:
        client.transport.loseConnection()
        await client.closed


async def record_decision(redis: RedisClient, decision: dict[str, Any]) -> None:
    """
    Keep a decision as the autoscaler does: newest first in a capped list.
    """
    await redis.execute("LPUSH", KEYS.scaler_decisions, json.dumps(decision))
    await redis.execute("LTRIM", KEYS.scaler_decisions, 0, 99)


async def scaler_heartbeat(redis: RedisClient, poll: dict[str, Any]) -> None:
    """
    Write the autoscaler's heartbeat, with a TTL, as the autoscaler does.
    """
    await redis.execute(
        "SET", KEYS.scaler_heartbeat, json.dumps(poll), "PX", SCALER_HEARTBEAT_TTL_MS
    )


async def put_presence(
    redis: RedisClient, folded: str, presence: Presence, ttl_ms: int = 120_000
) -> None:
    """
    Mark someone online as a replica would, whatever their name holds.
    """
    await redis.eval(
        _PRESENCE,
        [KEYS.presence(folded), KEYS.online],
        [encode_presence(presence), ttl_ms, folded],
    )


def names_of(online: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(person["name"] for person in online)


async def until(
    url: str, holds: Callable[[Answer], bool], what: str, bound: float = 15.0
) -> Answer:
    """
    GET C{url} until the answer satisfies C{holds}; fail after C{bound} s.
    """
    deadline = reactor.seconds() + bound
    while True:
        answer = await fetch(url)
        if holds(answer):
            return answer
        if reactor.seconds() > deadline:
            raise AssertionError(
                f"{what}: not within {bound}s; last answer {answer.code}: {answer.text}"
            )
        await deferLater(reactor, POLL_SECONDS, lambda: None)
