"""
Tests for L{client.backoff}: the waits between reconnection attempts.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from client.backoff import (
    FIRST_DELAY_SECONDS,
    JITTER_FRACTION,
    MAX_DELAY_SECONDS,
    Backoff,
)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


class BackoffTests(SynchronousTestCase):
    def delays(self, backoff: Backoff, count: int) -> list[float]:
        return [backoff.next_delay() for _ in range(count)]

    def test_first_wait_about_two_seconds(self) -> None:
        """
        The first wait is two seconds, less at most the jitter fraction.
        """
        self.assertEqual(FIRST_DELAY_SECONDS, 2.0)
        self.assertEqual(Backoff(fixed(0.0)).next_delay(), 2.0)
        shortest = Backoff(fixed(0.999999)).next_delay()
        self.assertAlmostEqual(shortest, 2.0 * (1 - JITTER_FRACTION), places=4)

    def test_doubles_up_to_cap(self) -> None:
        """
        Without jitter the waits double and then stay at the 30 s cap.
        """
        self.assertEqual(MAX_DELAY_SECONDS, 30.0)
        self.assertEqual(
            self.delays(Backoff(fixed(0.0)), 7), [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
        )

    def test_jitter_bounds(self) -> None:
        """
        With any random draw each wait lies between its nominal value less
        the jitter fraction and the nominal value, so never above the cap.
        """
        nominal = [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        for draw in (0.0, 0.25, 0.5, 0.75, 0.999999):
            for delay, top in zip(
                self.delays(Backoff(fixed(draw)), 6), nominal, strict=True
            ):
                self.assertGreaterEqual(delay, top * (1 - JITTER_FRACTION))
                self.assertLessEqual(delay, top)

    def test_jitter_spreads_clients(self) -> None:
        """
        Different random draws give different waits.
        """
        waits = {Backoff(fixed(draw)).next_delay() for draw in (0.1, 0.5, 0.9)}
        self.assertEqual(len(waits), 3)

    def test_reset(self) -> None:
        """
        After a connection worked, the next wait is the first one again.
        """
        backoff = Backoff(fixed(0.0))
        self.delays(backoff, 4)
        backoff.reset()
        self.assertEqual(backoff.next_delay(), 2.0)

    def test_retry_after_replaces_next_wait(self) -> None:
        """
        A server's retry_after is the next wait (never shorter, jitter only
        adds), and the growth then goes on from there.
        """
        backoff = Backoff(fixed(0.0))
        backoff.retry_after(0.5)
        self.assertEqual(self.delays(backoff, 2), [0.5, 4.0])

        late = Backoff(fixed(0.999999))
        late.retry_after(1.0)
        delay = late.next_delay()
        self.assertGreaterEqual(delay, 1.0)
        self.assertLessEqual(delay, 1.0 + JITTER_FRACTION)

    def test_retry_after_bounded(self) -> None:
        """
        A retry_after beyond the cap waits the cap; a negative one, nothing.
        """
        backoff = Backoff(fixed(0.0))
        backoff.retry_after(3600)
        self.assertEqual(backoff.next_delay(), 30.0)
        backoff.retry_after(-5)
        self.assertEqual(backoff.next_delay(), 0.0)
