"""
The C{twistd chat-dashboard} command: its options and the service it builds.

The dashboard reads the chat's database and Redis, and writes only its own
history of samples to Redis.  It starts whether or not either can be reached
and shows them down until they answer.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

from chat import logs
from chat.admin import listen_admin
from chat.daemon import DEFAULT_DATABASE
from chat.db import DatabaseUnavailable, open_database
from chat.options import (
    LOG_LEVEL_OPTION,
    EnvironmentOptions,
    exit_failed_after_shutdown,
)

DEFAULT_LISTEN = "tcp:5000:interface=127.0.0.1"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ENVIRONMENT = {
    "listen": "CHAT_DASHBOARD_LISTEN",
    "redis": "CHAT_REDIS",
    "database": "CHAT_DATABASE",
    "sample-seconds": "CHAT_DASHBOARD_SAMPLE_SECONDS",
    "log-level": "CHAT_LOG_LEVEL",
}


class Options(EnvironmentOptions):
    environment = ENVIRONMENT

    synopsis = "[options]"
    longdesc = (
        "Serve the chat's dashboard: a page with live figures and charts, and "
        "a JSON API (/api/status, /api/metrics, /api/health)."
    )
    optParameters = [
        [
            "listen",
            "l",
            DEFAULT_LISTEN,
            "Twisted endpoint to serve on [$CHAT_DASHBOARD_LISTEN]",
        ],
        [
            "redis",
            None,
            DEFAULT_REDIS,
            "the cluster's Redis: redis://HOST:PORT/DB or unix:/PATH?db=N"
            " [$CHAT_REDIS]",
        ],
        [
            "database",
            "d",
            DEFAULT_DATABASE,
            "the chat's database URL: sqlite:PATH or postgresql://... [$CHAT_DATABASE]",
        ],
        [
            "sample-seconds",
            None,
            "5",
            "seconds between two samples of the charts' history"
            " [$CHAT_DASHBOARD_SAMPLE_SECONDS]",
        ],
        LOG_LEVEL_OPTION,
    ]

    def postOptions(self) -> None:
        try:
            import klein  # noqa: F401
        except ImportError as e:
            raise usage.UsageError(
                f"the dashboard needs its extra (pip install 'chat[dashboard]'): {e}"
            ) from None
        try:
            from chat.cluster.redisconn import parse_redis_url
        except ImportError as e:
            raise usage.UsageError(
                f"the dashboard needs the cluster extra (pip install"
                f" 'chat[cluster]'): {e}"
            ) from None
        try:
            parse_redis_url(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        try:
            self["sample-seconds"] = float(self["sample-seconds"])
        except ValueError:
            raise usage.UsageError("--sample-seconds takes a number") from None
        if not 0.2 <= self["sample-seconds"] <= 300:
            raise usage.UsageError("--sample-seconds must be between 0.2 and 300")
        self.set_log_level()


class DashboardService(Service):
    """
    The dashboard: its web app, its connections and its sampler.

    @ivar port: the listening port, once started; tests read it.
    @ivar ready: fires when the dashboard is listening.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        reactor: Any,
        listen: str,
        redis_url: str,
        database_url: str,
        sample_seconds: float,
    ) -> None:
        # Imported here so that a missing extra is a usage error, which
        # postOptions reports, rather than an import failure.
        from chat.cluster.redisconn import RedisClient, parse_redis_url
        from chat.overview import Overview
        from chat.storage import Store
        from chat.timeline import History
        from chat.web import Dashboard

        self.reactor = reactor
        self.listen = listen
        self.db = open_database(reactor, database_url)
        self.redis = RedisClient(reactor, parse_redis_url(redis_url))
        self.overview = Overview(reactor, self.db, Store(self.db), self.redis)
        self.history = History(self.redis, interval=sample_seconds)
        self.dashboard = Dashboard(reactor, self.overview, self.history)
        self.sampler = LoopingCall(self._sample)
        self.sampler.clock = reactor
        self._sampling: Deferred[LoopingCall] | None = None
        self.port: IListeningPort | None = None
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    async def _start(self) -> None:
        try:
            await self.db.start()
        except DatabaseUnavailable as e:
            self.log.warn("the database is down for now: {error}", error=str(e))
        self.redis.start()
        self.port = await listen_admin(
            self.reactor, self.listen, self.dashboard.app.resource()
        )
        self.log.info("dashboard listening on {address}", address=self.port.getHost())
        self._sampling = self.sampler.start(self.history.interval, now=False)

    def _failed_to_start(self, failure: Any) -> None:
        self.log.failure("the dashboard could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            exit_failed_after_shutdown(self.reactor)
            self.reactor.stop()

    def _sample(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.sample())

    async def sample(self) -> None:
        """
        Take a sample and keep it; log, never raise, when that fails.
        """
        from chat.reports import sample_of

        try:
            await self.history.record(sample_of(await self.overview.snapshot()))
        except DatabaseUnavailable as e:
            self.log.warn("could not keep a sample: {error}", error=str(e))
        except Exception:
            self.log.failure("could not keep a sample")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.sampler.running:
            self.sampler.stop()
        if self._sampling is not None:
            # Fires once a sample in progress is done.
            await self._sampling
        if self.port is not None:
            stopped = self.port.stopListening()
            if stopped is not None:
                await stopped
        await self.redis.stop()
        await self.db.stop()
        self.log.info("dashboard stopped")


def makeService(options: Options, reactor: Any = None) -> DashboardService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return DashboardService(
        reactor,
        options["listen"],
        options["redis"],
        options["database"],
        options["sample-seconds"],
    )
