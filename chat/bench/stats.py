"""
Order statistics for latency samples and repeated runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50.0, 95.0, 99.0)


def percentile(ordered: Sequence[float], q: float) -> float:
    """
    The nearest-rank C{q}th percentile of C{ordered}, which must be sorted.

    The nearest rank is the smallest sample that at least C{q} percent of the
    samples do not exceed, so the result is always one of the samples.

    @raise ValueError: for no samples, or C{q} outside 0 to 100.
    """
    if not ordered:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile lies between 0 and 100, not {q}")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """
    The middle value, or the mean of the two middle values.

    @raise ValueError: for no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class Latency:
    """
    A summary of latency samples, in milliseconds; all zero for no samples.
    """

    count: int = 0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_seconds: Iterable[float]) -> Latency:
    """
    The L{Latency} of samples given in seconds.
    """
    ordered = sorted(samples_seconds)
    if not ordered:
        return Latency()
    ms = 1000.0
    return Latency(
        count=len(ordered),
        p50=percentile(ordered, 50) * ms,
        p95=percentile(ordered, 95) * ms,
        p99=percentile(ordered, 99) * ms,
        max=ordered[-1] * ms,
        mean=sum(ordered) / len(ordered) * ms,
    )


def rate(count: float, seconds: float) -> float:
    """
    C{count} per second over C{seconds}; zero for an empty interval.
    """
    return count / seconds if seconds > 0 else 0.0
