"""
Accounts written straight into the database before a spawned daemon starts.

Signing up goes through argon2id at its real cost, about a quarter of a second
of both cores per account here, so 10,000 accounts would take most of an hour.
Seeded accounts all share one hash of the run's password made with the
cheapest argon2id parameters; argon2 reads the parameters from the hash, so
the daemon checks these passwords in well under a millisecond.  A run with
seeded accounts measures connections and sessions, not password hashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import DeferredSemaphore, gatherResults

from chat import names as naming
from chat.db import open_database
from chat.passwords import cheap_hasher
from chat.records import utc_from_timestamp
from chat.schema import migrate
from chat.storage import Store, time_param

# Accounts being written at once; enough to keep a PostgreSQL pool busy.
SEED_CONCURRENCY = 8


async def seed_accounts(
    reactor: Any, database: str, names: Sequence[str], password: str
) -> None:
    """
    Create the schema if needed and an account for each of C{names}.
    """
    db = open_database(reactor, database)
    await db.start()
    try:
        now = utc_from_timestamp(reactor.seconds())
        await migrate(db, time_param(now))
        store = Store(db)
        password_hash = cheap_hasher().hash(password)
        gate = DeferredSemaphore(SEED_CONCURRENCY)

        def create(name: str) -> Any:
            return gate.run(
                store.create_user, name, naming.fold(name), password_hash, now
            )

        await gatherResults([create(name) for name in names], consumeErrors=True)
    finally:
        await db.stop()
