"""
Failover end to end: sessions of the real client survive replicas going away.

Three C{twistd -n chat} replicas in cluster mode share the throwaway
PostgreSQL and Redis.  Thirty-three people, spread over them, are driven by
the client's own reconnecting L{client.session.Session} (its backoff, its
resume with the token and the last message id, its resend of unanswered
messages under the same C{ref}), each given the three addresses starting with
its own replica.  They chat privately, in groups and on the broadcast channel
while one replica is stopped with SIGTERM and later another is killed with
SIGKILL; then they stop, and each sends its first message again under the
same ref.

The run takes about half a minute, so it is played once per process and
its record shared by the tests below, each of which checks one property of
it.  Its figures are printed whatever the checks find: how long after each
signal the last of the replica's people resumed, and how long until everyone
had been shown every message acknowledged by then ("caught up").
"""

from __future__ import annotations

import random
import signal
from collections import Counter

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from chat.postgres import PostgresDatabase
from client.session import Address, Session, tcp_connector
from tests.failover import (
    SEED,
    Person,
    Resumed,
    Traffic,
    flush_redis,
    sleep,
    wait_until,
)
from tests.process import DaemonProcess, start_daemon
from tests.servers import LOCALHOST, shared_postgres, shared_redis

PASSWORD = "failover-secret-1"
REPLICAS = ("one", "two", "three")
PEOPLE = 33
GROUPS = ("red", "green", "blue", "gold")
TRAFFIC_BEFORE_TERM_SECONDS = 3.0
TRAFFIC_BEFORE_KILL_SECONDS = 3.0
TRAFFIC_AFTER_KILL_SECONDS = 2.0
# After a maintenance notice the client comes back after the server's
# retry_after (2 s) plus jitter; after a crash it tries the dead address
# after about 2 s and the next one about 4 s later.
RESUME_BOUND_SECONDS = 15.0
ACK_BOUND_SECONDS = 15.0
CATCH_UP_BOUND_SECONDS = 5.0
# Time for a late duplicate to arrive before the deliveries are counted.
SETTLE_SECONDS = 1.0
DRAIN_SECONDS = "1"
REDIS_DATABASE = 14


class Failover:
    """
    One run of the whole story, and its record.

    @ivar figures: what is printed: durations in seconds, None for never.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        postgres = shared_postgres()
        self.database = postgres.create_database()
        case.addCleanup(postgres.drop_database, self.database)
        redis = shared_redis()
        flush_redis(redis.port, REDIS_DATABASE)
        self.redis = f"redis://{LOCALHOST}:{redis.port}/{REDIS_DATABASE}"
        self.people: list[Person] = []
        self.traffic = Traffic(self.people)
        self.figures: dict[str, float | None] = {}
        self.replicas: list[DaemonProcess] = []
        self.on_one: list[Person] = []
        self.on_two: list[Person] = []
        self.stored: list[tuple[int, str, str]] = []
        self.resent = self.resent_duplicates = 0
        self.error: BaseException | None = None

    async def _replica(self, server_id: str) -> DaemonProcess:
        args = ["--database", self.database, "--redis", self.redis]
        args += ["--server-id", server_id, "--drain", DRAIN_SECONDS]
        return await start_daemon(self.case, args)

    async def _start_replicas(self) -> None:
        # The first one applies the schema; the others then start together.
        first = await self._replica(REPLICAS[0])
        rest = [Deferred.fromCoroutine(self._replica(name)) for name in REPLICAS[1:]]
        self.replicas = [first, *await gatherResults(rest)]

    async def _sign_up(self, person: Person, addresses: list[Address]) -> None:
        session = Session(
            reactor,
            tcp_connector(reactor),
            addresses,
            person,
            random=random.Random(f"{SEED}-{person.name}").random,
        )
        person.session = session
        self.case.addCleanup(session.close)
        await session.start()
        await session.request("signup", name=person.name, password=PASSWORD)

    async def _gather_people(self) -> None:
        """
        Sign everyone up on their home replica; each is given the three
        addresses, their own first.
        """
        replicas = self.replicas
        ports = {d.port: name for d, name in zip(replicas, REPLICAS, strict=True)}
        signing_up = []
        for index in range(PEOPLE):
            first = index % len(replicas)
            order = replicas[first:] + replicas[:first]
            person = Person(f"user{index:02d}", REPLICAS[first], ports)
            self.people.append(person)
            addresses = [Address(LOCALHOST, d.port) for d in order]
            signing_up.append(Deferred.fromCoroutine(self._sign_up(person, addresses)))
        await gatherResults(signing_up)

    async def _form_groups(self) -> None:
        """
        Everyone joins two neighbouring public groups, so that each group
        spans the three replicas.
        """
        for number, group in enumerate(GROUPS):
            creator = self.people[number]
            members = [
                p
                for index, p in enumerate(self.people)
                if index % len(GROUPS) in (number, (number + 1) % len(GROUPS))
            ]
            assert creator.session is not None
            await creator.session.request("group_create", name=group)
            joining = [
                member.session.request("group_join", group=group)
                for member in members
                if member is not creator and member.session is not None
            ]
            await gatherResults(joining)
            self.traffic.members[group] = frozenset(m.name for m in members)
            for member in members:
                member.groups.append(group)

    async def _all_resumed_after(self, group: list[Person], since: float) -> float:
        """
        Wait until every person of C{group} has resumed since C{since};
        return when the last of them did.
        """

        def resumed() -> list[Resumed]:
            return [r for p in group for r in p.resumes[-1:] if r.at > since]

        if await wait_until(lambda: len(resumed()) == len(group), RESUME_BOUND_SECONDS):
            return max(r.at for r in resumed())
        names = [p.name for p in group if not p.resumes or p.resumes[-1].at <= since]
        raise AssertionError(f"not resumed within {RESUME_BOUND_SECONDS} s: {names}")

    async def _caught_up(self, since: float) -> float | None:
        """
        Wait until everyone was shown every message acknowledged so far that
        was meant for them; return how long after C{since}, or None.
        """
        acknowledged = set(self.traffic.sent)
        for person in self.people:
            person.await_ids(self.traffic.expected_for(person, acknowledged))

        def done() -> bool:
            return all(p.caught_up_at is not None for p in self.people)

        if await wait_until(done, CATCH_UP_BOUND_SECONDS) is None:
            return None
        return max(p.caught_up_at or 0.0 for p in self.people) - since

    async def play(self) -> None:
        """
        Set up, chat, SIGTERM replica one, chat, SIGKILL replica two, chat,
        stop and check the answers, noting the figures on the way.
        """
        started = reactor.seconds()
        await self._start_replicas()
        one, two = self.replicas[:2]
        self.figures["replicas up"] = reactor.seconds() - started
        await self._gather_people()
        self.figures["signed up"] = reactor.seconds() - started
        await self._form_groups()
        self.figures["setup"] = reactor.seconds() - started
        chatters = self.traffic.start()
        await sleep(TRAFFIC_BEFORE_TERM_SECONDS)

        self.on_one = [p for p in self.people if p.replica == "one"]
        term_at = reactor.seconds()
        stopping = Deferred.fromCoroutine(one.stop())
        resumed = await self._all_resumed_after(self.on_one, term_at)
        self.figures["SIGTERM -> last resumed"] = resumed - term_at
        self.figures["SIGTERM -> all caught up"] = await self._caught_up(term_at)
        if await stopping != -signal.SIGTERM:
            raise AssertionError(f"replica one ended with {one.returncode}")
        await sleep(TRAFFIC_BEFORE_KILL_SECONDS)

        self.on_two = [p for p in self.people if p.replica == "two"]
        kill_at = reactor.seconds()
        if await two.kill() != -signal.SIGKILL:
            raise AssertionError(f"replica two ended with {two.returncode}")
        resumed = await self._all_resumed_after(self.on_two, kill_at)
        self.figures["SIGKILL -> last resumed"] = resumed - kill_at
        self.figures["SIGKILL -> all caught up"] = await self._caught_up(kill_at)
        await sleep(TRAFFIC_AFTER_KILL_SECONDS)

        self.traffic.running = False
        await gatherResults(chatters)
        await self._finish(reactor.seconds())
        self.figures["whole run"] = reactor.seconds() - started

    async def _finish(self, stop_at: float) -> None:
        """
        Wait for every answer, send each person's first message once more,
        and give everyone time to catch up and late duplicates time to come.
        """

        def answered() -> bool:
            return all(d.called for d in self.traffic.replies)

        if await wait_until(answered, ACK_BOUND_SECONDS) is None:
            raise AssertionError("messages still unanswered")
        caught_up = await wait_until(
            lambda: not self.traffic.missing(), CATCH_UP_BOUND_SECONDS
        )
        self.figures["end of traffic -> all caught up"] = (
            None if caught_up is None else caught_up - stop_at
        )
        firsts = [s for s in self.traffic.sent.values() if s.ref.endswith("-1")]
        duplicates_before = self.traffic.deduplicated
        for sent in firsts:
            person = next(p for p in self.people if p.name == sent.sender)
            everyone = sent.recipients | {sent.sender}
            self.traffic.send(person, sent.kind, sent.target, everyone, sent.ref)
        if await wait_until(answered, ACK_BOUND_SECONDS) is None:
            raise AssertionError("resent messages unanswered")
        self.resent = len(firsts)
        self.resent_duplicates = self.traffic.deduplicated - duplicates_before
        await sleep(SETTLE_SECONDS)
        self.stored = await self._stored()
        for person in self.people:
            person.note_end()

    async def _stored(self) -> list[tuple[int, str, str]]:
        """
        Every message row: its id, its sender and its ref.
        """
        database = PostgresDatabase(reactor, self.database, pool_size=1)
        await database.start()
        try:
            rows = await database.transaction(
                lambda txn: txn.execute(
                    "SELECT m.id, u.name, m.client_ref FROM messages m"
                    " JOIN users u ON u.id = m.sender_id ORDER BY m.id"
                )
            )
        finally:
            await database.stop()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def report(self) -> str:
        """
        The counts and the figures of the run, for people to read.
        """
        sent = self.traffic.sent.values()
        kinds = Counter(s.kind for s in sent)
        deliveries = sum(len(s.recipients) for s in sent)
        disorder = sum(len(self.traffic.disorder(p)) for p in self.people)
        lost = sum(len(self.traffic.lost(p)) for p in self.people)
        timings = "; ".join(
            f"{name} {'never' if value is None else f'{value:.2f} s'}"
            for name, value in self.figures.items()
        )
        return (
            f"failover: {len(self.people)} people, {len(sent)} messages"
            f" ({kinds['private']} private, {kinds['group']} group,"
            f" {kinds['broadcast']} broadcast), {deliveries} deliveries checked,"
            f" {disorder} shown after a higher id,"
            f" {lost} lost,"
            f" {self.traffic.deduplicated} resends answered as duplicates"
            f" ({self.resent_duplicates} of {self.resent} sent again on purpose),"
            f" {sum(len(p.resumes) for p in self.people)} resumes"
            f" ({len(self.on_one)} after SIGTERM, {len(self.on_two)} after SIGKILL)"
            f"\n  {timings}"
        )


_played: list[Failover] = []


async def played(case: TestCase) -> Failover:
    """
    The run of this process, played under C{case} if none was yet.
    """
    if not _played:
        run = Failover(case)
        _played.append(run)
        try:
            await run.play()
        except BaseException as e:
            run.error = e
            raise
        finally:
            print("\n" + run.report())
    if _played[0].error is not None:
        raise AssertionError(f"the run failed: {_played[0].error!r}")
    return _played[0]


class FailoverTests(TestCase):
    """
    Thirty-three people on three replicas while two of them go away.
    """

    timeout = 120

    async def test_sessions_survive(self) -> None:
        """
        Every person resumes with their token, never with the password, and
        ends on the surviving replica; the people of the stopped replica
        were told of the maintenance first, and went to the next address.
        """
        run = await played(self)
        self.assertEqual(run.traffic.errors, [])
        for person in run.people:
            self.assertFalse(person.ended, f"{person.name}'s session ended")
            self.assertTrue(person.connected, f"{person.name} is not connected")
            self.assertEqual(
                (person.password_asked, person.logins_again),
                (0, 0),
                f"{person.name} had to log in again",
            )
            self.assertEqual(person.final_replica, "three", person.name)
        for person in run.on_one:
            self.assertIn("maintenance", person.notices, person.name)
            self.assertEqual(person.resumes[0].replica, "two", person.name)
        for person in run.on_two:
            self.assertEqual(person.resumes[-1].replica, "three", person.name)
        for person in run.people:
            if person not in run.on_one + run.on_two:
                self.assertEqual(person.resumes, [], person.name)

    async def test_every_message_shown_once(self) -> None:
        """
        Each person was shown every acknowledged message meant for them
        exactly once, and nothing else.
        """
        run = await played(self)
        problems = [run.traffic.delivery_problems(p) for p in run.people]
        found = [p for p in problems if p is not None]
        self.assertEqual(found, [], "\n".join(found))

    async def test_every_message_stored_once(self) -> None:
        """
        The database holds one row per acknowledged message under the ref it
        was sent with; sending a message again under its ref, through
        another replica, was answered with the original as a duplicate.
        """
        run = await played(self)
        acknowledged = {(s.id, s.sender, s.ref) for s in run.traffic.sent.values()}
        self.assertEqual(len(run.stored), len(acknowledged))
        self.assertEqual(set(run.stored), acknowledged)
        self.assertEqual(run.resent, len(run.people))
        self.assertEqual(run.resent_duplicates, run.resent)

    async def test_messages_shown_in_id_order(self) -> None:
        """
        Each person was shown their messages in increasing id order, so that
        resuming after the highest id seen passed over none.
        """
        run = await played(self)
        problems = [run.traffic.order_problems(p) for p in run.people]
        found = [p for p in problems if p is not None]
        self.assertEqual(found, [], "\n".join(found))
