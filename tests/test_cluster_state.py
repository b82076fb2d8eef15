"""
Tests for the state that cluster mode keeps in Redis: presence (one contract,
run against L{LocalPresence} and L{RedisPresence}), session tokens, replica
figures, and the pieces they rest on (Redis URLs, the event codec, the
delivery log).

The Redis tests use the throwaway server of L{tests.servers}, each under its
own key prefix, with a L{task.Clock} driving the heartbeats.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.cluster.codec import BadEnvelope, Envelope, decode, encode
from chat.cluster.keys import Keys
from chat.cluster.presence import RedisPresence
from chat.cluster.redisconn import (
    RedisAddress,
    RedisClient,
    RedisSubscriber,
    RedisUnavailable,
    parse_redis_url,
)
from chat.cluster.replicas import Figures, ReplicaStats, live_replicas
from chat.cluster.tokens import RedisTokens
from chat.events import (
    DeliveryLog,
    Event,
    GroupEvent,
    MessageEvent,
    NoticeEvent,
    PresenceEvent,
)
from chat.presence import IPresence, LocalPresence, Presence
from chat.records import Kind, Message
from tests.servers import _redis_server_binary, free_port, shared_redis

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

TEST_TIMEOUT_SECONDS = 30
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.01
_prefixes = itertools.count(1)


def alice(server: str = "one", since: float = 100.0) -> Presence:
    return Presence("Alice", server, since)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """
    Wait, on the real reactor, until C{check} holds.
    """
    deadline = reactor.seconds() + WAIT_SECONDS
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT_SECONDS}s")
        await deferLater(reactor, POLL_SECONDS, lambda: None)


async def redis_client(case: TestCase) -> RedisClient:
    """
    A connected client of the shared test Redis, closed after the test.
    """
    client = RedisClient(reactor, parse_redis_url(shared_redis().url))
    await client.connect()
    case.addCleanup(lambda: Deferred.fromCoroutine(client.stop()))
    return client


def spawn(name: str, work: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(work)


class ParseRedisUrlTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """
        C{redis://host:port/db} names a host, a port and a database.
        """
        self.assertEqual(
            parse_redis_url("redis://cache.local:6380/3"),
            RedisAddress(host="cache.local", port=6380, db=3),
        )

    def test_defaults(self) -> None:
        """
        The port defaults to 6379 and the database to 0.
        """
        self.assertEqual(parse_redis_url("redis://cache"), RedisAddress("cache"))

    def test_password(self) -> None:
        """
        A password in the URL is kept, and left out of the address's text.
        """
        address = parse_redis_url("redis://:s3cret@cache:7000/1")
        self.assertEqual(address.password, "s3cret")
        self.assertNotIn("s3cret", str(address))
        self.assertNotIn("s3cret", repr(address))

    def test_unix(self) -> None:
        """
        C{unix:/path} names a socket, with the database in C{?db=}.
        """
        self.assertEqual(
            parse_redis_url("unix:/run/redis.sock"),
            RedisAddress(path="/run/redis.sock"),
        )
        self.assertEqual(
            parse_redis_url("unix:/run/redis.sock?db=5"),
            RedisAddress(path="/run/redis.sock", db=5),
        )

    def test_rejected(self) -> None:
        """
        Other schemes, relative socket paths, and databases or ports that are
        not numbers are refused.
        """
        for url in [
            "http://cache",
            "unix:redis.sock",
            "redis://cache/zero",
            "redis://cache:port/0",
            "unix:/run/redis.sock?db=x",
        ]:
            self.assertRaises(ValueError, parse_redis_url, url)


class CodecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        Every kind of event comes back equal from its JSON.
        """
        message = Message(
            7, Kind.GROUP, "Alice", "#tea", "hello", datetime(2026, 12, 4, tzinfo=UTC)
        )
        events: list[Event] = [
            MessageEvent(message),
            PresenceEvent("Alice", True),
            GroupEvent("invited", "tea", "Bob"),
            NoticeEvent("going down", "maintenance", 2.0),
        ]
        for event in events:
            envelope = Envelope("one", event, ["alice", "bob"])
            self.assertEqual(decode(encode(envelope)), envelope)
        self.assertEqual(
            decode(encode(Envelope("one", PresenceEvent("Bob", False)))).to, None
        )

    def test_replace(self) -> None:
        """
        An envelope may carry a replacement instead of an event.
        """
        envelope = Envelope("one", replace="alice")
        self.assertEqual(decode(encode(envelope)), envelope)

    def test_bad(self) -> None:
        """
        Text that is not an envelope raises L{BadEnvelope}.
        """
        for text in [
            "",
            "[]",
            '{"origin": "x"}',
            '{"origin": "x", "event": {"type": "nope"}}',
            '{"origin": "x", "event": {"type": "message", "message": {}}}',
        ]:
            self.assertRaises(BadEnvelope, decode, text)


class DeliveryLogTests(SynchronousTestCase):
    def test_once(self) -> None:
        """
        An id is new once; ids up to the start count as shown already.
        """
        log = DeliveryLog(10)
        self.assertFalse(log.first_time(10))
        self.assertTrue(log.first_time(12))
        self.assertTrue(log.first_time(11))
        self.assertFalse(log.first_time(12))
        self.assertEqual(log.last, 12)

    def test_bounded(self) -> None:
        """
        Past its memory the log forgets the lowest ids and raises its horizon,
        so a forgotten id still counts as shown.
        """
        log = DeliveryLog(0, memory=3)
        for message_id in [5, 1, 3, 4]:
            self.assertTrue(log.first_time(message_id))
        self.assertEqual(log.horizon, 1)
        self.assertFalse(log.first_time(1))
        self.assertTrue(log.first_time(2))
        self.assertEqual(log.horizon, 2)


class PresenceContract(_Base):
    """
    What every L{IPresence} promises.

    A subclass provides L{replica}: the presence as one replica sees it.
    """

    timeout = TEST_TIMEOUT_SECONDS

    async def replica(self, server_id: str) -> IPresence:
        raise NotImplementedError()

    async def test_claim(self) -> None:
        """
        A claimed person is online and listed, with their entry.
        """
        one = await self.replica("one")
        self.assertFalse(await one.is_online("alice"))
        self.assertTrue(await one.claim("alice", alice()))
        self.assertTrue(await one.is_online("alice"))
        self.assertEqual(await one.online(), [alice()])

    async def test_claim_twice(self) -> None:
        """
        A person already online cannot be claimed again, from any replica.
        """
        one, two = await self.replica("one"), await self.replica("two")
        self.assertTrue(await one.claim("alice", alice("one")))
        self.assertFalse(await one.claim("alice", alice("one")))
        self.assertFalse(await two.claim("alice", alice("two")))
        self.assertEqual(await two.online(), [alice("one")])

    async def test_race(self) -> None:
        """
        Of two replicas claiming the same person at once, exactly one wins.
        """
        one, two = await self.replica("one"), await self.replica("two")
        results = await gatherResults(
            [
                Deferred.fromCoroutine(one.claim("alice", alice("one"))),
                Deferred.fromCoroutine(two.claim("alice", alice("two"))),
            ]
        )
        self.assertEqual(sorted(results), [False, True])

    async def test_release(self) -> None:
        """
        The holder's release takes a person offline; another replica's
        release leaves them online.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.release("alice", "two")
        self.assertTrue(await one.is_online("alice"))
        await one.release("alice", "one")
        self.assertFalse(await one.is_online("alice"))
        self.assertEqual(await two.online(), [])
        self.assertTrue(await two.claim("alice", alice("two")))

    async def test_release_unknown(self) -> None:
        """
        Releasing someone who is offline does nothing.
        """
        one = await self.replica("one")
        await one.release("nobody", "one")
        self.assertEqual(await one.online(), [])

    async def test_take_over(self) -> None:
        """
        A take-over moves a person to the new replica, which then holds them.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.take_over("alice", alice("two", 200.0))
        self.assertEqual(await one.online(), [alice("two", 200.0)])
        await one.release("alice", "one")
        self.assertTrue(await one.is_online("alice"))

    async def test_many(self) -> None:
        """
        Everyone claimed is listed, whichever replica holds them.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.claim("bob", Presence("Bob", "two", 5.0))
        listed = sorted(await one.online(), key=lambda p: p.name)
        self.assertEqual(listed, [alice("one"), Presence("Bob", "two", 5.0)])


class LocalPresenceTests(PresenceContract, TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.presence = LocalPresence()

    async def replica(self, server_id: str) -> IPresence:
        return self.presence


class RedisPresenceTests(PresenceContract, TestCase):
    """
    The contract and the heartbeat, against a real Redis.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.keys = Keys(f"test{next(_prefixes)}:")
        self.clock = Clock()
        self.redis = await redis_client(self)
        self.lost: list[str] = []

    async def replica(
        self, server_id: str, ttl: float = 30.0, listening: bool = True
    ) -> RedisPresence:
        """
        The presence of a replica that listens to its channel, as a live
        replica does, unless told otherwise.
        """
        if listening:
            await self.listen(server_id)
        presence = RedisPresence(
            self.redis,
            self.clock,
            server_id,
            spawn,
            self.keys,
            ttl_seconds=ttl,
            on_lost=self.lost.append,
        )
        await presence.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(presence.stop()))
        return presence

    async def listen(self, server_id: str) -> RedisSubscriber:
        channel = self.keys.replica(server_id)
        subscriber = RedisSubscriber(
            reactor, parse_redis_url(shared_redis().url), [channel], lambda c, m: None
        )
        await subscriber.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(subscriber.stop()))
        return subscriber

    async def ttl_ms(self, folded: str) -> int:
        ttl: int = await self.redis.execute("PTTL", self.keys.presence(folded))
        return ttl

    async def test_heartbeat_renews(self) -> None:
        """
        Every heartbeat renews the entries the replica holds, so a person
        who stays connected never runs out.
        """
        one = await self.replica("one")
        await one.claim("alice", alice())
        await self.redis.execute("PEXPIRE", self.keys.presence("alice"), 2000)
        self.clock.advance(10)

        async def renewed() -> bool:
            return await self.ttl_ms("alice") > 20_000

        await eventually(renewed, "renewal")

    async def test_dead_replica_expires(self) -> None:
        """
        Entries that nobody renews run out, drop out of the list, and the
        person can be claimed elsewhere.
        """
        one = await self.replica("one", ttl=0.2)
        two = await self.replica("two")
        await one.claim("alice", alice("one"))

        async def gone() -> bool:
            return not await two.is_online("alice")

        await eventually(gone, "expiry")
        self.assertEqual(await two.online(), [])
        self.assertEqual(await self.redis.execute("ZCARD", self.keys.online), 0)
        self.assertTrue(await two.claim("alice", alice("two")))

    async def test_dead_replica_replaced(self) -> None:
        """
        A claim replaces the entry of a replica that no longer listens to its
        channel, as a killed replica does not, without waiting for the TTL.
        """
        one = await self.replica("one")
        two = await self.replica("two")
        await one.claim("alice", alice("one"))
        self.assertFalse(await two.claim("alice", alice("two")))
        dead = await self.replica("three", listening=False)
        await dead.claim("bob", Presence("Bob", "three", 1.0))
        self.assertTrue(await two.claim("bob", Presence("Bob", "two", 2.0)))
        self.assertEqual(
            await two.where(["alice", "bob"]), {"alice": "one", "bob": "two"}
        )

    async def test_rebuilt(self) -> None:
        """
        A heartbeat puts back the entries of its people that Redis lost.
        """
        one = await self.replica("one")
        await one.claim("alice", alice())
        await self.redis.execute("DEL", self.keys.presence("alice"), self.keys.online)
        await one.refresh()
        self.assertEqual(await one.online(), [alice()])
        self.assertGreater(await self.ttl_ms("alice"), 20_000)

    async def test_held_elsewhere(self) -> None:
        """
        A heartbeat that finds its person held by another replica gives them
        up and says so.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.take_over("alice", alice("two"))
        await one.refresh()
        self.assertEqual(self.lost, ["alice"])
        self.assertNotIn("alice", one.held)
        self.assertEqual(await one.online(), [alice("two")])

    async def test_stop_releases(self) -> None:
        """
        A replica that stops cleanly takes its people offline at once.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.claim("bob", Presence("Bob", "two", 1.0))
        await one.stop()
        self.assertEqual(await two.online(), [Presence("Bob", "two", 1.0)])

    async def test_restart_forgets(self) -> None:
        """
        A replica starting under the id of an earlier run drops that run's
        entries and no others.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.claim("bob", Presence("Bob", "two", 1.0))
        await self.replica("one")
        self.assertEqual(await two.online(), [Presence("Bob", "two", 1.0)])

    async def test_where(self) -> None:
        """
        C{where} names the replica of each person online, and skips the rest.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await one.claim("alice", alice("one"))
        await two.claim("bob", Presence("Bob", "two", 1.0))
        self.assertEqual(
            await one.where(["alice", "bob", "carol"]), {"alice": "one", "bob": "two"}
        )

    async def test_release_while_unreachable(self) -> None:
        """
        A release that cannot reach Redis does not fail the logout; the
        person is no longer renewed.
        """
        offline = RedisClient(reactor, RedisAddress("127.0.0.1", free_port()))
        presence = RedisPresence(offline, self.clock, "one", spawn, self.keys)
        presence.held["alice"] = alice()
        await presence.release("alice", "one")
        self.assertEqual(presence.held, {})
        with self.assertRaises(RedisUnavailable):
            await presence.claim("bob", Presence("Bob", "one", 1.0))


class RedisTokensTests(TestCase):
    timeout = TEST_TIMEOUT_SECONDS

    async def setUp(self) -> None:  # type: ignore[override]
        self.keys = Keys(f"test{next(_prefixes)}:")
        self.redis = await redis_client(self)

    async def test_life(self) -> None:
        """
        A token is rotated once into a new one; touched while alive; gone
        once revoked.  Only digests reach Redis.
        """
        tokens = RedisTokens(self.redis, self.keys)
        first = await tokens.issue("alice")
        stored = await self.redis.execute("KEYS", self.keys.token("*"))
        self.assertNotIn(first, "".join(stored))
        rotated = await tokens.rotate(first)
        assert rotated is not None
        self.assertEqual(rotated[0], "alice")
        self.assertIsNone(await tokens.rotate(first))
        self.assertTrue(await tokens.touch(rotated[1]))
        await tokens.revoke(rotated[1])
        self.assertFalse(await tokens.touch(rotated[1]))

    async def test_idle(self) -> None:
        """
        A token left idle runs out.
        """
        tokens = RedisTokens(self.redis, self.keys, idle=0.1)
        token = await tokens.issue("alice")

        async def expired() -> bool:
            return await tokens.rotate(token) is None

        await eventually(expired, "token expiry")


class ReplicaStatsTests(TestCase):
    timeout = TEST_TIMEOUT_SECONDS

    async def setUp(self) -> None:  # type: ignore[override]
        self.keys = Keys(f"test{next(_prefixes)}:")
        self.redis = await redis_client(self)
        self.clock = Clock()
        self.clock.advance(1000)

    def stats(self, server_id: str, draining: bool = False) -> ReplicaStats:
        figures = Figures(3, 2, 10, 20, draining)
        return ReplicaStats(
            self.redis, self.clock, server_id, lambda: figures, self.keys
        )

    async def test_written_and_withdrawn(self) -> None:
        """
        Each replica's figures are listed with a TTL until it withdraws them.
        """
        one, two = self.stats("one"), self.stats("two", draining=True)
        await one.write()
        await two.write()
        found = await live_replicas(self.redis, self.keys)
        self.assertEqual(sorted(found), ["one", "two"])
        self.assertEqual(
            found["one"],
            {
                "connections": "3",
                "users": "2",
                "messages_in": "10",
                "messages_out": "20",
                "started_at": "1000.000000",
                "draining": "0",
                "updated_at": "1000.000000",
            },
        )
        self.assertEqual(found["two"]["draining"], "1")
        ttl = await self.redis.execute("PTTL", self.keys.replica("one"))
        self.assertGreater(ttl, 20_000)
        await one.stop()
        self.assertEqual(list(await live_replicas(self.redis, self.keys)), ["two"])

    async def test_heartbeat(self) -> None:
        """
        The figures are written at start and on every heartbeat.
        """
        one = self.stats("one")
        one.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(one.stop()))

        async def listed() -> bool:
            return "one" in await live_replicas(self.redis, self.keys)

        await eventually(listed, "first write")
        await self.redis.execute("DEL", self.keys.replica("one"))
        self.clock.advance(10)
        await eventually(listed, "heartbeat write")


class RedisLinkTests(TestCase):
    timeout = TEST_TIMEOUT_SECONDS

    async def test_refused(self) -> None:
        """
        Connecting where nothing listens fails with L{RedisUnavailable}
        naming the address, and leaves nothing running.
        """
        client = RedisClient(reactor, RedisAddress("127.0.0.1", free_port()))
        with self.assertRaises(RedisUnavailable) as caught:
            await client.connect()
        self.assertIn("cannot connect to Redis at 127.0.0.1", str(caught.exception))
        self.assertFalse(client.connected)

    async def test_down(self) -> None:
        """
        A command sent while Redis is down fails at once, and works again
        once Redis is back.
        """
        server = shared_redis()
        client = await redis_client(self)
        self.addCleanup(server.start)
        server.stop()
        with self.assertRaises(RedisUnavailable):
            await client.execute("PING")
        with self.assertRaises(RedisUnavailable):
            await client.execute("PING")
        server.start()

        async def back() -> bool:
            return client.connected

        await eventually(back, "reconnection")
        self.assertEqual(await client.execute("PING"), "PONG")

    async def test_subscriber(self) -> None:
        """
        The subscriber hears what is published on its channels, and its pings
        are answered without the connection being made again.
        """
        heard: list[tuple[str, str]] = []
        subscriber = RedisSubscriber(
            reactor,
            parse_redis_url(shared_redis().url),
            ["test:a", "test:b"],
            lambda channel, text: heard.append((channel, text)),
            ping_seconds=0.05,
        )
        pings: list[None] = []
        subscriber.on_ping.append(lambda: pings.append(None))
        connects: list[None] = []
        subscriber.on_connect.append(lambda: connects.append(None))
        await subscriber.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(subscriber.stop()))
        client = await redis_client(self)
        await client.execute("PUBLISH", "test:b", "hello")
        await client.execute("PUBLISH", "test:c", "elsewhere")

        async def pinged() -> bool:
            return len(pings) >= 3

        await eventually(pinged, "three pings")
        self.assertEqual(heard, [("test:b", "hello")])
        self.assertEqual(len(connects), 1)

    async def test_unix_socket(self) -> None:
        """
        A C{unix:} URL reaches a Redis on a Unix socket, in the database it
        names.
        """
        directory = tempfile.mkdtemp(prefix="chat-test-redis-unix-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "redis.sock")
        command = [str(_redis_server_binary()), "--port", "0", "--unixsocket", path]
        command += ["--save", "", "--appendonly", "no", "--dir", directory]
        server = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)

        async def listening() -> bool:
            return os.path.exists(path)

        await eventually(listening, "the socket")
        client = RedisClient(reactor, parse_redis_url(f"unix:{path}?db=3"))
        await client.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(client.stop()))
        self.assertIn(" db=3 ", await client.execute("CLIENT", "INFO"))
