"""
The rate limiters, on a deterministic clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chat.limits import (
    FAILURE_DELAY_CAP,
    FAILURE_WINDOW,
    FAILURES_FREE,
    MAX_KEYS,
    ConnectionCounter,
    LoginThrottle,
    TokenBucket,
)
from chat.names import skeleton


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_steady_rate(self) -> None:
        """
        A full bucket allows its burst at once, then one action per 1/rate s.
        """
        clock = Clock()
        bucket = TokenBucket(clock, burst=3, rate=2.0)
        self.assertEqual([bucket.take() for _ in range(4)], [True] * 3 + [False])
        self.assertAlmostEqual(bucket.wait(), 0.5)
        clock.advance(0.5)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())

    def test_refill_is_capped(self) -> None:
        """
        A long pause refills no more than the burst.
        """
        clock = Clock()
        bucket = TokenBucket(clock, burst=2, rate=1.0)
        clock.advance(1000)
        self.assertEqual([bucket.take() for _ in range(3)], [True, True, False])


class ConnectionCounterTests(SynchronousTestCase):
    def test_limit_per_address(self) -> None:
        """
        One address may hold only so many connections; closing frees a place.
        """
        counter = ConnectionCounter(limit=2)
        self.assertTrue(counter.open("a"))
        self.assertTrue(counter.open("a"))
        self.assertFalse(counter.open("a"))
        self.assertTrue(counter.open("b"))
        counter.close("a")
        self.assertTrue(counter.open("a"))

    def test_closing_forgets_idle_addresses(self) -> None:
        """
        An address with no open connection takes no memory.
        """
        counter = ConnectionCounter()
        counter.open("a")
        counter.close("a")
        self.assertEqual(counter._open, {})


class LoginThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock)

    def test_free_failures_then_doubling_delay(self) -> None:
        """
        The first failures cost nothing; later ones wait 1, 2, 4 ... seconds.
        """
        for _ in range(FAILURES_FREE):
            self.throttle.failed("user:alice", "addr:1.2.3.4")
        self.assertEqual(self.throttle.delay("user:alice"), 0.0)
        delays = []
        for _ in range(4):
            self.throttle.failed("user:alice")
            delays.append(self.throttle.delay("user:alice"))
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0])

    def test_delay_is_capped(self) -> None:
        """
        However many failures, the wait never exceeds the cap.
        """
        for _ in range(FAILURES_FREE + 30):
            self.throttle.failed("user:alice")
        self.assertEqual(self.throttle.delay("user:alice"), FAILURE_DELAY_CAP)

    def test_window_expires(self) -> None:
        """
        Failures older than the window are forgotten.
        """
        for _ in range(FAILURES_FREE + 3):
            self.throttle.failed("addr:x")
        self.clock.advance(FAILURE_WINDOW + 1)
        self.assertEqual(self.throttle.delay("addr:x"), 0.0)

    def test_success_clears_the_account(self) -> None:
        """
        Logging in successfully clears the account's failures.
        """
        for _ in range(FAILURES_FREE + 2):
            self.throttle.failed("user:alice")
        self.throttle.succeeded("user:alice")
        self.assertEqual(self.throttle.delay("user:alice"), 0.0)

    def test_delay_is_the_worst_of_keys(self) -> None:
        """
        A login waits for the most throttled of its account and address.
        """
        for _ in range(FAILURES_FREE + 3):
            self.throttle.failed("addr:x")
        self.assertEqual(self.throttle.delay("user:new", "addr:x"), 4.0)

    def test_memory_is_bounded(self) -> None:
        """
        Cycling through names never keeps more than the maximum of keys.
        """
        for n in range(MAX_KEYS + 10):
            self.throttle.failed(f"user:{n}")
        self.assertEqual(len(self.throttle._keys), MAX_KEYS)


class SkeletonTests(SynchronousTestCase):
    def test_look_alikes_share_a_skeleton(self) -> None:
        """
        Names a reader could mistake for each other have one skeleton;
        different names do not.
        """
        self.assertEqual(skeleton("a1ice"), skeleton("alice"))
        self.assertEqual(skeleton("AIice"), skeleton("alice"))
        self.assertEqual(skeleton("rnallory"), skeleton("mallory"))
        self.assertEqual(skeleton("bob.smith"), skeleton("bob_smith"))
        self.assertNotEqual(skeleton("alice"), skeleton("alicia"))
