"""
Tests for what the autoscaler reads from Redis and leaves there
(L{chat.census}), against the throwaway Redis server, with presence and
replica figures written by the cluster's own classes.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.census import BadCensus, Census, observation
from chat.cluster.keys import Keys
from chat.cluster.presence import RedisPresence
from chat.cluster.redisconn import RedisAddress, RedisClient, parse_redis_url
from chat.cluster.replicas import Figures, ReplicaStats
from chat.presence import Presence
from chat.scaling import Observation, Unreadable
from tests.servers import free_port, shared_redis

_prefixes = itertools.count(1)


def spawn(name: str, work: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(work)


class CensusTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        self.keys = Keys(f"census{next(_prefixes)}:")
        self.redis = RedisClient(reactor, parse_redis_url(shared_redis().url))
        await self.redis.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.redis.stop()))
        self.census = Census(self.redis, self.keys, decisions_kept=3)
        # The replicas' clocks: wall time, as a real replica's reactor has.
        self.clock = Clock()
        self.clock.advance(time.time())

    async def replica(self, server_id: str, age: float = 0.0) -> None:
        """
        Write figures for a replica, as written C{age} seconds ago.
        """
        clock = Clock()
        clock.advance(time.time() - age)
        figures = Figures(0, 0, 0, 0, False)
        stats = ReplicaStats(self.redis, clock, server_id, lambda: figures, self.keys)
        await stats.write()

    async def online(self, server_id: str, *names: str, ttl: float = 30.0) -> None:
        presence = RedisPresence(
            self.redis, self.clock, server_id, spawn, self.keys, ttl_seconds=ttl
        )
        for name in names:
            claimed = await presence.claim(name, Presence(name, server_id, 1.0))
            self.assertTrue(claimed)

    async def test_counts(self) -> None:
        """
        People are counted by the replica holding them; those held by a
        replica without figures are left out as orphans.
        """
        await self.replica("one")
        await self.replica("two")
        await self.replica("three")
        await self.online("one", "alice", "bob")
        await self.online("two", "carol")
        await self.online("ghost", "dave")
        reading = await self.census.read()
        assert isinstance(reading, Observation)
        self.assertEqual(reading.users, 3)
        self.assertEqual(reading.by_server, {"one": 2, "two": 1, "three": 0})
        self.assertEqual((reading.replicas, reading.orphans), (3, 1))
        assert reading.stats_age is not None
        self.assertLess(reading.stats_age, 2.0)

    async def test_expired_presence(self) -> None:
        """
        Presence that ran out is not counted, though its name is still in
        the index.
        """
        await self.replica("one")
        await self.online("one", "alice")
        await self.online("one", "bob", ttl=0.2)
        await deferLater(reactor, 0.4, lambda: None)
        self.assertEqual(await self.redis.execute("ZCARD", self.keys.online), 2)
        reading = await self.census.read()
        assert isinstance(reading, Observation)
        self.assertEqual(reading.users, 1)

    async def test_oldest_figures(self) -> None:
        """
        The age given is that of the least recently written figures.
        """
        await self.replica("one", age=1.0)
        await self.replica("two", age=40.0)
        reading = await self.census.read()
        assert isinstance(reading, Observation)
        assert reading.stats_age is not None
        self.assertTrue(39.0 < reading.stats_age < 42.0, reading.stats_age)

    async def test_no_replicas(self) -> None:
        """
        With no replica publishing figures there is no age, and nobody is
        counted.
        """
        await self.online("gone", "alice")
        reading = await self.census.read()
        self.assertEqual(
            reading,
            Observation(users=0, by_server={}, replicas=0, stats_age=None, orphans=1),
        )

    async def test_garbage(self) -> None:
        """
        A presence entry that is not JSON makes the reading unreadable rather
        than wrong.
        """
        await self.replica("one")
        await self.online("one", "alice")
        await self.redis.execute("SET", self.keys.presence("alice"), "not json")
        reading = await self.census.read()
        assert isinstance(reading, Unreadable)
        self.assertIn("Redis answered with an error", reading.reason)
        self.flushLoggedErrors()

    async def test_unreachable(self) -> None:
        """
        A Redis that cannot be reached gives an unreadable reading that says
        so.
        """
        offline = RedisClient(reactor, RedisAddress("127.0.0.1", free_port()))
        reading = await Census(offline, self.keys).read()
        assert isinstance(reading, Unreadable)
        self.assertIn("cannot read Redis", reading.reason)

    async def test_records(self) -> None:
        """
        Decisions are kept newest first, only the last few; the heartbeat
        has a TTL and goes on a clean stop.
        """
        for n in range(5):
            await self.census.record({"time": n, "action": "hold"})
        kept = await self.redis.execute("LRANGE", self.keys.scaler_decisions, 0, -1)
        self.assertEqual([json.loads(k)["time"] for k in kept], [4, 3, 2])
        await self.census.beat({"target": 2}, 60)
        key = self.keys.scaler_heartbeat
        self.assertEqual(
            json.loads(await self.redis.execute("GET", key)), {"target": 2}
        )
        ttl = await self.redis.execute("PTTL", key)
        self.assertTrue(55_000 < ttl <= 60_000, ttl)
        await self.census.withdraw()
        self.assertIsNone(await self.redis.execute("GET", key))


class ObservationTests(SynchronousTestCase):
    def test_bad_answer(self) -> None:
        """
        An answer that does not add up is refused.
        """
        for answer in ["", "[]", '{"now": 1}', '{"now": 1, "people": {"a": "x"}}']:
            with self.assertRaises(BadCensus):
                observation(answer)
