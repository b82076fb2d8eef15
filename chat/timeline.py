"""
The history behind the dashboard's charts, kept in Redis.

Every few seconds the dashboard records a L{Sample} of the system in a sorted
set scored by the time it was taken.  The set keeps the last hour, and never
more than L{MAX_SAMPLES}, so a dashboard that restarts (or a second one)
shows the same past.  When several dashboards record, a sample that comes
less than half an interval after the newest one is left out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from chat.cluster.keys import KEYS, Keys
from chat.cluster.redisconn import RedisClient

HISTORY_SECONDS = 3600.0
SAMPLE_SECONDS = 5.0
# An hour at one sample a second: a bound even for a short interval.
MAX_SAMPLES = 3600

# KEYS: the history.  ARGV: the sample's time, its JSON, the least gap after
# the newest sample, the oldest time kept, the most samples kept.
_RECORD = """
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) > tonumber(ARGV[1]) - tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[5]) - 1)
return 1
"""


@dataclass(frozen=True)
class Sample:
    """
    The system at one moment; a figure is C{None} when it could not be read.

    @ivar users: people online.
    @ivar replicas: replicas publishing figures.
    @ivar ready: those of them that take new people.
    @ivar desired: the size the autoscaler last chose.
    @ivar messages: messages stored since the beginning.
    """

    time: float
    users: int | None
    replicas: int | None
    ready: int | None
    desired: int | None
    messages: int | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Sample:
        data = json.loads(text)
        return cls(
            time=float(data["time"]),
            **{name: _count(data.get(name)) for name in _COUNTS},
        )


_COUNTS = ("users", "replicas", "ready", "desired", "messages")


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


class History:
    """
    The samples of the last L{HISTORY_SECONDS}, in Redis.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys = KEYS,
        interval: float = SAMPLE_SECONDS,
        horizon: float = HISTORY_SECONDS,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        self._redis = redis
        self._key = keys.dashboard_history
        self.interval = interval
        self.horizon = horizon
        self._max_samples = max_samples

    async def record(self, sample: Sample) -> bool:
        """
        Add C{sample} unless another was added less than half an interval
        before it; forget what is older than the horizon.
        """
        added = await self._redis.eval(
            _RECORD,
            [self._key],
            [
                repr(sample.time),
                sample.to_json(),
                repr(self.interval / 2),
                repr(sample.time - self.horizon),
                self._max_samples,
            ],
        )
        return bool(int(added))

    async def read(self, now: float) -> list[Sample]:
        """
        The samples taken within the horizon before C{now}, oldest first.
        """
        entries = await self._redis.execute(
            "ZRANGEBYSCORE", self._key, repr(now - self.horizon), "+inf"
        )
        samples = []
        for entry in entries or []:
            try:
                samples.append(Sample.from_json(entry))
            except (ValueError, KeyError, TypeError):
                continue
        return samples


def rates(samples: list[Sample]) -> list[float | None]:
    """
    Messages per second between each sample and the one before it.
    """
    found: list[float | None] = [None] * min(1, len(samples))
    for before, after in zip(samples, samples[1:], strict=False):
        elapsed = after.time - before.time
        if before.messages is None or after.messages is None or elapsed <= 0:
            found.append(None)
            continue
        found.append(max(0, after.messages - before.messages) / elapsed)
    return found


def series(samples: list[Sample]) -> dict[str, list[Any]]:
    """
    The samples as one list per figure, as the charts take them.
    """
    return {
        "timestamps": [s.time for s in samples],
        "user_count": [s.users for s in samples],
        "replica_count": [s.replicas for s in samples],
        "ready_pods": [s.ready for s in samples],
        "desired_replicas": [s.desired for s in samples],
        "total_messages": [s.messages for s in samples],
        "message_rate": [
            None if rate is None else round(rate, 3) for rate in rates(samples)
        ],
    }
