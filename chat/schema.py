"""
Versioned schema migrations, one text for SQLite and PostgreSQL.

Each migration is written once; the few column types that differ between the
engines are named in braces and filled in per dialect.  Migrations only ever
add: a table, a column, an index.  The applied versions are recorded in
C{schema_version}; on PostgreSQL an advisory lock makes replicas that start at
the same moment apply each migration exactly once.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.logger import Logger

from chat import logs
from chat.db import IDatabase, Transaction, one_at_a_time

log = Logger(observer=logs.observer)

# An arbitrary 64-bit key that identifies this application's migration lock.
MIGRATION_LOCK_KEY = 0x43484154_5343484D

TYPES = {
    "sqlite": {
        "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "ref": "INTEGER",
        "time": "TEXT",
        "bool": "INTEGER",
    },
    "postgres": {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "ref": "BIGINT",
        "time": "TIMESTAMPTZ",
        "bool": "BOOLEAN",
    },
}


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS = (
    Migration(
        1,
        "users, messages, groups and the sessions log",
        (
            """
            CREATE TABLE users (
                id {id},
                name TEXT NOT NULL,
                name_folded TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                created_at {time} NOT NULL,
                seen_up_to {ref} NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE conversations (
                id {id},
                user_low {ref} NOT NULL REFERENCES users (id),
                user_high {ref} NOT NULL REFERENCES users (id),
                created_at {time} NOT NULL,
                CHECK (user_low < user_high),
                UNIQUE (user_low, user_high)
            )
            """,
            """
            CREATE TABLE chat_groups (
                id {id},
                name TEXT NOT NULL,
                name_folded TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                creator_id {ref} NOT NULL REFERENCES users (id),
                is_private {bool} NOT NULL,
                created_at {time} NOT NULL,
                closed_at {time}
            )
            """,
            """
            CREATE UNIQUE INDEX chat_groups_open_name
                ON chat_groups (name_folded) WHERE closed_at IS NULL
            """,
            """
            CREATE TABLE group_members (
                group_id {ref} NOT NULL REFERENCES chat_groups (id),
                user_id {ref} NOT NULL REFERENCES users (id),
                role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
                joined_at {time} NOT NULL,
                PRIMARY KEY (group_id, user_id)
            )
            """,
            "CREATE INDEX group_members_user ON group_members (user_id)",
            """
            CREATE TABLE messages (
                id {id},
                kind TEXT NOT NULL
                    CHECK (kind IN ('private', 'group', 'broadcast')),
                sender_id {ref} NOT NULL REFERENCES users (id),
                conversation_id {ref} REFERENCES conversations (id),
                group_id {ref} REFERENCES chat_groups (id),
                body TEXT NOT NULL,
                created_at {time} NOT NULL,
                CHECK ((kind = 'private') = (conversation_id IS NOT NULL)),
                CHECK ((kind = 'group') = (group_id IS NOT NULL))
            )
            """,
            """
            CREATE INDEX messages_conversation ON messages (conversation_id, id)
                WHERE conversation_id IS NOT NULL
            """,
            """
            CREATE INDEX messages_group ON messages (group_id, id)
                WHERE group_id IS NOT NULL
            """,
            """
            CREATE INDEX messages_broadcast ON messages (id)
                WHERE kind = 'broadcast'
            """,
            """
            CREATE TABLE sessions (
                id {id},
                user_id {ref} NOT NULL REFERENCES users (id),
                server_id TEXT NOT NULL,
                login_at {time} NOT NULL,
                logout_at {time}
            )
            """,
            "CREATE INDEX sessions_user ON sessions (user_id, login_at)",
        ),
    ),
    Migration(
        2,
        "client message references, so that a resend is stored once",
        (
            "ALTER TABLE messages ADD COLUMN client_ref TEXT",
            """
            CREATE UNIQUE INDEX messages_client_ref ON messages (sender_id, client_ref)
                WHERE client_ref IS NOT NULL
            """,
        ),
    ),
    Migration(
        3,
        "how a session began: login, signup or resume",
        ("ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'login'",),
    ),
    Migration(
        4,
        "name skeletons, so that look-alike names can be refused",
        (
            "ALTER TABLE users ADD COLUMN name_skeleton TEXT",
            "CREATE INDEX users_skeleton ON users (name_skeleton)",
        ),
    ),
)


def render(statement: str, dialect: str) -> str:
    """
    Fill in the dialect's column types.
    """
    return statement.format(**TYPES[dialect])


async def _applied_versions(txn: Transaction) -> set[int]:
    rows = await txn.execute("SELECT version FROM schema_version")
    return {row[0] for row in rows}


async def migrate(db: IDatabase, now: str) -> list[int]:
    """
    Apply every migration that the database has not seen yet.

    @param now: the time to record against each applied migration.
    @return: the versions applied by this call.
    """

    async def work(txn: Transaction) -> list[int]:
        await one_at_a_time(db, txn, MIGRATION_LOCK_KEY)
        await txn.execute(
            render(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at {time} NOT NULL)",
                db.dialect,
            )
        )
        done = await _applied_versions(txn)
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await txn.execute(render(statement, db.dialect))
            await txn.execute(
                "INSERT INTO schema_version (version, name, applied_at)"
                " VALUES (?, ?, ?)",
                (migration.version, migration.name, now),
            )
            applied.append(migration.version)
        return applied

    applied = await db.transaction(work)
    for version in applied:
        log.info("applied schema migration {version}", version=version)
    return applied
