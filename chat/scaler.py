"""
The autoscaler: every few seconds, count the people online and set the chat
Deployment's size through its C{scale} subresource.

Each poll reads Redis (L{chat.census}), reads the Scale, asks the rule
(L{chat.scaling}) and, when the size must change, patches the Scale with the
C{resourceVersion} it read: if someone changed it meanwhile the API server
answers 409 and the poll reads again and decides again.  Before a scale-down
each chat pod gets a C{controller.kubernetes.io/pod-deletion-cost} equal to
the people it holds, so the ReplicaSet removes the emptiest pods first.

Every decision is logged with its figures, at info when it differs from the
one before and at debug when it repeats (a dry run repeats what it would do
every poll); the differing ones also go to a capped list in Redis, and every
poll refreshes a heartbeat there.  When the API server keeps failing, polls
back off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from chat import logs
from chat.admin import Readiness, admin_resource, listen_admin
from chat.census import Census
from chat.cluster.redisconn import RedisClient, RedisUnavailable, parse_redis_url
from chat.kube import (
    DELETION_COST,
    MERGE_PATCH,
    Conflict,
    IKube,
    KubeClient,
    KubeError,
)
from chat.kube_access import AccessError, load_access
from chat.options import exit_failed_after_shutdown
from chat.scaler_metrics import ScalerMetrics
from chat.scaling import (
    Action,
    Backoff,
    Decision,
    Observation,
    Policy,
    Reading,
    Rule,
)

DEFAULT_NAMESPACE = "chat-app"
DEFAULT_DEPLOYMENT = "chat-server"
DEFAULT_INTERVAL_SECONDS = 5.0
# Reads and writes of the Scale before a poll gives up on a Scale that keeps
# changing under it.
CONFLICT_ATTEMPTS = 3
# After the API server failed a whole poll: wait one interval, then double.
BACKOFF_MAX_SECONDS = 300.0
# The heartbeat outlives a slow poll (three attempts of ten seconds).
HEARTBEAT_MIN_TTL_SECONDS = 60.0
# Ready while Redis was read within this many intervals.
READY_INTERVALS = 3

_HINTS = {
    "unauthorized": "the API server refused the credentials",
    "forbidden": "the role needs get and patch on deployments/scale, list and"
    " patch on pods",
    "not_found": "check --namespace and --deployment",
    "conflict": "the Scale kept changing while it was being written",
}


class CensusLike(Protocol):
    """
    What a poll needs of L{chat.census.Census}.
    """

    async def read(self) -> Reading: ...

    async def record(self, decision: dict[str, Any]) -> None: ...

    async def beat(self, state: dict[str, Any], ttl_seconds: float) -> None: ...

    async def withdraw(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """
    What the autoscaler sizes, and how often it looks.
    """

    namespace: str = DEFAULT_NAMESPACE
    deployment: str = DEFAULT_DEPLOYMENT
    interval: float = DEFAULT_INTERVAL_SECONDS
    dry_run: bool = False


@dataclass
class _Outcome:
    decision: Decision
    applied: bool = False
    marked: dict[str, int] = field(default_factory=dict)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class Scaler:
    """
    The poll loop and what each poll does.

    @param clock: times the polls and the scale-down window.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        clock: IReactorTime,
        census: CensusLike,
        kube: IKube,
        rule: Rule,
        target: Target,
        metrics: ScalerMetrics | None = None,
    ) -> None:
        self._clock = clock
        self._census = census
        self._kube = kube
        self.rule = rule
        self.target = target
        self.metrics = metrics or ScalerMetrics()
        self.backoff = Backoff(target.interval, BACKOFF_MAX_SECONDS)
        self.resume_at = 0.0
        self.last_read: float | None = None
        self.started_at = clock.seconds()
        self._last_record: dict[str, Any] | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._polling: Deferred[None] | None = None

    @property
    def running(self) -> bool:
        return bool(self._loop.running)

    def start(self, now: bool = False) -> None:
        self._loop.start(self.target.interval, now=now)

    async def stop(self) -> None:
        """
        Stop polling, let a poll under way finish, remove the heartbeat.
        """
        if self._loop.running:
            self._loop.stop()
        if self._polling is not None:
            await self._polling
        try:
            await self._census.withdraw()
        except RedisUnavailable as e:
            self.log.warn("could not remove the heartbeat: {error}", error=str(e))

    def ready_check(self) -> Callable[[], Any]:
        """
        A readiness check: passes while Redis was read recently.
        """
        bound = READY_INTERVALS * self.target.interval

        async def redis_read_recently() -> None:
            if self.last_read is None:
                raise RuntimeError("Redis has not been read yet")
            age = self._clock.seconds() - self.last_read
            if age > bound:
                raise RuntimeError(f"Redis was last read {age:.0f}s ago")

        return redis_read_recently

    def _tick(self) -> Deferred[None]:
        self._polling = Deferred.fromCoroutine(self._poll_safely())
        return self._polling

    async def _poll_safely(self) -> None:
        try:
            await self.poll()
        except Exception:
            self.log.failure("the autoscaler's poll failed")
        finally:
            self._polling = None

    # One poll

    async def poll(self) -> Decision | None:
        """
        Read, decide, act, record; None when backing off.
        """
        now = self._clock.seconds()
        if now < self.resume_at:
            await self._beat(now)
            return None
        reading = await self._census.read()
        if isinstance(reading, Observation):
            self.last_read = now
            self.metrics.users.set(reading.users)
            if self._stale(reading):
                self.metrics.errors.labels("stale").inc()
            if reading.orphans:
                self.log.debug(
                    "{count} presence entries name replicas without figures",
                    count=reading.orphans,
                )
        else:
            self.metrics.errors.labels("redis").inc()
        outcome = await self._act(now, reading)
        await self._publish(now, outcome)
        return outcome.decision

    def _stale(self, reading: Observation) -> bool:
        age = reading.stats_age
        return age is None or age > self.rule.policy.max_stats_age

    async def _act(self, now: float, reading: Reading) -> _Outcome:
        decision: Decision | None = None
        try:
            for _ in range(CONFLICT_ATTEMPTS):
                scale = await self._kube.read_scale(self.target.deployment)
                decision = self.rule.decide(now, scale.replicas, reading)
                if not decision.changes or self.target.dry_run:
                    self.backoff.succeeded()
                    return _Outcome(decision)
                assert decision.target is not None
                marked: dict[str, int] = {}
                if decision.action is Action.DOWN:
                    assert isinstance(reading, Observation)
                    marked = await self._mark(scale.selector, reading)
                try:
                    await self._kube.patch_scale(
                        self.target.deployment,
                        decision.target,
                        MERGE_PATCH,
                        scale.resource_version,
                    )
                except Conflict:
                    self.metrics.errors.labels("conflict").inc()
                    self.log.info(
                        "the scale of {deployment} changed while it was being"
                        " written; reading it again",
                        deployment=self.target.deployment,
                    )
                    continue
                self.backoff.succeeded()
                return _Outcome(decision, applied=True, marked=marked)
            raise Conflict("conflict", "the Scale changed at every attempt", 409)
        except KubeError as e:
            return _Outcome(self._failed(now, reading, decision, e))

    def _failed(
        self,
        now: float,
        reading: Reading,
        decision: Decision | None,
        error: KubeError,
    ) -> Decision:
        self.metrics.errors.labels(error.kind).inc()
        delay = self.backoff.failed()
        self.resume_at = now + delay
        hint = _HINTS.get(error.kind)
        why = f"Kubernetes API: {error}" + (f" ({hint})" if hint else "")
        if decision is not None and decision.changes:
            why = f"wanted {decision.target}: {decision.reason}; but {why}"
        users = reading.users if isinstance(reading, Observation) else None
        return Decision(
            time=now,
            users=users,
            current=decision.current if decision is not None else None,
            desired=decision.desired if decision is not None else None,
            target=decision.current if decision is not None else None,
            action=Action.HOLD,
            reason=f"{why}; next try in {delay:g}s",
        )

    async def _mark(self, selector: str, reading: Observation) -> dict[str, int]:
        """
        Set each chat pod's deletion cost to the people it holds; a failure
        only loses the order in which pods go.
        """
        if not selector:
            self.log.warn(
                "the Scale of {deployment} names no pod selector; scaling down"
                " without deletion costs",
                deployment=self.target.deployment,
            )
            return {}
        costs: dict[str, int] = {}
        try:
            for pod in await self._kube.list_pods(selector):
                if pod.deleting:
                    continue
                cost = reading.by_server.get(pod.name, 0)
                costs[pod.name] = cost
                if pod.annotations.get(DELETION_COST) != str(cost):
                    await self._kube.annotate_pod(pod.name, {DELETION_COST: str(cost)})
        except KubeError as e:
            self.metrics.errors.labels(e.kind).inc()
            self.log.warn(
                "could not mark the pods' deletion costs ({error}); scaling"
                " down all the same",
                error=str(e),
                kind=e.kind,
            )
        return costs

    # What is left behind

    async def _publish(self, now: float, outcome: _Outcome) -> None:
        decision = outcome.decision
        self.metrics.decisions.labels(decision.action.value).inc()
        size = decision.target if outcome.applied else decision.current
        if size is not None:
            self.metrics.current.set(size)
        if decision.desired is not None:
            self.metrics.desired.set(decision.desired)
        record = self._record(decision, outcome.applied)
        key = (
            decision.action,
            decision.users,
            decision.current,
            decision.desired,
            decision.target,
            decision.reason,
        )
        new = key != self._last_key
        self._last_key = key
        self._log(decision, outcome, new)
        self._last_record = record
        try:
            if new:
                await self._census.record(record)
        except RedisUnavailable as e:
            self.log.debug("could not record the decision: {error}", error=str(e))
        await self._beat(now)

    def _record(self, decision: Decision, applied: bool) -> dict[str, Any]:
        return {
            "time": decision.time,
            "at": _iso(decision.time),
            "users": decision.users,
            "current": decision.current,
            "desired": decision.desired,
            "target": decision.target,
            "action": decision.action.value,
            "reason": decision.reason,
            "dry_run": self.target.dry_run,
            "applied": applied,
        }

    def _log(self, decision: Decision, outcome: _Outcome, new: bool) -> None:
        if decision.changes:
            verb = "would " if self.target.dry_run else ""
            text = (
                f"{verb}{decision.action.value} {self.target.deployment}"
                f" {decision.current} -> {decision.target}"
            )
        elif decision.current is not None:
            text = f"hold {self.target.deployment} at {decision.current}"
        else:
            text = f"hold {self.target.deployment}"
        if outcome.marked:
            costs = ", ".join(f"{k}={v}" for k, v in sorted(outcome.marked.items()))
            text += f" (deletion costs {costs})"
        level = LogLevel.info if new else LogLevel.debug
        self.log.emit(
            level,
            "{decision}: {reason}",
            decision=text,
            time=decision.time,
            users=decision.users,
            current=decision.current,
            desired=decision.desired,
            target=decision.target,
            action=decision.action.value,
            reason=decision.reason,
            dry_run=self.target.dry_run,
            applied=outcome.applied,
            deployment=self.target.deployment,
        )

    async def _beat(self, now: float) -> None:
        state: dict[str, Any] = dict(self._last_record or {})
        state.update(
            heartbeat=now,
            started_at=self.started_at,
            interval=self.target.interval,
            namespace=self.target.namespace,
            deployment=self.target.deployment,
            dry_run=self.target.dry_run,
            resume_at=self.resume_at if self.resume_at > now else None,
        )
        ttl = max(3 * self.target.interval, HEARTBEAT_MIN_TTL_SECONDS)
        try:
            await self._census.beat(state, ttl)
        except RedisUnavailable as e:
            self.log.debug("could not write the heartbeat: {error}", error=str(e))


@dataclass(frozen=True)
class ScalerSettings:
    """
    Everything C{twistd chat-scaler} is told.

    @ivar kubeconfig: a kubeconfig file to use on its own; None to try the
        pod's service account, then the default kubeconfig.
    @ivar admin: the endpoint of C{/healthz}, C{/readyz} and C{/metrics}.
    """

    redis: str
    target: Target = Target()
    policy: Policy = Policy()
    kubeconfig: str | None = None
    admin: str | None = None


class ScalerService(Service):
    """
    The twistd service: finds its Kubernetes access, connects to Redis,
    serves the admin endpoint and runs the L{Scaler}.

    @ivar ready: fires once polling has started; fails if it cannot start.
    @param exit_on_failure: end the process when start-up fails, as a
        container should; tests turn it off.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self, reactor: Any, settings: ScalerSettings, exit_on_failure: bool = True
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.exit_on_failure = exit_on_failure
        self.redis = RedisClient(reactor, parse_redis_url(settings.redis))
        self.census = Census(self.redis)
        self.metrics = ScalerMetrics()
        self.scaler: Scaler | None = None
        self.kube: KubeClient | None = None
        self.admin_port: IListeningPort | None = None
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        starting = Deferred.fromCoroutine(self._start())
        starting.addCallbacks(self.ready.callback, self._failed)

    async def _start(self) -> None:
        settings = self.settings
        access = await deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            load_access,
            settings.kubeconfig,
        )
        self.kube = KubeClient(self.reactor, access, settings.target.namespace)
        # The link connects in the background and keeps reconnecting; polls
        # hold the size while it is down.
        self.redis.start()
        scaler = Scaler(
            self.reactor,
            self.census,
            self.kube,
            Rule(settings.policy),
            settings.target,
            self.metrics,
        )
        if settings.admin:
            readiness = Readiness(
                self.reactor,
                {"redis": scaler.ready_check()},
                started=lambda: scaler.running,
            )
            resource = admin_resource(
                readiness, self.metrics.exposition, CONTENT_TYPE_LATEST
            )
            self.admin_port = await listen_admin(self.reactor, settings.admin, resource)
        self.scaler = scaler
        scaler.start()
        target, policy = settings.target, settings.policy
        self.log.info(
            "chat-scaler sizing deployment {namespace}/{deployment} through"
            " {source}: {users_per_pod} people per pod, {min}..{max} replicas,"
            " a poll every {interval:g}s, scale-down after {delay:g}s{dry_run}",
            namespace=target.namespace,
            deployment=target.deployment,
            source=access.source,
            users_per_pod=policy.users_per_pod,
            min=policy.min_replicas,
            max=policy.max_replicas,
            interval=target.interval,
            delay=policy.scale_down_delay,
            dry_run=" (dry run: changing nothing)" if target.dry_run else "",
        )

    def _failed(self, failure: Failure) -> None:
        if failure.check(AccessError):
            self.log.critical(
                "chat-scaler cannot reach Kubernetes: {error}",
                error=str(failure.value),
            )
        else:
            self.log.failure("chat-scaler could not start", failure)
        self.ready.errback(failure)
        if self.exit_on_failure and self.reactor.running:
            exit_failed_after_shutdown(self.reactor)
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.scaler is not None:
            await self.scaler.stop()
        if self.admin_port is not None:
            stopping = self.admin_port.stopListening()
            if stopping is not None:
                await stopping
        if self.kube is not None:
            await self.kube.close()
        await self.redis.stop()
        self.log.info("chat-scaler stopped")
