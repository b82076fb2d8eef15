"""
The store: every durable fact of the chat, and the SQL that keeps it.

One class serves SQLite and PostgreSQL; the SQL is portable and runs through an
L{IDatabase}.  Every method is a coroutine.  Names arrive already validated and
folded by the service layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from chat.batching import MAX_BATCH_ROWS, BatchWriter
from chat.db import IDatabase, IntegrityViolation, Row, Transaction, one_at_a_time
from chat.names import skeleton
from chat.records import (
    BROADCAST_TARGET,
    GROUP_PREFIX,
    AwayCounts,
    Group,
    Kind,
    Member,
    Message,
    Role,
    User,
)

# An arbitrary 64-bit key for the lock that message transactions take in turn.
MESSAGE_ORDER_KEY = 0x43484154_4D534753


class NameTaken(Exception):
    """
    A user or an open group already has that name.
    """


class DuplicateRef(Exception):
    """
    The sender already stored a message with this client reference.
    """


def time_param(when: datetime) -> str:
    """
    A timestamp as both engines accept it: ISO 8601 in UTC.
    """
    return when.astimezone(UTC).isoformat()


def time_value(value: Any) -> datetime:
    """
    A timestamp read back from either engine, as an aware UTC datetime.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_GROUP_COLUMNS = """
    g.id, g.name, g.description, g.is_private,
    (SELECT COUNT(*) FROM group_members c WHERE c.group_id = g.id)
"""


# Every column a Message needs, whatever its kind; rows go through _message.
_MESSAGE_SELECT = """
    SELECT m.id, m.kind, s.name,
        CASE m.kind
            WHEN 'private' THEN (SELECT r.name FROM users r WHERE r.id =
                CASE WHEN c.user_low = m.sender_id THEN c.user_high
                     ELSE c.user_low END)
            WHEN 'group' THEN g.name
            ELSE NULL
        END,
        m.body, m.created_at
    FROM messages m
    JOIN users s ON s.id = m.sender_id
    LEFT JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN chat_groups g ON g.id = m.group_id
"""


# The tail of every message insert: a ref that its sender already used leaves
# the row out and returns nothing, instead of failing the statement, which on
# PostgreSQL would spoil every other message of the same group commit.
_UNLESS_REF_USED = (
    " ON CONFLICT (sender_id, client_ref) WHERE client_ref IS NOT NULL"
    " DO NOTHING RETURNING id"
)


def _message(row: Row) -> Message:
    id_, kind, sender, other, body, created = row
    kind = Kind(kind)
    if kind is Kind.GROUP:
        target = GROUP_PREFIX + other
    elif kind is Kind.BROADCAST:
        target = BROADCAST_TARGET
    else:
        target = other
    return Message(id_, kind, sender, target, body, time_value(created))


def _group(row: Row, role: Any = None) -> Group:
    return Group(
        id=row[0],
        name=row[1],
        description=row[2],
        is_private=bool(row[3]),
        member_count=row[4],
        my_role=Role(role) if role else None,
    )


class Store:
    """
    Users, messages, groups and the sessions log.

    Transactions that store messages run one at a time, from the moment the
    first id is taken until the commit, even across replicas sharing one
    PostgreSQL.  Message ids therefore become visible in increasing order:
    once a message is committed, every lower id is committed too or never
    will be, which lets replicas pass messages on in id order.
    """

    def __init__(self, db: IDatabase, max_batch_rows: int = MAX_BATCH_ROWS) -> None:
        self._db = db
        self._writer = BatchWriter(db, max_batch_rows, self._in_turn)

    async def _in_turn(self, txn: Transaction) -> None:
        await one_at_a_time(self._db, txn, MESSAGE_ORDER_KEY)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        async def work(txn: Transaction) -> list[Row]:
            return await txn.execute(sql, params)

        return await self._db.transaction(work)

    # Users

    async def create_user(
        self, name: str, folded: str, password_hash: str, now: datetime
    ) -> User:
        """
        Add a user, who has seen every message sent before they existed.

        @raise NameTaken: if the folded name is in use.
        """
        try:
            rows = await self._query(
                "INSERT INTO users (name, name_folded, name_skeleton, password_hash,"
                " created_at, seen_up_to)"
                " VALUES (?, ?, ?, ?, ?,"
                " (SELECT COALESCE(MAX(id), 0) FROM messages))"
                " RETURNING id",
                (name, folded, skeleton(name), password_hash, time_param(now)),
            )
        except IntegrityViolation as e:
            raise NameTaken(folded) from e
        return User(id=rows[0][0], name=name, created_at=now)

    async def look_alike(self, name: str) -> str | None:
        """
        The name of an existing user whose name looks like C{name}.
        """
        rows = await self._query(
            "SELECT name FROM users WHERE name_skeleton = ? LIMIT 1",
            (skeleton(name),),
        )
        return rows[0][0] if rows else None

    async def find_user(self, folded: str) -> tuple[User, str] | None:
        """
        A user and their password hash, by folded name.
        """
        rows = await self._query(
            "SELECT id, name, created_at, password_hash FROM users"
            " WHERE name_folded = ?",
            (folded,),
        )
        if not rows:
            return None
        id_, name, created, password_hash = rows[0]
        return User(id=id_, name=name, created_at=time_value(created)), password_hash

    async def list_users(self) -> list[User]:
        rows = await self._query(
            "SELECT id, name, created_at FROM users ORDER BY name_folded"
        )
        return [User(id=r[0], name=r[1], created_at=time_value(r[2])) for r in rows]

    async def count_users(self) -> int:
        rows = await self._query("SELECT COUNT(*) FROM users")
        return int(rows[0][0])

    # Messages

    async def _insert_message(
        self, work: Callable[[Transaction], Awaitable[int | None]], ref: str | None
    ) -> int:
        # Messages sent at about the same time share a transaction and so a
        # commit; each caller still hears only after that commit.
        id_ = await self._writer.submit(work)
        if id_ is None:
            assert ref is not None, "a message without a ref was left out"
            raise DuplicateRef(ref)
        return id_

    async def find_by_ref(self, sender: User, ref: str) -> Message | None:
        """
        The message C{sender} stored with client reference C{ref}, if any.
        """
        rows = await self._query(
            _MESSAGE_SELECT + " WHERE m.sender_id = ? AND m.client_ref = ?",
            (sender.id, ref),
        )
        return _message(rows[0]) if rows else None

    async def messages_for(
        self,
        user: User,
        after: int,
        limit: int,
        newest: bool = False,
    ) -> list[Message]:
        """
        Messages by others that C{user} can receive with an id above C{after},
        in id order: their private conversations, their groups and broadcasts.

        @param newest: keep the last C{limit} rather than the first.
        """
        rows = await self._query(
            _MESSAGE_SELECT + " WHERE m.id > ? AND m.sender_id <> ?"
            " AND (m.kind = 'broadcast' OR c.user_low = ? OR c.user_high = ?"
            "  OR m.group_id IN (SELECT group_id FROM group_members"
            "   WHERE user_id = ?))"
            f" ORDER BY m.id {'DESC' if newest else 'ASC'} LIMIT ?",
            (after, user.id, user.id, user.id, user.id, limit),
        )
        messages = [_message(r) for r in rows]
        return messages[::-1] if newest else messages

    async def messages_between(
        self, after: int, before: int, limit: int
    ) -> list[Message]:
        """
        Up to C{limit} messages of any kind with an id above C{after} and
        below C{before}, in id order.
        """
        rows = await self._query(
            _MESSAGE_SELECT + " WHERE m.id > ? AND m.id < ? ORDER BY m.id LIMIT ?",
            (after, before, limit),
        )
        return [_message(r) for r in rows]

    async def add_private(
        self,
        sender: User,
        recipient: User,
        body: str,
        now: datetime,
        ref: str | None = None,
    ) -> Message:
        """
        Store a private message.

        @raise DuplicateRef: if C{sender} already used C{ref}.
        """
        low, high = sorted((sender.id, recipient.id))

        async def work(txn: Transaction) -> int | None:
            await txn.execute(
                "INSERT INTO conversations (user_low, user_high, created_at)"
                " VALUES (?, ?, ?) ON CONFLICT (user_low, user_high) DO NOTHING",
                (low, high, time_param(now)),
            )
            rows = await txn.execute(
                "INSERT INTO messages (kind, sender_id, conversation_id, body,"
                " created_at, client_ref)"
                " SELECT 'private', ?, id, ?, ?, ? FROM conversations"
                " WHERE user_low = ? AND user_high = ?" + _UNLESS_REF_USED,
                (sender.id, body, time_param(now), ref, low, high),
            )
            return int(rows[0][0]) if rows else None

        id_ = await self._insert_message(work, ref)
        return Message(id_, Kind.PRIVATE, sender.name, recipient.name, body, now)

    async def _insert_one(
        self, sql: str, params: tuple[Any, ...], ref: str | None
    ) -> int:
        async def work(txn: Transaction) -> int | None:
            rows = await txn.execute(sql + _UNLESS_REF_USED, params)
            return int(rows[0][0]) if rows else None

        return await self._insert_message(work, ref)

    async def add_group_message(
        self,
        sender: User,
        group: Group,
        body: str,
        now: datetime,
        ref: str | None = None,
    ) -> Message:
        id_ = await self._insert_one(
            "INSERT INTO messages (kind, sender_id, group_id, body, created_at,"
            " client_ref) VALUES ('group', ?, ?, ?, ?, ?)",
            (sender.id, group.id, body, time_param(now), ref),
            ref,
        )
        target = GROUP_PREFIX + group.name
        return Message(id_, Kind.GROUP, sender.name, target, body, now)

    async def add_broadcast(
        self, sender: User, body: str, now: datetime, ref: str | None = None
    ) -> Message:
        id_ = await self._insert_one(
            "INSERT INTO messages (kind, sender_id, body, created_at, client_ref)"
            " VALUES ('broadcast', ?, ?, ?, ?)",
            (sender.id, body, time_param(now), ref),
            ref,
        )
        return Message(id_, Kind.BROADCAST, sender.name, BROADCAST_TARGET, body, now)

    async def private_history(self, me: User, other: User, limit: int) -> list[Message]:
        """
        The last C{limit} messages between two people, oldest first.
        """
        low, high = sorted((me.id, other.id))
        rows = await self._query(
            "SELECT m.id, u.name, m.sender_id, m.body, m.created_at"
            " FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id"
            " JOIN users u ON u.id = m.sender_id"
            " WHERE c.user_low = ? AND c.user_high = ?"
            " ORDER BY m.id DESC LIMIT ?",
            (low, high, limit),
        )
        names = {me.id: other.name, other.id: me.name}
        return [
            Message(r[0], Kind.PRIVATE, r[1], names[r[2]], r[3], time_value(r[4]))
            for r in reversed(rows)
        ]

    async def group_history(self, group: Group, limit: int) -> list[Message]:
        rows = await self._query(
            "SELECT m.id, u.name, m.body, m.created_at FROM messages m"
            " JOIN users u ON u.id = m.sender_id"
            " WHERE m.group_id = ? ORDER BY m.id DESC LIMIT ?",
            (group.id, limit),
        )
        target = GROUP_PREFIX + group.name
        return [
            Message(r[0], Kind.GROUP, r[1], target, r[2], time_value(r[3]))
            for r in reversed(rows)
        ]

    async def broadcast_history(self, limit: int) -> list[Message]:
        rows = await self._query(
            "SELECT m.id, u.name, m.body, m.created_at FROM messages m"
            " JOIN users u ON u.id = m.sender_id"
            " WHERE m.kind = 'broadcast' ORDER BY m.id DESC LIMIT ?",
            (limit,),
        )
        return [
            Message(
                r[0], Kind.BROADCAST, r[1], BROADCAST_TARGET, r[2], time_value(r[3])
            )
            for r in reversed(rows)
        ]

    async def count_messages(self) -> int:
        rows = await self._query("SELECT COUNT(*) FROM messages")
        return int(rows[0][0])

    async def last_message_id(self) -> int:
        rows = await self._query("SELECT COALESCE(MAX(id), 0) FROM messages")
        return int(rows[0][0])

    async def seen_up_to(self, user: User) -> int:
        """
        The highest message id C{user} was recorded as shown.
        """
        rows = await self._query(
            "SELECT seen_up_to FROM users WHERE id = ?", (user.id,)
        )
        return int(rows[0][0])

    async def mark_seen(self, user: User, up_to: int) -> None:
        """
        Record that C{user} has been shown every message up to C{up_to}.
        """
        await self._query(
            "UPDATE users SET seen_up_to = ? WHERE id = ? AND seen_up_to < ?",
            (up_to, user.id, up_to),
        )

    async def mark_seen_many(self, marks: list[tuple[User, int]]) -> None:
        """
        L{mark_seen} for several people, in one transaction.
        """

        async def work(txn: Transaction) -> None:
            for user, up_to in marks:
                await txn.execute(
                    "UPDATE users SET seen_up_to = ? WHERE id = ? AND seen_up_to < ?",
                    (up_to, user.id, up_to),
                )

        if marks:
            await self._db.transaction(work)

    async def away_counts(self, user: User) -> AwayCounts:
        """
        How many messages for C{user}, by others, came after what they last saw.
        """
        rows = await self._query(
            "SELECT m.kind, COUNT(*) FROM messages m"
            " WHERE m.id > (SELECT seen_up_to FROM users WHERE id = ?)"
            " AND m.sender_id <> ?"
            " AND (m.kind = 'broadcast'"
            "  OR m.conversation_id IN (SELECT id FROM conversations"
            "   WHERE user_low = ? OR user_high = ?)"
            "  OR m.group_id IN (SELECT group_id FROM group_members"
            "   WHERE user_id = ?))"
            " GROUP BY m.kind",
            (user.id, user.id, user.id, user.id, user.id),
        )
        counts = {kind: int(n) for kind, n in rows}
        return AwayCounts(
            private=counts.get("private", 0),
            group=counts.get("group", 0),
            broadcast=counts.get("broadcast", 0),
        )

    # Groups

    async def create_group(
        self,
        creator: User,
        name: str,
        folded: str,
        description: str,
        now: datetime,
    ) -> Group:
        """
        Open a public group with its creator as admin.

        @raise NameTaken: if an open group has that folded name.
        """

        async def work(txn: Transaction) -> int:
            rows = await txn.execute(
                "INSERT INTO chat_groups (name, name_folded, description,"
                " creator_id, is_private, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (name, folded, description, creator.id, False, time_param(now)),
            )
            group_id = int(rows[0][0])
            await txn.execute(
                "INSERT INTO group_members (group_id, user_id, role, joined_at)"
                " VALUES (?, ?, 'admin', ?)",
                (group_id, creator.id, time_param(now)),
            )
            return group_id

        try:
            group_id = await self._db.transaction(work)
        except IntegrityViolation as e:
            raise NameTaken(folded) from e
        return Group(group_id, name, description, False, 1, Role.ADMIN)

    async def find_group(self, folded: str, viewer: User) -> Group | None:
        """
        An open group by folded name, with C{viewer}'s role in it.
        """
        rows = await self._query(
            f"SELECT {_GROUP_COLUMNS}, m.role FROM chat_groups g"
            " LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = ?"
            " WHERE g.name_folded = ? AND g.closed_at IS NULL",
            (viewer.id, folded),
        )
        return _group(rows[0], rows[0][5]) if rows else None

    async def groups_of(self, user: User) -> list[Group]:
        rows = await self._query(
            f"SELECT {_GROUP_COLUMNS}, m.role FROM chat_groups g"
            " JOIN group_members m ON m.group_id = g.id AND m.user_id = ?"
            " WHERE g.closed_at IS NULL ORDER BY g.name_folded",
            (user.id,),
        )
        return [_group(r, r[5]) for r in rows]

    async def browse_groups(self, viewer: User, search: str) -> list[Group]:
        """
        Open groups that C{viewer} may see, public ones and their own, whose
        name or description holds C{search} in any case.

        The text is matched here rather than with C{LIKE}: SQLite folds the
        case of ASCII letters only, PostgreSQL of every letter.
        """
        rows = await self._query(
            f"SELECT {_GROUP_COLUMNS}, m.role FROM chat_groups g"
            " LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = ?"
            " WHERE g.closed_at IS NULL"
            " AND (g.is_private = ? OR m.role IS NOT NULL)"
            " ORDER BY g.name_folded",
            (viewer.id, False),
        )
        wanted = search.casefold()
        return [_group(r, r[5]) for r in rows if wanted in f"{r[1]} {r[2]}".casefold()]

    async def add_member(
        self, group: Group, user: User, role: Role, now: datetime
    ) -> bool:
        """
        Make C{user} a member; C{False} if they already were.
        """
        rows = await self._query(
            "INSERT INTO group_members (group_id, user_id, role, joined_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id",
            (group.id, user.id, role.value, time_param(now)),
        )
        return bool(rows)

    async def remove_member(self, group: Group, user: User, now: datetime) -> int:
        """
        Take C{user} out of C{group} and return how many members remain.

        A group left without members is closed, which frees its name.  A group
        left without an admin hands the role to its longest-standing member.
        """

        async def work(txn: Transaction) -> int:
            await txn.execute(
                "DELETE FROM group_members WHERE group_id = ? AND user_id = ?",
                (group.id, user.id),
            )
            rows = await txn.execute(
                "SELECT COUNT(*), SUM(CASE WHEN role = 'admin' THEN 1 ELSE 0 END)"
                " FROM group_members WHERE group_id = ?",
                (group.id,),
            )
            remaining, admins = int(rows[0][0]), int(rows[0][1] or 0)
            if remaining == 0:
                await txn.execute(
                    "UPDATE chat_groups SET closed_at = ? WHERE id = ?",
                    (time_param(now), group.id),
                )
            elif admins == 0:
                await txn.execute(
                    "UPDATE group_members SET role = 'admin'"
                    " WHERE group_id = ? AND user_id = (SELECT user_id"
                    "  FROM group_members WHERE group_id = ?"
                    "  ORDER BY joined_at, user_id LIMIT 1)",
                    (group.id, group.id),
                )
            return remaining

        return await self._db.transaction(work)

    async def group_member_names(self, name: str) -> list[str]:
        """
        The folded names of the members of the open group called C{name}.
        """
        rows = await self._query(
            "SELECT u.name_folded FROM group_members m"
            " JOIN users u ON u.id = m.user_id"
            " JOIN chat_groups g ON g.id = m.group_id"
            " WHERE g.name_folded = ? AND g.closed_at IS NULL",
            (name.lower(),),
        )
        return [r[0] for r in rows]

    async def members(self, group: Group) -> list[Member]:
        rows = await self._query(
            "SELECT u.name, m.role, m.joined_at FROM group_members m"
            " JOIN users u ON u.id = m.user_id WHERE m.group_id = ?"
            " ORDER BY m.joined_at, u.name_folded",
            (group.id,),
        )
        return [Member(r[0], Role(r[1]), time_value(r[2])) for r in rows]

    async def set_private(self, group: Group, private: bool) -> None:
        await self._query(
            "UPDATE chat_groups SET is_private = ? WHERE id = ?", (private, group.id)
        )

    # The sessions log

    async def record_login(
        self, user: User, server_id: str, now: datetime, kind: str = "login"
    ) -> int:
        """
        Open an entry in the sessions log; C{kind} is login, signup or resume.
        """
        rows = await self._query(
            "INSERT INTO sessions (user_id, server_id, login_at, kind)"
            " VALUES (?, ?, ?, ?) RETURNING id",
            (user.id, server_id, time_param(now), kind),
        )
        return int(rows[0][0])

    async def record_logout(self, session_id: int, now: datetime) -> None:
        await self._query(
            "UPDATE sessions SET logout_at = ? WHERE id = ? AND logout_at IS NULL",
            (time_param(now), session_id),
        )
