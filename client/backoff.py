"""
How long to wait before each reconnection attempt.

The waits start near two seconds and double up to a cap.  Each one is cut
by a random fraction so that many clients dropped at the same moment do not
all come back at the same moment.  A server that announces its own shutdown
may say when to come back; that replaces the next wait.
"""

from __future__ import annotations

from collections.abc import Callable

FIRST_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 30.0
JITTER_FRACTION = 0.2


class Backoff:
    """
    The waits of one run of failed attempts, reset once a connection works.

    @param random: returns a float in [0, 1); injected so tests can fix it.
    """

    def __init__(
        self,
        random: Callable[[], float],
        first: float = FIRST_DELAY_SECONDS,
        cap: float = MAX_DELAY_SECONDS,
        jitter: float = JITTER_FRACTION,
    ) -> None:
        self._random = random
        self._first = first
        self._cap = cap
        self._jitter = jitter
        self._attempts = 0
        self._retry_after: float | None = None

    def next_delay(self) -> float:
        """
        The wait before the next attempt; each call counts one attempt.
        """
        attempts, self._attempts = self._attempts, self._attempts + 1
        retry_after, self._retry_after = self._retry_after, None
        if retry_after is not None:
            # Never earlier than the server asked; the jitter only adds.
            jittered = retry_after * (1 + self._jitter * self._random())
            return min(jittered, self._cap)
        nominal = min(self._first * 2.0**attempts, self._cap)
        return nominal * (1 - self._jitter * self._random())

    def retry_after(self, seconds: float) -> None:
        """
        The server asked to come back after C{seconds}: the next wait is that.
        """
        self._retry_after = min(max(seconds, 0.0), self._cap)

    def reset(self) -> None:
        """
        A connection worked: the next run of attempts starts from the first wait.
        """
        self._attempts = 0
