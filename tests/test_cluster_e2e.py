"""
Cluster mode end to end: two and three real C{twistd -n chat} processes on
loopback, sharing the throwaway PostgreSQL and Redis servers.

Each test gets a fresh database and its own Redis database number, so the
presence left behind by a killed replica in one test cannot reach the next.
"""

from __future__ import annotations

import itertools
import signal

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.cluster.presence import PRESENCE_TTL_SECONDS
from chat.tap import Options, makeService
from tests.process import (
    PASSWORD,
    DaemonProcess,
    connect,
    signed_up,
    start_daemon,
)
from tests.servers import LOCALHOST, shared_postgres, shared_redis

# A killed replica's subscriber connection closes with it, and a login
# elsewhere replaces the presence of a replica that no longer listens, so
# this is a bound for the kernel, Redis and the polling, not for a TTL.
TAKEOVER_BOUND_SECONDS = 5.0
# A replica that is alive to Redis but silent loses its people when their
# presence runs out: within the TTL, plus the polling.
FROZEN_BOUND_SECONDS = PRESENCE_TTL_SECONDS + 5.0
RETRY_LOGIN_SECONDS = 0.5
# Redis database 0 is left to the in-process tests.
_redis_databases = itertools.count(1)


class ClusterTests(TestCase):
    """
    Replicas of one cluster, started per test.
    """

    timeout = 120

    def setUp(self) -> None:
        postgres = shared_postgres()
        self.database = postgres.create_database()
        self.addCleanup(postgres.drop_database, self.database)
        redis = shared_redis()
        number = next(_redis_databases) % 16 or 1
        self.redis = f"redis://{LOCALHOST}:{redis.port}/{number}"

    async def replica(self, server_id: str) -> DaemonProcess:
        args = ["--database", self.database, "--redis", self.redis]
        args += ["--server-id", server_id, "--drain", "0"]
        return await start_daemon(self, args)

    async def test_two_replicas(self) -> None:
        """
        Private, broadcast and group messages, and presence, cross between
        two replicas.
        """
        one, two = await self.replica("one"), await self.replica("two")
        alice = await signed_up(one.port, "alice")
        bob = await signed_up(two.port, "bob")
        alice.send("/who")
        await alice.expect("bob")

        alice.send("/msg bob hello")
        await bob.expect("alice (private): hello")
        bob.send("/msg alice hi back")
        await alice.expect("bob (private): hi back")

        alice.send("/msg * morning all")
        await bob.expect("alice to everyone: morning all")

        alice.send("/group create tea")
        await alice.expect("created #tea")
        alice.send("/group invite tea bob")
        await bob.expect("* alice added you to #tea")
        bob.send("/msg #tea kettle on")
        await alice.expect("bob in #tea: kettle on")

    async def test_three_replicas(self) -> None:
        """
        With three replicas a broadcast and a group message reach everyone,
        and each replica lists everyone online.
        """
        replicas = [await self.replica(name) for name in ("one", "two", "three")]
        names = ["alice", "bob", "carol"]
        clients = [
            await signed_up(replica.port, name)
            for replica, name in zip(replicas, names, strict=True)
        ]
        alice, bob, carol = clients
        for client in clients:
            client.send("/mode json")
            await client.expect('"type":"mode"')
            client.send_json(cmd="who", id="w")
            who = await client.expect_json(type="who", id="w")
            self.assertEqual(sorted(who["users"]), names)

        carol.send_json(cmd="msg", target="*", text="hello from three", id=1)
        for client in (alice, bob):
            message = await client.expect_json(type="message")
            self.assertEqual(message["message"]["text"], "hello from three")

        alice.send_json(cmd="group_create", name="trio", id=2)
        await alice.expect_json(type="ok", id=2)
        for invited in ("bob", "carol"):
            alice.send_json(cmd="group_invite", group="trio", user=invited, id=3)
            await alice.expect_json(type="ok", id=3)
        bob.send_json(cmd="msg", target="#trio", text="all three", id=4)
        for client in (alice, carol):
            message = await client.expect_json(type="message")
            self.assertEqual(message["message"]["text"], "all three")

    async def test_killed_replica(self) -> None:
        """
        When a replica is killed, its person can log in on another replica
        within seconds, without waiting for their presence to run out.
        """
        one, two = await self.replica("one"), await self.replica("two")
        alice = await signed_up(one.port, "alice")
        alice.send("/quit")
        await alice.closed
        alice = await connect(one.port)
        alice.send(f"/login alice {PASSWORD}")
        await alice.expect("Welcome back, alice!")
        await one.kill()
        elapsed = await self.login_elsewhere(two.port, TAKEOVER_BOUND_SECONDS)
        print(f"\nalice logged in elsewhere {elapsed:.1f}s after SIGKILL")

    async def test_frozen_replica(self) -> None:
        """
        A replica that stops answering but keeps its Redis connections open
        (here: SIGSTOP) no longer renews its people's presence, so they can
        log in elsewhere once it runs out, within the presence TTL.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await signed_up(one.port, "alice")
        # DaemonProcess sends only TERM and KILL itself.
        assert one._transport is not None
        one._transport.signalProcess("STOP")
        elapsed = await self.login_elsewhere(two.port, FROZEN_BOUND_SECONDS)
        print(f"\nalice logged in elsewhere {elapsed:.1f}s after SIGSTOP")

    async def login_elsewhere(self, port: int, bound: float) -> float:
        """
        Try to log alice in on C{port} until it works; return how long that
        took, failing past C{bound} seconds.
        """
        started = reactor.seconds()
        client = await connect(port)
        while True:
            client.send(f"/login alice {PASSWORD}")
            line = await client.wait_line(
                lambda line: line.startswith(("Welcome back", "error:")), "a reply"
            )
            elapsed = reactor.seconds() - started
            if line.startswith("Welcome back"):
                return elapsed
            self.assertIn("already logged in elsewhere", line)
            self.assertLess(elapsed, bound)
            await deferLater(reactor, RETRY_LOGIN_SECONDS, lambda: None)

    async def test_clean_stop(self) -> None:
        """
        A replica that stops cleanly releases its people at once: they can
        log in on another replica straight away.
        """
        one, two = await self.replica("one"), await self.replica("two")
        await signed_up(one.port, "alice")
        self.assertEqual(await one.stop(), -signal.SIGTERM)
        client = await connect(two.port)
        client.send(f"/login alice {PASSWORD}")
        await client.expect("Welcome back, alice!")


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_redis_needs_postgres(self) -> None:
        """
        C{--redis} with a SQLite database is refused with a usage error that
        says cluster mode needs PostgreSQL.
        """
        with self.assertRaises(UsageError) as caught:
            self.parse("--redis", "redis://127.0.0.1:6379/0")
        self.assertIn("postgresql://", str(caught.exception))

    def test_bad_redis_url(self) -> None:
        """
        A malformed Redis URL is a usage error.
        """
        with self.assertRaises(UsageError) as caught:
            self.parse("-d", "postgresql://db/chat", "--redis", "http://cache")
        self.assertIn("--redis", str(caught.exception))

    def test_cluster_settings(self) -> None:
        """
        With PostgreSQL and Redis the daemon is built in cluster mode; without
        Redis it keeps presence and routing in the process.
        """
        database = "postgresql://chat@127.0.0.1:1/chat"
        clustered = makeService(
            self.parse("-d", database, "--redis", "redis://127.0.0.1:1/2")
        )
        assert clustered.cluster is not None
        self.assertIs(clustered.service.router, clustered.cluster.router)
        alone = makeService(self.parse("-d", database))
        self.assertIsNone(alone.cluster)
        self.assertIs(alone.service.router, alone.registry)
