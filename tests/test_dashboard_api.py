"""
The dashboard's JSON routes against a running system: real replicas, a real
PostgreSQL and Redis, and the autoscaler's records as it writes them; then
with Redis, PostgreSQL or replicas down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from chat.presence import Presence
from chat.timeline import History, Sample
from tests.httpclient import Answer, fetch
from tests.servers import PostgresServer
from tests.system import (
    FIGURES_BOUND_SECONDS,
    SAMPLE_SECONDS,
    DashboardProcess,
    System,
    names_of,
    put_presence,
    record_decision,
    scaler_heartbeat,
    until,
)

HOSTILE = "<img src=x onerror=alert(1)>"


def decision(
    now: float, action: str, current: int, target: int, reason: str
) -> dict[str, Any]:
    """
    A decision as the autoscaler records it.
    """
    return {
        "time": now,
        "users": 2,
        "current": current,
        "desired": target,
        "target": target,
        "action": action,
        "reason": reason,
        "dry_run": False,
        "applied": action != "hold",
    }


def pods_by_id(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {pod["id"]: pod for pod in status["pods"] or []}


class StatusTests(TestCase):
    """
    /api/status against two replicas with people chatting.
    """

    timeout = 120

    def setUp(self) -> None:
        self.system = System(self)

    async def test_status(self) -> None:
        """
        The status counts people online, accounts and messages as they are,
        lists each replica's figures, and shows the autoscaler's state,
        desired size and decisions with their reasons.
        """
        system = self.system
        await system.replica("one")
        await system.replica("two")
        alice = await system.person("one", "alice")
        bob = await system.person("two", "bob")
        alice.send("/msg bob hello")
        await bob.expect("alice (private): hello")
        alice.send("/msg * morning")
        await bob.expect("alice to everyone: morning")
        redis = await system.redis()
        now = reactor.seconds()
        reason = "2 people online call for 2 replicas"
        await record_decision(redis, decision(now - 1, "scale-up", 1, 2, reason))
        await scaler_heartbeat(redis, decision(now, "hold", 2, 2, "as desired"))
        base = await system.dashboard()

        def figures_in(answer: Answer) -> bool:
            pods = pods_by_id(answer.json())
            return (
                len(pods) == 2
                and pods["one"]["messages_in"] == 2
                and pods["two"]["messages_out"] == 2
            )

        answer = await until(
            base + "/api/status", figures_in, "replica figures", FIGURES_BOUND_SECONDS
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            answer.headers["content-type"], "application/json; charset=utf-8"
        )
        status = answer.json()
        self.assertEqual(status["online_users"], 2)
        self.assertEqual(
            [(p["name"], p["server"]) for p in status["online"]],
            [("alice", "one"), ("bob", "two")],
        )
        self.assertEqual(status["total_users"], 2)
        self.assertEqual(status["total_messages"], 2)
        self.assertEqual((status["replicas"], status["ready_replicas"]), (2, 2))
        self.assertEqual(status["desired_replicas"], 2)
        self.assertEqual(status["database_status"], "up")
        self.assertEqual(status["redis_status"], "up")
        self.assertEqual(status["autoscaler_status"], "running")
        self.assertEqual(status["autoscaler"]["heartbeat"]["reason"], "as desired")
        self.assertEqual(
            [d["reason"] for d in status["autoscaler"]["decisions"]], [reason]
        )
        self.assertEqual(status["errors"], {})
        self.assertIsInstance(status["messages_per_second"], float)

        pods = pods_by_id(status)
        self.assertEqual(sorted(pods), ["one", "two"])
        for pod in pods.values():
            self.assertEqual((pod["status"], pod["ready"]), ("up", True))
            self.assertEqual((pod["connections"], pod["users"]), (1, 1))
            self.assertFalse(pod["draining"])
            self.assertGreater(pod["uptime_seconds"], 0)
            self.assertLess(pod["uptime_seconds"], self.timeout)

    async def test_values_from_anyone_are_data(self) -> None:
        """
        A name that looks like markup comes back exactly as it is, in JSON
        that browsers are told not to sniff, and the page holds no data.
        """
        await self.system.replica("one")
        redis = await self.system.redis()
        hostile = Presence(HOSTILE, "one", reactor.seconds())
        await put_presence(redis, "hostile", hostile)
        base = await self.system.dashboard()
        answer = await fetch(base + "/api/status")
        self.assertIn(HOSTILE, names_of(answer.json()["online"]))
        self.assertEqual(answer.headers["x-content-type-options"], "nosniff")
        self.assertIn("default-src 'none'", answer.headers["content-security-policy"])
        page = await fetch(base + "/")
        self.assertEqual(page.headers["content-type"], "text/html; charset=utf-8")
        self.assertIn("script-src 'self'", page.headers["content-security-policy"])
        self.assertNotIn(b"onerror", page.body)
        self.assertEqual((await fetch(base + "/static/charts.js")).code, 200)
        self.assertEqual((await fetch(base + "/static/../web.py")).code, 404)
        self.assertEqual((await fetch(base + "/api/nothing")).code, 404)


class MetricsTests(TestCase):
    """
    /api/metrics: the charts' history.
    """

    timeout = 120

    def setUp(self) -> None:
        self.system = System(self)

    async def test_series(self) -> None:
        """
        The series follow the people online, the replicas and the messages,
        one sample per interval; the message rate adds up to the messages
        sent; decisions within the hour come oldest first.
        """
        system = self.system
        await system.replica("one")
        alice = await system.person("one", "alice")
        bob = await system.person("one", "bob")
        redis = await system.redis()
        now = reactor.seconds()
        await record_decision(redis, decision(now - 7200, "scale-up", 1, 3, "old"))
        await record_decision(redis, decision(now - 5, "scale-up", 1, 2, "first"))
        await record_decision(redis, decision(now - 2, "scale-down", 2, 1, "second"))
        await scaler_heartbeat(redis, decision(now, "hold", 1, 1, "as desired"))
        base = await system.dashboard()
        url = base + "/api/metrics"

        def samples(count: int) -> Callable[[Answer], bool]:
            return lambda answer: len(answer.json()["timestamps"]) >= count

        first = (await until(url, samples(2), "two samples")).json()
        for text in ("one", "two", "three"):
            alice.send(f"/msg bob {text}")
            await bob.expect(f"alice (private): {text}")
        stored_before = first["total_messages"][-1]
        self.assertEqual(stored_before, 0)

        def caught_up(answer: Answer) -> bool:
            body = answer.json()
            return body["total_messages"][-1] == 3 and len(body["timestamps"]) >= 5

        metrics = (await until(url, caught_up, "three messages sampled")).json()
        times = metrics["timestamps"]
        count = len(times)
        for name in (
            "user_count",
            "replica_count",
            "ready_pods",
            "desired_replicas",
            "total_messages",
            "message_rate",
        ):
            self.assertEqual(len(metrics[name]), count, name)
        gaps = [
            later - earlier for earlier, later in zip(times, times[1:], strict=False)
        ]
        self.assertGreaterEqual(min(gaps), SAMPLE_SECONDS / 2)
        self.assertEqual(metrics["interval_seconds"], SAMPLE_SECONDS)
        self.assertEqual(metrics["horizon_seconds"], 3600)
        self.assertEqual(metrics["user_count"][-1], 2)
        self.assertEqual(metrics["replica_count"][-1], 1)
        self.assertEqual(metrics["ready_pods"][-1], 1)
        self.assertEqual(metrics["desired_replicas"][-1], 1)
        rates = metrics["message_rate"]
        self.assertIsNone(rates[0])
        sent = sum((rate or 0) * gap for rate, gap in zip(rates[1:], gaps, strict=True))
        self.assertLess(abs(sent - 3), 0.05)
        self.assertEqual(
            [(d["action"], d["reason"]) for d in metrics["decisions"]],
            [("scale-up", "first"), ("scale-down", "second")],
        )

    async def test_history_survives_restart(self) -> None:
        """
        A dashboard started after another one shows the samples that the
        first one took.
        """
        await self.system.replica("one")
        first = await self.system.dashboard()
        url = first + "/api/metrics"
        taken = await until(url, lambda a: len(a.json()["timestamps"]) >= 3, "samples")
        earlier = taken.json()["timestamps"]
        await self.system.stop_dashboards()
        second = await self.system.dashboard(sample_seconds=60)
        again = (await fetch(second + "/api/metrics")).json()
        self.assertEqual(again["timestamps"][: len(earlier)], earlier)

    async def test_history_bounds(self) -> None:
        """
        The history keeps at most its number of samples and its horizon,
        and leaves out a sample too close to the newest one.
        """
        redis = await self.system.redis()
        history = History(redis, interval=10.0, horizon=100.0, max_samples=5)
        added = []
        for step in range(8):
            sample = Sample(1000.0 + 10 * step, step, 1, 1, None, step * 2)
            added.append(await history.record(sample))
        self.assertEqual(added, [True] * 8)
        too_close = Sample(1000.0 + 70 + 4, 0, 0, 0, None, 0)
        self.assertFalse(await history.record(too_close))
        kept = await history.read(now=1075.0)
        self.assertEqual(
            [s.time for s in kept], [1030.0, 1040.0, 1050.0, 1060.0, 1070.0]
        )
        self.assertEqual(kept[-1], Sample(1070.0, 7, 1, 1, None, 14))
        far_later = Sample(1300.0, 1, 1, 1, 1, 20)
        self.assertTrue(await history.record(far_later))
        self.assertEqual(await history.read(now=1300.0), [far_later])


class HealthTests(TestCase):
    """
    /api/health with everything up, then with parts down.
    """

    timeout = 120

    def setUp(self) -> None:
        self.system = System(self)

    async def health(self, base: str) -> tuple[int, dict[str, Any]]:
        answer = await fetch(base + "/api/health")
        return answer.code, answer.json()

    async def test_all_up(self) -> None:
        """
        With the database, Redis, two replicas and the autoscaler up, the
        system is healthy; each component says how it was checked.  Without
        the autoscaler's heartbeat it is only degraded.
        """
        await self.system.replica("one")
        await self.system.replica("two")
        base = await self.system.dashboard()
        code, health = await self.health(base)
        self.assertEqual((code, health["status"]), (200, "degraded"))
        self.assertEqual(
            health["components"]["autoscaler"],
            {"status": "down", "required": False, "state": "absent"},
        )

        redis = await self.system.redis()
        await scaler_heartbeat(redis, decision(reactor.seconds(), "hold", 2, 2, "ok"))
        code, health = await self.health(base)
        self.assertEqual((code, health["status"]), (200, "healthy"))
        components = health["components"]
        self.assertEqual(
            sorted(components),
            [
                "autoscaler",
                "database",
                "redis",
                "replica:one",
                "replica:two",
                "replicas",
            ],
        )
        database = components["database"]
        self.assertEqual(
            (database["status"], database["engine"], database["required"]),
            ("up", "postgresql", True),
        )
        self.assertGreater(database["latency_ms"], 0)
        self.assertEqual(components["redis"]["status"], "up")
        self.assertGreater(components["redis"]["latency_ms"], 0)
        self.assertEqual(components["autoscaler"]["state"], "running")
        self.assertEqual(
            components["replicas"],
            {"status": "up", "required": True, "ready": 2, "total": 2},
        )
        self.assertEqual(components["replica:one"]["status"], "up")

    async def test_redis_down(self) -> None:
        """
        With Redis down the health is 503 and names Redis; the status still
        answers with what the database knows, and Redis coming back is seen.
        """
        await self.system.replica("one")
        await self.system.person("one", "alice")
        base = await self.system.dashboard()
        self.system.redis_server.kill()

        code, health = await self.health(base)
        self.assertEqual((code, health["status"]), (503, "unhealthy"))
        redis = health["components"]["redis"]
        self.assertEqual(redis["status"], "down")
        self.assertTrue(redis["error"])
        self.assertEqual(health["components"]["database"]["status"], "up")
        self.assertEqual(health["components"]["replicas"]["status"], "down")

        answer = await fetch(base + "/api/status")
        self.assertEqual(answer.code, 200)
        status = answer.json()
        self.assertEqual(status["redis_status"], "down")
        self.assertEqual(status["database_status"], "up")
        self.assertEqual(status["total_users"], 1)
        self.assertIsNone(status["online_users"])
        self.assertIsNone(status["pods"])
        self.assertEqual(status["autoscaler_status"], "unknown")
        self.assertIn("online", status["errors"])
        metrics = await fetch(base + "/api/metrics")
        self.assertEqual(metrics.code, 200)

        self.system.redis_server.start()
        await until(
            base + "/api/health",
            lambda a: a.json()["components"]["redis"]["status"] == "up",
            "Redis seen up again",
        )

    async def test_database_down(self) -> None:
        """
        With PostgreSQL down the health is 503 and names the database; the
        status still lists the people online, and the database coming back
        is seen.
        """
        postgres = PostgresServer()
        self.addCleanup(postgres.destroy)
        system = System(self, postgres)
        await system.replica("one")
        await system.person("one", "alice")
        base = await system.dashboard()
        postgres.stop()

        code, health = await self.health(base)
        self.assertEqual((code, health["status"]), (503, "unhealthy"))
        database = health["components"]["database"]
        self.assertEqual(database["status"], "down")
        self.assertTrue(database["error"])
        self.assertEqual(health["components"]["redis"]["status"], "up")

        status = (await fetch(base + "/api/status")).json()
        self.assertEqual(status["database_status"], "down")
        self.assertIsNone(status["total_users"])
        self.assertIsNone(status["total_messages"])
        self.assertEqual(names_of(status["online"]), ["alice"])

        postgres.start()
        await until(
            base + "/api/health",
            lambda a: a.json()["components"]["database"]["status"] == "up",
            "PostgreSQL seen up again",
        )

    async def test_replicas_going(self) -> None:
        """
        A draining replica is shown draining and the system degraded; with
        no replica left the health is 503.
        """
        system = self.system
        one = await system.replica("one", "--drain", "4")
        two = await system.replica("two")
        await system.person("one", "alice")
        redis = await system.redis()
        await scaler_heartbeat(redis, decision(reactor.seconds(), "hold", 2, 2, "ok"))
        base = await system.dashboard()
        stopping = Deferred.fromCoroutine(one.stop())

        def draining(answer: Answer) -> bool:
            replica = answer.json()["components"].get("replica:one", {})
            return bool(replica.get("draining"))

        answer = await until(base + "/api/health", draining, "replica one draining")
        health = answer.json()
        self.assertEqual((answer.code, health["status"]), (200, "degraded"))
        self.assertEqual(health["components"]["replica:one"]["status"], "draining")
        self.assertEqual(health["components"]["replicas"]["ready"], 1)
        status = (await fetch(base + "/api/status")).json()
        self.assertEqual(pods_by_id(status)["one"]["status"], "draining")
        self.assertEqual(status["ready_replicas"], 1)

        await stopping
        await two.stop()
        answer = await until(
            base + "/api/health", lambda a: a.code == 503, "no replica left"
        )
        health = answer.json()
        self.assertEqual(health["status"], "unhealthy")
        self.assertEqual(
            health["components"]["replicas"],
            {"status": "down", "required": True, "ready": 0, "total": 0},
        )


class TwistdTests(TestCase):
    """
    The real C{twistd -n chat-dashboard}.
    """

    timeout = 120

    async def test_serves(self) -> None:
        """
        C{twistd -n chat-dashboard} serves the page and the API of a running
        system.
        """
        system = System(self)
        await system.replica("one")
        dashboard = await system.dashboard_process()
        page = await fetch(dashboard.base + "/")
        self.assertEqual(page.code, 200)
        self.assertIn(b"/static/dashboard.js", page.body)
        status = (await fetch(dashboard.base + "/api/status")).json()
        self.assertEqual(status["replicas"], 1)
        health = await fetch(dashboard.base + "/api/health")
        self.assertEqual((health.code, health.json()["status"]), (200, "degraded"))

    async def test_options(self) -> None:
        """
        --help names the options; a bad one is refused with a usage error.
        """
        helping = DashboardProcess(["--help"], listen=False)
        self.assertEqual(await helping.run_to_exit(), 0)
        for option in ("--listen", "--redis", "--database", "--sample-seconds"):
            self.assertIn(option, helping.output)
        self.assertIn("tcp:5000:interface=127.0.0.1", helping.output)
        wrong = DashboardProcess(["--redis", "http://nowhere"], listen=False)
        self.assertNotEqual(await wrong.run_to_exit(), 0)
        self.assertIn("--redis", wrong.output)
