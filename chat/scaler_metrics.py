"""
The autoscaler's Prometheus metrics, in a registry of its own so that several
scalers in one test process keep separate counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from chat.scaling import Action


class ScalerMetrics:
    """
    The autoscaler's Prometheus metrics, in a registry of its own.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "chat_scaler_decisions",
            "Decisions taken, by action",
            ["action"],
            registry=self.registry,
        )
        self.current = Gauge(
            "chat_scaler_current_replicas",
            "The chat Deployment's size as last read or set",
            registry=self.registry,
        )
        self.desired = Gauge(
            "chat_scaler_desired_replicas",
            "The size the people online call for, before the scale-down window",
            registry=self.registry,
        )
        self.users = Gauge(
            "chat_scaler_online_users",
            "People online on live replicas, as last read",
            registry=self.registry,
        )
        self.errors = Counter(
            "chat_scaler_errors",
            "Failures, by kind: redis, stale, or the Kubernetes API's kind",
            ["kind"],
            registry=self.registry,
        )
        for action in Action:
            self.decisions.labels(action.value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
