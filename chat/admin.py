"""
The admin HTTP endpoint of a long-running chat process, for Kubernetes probes
and for Prometheus.

  - C{/healthz}: 200 while the process answers at all (liveness).
  - C{/readyz}: 200 when the process should get traffic, 503 when not
    (starting, draining, or a dependency unreachable), with a JSON body that
    names each check, its outcome and how long it took.
  - C{/metrics}: the process's metrics in the Prometheus text format.

A check is any coroutine function that raises when its dependency does not
answer.  It gets L{CHECK_TIMEOUT_SECONDS} to answer; one that takes longer is
reported as failed and left to finish on its own, so a hung connection never
holds a probe.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from chat import logs

CHECK_TIMEOUT_SECONDS = 2.0
JSON_TYPE = b"application/json; charset=utf-8"

Check = Callable[[], Awaitable[object]]


class CheckTimedOut(Exception):
    """
    A check did not answer in time.
    """


@dataclass(frozen=True)
class CheckResult:
    """
    How one check went: C{error} is C{None} when it passed.
    """

    latency_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
        }


async def within(clock: IReactorTime, seconds: float, work: Awaitable[Any]) -> Any:
    """
    The result of C{work}, or L{CheckTimedOut} after C{seconds}.

    C{work} is not cancelled when time runs out: its eventual result or
    failure is dropped quietly.
    """
    running: Deferred[Any] = ensureDeferred(_awaited(work))

    def stop_timer(_: object = None) -> None:
        if timer.active():
            timer.cancel()

    answer: Deferred[Any] = Deferred(stop_timer)

    def expire() -> None:
        if not answer.called:
            answer.errback(CheckTimedOut(f"no answer within {seconds:g} s"))

    timer = clock.callLater(seconds, expire)

    def settle(result: Any) -> None:
        stop_timer()
        if answer.called:
            return
        if isinstance(result, Failure):
            answer.errback(result)
        else:
            answer.callback(result)

    running.addBoth(settle)
    return await answer


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


async def run_check(
    clock: IReactorTime, check: Check, timeout: float = CHECK_TIMEOUT_SECONDS
) -> CheckResult:
    """
    Run one check and time it.
    """
    started = clock.seconds()
    try:
        await within(clock, timeout, check())
    except Exception as e:
        error = str(e).strip() or type(e).__name__
        return CheckResult((clock.seconds() - started) * 1000, error)
    return CheckResult((clock.seconds() - started) * 1000)


class Readiness:
    """
    Whether a process should get traffic now.

    @param checks: the dependencies to try, by name.
    @param started: tells whether start-up has finished.
    @param draining: tells whether the process is shutting down.
    """

    def __init__(
        self,
        clock: IReactorTime,
        checks: Mapping[str, Check],
        started: Callable[[], bool],
        draining: Callable[[], bool] = lambda: False,
        timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._clock = clock
        self._checks = dict(checks)
        self._started = started
        self._draining = draining
        self._timeout = timeout

    async def report(self) -> dict[str, Any]:
        """
        Run every check at once; the JSON that C{/readyz} answers.
        """
        names = list(self._checks)
        results: list[CheckResult] = await gatherResults(
            [
                ensureDeferred(run_check(self._clock, self._checks[n], self._timeout))
                for n in names
            ]
        )
        started, draining = self._started(), self._draining()
        ready = started and not draining and all(r.ok for r in results)
        return {
            "ready": ready,
            "started": started,
            "draining": draining,
            "checks": {n: r.as_json() for n, r in zip(names, results, strict=True)},
        }


def _json(request: Request, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


class _Alive(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"alive": True})


class _Ready(Resource):
    isLeaf = True
    log = Logger(observer=logs.observer)

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self._readiness = readiness

    def render_GET(self, request: Request) -> object:
        d = Deferred.fromCoroutine(self._readiness.report())

        def answer(report: dict[str, Any]) -> None:
            code = 200 if report["ready"] else 503
            request.write(_json(request, code, report))
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("the readiness checks failed", failure)
            request.write(_json(request, 500, {"ready": False}))
            request.finish()

        def gone(_: object) -> None:
            d.cancel()

        request.notifyFinish().addErrback(gone)
        d.addCallbacks(answer, failed)
        return NOT_DONE_YET


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, exposition: Callable[[], bytes], content_type: str) -> None:
        super().__init__()
        self._exposition = exposition
        self._content_type = content_type.encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._content_type)
        request.setHeader(b"cache-control", b"no-store")
        return self._exposition()


def admin_resource(
    readiness: Readiness, exposition: Callable[[], bytes], content_type: str
) -> Resource:
    """
    The admin endpoint's resource tree.

    @param exposition: the current metrics in the Prometheus text format.
    @param content_type: the media type of that text.
    """
    root = Resource()
    root.putChild(b"healthz", _Alive())
    root.putChild(b"readyz", _Ready(readiness))
    root.putChild(b"metrics", _Metrics(exposition, content_type))
    return root


class QuietSite(Site):
    """
    A site that keeps no access log: probes come every few seconds.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


async def listen_admin(
    reactor: Any, description: str, resource: Resource
) -> IListeningPort:
    """
    Serve C{resource} on the endpoint that C{description} names.
    """
    endpoint = serverFromString(reactor, description)
    port: IListeningPort = await endpoint.listen(QuietSite(resource))
    return port
