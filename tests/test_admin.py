"""
The admin endpoint: checks and their time limit, readiness, the HTTP routes,
the chat's metrics, and a real replica's probes and metrics.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.admin import (
    CheckTimedOut,
    Readiness,
    admin_resource,
    listen_admin,
    run_check,
    within,
)
from chat.metrics import CONTENT_TYPE, ChatMetrics
from tests.harness import Harness
from tests.httpclient import Answer, fetch
from tests.process import DaemonProcess, connect, start_daemon
from tests.servers import LOCALHOST, PostgresServer
from tests.system import System, until


async def passing() -> None:
    pass


async def failing() -> None:
    raise ConnectionRefusedError("nobody home")


def sample(exposition: bytes, line_start: str) -> float:
    """
    The value of the first sample whose line starts with C{line_start}.
    """
    for line in exposition.decode("utf-8").splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start!r} in:\n{exposition.decode()}")


class WithinTests(SynchronousTestCase):
    """
    L{within} bounds how long a check may take.
    """

    def test_answer_in_time(self) -> None:
        """
        An answer before the limit is passed through.
        """
        clock = Clock()
        answer: Deferred[str] = Deferred()
        d = ensureDeferred(within(clock, 2.0, answer))
        clock.advance(1.0)
        answer.callback("pong")
        self.assertEqual(self.successResultOf(d), "pong")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_late_answer(self) -> None:
        """
        No answer by the limit fails with L{CheckTimedOut}; the answer that
        comes later, even a failure, is dropped without an unhandled error.
        """
        clock = Clock()
        answer: Deferred[str] = Deferred()
        d = ensureDeferred(within(clock, 2.0, answer))
        clock.advance(2.0)
        self.failureResultOf(d, CheckTimedOut)
        answer.errback(ConnectionRefusedError())

    def test_run_check_times(self) -> None:
        """
        L{run_check} reports the time a check took and its error text.
        """
        clock = Clock()
        answer: Deferred[None] = Deferred()

        async def slow_failure() -> None:
            await answer

        d = ensureDeferred(run_check(clock, slow_failure, 2.0))
        clock.advance(0.25)
        answer.errback(ConnectionRefusedError("nobody home"))
        result = self.successResultOf(d)
        self.assertFalse(result.ok)
        self.assertEqual(result.latency_ms, 250.0)
        self.assertIn("nobody home", result.error or "")

        timed_out = ensureDeferred(run_check(clock, lambda: Deferred(), 2.0))
        clock.advance(2.0)
        self.assertEqual(
            self.successResultOf(timed_out).as_json(),
            {"ok": False, "latency_ms": 2000.0, "error": "no answer within 2 s"},
        )


class ReadinessTests(SynchronousTestCase):
    """
    Readiness needs start-up done, no drain, and every check passing.
    """

    def report(self, **options: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "checks": {"postgresql": passing, "redis": passing},
            "started": lambda: True,
            "draining": lambda: False,
        }
        settings.update(options)
        readiness = Readiness(Clock(), **settings)
        return self.successResultOf(ensureDeferred(readiness.report()))

    def test_ready(self) -> None:
        """
        Started, not draining and every check passing: ready.
        """
        report = self.report()
        self.assertTrue(report["ready"])
        self.assertEqual(
            report["checks"]["redis"], {"ok": True, "latency_ms": 0.0, "error": None}
        )

    def test_not_ready(self) -> None:
        """
        A failed check, a drain or an unfinished start-up each make the
        process unready.
        """
        down = self.report(checks={"postgresql": passing, "redis": failing})
        self.assertFalse(down["ready"])
        self.assertEqual(down["checks"]["redis"]["error"], "nobody home")
        self.assertTrue(down["checks"]["postgresql"]["ok"])
        draining = self.report(draining=lambda: True)
        self.assertEqual((draining["ready"], draining["draining"]), (False, True))
        starting = self.report(started=lambda: False)
        self.assertEqual((starting["ready"], starting["started"]), (False, False))


class RoutesTests(TestCase):
    """
    The three routes over real HTTP on 127.0.0.1.
    """

    async def serve(self, ready: bool) -> str:
        checks = {"redis": passing if ready else failing}
        readiness = Readiness(reactor, checks, started=lambda: True)
        metrics = ChatMetrics()
        metrics.logins.labels("login").inc(3)
        resource = admin_resource(readiness, metrics.exposition, CONTENT_TYPE)
        port = await listen_admin(reactor, "tcp:0:interface=127.0.0.1", resource)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_ready_process(self) -> None:
        """
        /healthz and /readyz answer 200 and /metrics has the counters.
        """
        base = await self.serve(ready=True)
        alive = await fetch(base + "/healthz")
        self.assertEqual((alive.code, alive.json()), (200, {"alive": True}))
        ready = await fetch(base + "/readyz")
        self.assertEqual(ready.code, 200)
        self.assertEqual(
            ready.headers["content-type"], "application/json; charset=utf-8"
        )
        self.assertTrue(ready.json()["ready"])
        metrics = await fetch(base + "/metrics")
        self.assertEqual(metrics.code, 200)
        self.assertTrue(metrics.headers["content-type"].startswith("text/plain"))
        self.assertEqual(sample(metrics.body, 'chat_logins_total{kind="login"}'), 3)

    async def test_unready_process(self) -> None:
        """
        A failing check turns /readyz to 503; /healthz stays 200.
        """
        base = await self.serve(ready=False)
        ready = await fetch(base + "/readyz")
        self.assertEqual(ready.code, 503)
        self.assertEqual(ready.json()["checks"]["redis"]["error"], "nobody home")
        self.assertEqual((await fetch(base + "/healthz")).code, 200)
        self.assertEqual((await fetch(base + "/nothing")).code, 404)


class ChatMetricsTests(TestCase):
    """
    The service and the protocol count what happens.
    """

    async def setUp(self) -> None:
        self.harness = Harness()
        await self.harness.start()
        self.addCleanup(self.harness.stop)
        self.metrics = self.harness.service.metrics
        self.metrics.watch(self.harness.registry)

    def value(self, line_start: str) -> float:
        return sample(self.metrics.exposition(), line_start)

    async def test_counts(self) -> None:
        """
        Sign-ups, logins, messages by kind, errors by code, deliveries,
        connections and sessions are counted.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        await bob.send("/quit")
        await bob.disconnect()
        bob = self.harness.connect()
        await bob.send("/login bob password123")
        await alice.send("/msg bob hello")
        await alice.send("/msg * hello all")
        await alice.send("/msg nobody hello")
        anonymous = self.harness.connect()

        self.assertEqual(self.value('chat_logins_total{kind="signup"}'), 2)
        self.assertEqual(self.value('chat_logins_total{kind="login"}'), 1)
        self.assertEqual(self.value('chat_messages_total{kind="private"}'), 1)
        self.assertEqual(self.value('chat_messages_total{kind="broadcast"}'), 1)
        self.assertEqual(self.value('chat_messages_total{kind="group"}'), 0)
        self.assertEqual(self.value('chat_errors_total{code="no_such_user"}'), 1)
        self.assertEqual(self.value("chat_delivery_seconds_count"), 2)
        self.assertEqual(self.value("chat_connections"), 3)
        self.assertEqual(self.value("chat_sessions"), 2)
        self.assertEqual(self.value("chat_pending_deliveries"), 0)
        self.assertEqual(self.value("chat_resumes_total"), 0)
        await anonymous.disconnect()

    def test_separate_registries(self) -> None:
        """
        Two daemons in one process keep separate counts.
        """
        one, two = ChatMetrics(), ChatMetrics()
        one.resumes.inc()
        self.assertEqual(sample(one.exposition(), "chat_resumes_total"), 1)
        self.assertEqual(sample(two.exposition(), "chat_resumes_total"), 0)


ADMIN_LOG = re.compile(r"admin endpoint on IPv4Address\(.*?port=(\d+)\)")


async def admin_base(replica: DaemonProcess) -> str:
    """
    The base URL of a replica's admin endpoint, from its log.
    """
    await replica.wait_for_log("admin endpoint on")
    found = ADMIN_LOG.search(replica.output)
    assert found is not None, replica.log_tail()
    return f"http://{LOCALHOST}:{found.group(1)}"


async def until_code(url: str, code: int, what: str, bound: float = 15.0) -> Answer:
    return await until(url, lambda answer: answer.code == code, what, bound)


ADMIN = ["--admin", f"tcp:0:interface={LOCALHOST}"]


class ReplicaAdminTests(TestCase):
    """
    The admin endpoint of a real C{twistd -n chat}.
    """

    timeout = 120

    async def test_probes_and_metrics(self) -> None:
        """
        A single replica is alive and ready, and its metrics count a
        sign-up, its messages, its connection and an error.
        """
        replica = await start_daemon(self, ADMIN)
        base = await admin_base(replica)
        self.assertEqual((await fetch(base + "/healthz")).json(), {"alive": True})
        ready = await fetch(base + "/readyz")
        self.assertEqual(ready.code, 200)
        self.assertEqual(sorted(ready.json()["checks"]), ["database"])

        alice = await connect(replica.port)
        alice.send("/signup alice correct horse")
        await alice.expect("Welcome, alice!")
        alice.send("/msg * hello")
        await alice.expect("hello")
        alice.send("/msg nobody hi")
        await alice.expect("error:")
        metrics = (await fetch(base + "/metrics")).body
        self.assertEqual(sample(metrics, 'chat_logins_total{kind="signup"}'), 1)
        self.assertEqual(sample(metrics, 'chat_messages_total{kind="broadcast"}'), 1)
        self.assertEqual(sample(metrics, 'chat_errors_total{code="no_such_user"}'), 1)
        self.assertEqual(sample(metrics, "chat_connections"), 1)
        self.assertEqual(sample(metrics, "chat_sessions"), 1)
        self.assertIn(b"chat_delivery_seconds_bucket", metrics)
        alice.send("/quit")
        await alice.closed

    async def test_not_ready_while_draining(self) -> None:
        """
        /readyz turns 503 while the replica drains its connections, and
        /healthz stays 200.
        """
        replica = await start_daemon(self, [*ADMIN, "--drain", "4"])
        base = await admin_base(replica)
        alice = await connect(replica.port)
        alice.send("/signup alice correct horse")
        await alice.expect("Welcome, alice!")
        stopping = Deferred.fromCoroutine(replica.stop())
        answer = await until_code(base + "/readyz", 503, "not ready while draining")
        self.assertEqual(
            (answer.json()["draining"], answer.json()["ready"]), (True, False)
        )
        self.assertEqual((await fetch(base + "/healthz")).code, 200)
        self.assertEqual(await stopping, -signal.SIGTERM)

    async def test_not_ready_without_redis_or_postgresql(self) -> None:
        """
        A cluster replica is not ready while Redis or PostgreSQL cannot be
        reached, names the one that failed, and is ready again once it is
        back.
        """
        postgres = PostgresServer()
        self.addCleanup(postgres.destroy)
        system = System(self, postgres)
        replica = await system.replica("one", *ADMIN)
        base = await admin_base(replica)
        ready = await fetch(base + "/readyz")
        self.assertEqual(ready.code, 200)
        self.assertEqual(sorted(ready.json()["checks"]), ["database", "redis"])

        system.redis_server.kill()
        answer = await until_code(base + "/readyz", 503, "not ready without Redis")
        checks = answer.json()["checks"]
        self.assertFalse(checks["redis"]["ok"])
        self.assertTrue(checks["redis"]["error"])
        self.assertTrue(checks["database"]["ok"])
        self.assertEqual((await fetch(base + "/healthz")).code, 200)
        system.redis_server.start()
        await until_code(base + "/readyz", 200, "ready with Redis back")

        postgres.stop()
        answer = await until_code(base + "/readyz", 503, "not ready without PostgreSQL")
        checks = answer.json()["checks"]
        self.assertFalse(checks["database"]["ok"])
        self.assertTrue(checks["redis"]["ok"])
        postgres.start()
        await until_code(base + "/readyz", 200, "ready with PostgreSQL back")
