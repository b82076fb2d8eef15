"""
One replica's Prometheus metrics.

Each daemon keeps its own C{CollectorRegistry} rather than the process-wide
one, so that several daemons in one test process keep separate counts.  The
service and the protocol increment the counters where things happen; the
gauges are read from the connection registry when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sized
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from chat.records import Kind, Message

CONTENT_TYPE = CONTENT_TYPE_LATEST
LOGIN_KINDS = ("signup", "login")
# The background tasks that carry events to people (chat.cluster.router).
DELIVERY_TASKS = ("route", "publish", "catch-up", "in order")
# From a millisecond on one host to ten seconds through a struggling Redis.
LATENCY_BUCKETS_SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Watched(Protocol):
    """
    What the gauges read from L{chat.factory.ConnectionRegistry}.
    """

    @property
    def connections(self) -> Sized: ...

    @property
    def by_user(self) -> Sized: ...

    @property
    def running(self) -> Mapping[str, int]: ...


class CountedHistogram:
    """
    A histogram that takes many equal observations in one call.

    A fan-out shows one message on many connections at once; counting them
    together costs one bucket search instead of one per connection.
    """

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = buckets
        # One count per bound, and the last for values above every bound.
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += count
        self._sum += value * count

    def collect(self) -> Iterator[Metric]:
        bounds = (*self._bounds, float("inf"))
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((_bound_text(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class ChatMetrics:
    """
    The counters, gauges and histogram of one replica, in their own registry.
    """

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "chat_connections", "Open connections on this replica", registry=registry
        )
        self.sessions = Gauge(
            "chat_sessions",
            "People logged in on this replica",
            registry=registry,
        )
        self.logins = Counter(
            "chat_logins",
            "Sessions started with a password, by signup or login",
            ["kind"],
            registry=registry,
        )
        self.resumes = Counter(
            "chat_resumes", "Sessions resumed with a token", registry=registry
        )
        self.messages = Counter(
            "chat_messages",
            "Messages stored from people on this replica, by kind",
            ["kind"],
            registry=registry,
        )
        self.delivery = CountedHistogram(
            "chat_delivery_seconds",
            "From a message's storing to its showing on a connection here",
            LATENCY_BUCKETS_SECONDS,
        )
        registry.register(self.delivery)
        self.pending = Gauge(
            "chat_pending_deliveries",
            "Events on their way to other replicas or being caught up",
            registry=registry,
        )
        self.errors = Counter(
            "chat_errors",
            "Error replies sent to clients, by code",
            ["code"],
            registry=registry,
        )
        for kind in LOGIN_KINDS:
            self.logins.labels(kind)
        for message_kind in Kind:
            self.messages.labels(message_kind.value)

    def watch(self, registry: Watched) -> None:
        """
        Read the gauges from C{registry} at each scrape.
        """
        self.connections.set_function(lambda: len(registry.connections))
        self.sessions.set_function(lambda: len(registry.by_user))
        self.pending.set_function(
            lambda: sum(registry.running.get(task, 0) for task in DELIVERY_TASKS)
        )

    def delivered(self, message: Message, now: float, count: int = 1) -> None:
        """
        Note that C{message} was shown on C{count} connections at time C{now}.
        """
        self.delivery.observe(max(0.0, now - message.created_at.timestamp()), count)

    def exposition(self) -> bytes:
        """
        Every metric in the Prometheus text format.
        """
        return generate_latest(self.registry)
