"""
Rate limits: how much one connection, one address or one account may ask for.

Every limiter reads time from an injected clock, so tests drive them with
L{twisted.internet.task.Clock}.  Each keeps state only for keys that are in
use and forgets idle ones, so an attacker cycling names or addresses cannot
grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

# Commands a connection may send in a burst, and the steady rate after it.
COMMAND_BURST = 20
COMMAND_RATE = 5.0

# Connections one address may hold open at once.
CONNECTIONS_PER_ADDRESS = 20

# Seconds a connection may stay without logging in.
LOGIN_TIMEOUT = 120.0

# Failed logins that are free, per account and per address, in a window.
FAILURES_FREE = 5
FAILURE_WINDOW = 3600.0
# The delay after the free failures doubles each time, up to this.
FAILURE_DELAY_CAP = 60.0

# How many keys a limiter remembers at most.
MAX_KEYS = 100_000


class TokenBucket:
    """
    A burst of C{burst} actions, refilled at C{rate} per second.
    """

    def __init__(self, clock: IReactorTime, burst: int, rate: float) -> None:
        self._clock = clock
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self) -> bool:
        """
        Spend one token; C{False} when the bucket is empty.
        """
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        """
        Seconds until the next token.
        """
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)


class ConnectionCounter:
    """
    Open connections per remote address.
    """

    def __init__(self, limit: int = CONNECTIONS_PER_ADDRESS) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, address: str) -> bool:
        """
        Count a new connection; C{False} (and not counted) over the limit.
        """
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def close(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


@dataclass
class _Failures:
    count: int
    first: float
    blocked_until: float


class LoginThrottle:
    """
    Slows down password guessing, per account and per address.

    The first L{FAILURES_FREE} failures in an hour cost nothing; each one after
    that makes the key wait twice as long as the last (1 s, 2 s, 4 s ...),
    up to L{FAILURE_DELAY_CAP}.  A success clears the account's record.
    Unknown accounts are throttled exactly as known ones, so the throttle
    does not tell which names exist.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def _get(self, key: str) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and self._clock.seconds() - entry.first > FAILURE_WINDOW:
            del self._keys[key]
            return None
        return entry

    def delay(self, *keys: str) -> float:
        """
        Seconds until any of C{keys} may try again; 0 when free to try.
        """
        now = self._clock.seconds()
        waits = [e.blocked_until - now for k in keys if (e := self._get(k))]
        return max([0.0, *waits])

    def failed(self, *keys: str) -> None:
        now = self._clock.seconds()
        for key in keys:
            entry = self._get(key) or _Failures(0, now, now)
            entry.count += 1
            over = entry.count - FAILURES_FREE
            if over > 0:
                wait = min(FAILURE_DELAY_CAP, 2.0 ** (over - 1))
                entry.blocked_until = now + wait
            self._keys[key] = entry
            self._keys.move_to_end(key)
        while len(self._keys) > MAX_KEYS:
            self._keys.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)
