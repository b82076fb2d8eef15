"""
The C{twistd chat-scaler} command: its options and the service it builds.

Every option can also come from an environment variable (named in the help);
a command-line option wins.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from chat.options import LOG_LEVEL_OPTION, EnvironmentOptions
from chat.scaler import (
    DEFAULT_DEPLOYMENT,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_NAMESPACE,
    ScalerService,
    ScalerSettings,
    Target,
)
from chat.scaling import (
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MAX_STATS_AGE_SECONDS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
    DEFAULT_USERS_PER_POD,
    Policy,
)

ENVIRONMENT = {
    "redis": "CHAT_REDIS",
    "namespace": "CHAT_SCALER_NAMESPACE",
    "deployment": "CHAT_SCALER_DEPLOYMENT",
    "users-per-pod": "CHAT_SCALER_USERS_PER_POD",
    "min-replicas": "CHAT_SCALER_MIN_REPLICAS",
    "max-replicas": "CHAT_SCALER_MAX_REPLICAS",
    "interval": "CHAT_SCALER_INTERVAL",
    "scale-down-delay": "CHAT_SCALER_SCALE_DOWN_DELAY",
    "max-stats-age": "CHAT_SCALER_MAX_STATS_AGE",
    "kubeconfig": "CHAT_SCALER_KUBECONFIG",
    "admin": "CHAT_SCALER_ADMIN",
    "log-level": "CHAT_LOG_LEVEL",
}
DRY_RUN_ENVIRONMENT = "CHAT_SCALER_DRY_RUN"
_TRUE = ("1", "true", "yes", "on")
_INTEGERS = ("users-per-pod", "min-replicas", "max-replicas")
_SECONDS = ("interval", "scale-down-delay", "max-stats-age")
# Below this a poll could not finish before the next one is due.
MIN_INTERVAL_SECONDS = 0.1


class Options(EnvironmentOptions):
    environment = ENVIRONMENT

    synopsis = "--redis URL [options]"
    longdesc = (
        "Size the chat Deployment from the number of people online: "
        "ceil(people / users-per-pod) replicas within the bounds, up at once, "
        "down only to the most wanted during the scale-down delay. Kubernetes "
        "access comes from the pod's service account, else the kubeconfig."
    )
    optFlags = [
        [
            "dry-run",
            None,
            f"log what would be done and change nothing [${DRY_RUN_ENVIRONMENT}]",
        ],
    ]
    optParameters = [
        [
            "redis",
            None,
            None,
            "the cluster's Redis: redis://HOST:PORT/DB or unix:/PATH?db=N"
            " [$CHAT_REDIS]",
        ],
        [
            "namespace",
            None,
            DEFAULT_NAMESPACE,
            "namespace of the chat Deployment [$CHAT_SCALER_NAMESPACE]",
        ],
        [
            "deployment",
            None,
            DEFAULT_DEPLOYMENT,
            "name of the chat Deployment [$CHAT_SCALER_DEPLOYMENT]",
        ],
        [
            "users-per-pod",
            None,
            str(DEFAULT_USERS_PER_POD),
            "people one replica serves [$CHAT_SCALER_USERS_PER_POD]",
        ],
        [
            "min-replicas",
            None,
            str(DEFAULT_MIN_REPLICAS),
            "fewest replicas, at least 1 [$CHAT_SCALER_MIN_REPLICAS]",
        ],
        [
            "max-replicas",
            None,
            str(DEFAULT_MAX_REPLICAS),
            "most replicas [$CHAT_SCALER_MAX_REPLICAS]",
        ],
        [
            "interval",
            None,
            f"{DEFAULT_INTERVAL_SECONDS:g}",
            "seconds between polls [$CHAT_SCALER_INTERVAL]",
        ],
        [
            "scale-down-delay",
            None,
            f"{DEFAULT_SCALE_DOWN_DELAY_SECONDS:g}",
            "seconds a lower size must be all that is wanted before scaling"
            " down [$CHAT_SCALER_SCALE_DOWN_DELAY]",
        ],
        [
            "max-stats-age",
            None,
            f"{DEFAULT_MAX_STATS_AGE_SECONDS:g}",
            "hold the size when a replica's figures are older than this many"
            " seconds [$CHAT_SCALER_MAX_STATS_AGE]",
        ],
        [
            "kubeconfig",
            None,
            None,
            "use this kubeconfig file only, instead of the pod's service"
            " account or the default kubeconfig [$CHAT_SCALER_KUBECONFIG]",
        ],
        [
            "admin",
            None,
            None,
            "endpoint for /healthz, /readyz and /metrics, e.g. tcp:8080"
            " [$CHAT_SCALER_ADMIN]",
        ],
        LOG_LEVEL_OPTION,
    ]

    def __init__(self) -> None:
        super().__init__()
        if os.environ.get(DRY_RUN_ENVIRONMENT, "").strip().lower() in _TRUE:
            self["dry-run"] = True

    def postOptions(self) -> None:
        if not self["redis"]:
            raise usage.UsageError("--redis (or $CHAT_REDIS) is required")
        try:
            from chat.cluster.redisconn import parse_redis_url

            parse_redis_url(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        for name in _INTEGERS:
            self[name] = self._number(name, int)
        for name in _SECONDS:
            self[name] = self._number(name, float)
        if self["interval"] < MIN_INTERVAL_SECONDS:
            raise usage.UsageError(
                f"--interval must be at least {MIN_INTERVAL_SECONDS:g} seconds"
            )
        try:
            self["policy"] = Policy(
                users_per_pod=self["users-per-pod"],
                min_replicas=self["min-replicas"],
                max_replicas=self["max-replicas"],
                scale_down_delay=self["scale-down-delay"],
                max_stats_age=self["max-stats-age"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.set_log_level()

    def _number(self, name: str, kind: type[int] | type[float]) -> Any:
        try:
            return kind(self[name])
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a number of seconds"
            raise usage.UsageError(f"--{name} takes {what}") from None

    def settings(self) -> ScalerSettings:
        return ScalerSettings(
            redis=self["redis"],
            target=Target(
                namespace=self["namespace"],
                deployment=self["deployment"],
                interval=self["interval"],
                dry_run=bool(self["dry-run"]),
            ),
            policy=self["policy"],
            kubeconfig=self["kubeconfig"] or None,
            admin=self["admin"] or None,
        )


def makeService(options: Options, reactor: Any = None) -> ScalerService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return ScalerService(reactor, options.settings())
