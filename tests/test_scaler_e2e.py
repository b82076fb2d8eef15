"""
The autoscaler end to end: the real C{chat-scaler} service in this process,
talking HTTP to the stand-in Kubernetes API server (L{tests.fakekube}) with
the chart's Role, reading the Redis that real C{twistd -n chat} replicas in
cluster mode write to, while people log in and out over loopback.

The stand-in's controller plays the ReplicaSet: it adds pods on a scale-up,
for which the test starts replicas named after them, and on a scale-down
removes the pods with the lowest deletion cost, whose replicas the test then
stops.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEventAsClassicLogText, globalLogPublisher
from twisted.trial.unittest import TestCase

from chat.cluster.keys import KEYS
from chat.cluster.redisconn import RedisClient, parse_redis_url
from chat.scaler import ScalerService
from chat.scaler_tap import Options, makeService
from tests.fakekube import DELETION_COST, SCALER_ROLE, FakeKubernetes, wait_for
from tests.process import DaemonProcess, LineClient, connect, start_daemon
from tests.servers import LOCALHOST, free_port, shared_postgres, shared_redis

PASSWORD = "correct horse"
INTERVAL_SECONDS = 1.0
DELAY_SECONDS = 6.0
# A poll reads Redis and makes two or three HTTP calls on loopback; a busy
# machine running the rest of the suite may delay it.
POLL_SLACK_SECONDS = 1.0
# Other cluster tests use databases from 1 up; this one keeps to the last.
REDIS_DATABASE = 15
DEPLOYMENT = "chat-server"
LABELS = {"app": DEPLOYMENT}
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]


async def logged_in(port: int, name: str, command: str = "signup") -> LineClient:
    """
    A JSON-mode connection of C{name}, signed up or logged in.
    """
    client = await connect(port)
    client.send("/mode json")
    await client.expect_json(type="mode")
    client.send_json(cmd=command, name=name, password=PASSWORD)
    await client.expect_json(type="ok", cmd=command)
    return client


class ScalerEndToEndTests(TestCase):
    timeout = 150

    async def setUp(self) -> None:  # type: ignore[override]
        postgres = shared_postgres()
        self.database = postgres.create_database()
        self.addCleanup(postgres.drop_database, self.database)
        self.redis_url = f"redis://{LOCALHOST}:{shared_redis().port}/{REDIS_DATABASE}"
        self.redis = RedisClient(reactor, parse_redis_url(self.redis_url))
        await self.redis.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.redis.stop()))
        await self.redis.execute("FLUSHDB")

        self.api = FakeKubernetes(reactor, "chat-app", allowed=SCALER_ROLE)
        self.api.add_deployment(DEPLOYMENT, 1, LABELS)
        self.api.add_pod("chat-server-r1", LABELS)
        self.api.controller = True
        names = (f"chat-server-r{n}" for n in range(2, 100))
        self.api.pod_names = lambda deployment: next(names)
        self.api.on_pods_removed.append(self._pods_removed)
        await self.api.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.api.stop()))

        self.replicas: dict[str, DaemonProcess] = {}
        self.stopping: list[Deferred[int]] = []
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self._logged)
        self.addCleanup(globalLogPublisher.removeObserver, self._logged)

    def _logged(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith(("chat.scaler", "chat.kube")):
            text = formatEventAsClassicLogText(event)
            if text:
                self.lines.append(text.rstrip("\n"))

    async def replica(self, name: str) -> DaemonProcess:
        args = ["--database", self.database, "--redis", self.redis_url]
        args += ["--server-id", name, "--drain", "0"]
        daemon = await start_daemon(self, args)
        self.replicas[name] = daemon
        return daemon

    def _pods_removed(self, names: list[str]) -> None:
        # Kubernetes stops the containers of the pods it removed.
        for name in names:
            daemon = self.replicas.pop(name, None)
            if daemon is not None:
                self.stopping.append(Deferred.fromCoroutine(daemon.stop()))

    async def scaler(self, directory: Path) -> ScalerService:
        kubeconfig = self.api.write_kubeconfig(directory / "kubeconfig")
        self.admin_port = free_port()
        options = Options()
        options.parseOptions(
            [
                "--redis",
                self.redis_url,
                "--kubeconfig",
                str(kubeconfig),
                "--interval",
                str(INTERVAL_SECONDS),
                "--scale-down-delay",
                str(DELAY_SECONDS),
                "--admin",
                f"tcp:{self.admin_port}:interface={LOCALHOST}",
            ]
        )
        service = makeService(options, reactor)
        service.exit_on_failure = False
        service.startService()
        self.addCleanup(self._stop_scaler, service)
        await service.ready
        return service

    async def _stop_scaler_now(self, service: ScalerService) -> None:
        if service.running:
            await service.stopService()

    def _stop_scaler(self, service: ScalerService) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop_scaler_now(service))

    def sizes(self) -> list[int]:
        return [replicas for _, replicas in self.api.scale_changes]

    async def admin(self, path: str) -> tuple[int, str]:
        response = await treq.get(
            f"http://{LOCALHOST}:{self.admin_port}{path}", persistent=False
        )
        return response.code, await response.text()

    async def test_up_and_down(self) -> None:
        """
        Seven people logging in make the scaler ask for three replicas
        within one poll; when they leave it goes back to one only after the
        scale-down delay, removing the emptiest pods first.
        """
        first = await self.replica("chat-server-r1")
        service = await self.scaler(Path(tempfile.mkdtemp(prefix="chat-scaler-")))
        await wait_for(reactor, lambda: bool(self.lines), 5)

        clients = [await logged_in(first.port, name) for name in PEOPLE]
        logged_in_at = reactor.seconds()
        waited = await wait_for(reactor, lambda: 3 in self.sizes(), 5, step=0.01)
        print(f"\n3 replicas asked for {waited:.2f}s after the 7th login")
        self.assertLessEqual(waited, INTERVAL_SECONDS + POLL_SLACK_SECONDS)
        self.assertEqual(self.sizes()[-1], 3)
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 3)

        # Kubernetes starts the new pods; each is a replica named after it.
        for name in sorted(self.api.pods):
            if name not in self.replicas:
                await self.replica(name)
        await wait_for(reactor, lambda: _holding_at(self.lines, 3), 10)

        leaving_at = reactor.seconds()
        for client in clients:
            client.send_json(cmd="quit")
        for client in clients:
            await client.expect_json(type="bye")
        left_at = reactor.seconds()
        # One person comes back, on the second replica.
        alice = await logged_in(self.replicas["chat-server-r2"].port, "alice", "login")

        await wait_for(reactor, lambda: 1 in self.sizes(), DELAY_SECONDS * 3)
        down_after = reactor.seconds() - left_at
        print(f"back to 1 replica {down_after:.2f}s after the people left")
        self.assertEqual(self.sizes()[-1], 1)
        self.assertLessEqual(
            down_after, DELAY_SECONDS + 2 * INTERVAL_SECONDS + POLL_SLACK_SECONDS
        )
        # Nothing came down before a whole delay had passed since the last
        # poll that saw everyone, at most one interval before they began to
        # leave.  A poll that caught them halfway may make it two steps.
        up = self.sizes().index(3)
        downs = self.api.scale_changes[up + 1 :]
        self.assertEqual(
            [size for _, size in downs], sorted(self.sizes()[up + 1 :], reverse=True)
        )
        self.assertGreaterEqual(
            downs[0][0] - leaving_at, DELAY_SECONDS - INTERVAL_SECONDS
        )
        self.assertGreater(self.api.scale_changes[up][0], logged_in_at - 1)
        self.downs = len(downs)

        # The emptiest pods went; the one holding alice stayed, and she is
        # still connected.
        costs = {
            call.path.rsplit("/", 1)[1]: call.body["metadata"]["annotations"]
            for call in self.api.calls
            if call.method == "PATCH" and "/pods/" in call.path
        }
        self.assertEqual(
            costs,
            {
                "chat-server-r1": {DELETION_COST: "0"},
                "chat-server-r2": {DELETION_COST: "1"},
                "chat-server-r3": {DELETION_COST: "0"},
            },
        )
        self.assertEqual(sorted(self.api.removed), ["chat-server-r1", "chat-server-r3"])
        self.assertEqual(list(self.api.pods), ["chat-server-r2"])
        for stopping in self.stopping:
            await stopping
        alice.send_json(cmd="who", id="w")
        who = await alice.expect_json(type="who", id="w")
        self.assertEqual(who["users"], ["alice"])

        # Every scale change went through the scale subresource as patches
        # that name the version they were decided on.
        patches = [
            call
            for call in self.api.calls
            if call.method == "PATCH" and call.path.endswith("/scale")
        ]
        self.assertTrue(patches)
        for call in patches:
            self.assertEqual(call.content_type, "application/merge-patch+json")
            self.assertIn("resourceVersion", call.body["metadata"])

        await self._check_records_and_admin()
        await service.stopService()
        self.assertIsNone(await self.redis.execute("GET", KEYS.scaler_heartbeat))
        print("the scaler's log over the cycle:")
        print("\n".join(self.lines))

    async def _check_records_and_admin(self) -> None:
        entries = await self.redis.execute("LRANGE", KEYS.scaler_decisions, 0, -1)
        actions = [json.loads(entry)["action"] for entry in reversed(entries)]
        self.assertIn("scale-up", actions)
        self.assertEqual(actions.count("scale-down"), self.downs)
        heartbeat = json.loads(await self.redis.execute("GET", KEYS.scaler_heartbeat))
        self.assertEqual(
            (heartbeat["target"], heartbeat["deployment"]), (1, DEPLOYMENT)
        )

        self.assertEqual(await self.admin("/healthz"), (200, '{"alive": true}\n'))
        code, ready = await self.admin("/readyz")
        self.assertEqual((code, json.loads(ready)["ready"]), (200, True))
        code, metrics = await self.admin("/metrics")
        self.assertEqual(code, 200)
        self.assertIn(
            f'chat_scaler_decisions_total{{action="scale-down"}} {self.downs:.1f}',
            metrics,
        )
        self.assertIn("chat_scaler_current_replicas 1.0", metrics)
        self.assertIn("chat_scaler_online_users 1.0", metrics)


def _holding_at(lines: list[str], size: int) -> bool:
    return bool(lines) and f"hold {DEPLOYMENT} at {size}" in lines[-1]


class StartUpTests(TestCase):
    """
    The service when what it needs is missing.
    """

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        self.api = FakeKubernetes(reactor, "chat-app", allowed=SCALER_ROLE)
        self.api.add_deployment(DEPLOYMENT, 2, LABELS)
        await self.api.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.api.stop()))
        self.directory = Path(tempfile.mkdtemp(prefix="chat-scaler-"))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def service(self, *args: str) -> ScalerService:
        options = Options()
        options.parseOptions(["--interval", "0.2", *args])
        service = makeService(options, reactor)
        service.exit_on_failure = False
        return service

    async def test_no_kubernetes(self) -> None:
        """
        Without a usable Kubernetes configuration the service fails to start
        and says why.
        """
        redis = f"redis://{LOCALHOST}:{free_port()}/0"
        service = self.service("--redis", redis, "--kubeconfig", "/nonexistent")
        service.startService()
        failure = await _failed(service.ready)
        self.assertIn("/nonexistent", str(failure))
        critical = [e for e in self.events if e.get("log_level") is LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertIn("cannot reach Kubernetes", critical[0]["log_format"])
        await service.stopService()

    async def test_redis_down(self) -> None:
        """
        With Redis out of reach the scaler holds the size, says why, and is
        not ready; it changes nothing.
        """
        kubeconfig = self.api.write_kubeconfig(self.directory / "kubeconfig")
        port = free_port()
        service = self.service(
            "--redis",
            f"redis://{LOCALHOST}:{free_port()}/0",
            "--kubeconfig",
            str(kubeconfig),
            "--admin",
            f"tcp:{port}:interface={LOCALHOST}",
        )
        service.startService()
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(service)))
        await service.ready

        def held() -> bool:
            return any("cannot read Redis" in str(e.get("reason")) for e in self.events)

        await wait_for(reactor, held, 5)
        [event] = [
            e for e in self.events if "cannot read Redis" in str(e.get("reason"))
        ]
        self.assertEqual((event["action"], event["current"]), ("hold", 2))
        response = await treq.get(f"http://{LOCALHOST}:{port}/readyz", persistent=False)
        self.assertEqual(response.code, 503)
        report = json.loads(await response.text())
        self.assertIn("not been read", report["checks"]["redis"]["error"])
        self.assertEqual(self.api.scale_changes, [])


async def _failed(d: Deferred[Any]) -> Exception:
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("it did not fail")


async def _stopped(service: ScalerService) -> None:
    if service.running:
        await service.stopService()
