"""
The life cycle of session tokens, on a deterministic clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chat.sessions import SESSION_IDLE, LocalTokens, digest


class LocalTokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tokens = LocalTokens(self.clock)

    def run_(self, coroutine):  # type: ignore[no-untyped-def]
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def test_token_has_enough_entropy(self) -> None:
        """
        A token carries at least 128 bits: 32 random bytes, URL-safe.
        """
        token = self.run_(self.tokens.issue("alice"))
        self.assertGreaterEqual(len(token), 43)
        self.assertNotEqual(token, self.run_(self.tokens.issue("alice")))

    def test_only_the_digest_is_kept(self) -> None:
        """
        The store holds the token's digest, never the token itself.
        """
        token = self.run_(self.tokens.issue("alice"))
        self.assertNotIn(token, self.tokens._entries)
        self.assertIn(digest(token), self.tokens._entries)

    def test_rotate_replaces_the_token(self) -> None:
        """
        Rotating yields the owner and a new token; the old one is dead.
        """
        old = self.run_(self.tokens.issue("alice"))
        folded, new = self.run_(self.tokens.rotate(old))
        self.assertEqual(folded, "alice")
        self.assertNotEqual(new, old)
        self.assertIsNone(self.run_(self.tokens.rotate(old)))
        self.assertIsNotNone(self.run_(self.tokens.rotate(new)))

    def test_expires_after_idle_period(self) -> None:
        """
        A token unused for the idle period no longer works.
        """
        token = self.run_(self.tokens.issue("alice"))
        self.clock.advance(SESSION_IDLE - 1)
        self.assertTrue(self.run_(self.tokens.touch(token)))
        self.clock.advance(SESSION_IDLE - 1)
        self.assertTrue(self.run_(self.tokens.touch(token)))
        self.clock.advance(SESSION_IDLE)
        self.assertFalse(self.run_(self.tokens.touch(token)))
        self.assertIsNone(self.run_(self.tokens.rotate(token)))

    def test_revoke(self) -> None:
        """
        A revoked token cannot be used to resume.
        """
        token = self.run_(self.tokens.issue("alice"))
        self.run_(self.tokens.revoke(token))
        self.assertIsNone(self.run_(self.tokens.rotate(token)))

    def test_expired_entries_are_swept(self) -> None:
        """
        Expired tokens do not pile up in memory.
        """
        for _ in range(300):
            self.run_(self.tokens.issue("alice"))
        self.clock.advance(SESSION_IDLE + 1)
        for _ in range(300):
            self.run_(self.tokens.issue("bob"))
        self.assertLessEqual(len(self.tokens), 300)
