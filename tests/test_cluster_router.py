"""
Two replicas in one process, sharing a real PostgreSQL database and a real
Redis: every feature that crosses replicas, and what happens when Redis or
PostgreSQL restarts in the middle of a conversation.

Each replica is a whole chat service (store, cluster presence and router,
session tokens) driven through L{StringTransport}s as in L{tests.harness};
only the heartbeats run on a L{task.Clock}.  Events that cross over Redis
arrive asynchronously, so tests wait for them on the real reactor, within a
bound.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from chat.cluster.keys import Keys
from chat.cluster.node import Cluster
from chat.cluster.redisconn import RedisClient, parse_redis_url
from chat.factory import ChatFactory, ConnectionRegistry
from chat.passwords import Passwords, cheap_hasher
from chat.postgres import PostgresDatabase
from chat.schema import migrate
from chat.service import ChatError, ChatService, Login
from chat.storage import Store
from tests.harness import START, Client
from tests.servers import shared_postgres, shared_redis

TEST_TIMEOUT_SECONDS = 60
ARRIVAL_SECONDS = 10.0
# How long to go on listening after an arrival, to catch a second copy.
QUIET_SECONDS = 0.5
POLL_SECONDS = 0.01
PASSWORD = "password123"
_prefixes = itertools.count(1)


class Replica:
    """
    One chat replica in this process, shaped like L{tests.harness.Harness}
    so that L{Client} can drive it.
    """

    def __init__(self, server_id: str, database: str, keys: Keys) -> None:
        self.server_id = server_id
        self.clock = Clock()
        self.clock.advance(START)
        self.db = PostgresDatabase(reactor, database)
        self.passwords = Passwords(reactor, cheap_hasher())
        self.registry = ConnectionRegistry()
        self.store = Store(self.db)
        self.cluster = Cluster(
            reactor,
            shared_redis().url,
            server_id,
            self.store,
            self.registry,
            keys=keys,
            clock=self.clock,
        )
        # Messages cross Redis in real time, so the wait for one that is
        # missing runs on real time too.
        self.cluster.router.in_order.clock = reactor
        self.service = ChatService(
            self.store,
            self.cluster.presence,
            self.cluster.router,
            self.passwords,
            self.clock,
            server_id,
            self.cluster.tokens,
        )
        self.factory = ChatFactory(self.service, self.registry)

    async def start(self) -> None:
        await self.db.start()
        await migrate(self.db, "2026-12-04T15:00:00+00:00")
        self.passwords.start()
        await self.cluster.start()

    async def stop(self) -> None:
        for connection in list(self.registry.connections):
            connection.transport.loseConnection()
            connection.connectionLost()
        await self.settle()
        await self.settle()
        await self.cluster.stop()
        self.passwords.stop()
        await self.db.stop()

    async def settle(self) -> None:
        await DeferredList(self.registry.pending())

    def connect(self) -> Client:
        return Client(cast(Any, self))

    async def user(self, name: str) -> Client:
        """
        A new connection with a freshly signed-up, logged-in user.
        """
        client = self.connect()
        client.output()
        lines = await client.send(f"/signup {name} {PASSWORD}")
        assert lines and lines[0].startswith("Welcome"), lines
        return client


class Listener:
    """
    Everything one client was sent, kept across reads.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.text = ""

    def read(self) -> str:
        self.text += self.client.output().decode("utf-8")
        return self.text

    def count(self, text: str) -> int:
        return self.read().count(text)

    async def arrives(self, text: str) -> None:
        """
        Wait until C{text} has been sent to the client.
        """
        deadline = reactor.seconds() + ARRIVAL_SECONDS
        while text not in self.read():
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"{text!r} did not arrive within {ARRIVAL_SECONDS}s;"
                    f" got {self.text!r}"
                )
            await deferLater(reactor, POLL_SECONDS, lambda: None)

    async def once(self, text: str) -> None:
        """
        Wait until C{text} arrives, then make sure it does not come again.
        """
        await self.arrives(text)
        await deferLater(reactor, QUIET_SECONDS, lambda: None)
        self.assertEqual(self.count(text), 1)

    def assertEqual(self, found: int, expected: int) -> None:
        if found != expected:
            raise AssertionError(f"seen {found} times, not {expected}: {self.text!r}")


class TwoReplicaTests(TestCase):
    """
    Two replicas, C{one} and C{two}, on a fresh database and key prefix.
    """

    timeout = TEST_TIMEOUT_SECONDS

    async def setUp(self) -> None:  # type: ignore[override]
        postgres = shared_postgres()
        database = postgres.create_database()
        self.addCleanup(postgres.drop_database, database)
        self.keys = keys = Keys(f"router{next(_prefixes)}:")
        self.one = Replica("one", database, keys)
        self.two = Replica("two", database, keys)
        for replica in (self.one, self.two):
            await replica.start()
            self.addCleanup(lambda r=replica: Deferred.fromCoroutine(r.stop()))

    async def test_private(self) -> None:
        """
        A private message reaches its recipient on the other replica.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        self.assertIn(
            "alice -> bob: hello", "".join(await alice.send("/msg bob hello"))
        )
        await bob.once("alice (private): hello")

    async def test_broadcast(self) -> None:
        """
        A broadcast reaches everyone on both replicas once, the sender's own
        replica included.
        """
        alice = await self.one.user("alice")
        carol = Listener(await self.one.user("carol"))
        bob = Listener(await self.two.user("bob"))
        await alice.send("/msg * hi all")
        await bob.once("alice to everyone: hi all")
        await carol.once("alice to everyone: hi all")

    async def test_group(self) -> None:
        """
        An invitation and a group message reach a member on the other replica.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        await alice.send("/group create tea")
        await alice.send("/group invite tea bob")
        await bob.once("* alice added you to #tea")
        await alice.send("/msg #tea brewing")
        await bob.once("alice in #tea: brewing")

    async def test_presence(self) -> None:
        """
        A login and a logout on one replica are seen on the other, and both
        replicas list everyone online.
        """
        bob = await self.two.user("bob")
        await bob.send("/mode json")
        listener = Listener(bob)
        alice = await self.one.user("alice")
        await listener.once('{"type":"presence","user":"alice","online":true}')
        who = "".join(await bob.send("/who"))
        self.assertIn('"alice"', who)
        self.assertIn('"bob"', who)
        await alice.disconnect()
        await listener.once('{"type":"presence","user":"alice","online":false}')

    async def test_login_race(self) -> None:
        """
        Two replicas logging the same person in at once: exactly one wins,
        the other says the person is online elsewhere.
        """
        signup = await self.one.user("alice")
        await signup.send("/quit")
        await signup.disconnect()
        results = await DeferredList(
            [
                Deferred.fromCoroutine(self.one.service.login("alice", PASSWORD)),
                Deferred.fromCoroutine(self.two.service.login("alice", PASSWORD)),
            ],
            consumeErrors=True,
        )
        logins = [value for ok, value in results if ok]
        errors = [value.value for ok, value in results if not ok]
        self.assertEqual(len(logins), 1)
        self.assertIsInstance(logins[0], Login)
        self.assertEqual(len(errors), 1)
        self.assertIsInstance(errors[0], ChatError)
        self.assertEqual(errors[0].code, "already_online")
        for replica in (self.one, self.two):
            await replica.service.logout(logins[0])

    async def test_resume_elsewhere(self) -> None:
        """
        A session begun on one replica resumes on the other, and the old
        connection is told and closed.
        """
        alice = await self.one.user("alice")
        lines = await alice.send("/msg bob nobody")
        self.assertTrue(lines)
        token = alice.protocol.login.token if alice.protocol.login else ""
        old = Listener(alice)
        again = self.two.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("Welcome back, alice!"), lines)
        await old.arrives("your session was resumed elsewhere")
        self.assertTrue(alice.transport.disconnecting)
        online = await self.two.cluster.presence.where(["alice"])
        self.assertEqual(online, {"alice": "two"})

    async def test_redis_restart(self) -> None:
        """
        Through a Redis restart people stay connected; a message sent while
        Redis was down arrives once it is back, exactly once; presence is
        rebuilt; a sign-up while it is down is stored and says so, and a
        login while it is down gets a clear error.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        await alice.send("/msg bob before")
        await bob.once("alice (private): before")

        redis = shared_redis()
        self.addCleanup(redis.start)
        redis.stop()
        sent = "".join(await alice.send("/msg bob while down"))
        self.assertIn("alice -> bob: while down", sent)
        carol = self.two.connect()
        stored = "".join(await carol.send(f"/signup carol {PASSWORD}"))
        self.assertIn("error: your account 'carol' was created", stored)
        refused = "".join(await carol.send(f"/login carol {PASSWORD}"))
        self.assertIn(
            "error: the server cannot reach its shared state (Redis);"
            " try again shortly",
            refused,
        )
        redis.start()
        back = reactor.seconds()

        await bob.arrives("alice (private): while down")
        print(f"\ncaught up {reactor.seconds() - back:.2f}s after Redis came back")
        await bob.once("alice (private): while down")
        await alice.send("/msg bob after")
        await bob.once("alice (private): after")
        for client in (alice, bob.client):
            self.assertFalse(client.transport.disconnecting)
        online = await self.one.cluster.presence.where(["alice", "bob"])
        self.assertEqual(online, {"alice": "one", "bob": "two"})

    async def test_publisher_cut_off(self) -> None:
        """
        A message that its replica could not publish, because that replica
        alone lost Redis for a moment, is published again once it is back.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        redis = await self.redis_client()
        connection = await self.one.cluster.redis.execute("CLIENT", "ID")
        await redis.execute("CLIENT", "KILL", "ID", connection)
        await alice.send("/msg bob cut off")
        await bob.once("alice (private): cut off")

    async def test_presence_missing(self) -> None:
        """
        A message reaches its recipient even while Redis has lost their
        presence: messages go to every replica, whoever holds the person.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        redis = await self.redis_client()
        await redis.execute("DEL", self.keys.presence("bob"))
        await alice.send("/msg bob still reached")
        await bob.once("alice (private): still reached")

    async def test_unpublished_message_filled_in(self) -> None:
        """
        A message that its replica stored but never published, as when the
        replica dies between its commit and its PUBLISH, reaches its
        recipient elsewhere as soon as a later message does, and before it.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        found = [await self.one.store.find_user(name) for name in ("alice", "bob")]
        sender, recipient = (f[0] for f in found if f is not None)
        await self.one.store.add_private(
            sender, recipient, "never published", datetime.now(UTC)
        )
        await alice.send("/msg bob published")
        await bob.arrives("alice (private): published")
        text = bob.read()
        self.assertIn("alice (private): never published", text)
        self.assertLess(text.index("never published"), text.index("published\r"))
        self.assertEqual(self.two.cluster.router.in_order.filled, 1)

    async def redis_client(self) -> RedisClient:
        client = RedisClient(reactor, parse_redis_url(shared_redis().url))
        await client.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(client.stop()))
        return client

    async def test_postgres_restart(self) -> None:
        """
        While PostgreSQL is down a message is refused with the clear
        C{unavailable} error; once it is back messages flow again.
        """
        alice = await self.one.user("alice")
        bob = Listener(await self.two.user("bob"))
        postgres = shared_postgres()
        self.addCleanup(postgres.start)
        postgres.stop()
        refused = "".join(await alice.send("/msg bob lost"))
        self.assertIn("error: the server cannot reach its database", refused)
        postgres.start()
        await alice.send("/msg bob back")
        await bob.once("alice (private): back")
        self.assertEqual(bob.count("lost"), 0)
