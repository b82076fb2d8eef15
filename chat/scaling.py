"""
The autoscaler's rule: how many chat replicas the people online call for.

Pure and synchronous: L{Rule} is fed what was seen, with the time it was seen,
and answers with a L{Decision}.  Reading Redis and talking to Kubernetes live
elsewhere (L{chat.census}, L{chat.kube}, L{chat.scaler}).

The rule:

    - desired = clamp(ceil(users / users per pod), min, max);
    - more than the current size is applied at once;
    - less is applied only down to the highest value desired at any time in the
      last C{scale_down_delay} seconds, so that people logging in and out in
      waves do not make the Deployment shrink and grow in turn;
    - with no data, or data older than C{max_stats_age}, the size is held.

When the size is held for want of data, the current size counts as desired at
that moment, so a scale-down always rests on a full window of good data.  For
the same reason the first decision, and the first after a stretch longer than
the window with no decision at all, counts the size it finds as desired: a
scaler that restarts waits out one window before it shrinks anything.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

DEFAULT_USERS_PER_POD = 3
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 10
DEFAULT_SCALE_DOWN_DELAY_SECONDS = 60.0
# Replicas write their figures every 10 s and they expire after 30 s; figures
# older than this mean a replica missed two writes in a row.
DEFAULT_MAX_STATS_AGE_SECONDS = 25.0


class Action(Enum):
    UP = "scale-up"
    DOWN = "scale-down"
    HOLD = "hold"


@dataclass(frozen=True)
class Policy:
    """
    The settings of the rule.

    @raise ValueError: for settings that cannot work together.
    """

    users_per_pod: int = DEFAULT_USERS_PER_POD
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY_SECONDS
    max_stats_age: float = DEFAULT_MAX_STATS_AGE_SECONDS

    def __post_init__(self) -> None:
        if self.users_per_pod < 1:
            raise ValueError("users per pod must be at least 1")
        if self.min_replicas < 1:
            raise ValueError("the minimum number of replicas must be at least 1")
        if self.max_replicas < self.min_replicas:
            raise ValueError("the maximum number of replicas is below the minimum")
        if self.scale_down_delay < 0:
            raise ValueError("the scale-down delay cannot be negative")
        if self.max_stats_age <= 0:
            raise ValueError("the maximum age of replica figures must be positive")

    def desired(self, users: int) -> int:
        """
        The replicas that C{users} people call for, within the bounds.
        """
        wanted = -(-users // self.users_per_pod)
        return max(self.min_replicas, min(self.max_replicas, wanted))


@dataclass(frozen=True)
class Observation:
    """
    What Redis said about the cluster at one moment.

    @ivar users: people online on live replicas.
    @ivar by_server: those people counted by the replica holding them.
    @ivar replicas: how many replicas publish live figures.
    @ivar stats_age: seconds since the least recently written figures of a
        live replica were written; None when no replica publishes any.
    @ivar orphans: live presence entries naming a replica that publishes no
        figures, left out of C{users}.
    """

    users: int
    by_server: dict[str, int]
    replicas: int
    stats_age: float | None
    orphans: int = 0


@dataclass(frozen=True)
class Unreadable:
    """
    Redis could not be read, or said something that makes no sense.
    """

    reason: str


Reading = Observation | Unreadable


@dataclass(frozen=True)
class Decision:
    """
    One decision: what was seen, and what the Deployment's size should be.

    @ivar users: None when nothing trustworthy was seen.
    @ivar current: the Deployment's size; None when it could not be read.
    @ivar desired: what the people online call for on their own, before
        the scale-down window; None without trustworthy data.
    @ivar target: the size to set; equal to C{current} for a hold.
    """

    time: float
    users: int | None
    current: int | None
    desired: int | None
    target: int | None
    action: Action
    reason: str

    @property
    def changes(self) -> bool:
        return self.action is not Action.HOLD


class Rule:
    """
    Decides from observations, remembering what was desired during the
    scale-down window.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._window: deque[tuple[float, int]] = deque()

    def peak(self, now: float) -> int | None:
        """
        The highest size desired in the window that ends at C{now}.
        """
        self._forget(now)
        return max((size for _, size in self._window), default=None)

    def _forget(self, now: float) -> None:
        # The window is (now - delay, now]: what was wanted exactly one delay
        # ago no longer holds the size up, and with no delay only what is
        # wanted at this moment counts.
        start = now - self.policy.scale_down_delay
        while self._window:
            when = self._window[0][0]
            if when > start or when == now:
                return
            self._window.popleft()

    def _remember(self, now: float, size: int) -> None:
        self._window.append((now, size))

    def decide(self, now: float, current: int, reading: Reading) -> Decision:
        """
        The decision for a Deployment of C{current} replicas, given what was
        read at C{now}.
        """
        self._forget(now)
        if not self._window and self.policy.scale_down_delay > 0:
            # The size found at start-up, or after a gap with no decision,
            # guards the window.
            self._remember(now, current)
        problem = self._problem(reading)
        if problem is not None:
            self._remember(now, current)
            return Decision(
                now, None, current, None, current, Action.HOLD, f"{problem}; holding"
            )
        assert isinstance(reading, Observation)
        users = reading.users
        desired = self.policy.desired(users)
        self._remember(now, desired)
        need = self._need(users, desired)
        if desired > current:
            return Decision(now, users, current, desired, desired, Action.UP, need)
        peak = self.peak(now)
        assert peak is not None
        if peak < current:
            return Decision(
                now,
                users,
                current,
                desired,
                peak,
                Action.DOWN,
                f"{need}; no more than {peak} wanted for"
                f" {self.policy.scale_down_delay:g}s",
            )
        if desired < current:
            reason = (
                f"{need}; {peak} wanted within the last"
                f" {self.policy.scale_down_delay:g}s"
            )
        else:
            reason = need
        return Decision(now, users, current, desired, current, Action.HOLD, reason)

    def _need(self, users: int, desired: int) -> str:
        people = "person" if users == 1 else "people"
        bounds = ""
        wanted = -(-users // self.policy.users_per_pod)
        if wanted < desired:
            bounds = f" (at least {self.policy.min_replicas})"
        elif wanted > desired:
            bounds = f" (at most {self.policy.max_replicas})"
        return (
            f"{users} {people} online need {desired}{bounds}"
            f" at {self.policy.users_per_pod} per pod"
        )

    def _problem(self, reading: Reading) -> str | None:
        if isinstance(reading, Unreadable):
            return reading.reason
        if reading.stats_age is None:
            return "no replica publishes its figures"
        if reading.stats_age > self.policy.max_stats_age:
            return (
                f"replica figures are {reading.stats_age:.0f}s old"
                f" (more than {self.policy.max_stats_age:g}s)"
            )
        return None


class Backoff:
    """
    Growing waits after consecutive failures: C{first}, then doubling, never
    more than C{cap}.
    """

    def __init__(self, first: float, cap: float, factor: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.factor = factor
        self.failures = 0

    def delay(self, failures: int) -> float:
        """
        The wait after C{failures} consecutive failures (at least one).
        """
        return float(min(self.cap, self.first * self.factor ** (failures - 1)))

    def failed(self) -> float:
        """
        Count one more failure; return how long to wait before trying again.
        """
        self.failures += 1
        return self.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0
