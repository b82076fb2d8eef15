"""
One contract for L{chat.storage.Store}, run against SQLite and PostgreSQL.

L{StoreContract} says what the store promises; each engine's test case only
says how to make an empty database.  A test that passes on one engine and
fails on the other is a difference between the engines that the store has to
hide.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from chat.db import IDatabase, IntegrityViolation, Row, Transaction, open_database
from chat.names import fold
from chat.records import AwayCounts, Group, Kind, Member, Message, Role, User
from chat.schema import MIGRATIONS, migrate
from chat.storage import DuplicateRef, NameTaken, Store, time_value
from tests.servers import shared_postgres

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

TEST_TIMEOUT_SECONDS = 60
MIGRATED_AT = "2026-12-04T15:00:00+00:00"
T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
ALL_VERSIONS = [m.version for m in MIGRATIONS]


def at(seconds: float) -> datetime:
    """
    The moment C{seconds} after L{T0}.
    """
    return T0 + timedelta(seconds=seconds)


T = TypeVar("T")


class CountingDatabase:
    """
    A real runner that counts the transactions asked of it.
    """

    def __init__(self, db: IDatabase) -> None:
        self._db = db
        self.dialect = db.dialect
        self.transactions = 0

    async def start(self) -> None:
        await self._db.start()

    async def stop(self) -> None:
        await self._db.stop()

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        self.transactions += 1
        return await self._db.transaction(work)

    async def ping(self) -> None:
        await self._db.ping()


async def settled(call: Coroutine[Any, Any, T]) -> T | Exception:
    """
    What C{call} returns, or the exception it raises.
    """
    try:
        return await call
    except Exception as e:
        return e


async def all_at_once(calls: list[Coroutine[Any, Any, T]]) -> list[T | Exception]:
    """
    Start every call before any has finished; their outcomes, in order.
    """
    started = [Deferred.fromCoroutine(settled(call)) for call in calls]
    return await gatherResults(started)


class StoreContract(_Base):
    """
    What L{Store} promises whichever engine it runs on.

    A subclass provides L{empty_database_url}.
    """

    timeout = TEST_TIMEOUT_SECONDS

    def empty_database_url(self) -> str:
        """
        The URL of a new database with no tables, dropped after the test.
        """
        raise NotImplementedError()

    async def connect(self, url: str) -> IDatabase:
        """
        A started runner for C{url}, stopped after the test.
        """
        db = open_database(reactor, url)
        await db.start()
        self.addCleanup(db.stop)
        return db

    async def setUp(self) -> None:  # type: ignore[override]
        self.db = await self.connect(self.empty_database_url())
        await migrate(self.db, MIGRATED_AT)
        self.store = Store(self.db)

    async def user(self, name: str, when: datetime = T0) -> User:
        return await self.store.create_user(name, fold(name), "hash-" + name, when)

    async def group(self, creator: User, name: str, description: str = "") -> Group:
        return await self.store.create_group(creator, name, fold(name), description, T0)

    async def seen_by(self, viewer: User, name: str) -> Group | None:
        return await self.store.find_group(fold(name), viewer)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return await self.db.transaction(lambda txn: txn.execute(sql, params))

    async def roles(self, group: Group) -> list[tuple[str, Role]]:
        return [(m.name, m.role) for m in await self.store.members(group)]

    # Users

    async def test_create_and_find_user(self) -> None:
        """
        A new user is found again by folded name, with the name as given, the
        password hash and the creation time.
        """
        created = await self.user("Alice", at(5))
        found = await self.store.find_user("alice")
        self.assertEqual(found, (created, "hash-Alice"))
        self.assertEqual(created.name, "Alice")
        self.assertEqual(created.created_at, at(5))

    async def test_unknown_user(self) -> None:
        """
        Looking up a name nobody has gives C{None}.
        """
        await self.user("alice")
        self.assertIsNone(await self.store.find_user("bob"))

    async def test_folded_name_is_unique(self) -> None:
        """
        A second user whose name folds to a taken one raises L{NameTaken} and
        adds nobody.
        """
        await self.user("Alice")
        with self.assertRaises(NameTaken):
            await self.store.create_user("ALICE", "alice", "other", T0)
        self.assertEqual(await self.store.count_users(), 1)
        found = await self.store.find_user("alice")
        assert found is not None
        self.assertEqual(found[0].name, "Alice")

    async def test_list_and_count_users(self) -> None:
        """
        Every user is listed once, ordered by folded name, and counted.
        """
        self.assertEqual(await self.store.list_users(), [])
        self.assertEqual(await self.store.count_users(), 0)
        for name in ["bob", "Carol", "a.b", "a-c", "ab", "a_d", "a9", "Aaron"]:
            await self.user(name)
        listed = [u.name for u in await self.store.list_users()]
        self.assertEqual(
            listed, ["a-c", "a.b", "a9", "a_d", "Aaron", "ab", "bob", "Carol"]
        )
        self.assertEqual(await self.store.count_users(), 8)

    async def test_user_ids_differ(self) -> None:
        """
        Each user gets an id of their own.
        """
        ids = {(await self.user(name)).id for name in ["alice", "bob", "carol"]}
        self.assertEqual(len(ids), 3)

    # Private messages

    async def test_one_conversation_per_pair(self) -> None:
        """
        Whoever writes first, two people share one conversation, and each
        sees the same history of it.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        first = await self.store.add_private(bob, alice, "hi alice", at(1))
        second = await self.store.add_private(alice, bob, "hi bob", at(2))
        conversations = await self.rows("SELECT COUNT(*) FROM conversations")
        self.assertEqual(int(conversations[0][0]), 1)
        self.assertEqual(
            await self.store.private_history(alice, bob, 10), [first, second]
        )
        self.assertEqual(
            await self.store.private_history(bob, alice, 10), [first, second]
        )

    async def test_private_history_oldest_first_with_limit(self) -> None:
        """
        A private history is the last C{limit} messages, oldest first.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        sent = [
            await self.store.add_private(alice, bob, f"n{i}", at(i)) for i in range(5)
        ]
        self.assertEqual(await self.store.private_history(alice, bob, 3), sent[2:])
        self.assertEqual(await self.store.private_history(bob, alice, 50), sent)

    async def test_private_target_names(self) -> None:
        """
        A private message names its sender and its recipient, as they spell
        their names, whoever reads the history.
        """
        alice, bob = await self.user("Alice"), await self.user("BOB")
        await self.store.add_private(alice, bob, "to bob", at(1))
        await self.store.add_private(bob, alice, "to alice", at(2))
        for viewer, other in [(alice, bob), (bob, alice)]:
            history = await self.store.private_history(viewer, other, 10)
            self.assertEqual(
                [(m.kind, m.sender, m.target, m.body) for m in history],
                [
                    (Kind.PRIVATE, "Alice", "BOB", "to bob"),
                    (Kind.PRIVATE, "BOB", "Alice", "to alice"),
                ],
            )

    async def test_private_history_is_per_pair(self) -> None:
        """
        A private history holds only the messages between its two people.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        carol = await self.user("carol")
        ours = await self.store.add_private(alice, bob, "ours", at(1))
        await self.store.add_private(alice, carol, "alice and carol", at(2))
        await self.store.add_private(carol, bob, "carol and bob", at(3))
        await self.store.add_broadcast(alice, "everyone", at(4))
        self.assertEqual(await self.store.private_history(bob, alice, 10), [ours])
        self.assertEqual(await self.store.private_history(carol, carol, 10), [])

    # Group and broadcast messages

    async def test_group_history(self) -> None:
        """
        A group's history is its own messages, last C{limit} oldest first,
        addressed to C{#name}.
        """
        alice = await self.user("alice")
        tea, other = await self.group(alice, "Tea"), await self.group(alice, "other")
        sent = [
            await self.store.add_group_message(alice, tea, f"t{i}", at(i))
            for i in range(4)
        ]
        await self.store.add_group_message(alice, other, "elsewhere", at(9))
        self.assertEqual([m.target for m in sent], ["#Tea"] * 4)
        self.assertEqual([m.kind for m in sent], [Kind.GROUP] * 4)
        self.assertEqual(await self.store.group_history(tea, 2), sent[2:])
        self.assertEqual(await self.store.group_history(tea, 10), sent)

    async def test_broadcast_history(self) -> None:
        """
        The broadcast history holds broadcasts only, addressed to C{*}, last
        C{limit} oldest first.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        first = await self.store.add_broadcast(alice, "one", at(1))
        await self.store.add_private(alice, bob, "private", at(2))
        await self.store.add_group_message(alice, tea, "group", at(3))
        second = await self.store.add_broadcast(bob, "two", at(4))
        third = await self.store.add_broadcast(alice, "three", at(5))
        self.assertEqual((first.kind, first.target), (Kind.BROADCAST, "*"))
        self.assertEqual(await self.store.broadcast_history(10), [first, second, third])
        self.assertEqual(await self.store.broadcast_history(2), [second, third])

    async def test_ids_increase_across_kinds(self) -> None:
        """
        Message ids increase in the order messages are stored, whatever their
        kind, and the store counts them and knows the last one.
        """
        self.assertEqual(await self.store.last_message_id(), 0)
        self.assertEqual(await self.store.count_messages(), 0)
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        sent = [
            await self.store.add_private(alice, bob, "p1", T0),
            await self.store.add_group_message(alice, tea, "g1", T0),
            await self.store.add_broadcast(bob, "b1", T0),
            await self.store.add_private(bob, alice, "p2", T0),
            await self.store.add_group_message(alice, tea, "g2", T0),
        ]
        ids = [m.id for m in sent]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual(await self.store.last_message_id(), ids[-1])
        self.assertEqual(await self.store.count_messages(), 5)

    async def test_timestamps_round_trip_as_utc(self) -> None:
        """
        A time stored with any offset reads back as the same instant, to the
        microsecond, as an aware datetime in UTC.
        """
        summer = timezone(timedelta(hours=2))
        when = datetime(2026, 12, 4, 17, 0, 0, 123456, tzinfo=summer)
        expected = datetime(2026, 12, 4, 15, 0, 0, 123456, tzinfo=UTC)
        alice = await self.user("alice", when)
        bob = await self.user("bob")
        tea = await self.store.create_group(alice, "tea", "tea", "", when)
        await self.store.add_private(alice, bob, "p", when)
        await self.store.add_group_message(alice, tea, "g", when)
        await self.store.add_broadcast(alice, "b", when)
        found = await self.store.find_user("alice")
        assert found is not None
        times = [found[0].created_at]
        times += [m.created_at for m in await self.store.private_history(bob, alice, 1)]
        times += [m.created_at for m in await self.store.group_history(tea, 1)]
        times += [m.created_at for m in await self.store.broadcast_history(1)]
        times += [m.joined_at for m in await self.store.members(tea)]
        times.append((await self.store.list_users())[0].created_at)
        self.assertEqual(times, [expected] * 6)
        for value in times:
            self.assertIs(value.tzinfo, UTC)

    # Client references and group commit

    async def test_ref_used_again_is_refused(self) -> None:
        """
        A ref that its sender already used raises L{DuplicateRef}, whatever
        the kind of message, stores nothing, and leaves the original findable;
        another sender may use the same ref.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        first = await self.store.add_private(alice, bob, "first", at(1), "r1")
        for again in [
            self.store.add_private(alice, bob, "again", at(2), "r1"),
            self.store.add_group_message(alice, tea, "again", at(3), "r1"),
            self.store.add_broadcast(alice, "again", at(4), "r1"),
        ]:
            with self.assertRaises(DuplicateRef):
                await again
        theirs = await self.store.add_broadcast(bob, "theirs", at(5), "r1")
        self.assertGreater(theirs.id, first.id)
        self.assertEqual(await self.store.count_messages(), 2)
        self.assertEqual(await self.store.find_by_ref(alice, "r1"), first)
        self.assertEqual(await self.store.find_by_ref(bob, "r1"), theirs)

    async def test_concurrent_messages_share_transactions(self) -> None:
        """
        300 messages sent at once all get distinct ids, increasing in the
        order they were sent, are all stored and read back as returned, and
        take a few transactions: the first alone, then up to 200 per commit.
        """
        counting = CountingDatabase(self.db)
        store = Store(counting)
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        calls: list[Coroutine[Any, Any, Message]] = []
        for i in range(100):
            calls.append(store.add_private(alice, bob, f"p{i}", at(i)))
            calls.append(store.add_group_message(bob, tea, f"g{i}", at(i), f"g{i}"))
            calls.append(store.add_broadcast(alice, f"b{i}", at(i), f"b{i}"))
        before = counting.transactions

        sent = await gatherResults([Deferred.fromCoroutine(c) for c in calls])

        self.assertEqual(counting.transactions - before, 3)
        ids = [m.id for m in sent]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual(await self.store.count_messages(), 300)
        self.assertEqual(await self.store.private_history(bob, alice, 500), sent[0::3])
        self.assertEqual(await self.store.group_history(tea, 500), sent[1::3])
        self.assertEqual(await self.store.broadcast_history(500), sent[2::3])

    async def test_duplicate_ref_fails_only_its_caller(self) -> None:
        """
        In messages sent at once, a ref used before and a ref used twice in
        the same batch fail only those callers with L{DuplicateRef}; the
        others are stored, with ids in the order they were sent.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        old = await self.store.add_private(alice, bob, "old", at(0), "old")
        outcomes = await all_at_once(
            [
                self.store.add_private(alice, bob, "one", at(1), "a"),
                self.store.add_private(bob, alice, "two", at(2), "old"),
                self.store.add_group_message(alice, tea, "three", at(3), "b"),
                self.store.add_broadcast(alice, "four", at(4), "old"),
                self.store.add_group_message(alice, tea, "five", at(5), "b"),
                self.store.add_private(alice, bob, "six", at(6)),
            ]
        )
        refused = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
        self.assertEqual(refused, [3, 4])
        for i in refused:
            self.assertIsInstance(outcomes[i], DuplicateRef)
        stored = [o for o in outcomes if isinstance(o, Message)]
        self.assertEqual([m.body for m in stored], ["one", "two", "three", "six"])
        ids = [m.id for m in stored]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertGreater(ids[0], old.id)
        self.assertEqual(await self.store.count_messages(), 5)
        self.assertEqual(await self.store.find_by_ref(alice, "old"), old)
        self.assertEqual(await self.store.find_by_ref(alice, "b"), stored[2])
        self.assertEqual(await self.store.find_by_ref(bob, "old"), stored[1])

    async def test_faulty_message_fails_only_its_caller(self) -> None:
        """
        A message that breaks a constraint, sent with others, fails its own
        caller with L{IntegrityViolation}; the others are stored.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        outcomes = await all_at_once(
            [
                self.store.add_broadcast(alice, "first", at(1)),
                self.store.add_private(alice, bob, "fine", at(2), "x"),
                self.store.add_private(alice, alice, "to myself", at(3), "y"),
                self.store.add_private(bob, alice, "also fine", at(4), "y"),
            ]
        )
        self.assertIsInstance(outcomes[2], IntegrityViolation)
        stored = [o for i, o in enumerate(outcomes) if i != 2]
        self.assertEqual(
            [m.body for m in stored if isinstance(m, Message)],
            ["first", "fine", "also fine"],
        )
        self.assertEqual(await self.store.count_messages(), 3)
        self.assertIsNone(await self.store.find_by_ref(alice, "y"))

    # Away counts

    async def test_away_counts_only_messages_from_others(self) -> None:
        """
        A person's own messages are never counted as waiting for them.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        await self.store.add_member(tea, bob, Role.MEMBER, T0)
        await self.store.add_private(alice, bob, "mine", at(1))
        await self.store.add_group_message(alice, tea, "mine", at(2))
        await self.store.add_broadcast(alice, "mine", at(3))
        await self.store.add_private(bob, alice, "theirs", at(4))
        self.assertEqual(await self.store.away_counts(alice), AwayCounts(private=1))
        self.assertEqual(await self.store.away_counts(bob), AwayCounts(1, 1, 1))

    async def test_away_counts_only_groups_you_are_in(self) -> None:
        """
        Group messages count only for members, and private messages only for
        the two people of the conversation.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        carol = await self.user("carol")
        tea = await self.group(bob, "tea")
        coffee = await self.group(bob, "coffee")
        await self.store.add_member(tea, alice, Role.MEMBER, T0)
        await self.store.add_group_message(bob, tea, "in tea", at(1))
        await self.store.add_group_message(bob, tea, "in tea again", at(2))
        await self.store.add_group_message(bob, coffee, "in coffee", at(3))
        await self.store.add_private(bob, carol, "not for alice", at(4))
        self.assertEqual(await self.store.away_counts(alice), AwayCounts(group=2))

    async def test_away_counts_broadcasts(self) -> None:
        """
        Broadcasts from others count for everyone who existed when they were
        sent.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        await self.store.add_broadcast(bob, "news", at(1))
        await self.store.add_broadcast(bob, "more news", at(2))
        self.assertEqual(await self.store.away_counts(alice), AwayCounts(broadcast=2))

    async def test_later_signup_counts_no_older_messages(self) -> None:
        """
        Someone who signs up after messages were sent has none waiting; what
        comes after counts.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        await self.store.add_broadcast(alice, "before", at(1))
        await self.store.add_group_message(alice, tea, "before", at(2))
        await self.store.add_private(alice, bob, "before", at(3))
        dave = await self.user("dave", at(4))
        await self.store.add_member(tea, dave, Role.MEMBER, at(4))
        self.assertEqual(await self.store.away_counts(dave), AwayCounts())
        await self.store.add_broadcast(alice, "after", at(5))
        await self.store.add_private(alice, dave, "after", at(6))
        self.assertEqual(
            await self.store.away_counts(dave), AwayCounts(private=1, broadcast=1)
        )

    async def test_mark_seen(self) -> None:
        """
        Messages up to the one marked seen no longer count, later ones do, and
        marking an older message seen does not bring any back.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        first = await self.store.add_private(bob, alice, "one", at(1))
        second = await self.store.add_private(bob, alice, "two", at(2))
        await self.store.mark_seen(alice, second.id)
        self.assertEqual(await self.store.away_counts(alice), AwayCounts())
        await self.store.add_broadcast(bob, "three", at(3))
        await self.store.mark_seen(alice, first.id)
        self.assertEqual(await self.store.away_counts(alice), AwayCounts(broadcast=1))

    # Groups

    async def test_create_group(self) -> None:
        """
        A new group is public, has its creator as its only member and admin,
        and is found by folded name.
        """
        alice = await self.user("alice")
        created = await self.store.create_group(
            alice, "Tea", "tea", "all about tea", at(1)
        )
        self.assertEqual(
            (created.name, created.description, created.is_private),
            ("Tea", "all about tea", False),
        )
        self.assertEqual((created.member_count, created.my_role), (1, Role.ADMIN))
        self.assertEqual(await self.seen_by(alice, "TEA"), created)
        self.assertEqual(
            await self.store.members(created), [Member("alice", Role.ADMIN, at(1))]
        )

    async def test_open_group_name_taken(self) -> None:
        """
        An open group's name, in any case, cannot be used for another group.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        await self.group(alice, "Tea")
        with self.assertRaises(NameTaken):
            await self.group(bob, "TEA")
        self.assertEqual(await self.store.groups_of(bob), [])

    async def test_closed_group_name_reusable(self) -> None:
        """
        Once a group is closed, its name is free for a new, different group.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        old = await self.group(alice, "tea", "old")
        self.assertEqual(await self.store.remove_member(old, alice, at(1)), 0)
        self.assertIsNone(await self.seen_by(alice, "tea"))
        new = await self.group(bob, "Tea", "new")
        self.assertNotEqual(new.id, old.id)
        found = await self.seen_by(bob, "tea")
        assert found is not None
        self.assertEqual((found.id, found.description), (new.id, "new"))

    async def test_find_group_with_viewer_role(self) -> None:
        """
        A found group carries the viewer's role: admin, member, or none.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        carol = await self.user("carol")
        tea = await self.group(alice, "tea")
        await self.store.add_member(tea, bob, Role.MEMBER, at(1))
        roles = []
        for viewer in (alice, bob, carol):
            found = await self.seen_by(viewer, "tea")
            assert found is not None
            self.assertEqual(found.member_count, 2)
            roles.append(found.my_role)
        self.assertEqual(roles, [Role.ADMIN, Role.MEMBER, None])
        self.assertIsNone(await self.seen_by(alice, "coffee"))

    async def test_groups_of(self) -> None:
        """
        A person's groups are the open ones they belong to, by folded name,
        with their role and the member count.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        await self.group(alice, "tea")
        coffee = await self.group(bob, "Coffee")
        await self.group(bob, "juice")
        closed = await self.group(alice, "water")
        await self.store.add_member(coffee, alice, Role.MEMBER, at(1))
        await self.store.remove_member(closed, alice, at(2))
        groups = await self.store.groups_of(alice)
        self.assertEqual(
            [(g.name, g.my_role, g.member_count) for g in groups],
            [("Coffee", Role.MEMBER, 2), ("tea", Role.ADMIN, 1)],
        )

    async def test_browse_shows_private_groups_to_members_only(self) -> None:
        """
        Browsing lists every open public group, and a private group only to
        its members.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        carol = await self.user("carol")
        await self.group(alice, "public")
        secret = await self.group(alice, "secret")
        await self.store.add_member(secret, bob, Role.MEMBER, at(1))
        await self.store.set_private(secret, True)
        closed = await self.group(carol, "closed")
        await self.store.remove_member(closed, carol, at(2))

        async def browsed(viewer: User) -> list[tuple[str, Role | None]]:
            return [
                (g.name, g.my_role) for g in await self.store.browse_groups(viewer, "")
            ]

        self.assertEqual(
            await browsed(alice), [("public", Role.ADMIN), ("secret", Role.ADMIN)]
        )
        self.assertEqual(
            await browsed(bob), [("public", None), ("secret", Role.MEMBER)]
        )
        self.assertEqual(await browsed(carol), [("public", None)])

    async def test_browse_search_ignores_case(self) -> None:
        """
        The search text matches a group's name or description in any case,
        accented letters included.
        """
        alice = await self.user("alice")
        await self.group(alice, "BigTea")
        await self.group(alice, "oolong", "Green TEA lovers")
        await self.group(alice, "coffee", "no leaves here")
        await self.group(alice, "summer", "Thé glacé en ÉTÉ")

        async def found(search: str) -> list[str]:
            return [g.name for g in await self.store.browse_groups(alice, search)]

        self.assertEqual(await found("tEa"), ["BigTea", "oolong"])
        self.assertEqual(await found("GREEN tea"), ["oolong"])
        self.assertEqual(await found("été"), ["summer"])
        self.assertEqual(await found("THÉ GLACÉ"), ["summer"])

    async def test_browse_search_wildcards_are_literal(self) -> None:
        """
        C{%}, C{_} and backslash in the search text match only themselves.
        """
        alice = await self.user("alice")
        await self.group(alice, "tea_time")
        await self.group(alice, "teaxtime")
        await self.group(alice, "half", "50% off")
        await self.group(alice, "halfx", "500 off")
        await self.group(alice, "slash", "either\\or")
        await self.group(alice, "noslash", "either or")

        async def found(search: str) -> list[str]:
            return [g.name for g in await self.store.browse_groups(alice, search)]

        self.assertEqual(await found("a_t"), ["tea_time"])
        self.assertEqual(await found("0%"), ["half"])
        self.assertEqual(await found("%"), ["half"])
        self.assertEqual(await found("r\\o"), ["slash"])
        self.assertEqual(await found("\\"), ["slash"])

    async def test_add_member_is_idempotent(self) -> None:
        """
        Adding someone already in a group reports C{False} and changes
        neither the members nor their roles.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        self.assertTrue(await self.store.add_member(tea, bob, Role.MEMBER, at(1)))
        self.assertFalse(await self.store.add_member(tea, bob, Role.ADMIN, at(2)))
        self.assertFalse(await self.store.add_member(tea, alice, Role.MEMBER, at(3)))
        self.assertEqual(
            await self.store.members(tea),
            [Member("alice", Role.ADMIN, T0), Member("bob", Role.MEMBER, at(1))],
        )

    async def test_remove_member(self) -> None:
        """
        Removing a member returns how many remain; the group stays open.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        await self.store.add_member(tea, bob, Role.MEMBER, at(1))
        self.assertEqual(await self.store.remove_member(tea, bob, at(2)), 1)
        self.assertEqual(await self.roles(tea), [("alice", Role.ADMIN)])
        found = await self.seen_by(bob, "tea")
        assert found is not None
        self.assertIsNone(found.my_role)

    async def test_last_member_leaving_closes_group(self) -> None:
        """
        When the last member leaves, the group is closed: nobody finds,
        browses or belongs to it any more.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        await self.store.add_member(tea, bob, Role.MEMBER, at(1))
        self.assertEqual(await self.store.remove_member(tea, alice, at(2)), 1)
        self.assertEqual(await self.store.remove_member(tea, bob, at(3)), 0)
        for viewer in (alice, bob):
            self.assertIsNone(await self.seen_by(viewer, "tea"))
            self.assertEqual(await self.store.groups_of(viewer), [])
            self.assertEqual(await self.store.browse_groups(viewer, ""), [])

    async def test_last_admin_leaving_promotes_longest_standing(self) -> None:
        """
        When the last admin leaves, the member who joined earliest becomes
        admin, whatever the order of names; the others stay members.
        """
        zoe, yan = await self.user("zoe"), await self.user("yan")
        abe, xia = await self.user("abe"), await self.user("xia")
        tea = await self.group(zoe, "tea")
        await self.store.add_member(tea, abe, Role.MEMBER, at(2))
        await self.store.add_member(tea, yan, Role.MEMBER, at(0.5))
        await self.store.add_member(tea, xia, Role.MEMBER, at(1))
        self.assertEqual(await self.store.remove_member(tea, zoe, at(3)), 3)
        self.assertEqual(
            await self.roles(tea),
            [("yan", Role.ADMIN), ("xia", Role.MEMBER), ("abe", Role.MEMBER)],
        )

    async def test_admin_leaving_with_another_admin_promotes_nobody(self) -> None:
        """
        When an admin leaves and another admin remains, no member is promoted.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        carol = await self.user("carol")
        tea = await self.group(alice, "tea")
        await self.store.add_member(tea, carol, Role.MEMBER, at(1))
        await self.store.add_member(tea, bob, Role.ADMIN, at(2))
        await self.store.remove_member(tea, alice, at(3))
        self.assertEqual(
            await self.roles(tea), [("carol", Role.MEMBER), ("bob", Role.ADMIN)]
        )

    async def test_members_ordered_by_join_time(self) -> None:
        """
        Members are listed in the order they joined, not by name.
        """
        names = ["mia", "Zed", "bea", "al"]
        users = [await self.user(name) for name in names]
        tea = await self.group(users[0], "tea")
        for i, user in enumerate(users[1:], start=1):
            await self.store.add_member(tea, user, Role.MEMBER, at(i * 0.25))
        members = await self.store.members(tea)
        self.assertEqual([m.name for m in members], names)
        self.assertEqual(
            [m.joined_at for m in members], [T0, at(0.25), at(0.5), at(0.75)]
        )

    async def test_set_private(self) -> None:
        """
        A group made private says so and leaves the browse list of
        non-members; made public again, it comes back.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        tea = await self.group(alice, "tea")
        await self.store.set_private(tea, True)
        found = await self.seen_by(bob, "tea")
        assert found is not None
        self.assertTrue(found.is_private)
        self.assertEqual(await self.store.browse_groups(bob, ""), [])
        await self.store.set_private(tea, False)
        found = await self.seen_by(bob, "tea")
        assert found is not None
        self.assertFalse(found.is_private)
        self.assertEqual(
            [g.name for g in await self.store.browse_groups(bob, "")], ["tea"]
        )

    # The sessions log

    async def session(self, session_id: int) -> tuple[Any, ...]:
        rows = await self.rows(
            "SELECT user_id, server_id, login_at, logout_at FROM sessions WHERE id = ?",
            (session_id,),
        )
        user_id, server_id, login_at, logout_at = rows[0]
        logout = None if logout_at is None else time_value(logout_at)
        return user_id, server_id, time_value(login_at), logout

    async def test_sessions_log(self) -> None:
        """
        A login opens a session row for its server; a logout closes it, and a
        second logout leaves the first time in place.
        """
        alice, bob = await self.user("alice"), await self.user("bob")
        first = await self.store.record_login(alice, "server-a", at(1))
        second = await self.store.record_login(bob, "server-b", at(2))
        self.assertGreater(second, first)
        self.assertEqual(await self.session(first), (alice.id, "server-a", at(1), None))
        await self.store.record_logout(first, at(3))
        await self.store.record_logout(first, at(9))
        self.assertEqual(
            await self.session(first), (alice.id, "server-a", at(1), at(3))
        )
        self.assertEqual(await self.session(second), (bob.id, "server-b", at(2), None))

    # Migrations

    async def test_migrate_twice(self) -> None:
        """
        Migrating a new database applies every migration; migrating again
        applies nothing.
        """
        db = await self.connect(self.empty_database_url())
        self.assertEqual(await migrate(db, MIGRATED_AT), ALL_VERSIONS)
        self.assertEqual(await migrate(db, MIGRATED_AT), [])
        self.assertEqual(await migrate(self.db, MIGRATED_AT), [])
        rows = await db.transaction(
            lambda txn: txn.execute("SELECT version FROM schema_version ORDER BY 1")
        )
        self.assertEqual([r[0] for r in rows], ALL_VERSIONS)

    async def test_concurrent_migrations(self) -> None:
        """
        Two servers migrating the same new database at once both succeed, and
        each migration is applied exactly once.
        """
        url = self.empty_database_url()
        first, second = await self.connect(url), await self.connect(url)
        results = await gatherResults(
            [
                Deferred.fromCoroutine(migrate(first, MIGRATED_AT)),
                Deferred.fromCoroutine(migrate(second, MIGRATED_AT)),
            ]
        )
        self.assertEqual(sorted(results), [[], ALL_VERSIONS])
        rows = await first.transaction(
            lambda txn: txn.execute("SELECT COUNT(*) FROM schema_version")
        )
        self.assertEqual(int(rows[0][0]), len(ALL_VERSIONS))
        store = Store(second)
        await store.create_user("alice", "alice", "hash", T0)
        self.assertEqual(await Store(first).count_users(), 1)


class SQLiteStoreTests(StoreContract, TestCase):
    """
    The store on SQLite, in a file of the test's temporary directory.
    """

    def empty_database_url(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return "sqlite:" + os.path.join(path, "chat.db")


class PostgresStoreTests(StoreContract, TestCase):
    """
    The store on PostgreSQL, in a new database of the shared test server.
    """

    def empty_database_url(self) -> str:
        server = shared_postgres()
        url = server.create_database()
        self.addCleanup(server.drop_database, url)
        return url
