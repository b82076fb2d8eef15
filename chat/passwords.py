"""
Password hashing with argon2id, on a bounded pool of worker threads.

Hashing is slow on purpose, so it never runs on the reactor thread, and the
pool is small so that a storm of logins cannot starve the process.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

HASH_THREADS = 2


class Passwords:
    """
    Hash and verify passwords off the reactor thread.

    @param hasher: the argon2 parameters; tests pass cheap ones.
    """

    def __init__(
        self, reactor: IReactorThreads, hasher: PasswordHasher | None = None
    ) -> None:
        self._reactor = reactor
        self._hasher = hasher or PasswordHasher()
        self._pool = ThreadPool(
            minthreads=0, maxthreads=HASH_THREADS, name="chat-passwords"
        )
        # Checked against when the user does not exist, so that an unknown
        # name costs the same time as a wrong password.  Made on first use, in
        # a worker thread.
        self._decoy: str | None = None

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def hash(self, password: str) -> Deferred[str]:
        return deferToThreadPool(self._reactor, self._pool, self._hasher.hash, password)

    def verify(self, stored: str | None, password: str) -> Deferred[bool]:
        """
        Whether C{password} matches C{stored}; C{None} means no such user.
        """
        return deferToThreadPool(
            self._reactor, self._pool, self._check, stored, password
        )

    def _check(self, stored: str | None, password: str) -> bool:
        if stored is None and self._decoy is None:
            self._decoy = self._hasher.hash("decoy password")
        try:
            self._hasher.verify(stored or self._decoy or "", password)
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None


def cheap_hasher() -> PasswordHasher:
    """
    Argon2id with minimal cost, for tests and benchmarks only.
    """
    return PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
