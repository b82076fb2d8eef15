"""
Tests for the autoscaler's polls (L{chat.scaler.Scaler}) with a L{Clock}, an
in-memory Kubernetes and an in-memory census, and for its options
(L{chat.scaler_tap}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chat.kube import DELETION_COST, MERGE_PATCH, Conflict, IKube, KubeError, Pod, Scale
from chat.scaler import CONFLICT_ATTEMPTS, Scaler, Target
from chat.scaler_tap import Options
from chat.scaling import Action, Observation, Policy, Reading, Rule, Unreadable

INTERVAL = 5.0
DELAY = 60.0


def seen(by_server: dict[str, int], stats_age: float = 2.0) -> Observation:
    return Observation(
        users=sum(by_server.values()),
        by_server=by_server,
        replicas=len(by_server),
        stats_age=stats_age,
    )


@implementer(IKube)
class FakeKube:
    """
    One Deployment and its pods in memory; errors can be queued per call.
    """

    def __init__(self, replicas: int, pods: list[str]) -> None:
        self.namespace = "chat-app"
        self.replicas = replicas
        self.version = 1
        self.selector = "app=chat-server"
        self.pods = {name: Pod(name, {}, "Running", False) for name in pods}
        self.errors: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, Any]] = []
        # Called just before a patch is applied, as another writer would.
        self.before_patch: list[Any] = []

    def _call(self, name: str, argument: Any) -> None:
        self.calls.append((name, argument))
        queued = self.errors.get(name)
        if queued:
            raise queued.pop(0)

    def count(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)

    def _scale(self, name: str) -> Scale:
        return Scale(
            name, self.replicas, self.replicas, self.selector, str(self.version), {}
        )

    async def read_scale(self, name: str) -> Scale:
        self._call("read_scale", name)
        return self._scale(name)

    async def patch_scale(
        self,
        name: str,
        replicas: int,
        patch_type: str = MERGE_PATCH,
        resource_version: str | None = None,
    ) -> Scale:
        for change in self.before_patch:
            change()
        self._call("patch_scale", (replicas, resource_version))
        if resource_version is not None and resource_version != str(self.version):
            raise Conflict("conflict", "the object has been modified", 409, "Conflict")
        self.replicas = replicas
        self.version += 1
        return self._scale(name)

    async def list_pods(self, selector: str) -> list[Pod]:
        self._call("list_pods", selector)
        return list(self.pods.values())

    async def annotate_pod(self, name: str, annotations: dict[str, str]) -> Pod:
        self._call("annotate_pod", (name, annotations))
        pod = self.pods[name]
        pod = Pod(name, {**pod.annotations, **annotations}, pod.phase, pod.deleting)
        self.pods[name] = pod
        return pod


class FakeCensus:
    """
    Hands out the next reading (the last one again when they run out) and
    keeps what is recorded.
    """

    def __init__(self, *readings: Reading) -> None:
        self.readings = list(readings)
        self.records: list[dict[str, Any]] = []
        self.heartbeats: list[tuple[dict[str, Any], float]] = []
        self.withdrawn = False

    async def read(self) -> Reading:
        if len(self.readings) > 1:
            return self.readings.pop(0)
        return self.readings[0]

    async def record(self, decision: dict[str, Any]) -> None:
        self.records.append(decision)

    async def beat(self, state: dict[str, Any], ttl_seconds: float) -> None:
        self.heartbeats.append((state, ttl_seconds))

    async def withdraw(self) -> None:
        self.withdrawn = True


class ScalerTestCase(SynchronousTestCase):
    def make(
        self,
        replicas: int,
        census: FakeCensus,
        pods: list[str] | None = None,
        dry_run: bool = False,
    ) -> Scaler:
        self.clock = Clock()
        self.kube = FakeKube(replicas, pods or [])
        self.census = census
        self.events: list[dict[str, Any]] = []
        scaler = Scaler(
            self.clock,
            census,
            self.kube,
            Rule(Policy(scale_down_delay=DELAY)),
            Target(interval=INTERVAL, dry_run=dry_run),
        )
        scaler.log = Logger(observer=self.events.append)
        return scaler

    def poll(self, scaler: Scaler) -> Any:
        return self.successResultOf(_deferred(scaler.poll()))

    def decisions(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "action" in e]


def _deferred(coroutine: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)


class PollTests(ScalerTestCase):
    def test_fake_is_ikube(self) -> None:
        """
        The in-memory Kubernetes provides the interface the scaler uses.
        """
        self.assertTrue(verifyObject(IKube, FakeKube(1, [])))

    def test_scale_up(self) -> None:
        """
        Seven people on one replica: the first poll patches the Scale to 3,
        with the version it read, and logs and records the decision.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 7})))
        decision = self.poll(scaler)
        self.assertEqual((decision.action, decision.target), (Action.UP, 3))
        self.assertEqual(self.kube.calls[-1], ("patch_scale", (3, "1")))
        self.assertEqual(self.kube.replicas, 3)
        [event] = self.decisions()
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(
            {k: event[k] for k in ("users", "current", "desired", "target", "action")},
            {"users": 7, "current": 1, "desired": 3, "target": 3, "action": "scale-up"},
        )
        self.assertTrue(event["applied"])
        self.assertEqual(event["decision"], "scale-up chat-server 1 -> 3")
        [record] = self.census.records
        self.assertEqual(record["action"], "scale-up")
        self.assertEqual(record["reason"], "7 people online need 3 at 3 per pod")
        self.assertTrue(record["applied"])
        state, ttl = self.census.heartbeats[-1]
        self.assertEqual((state["target"], state["deployment"]), (3, "chat-server"))
        self.assertGreaterEqual(ttl, 3 * INTERVAL)

    def test_scale_down_marks_pods(self) -> None:
        """
        Before a scale-down every live chat pod gets a deletion cost equal
        to the people it holds (0 for a pod without figures); a pod being
        deleted is left alone and an unchanged cost is not written again.
        """
        pods = ["pod-a", "pod-b", "pod-c", "pod-d"]
        scaler = self.make(3, FakeCensus(seen({"pod-a": 1, "pod-b": 0})), pods)
        self.kube.pods["pod-b"] = Pod("pod-b", {DELETION_COST: "0"}, "Running", False)
        self.kube.pods["pod-d"] = Pod("pod-d", {}, "Running", True)
        for _ in range(int(DELAY / INTERVAL)):
            self.assertEqual(self.poll(scaler).action, Action.HOLD)
            self.clock.advance(INTERVAL)
        self.assertEqual(self.kube.count("annotate_pod"), 0)
        decision = self.poll(scaler)
        self.assertEqual((decision.action, decision.target), (Action.DOWN, 1))
        annotated = [arg for call, arg in self.kube.calls if call == "annotate_pod"]
        self.assertEqual(
            annotated,
            [("pod-a", {DELETION_COST: "1"}), ("pod-c", {DELETION_COST: "0"})],
        )
        names = [call for call, _ in self.kube.calls[-4:]]
        self.assertEqual(
            names, ["list_pods", "annotate_pod", "annotate_pod", "patch_scale"]
        )
        self.assertEqual(
            self.decisions()[-1]["decision"],
            "scale-down chat-server 3 -> 1 (deletion costs pod-a=1, pod-b=0, pod-c=0)",
        )

    def test_marking_fails(self) -> None:
        """
        When the pods cannot be annotated the scale-down still happens, with
        a warning that says why.
        """
        scaler = self.make(2, FakeCensus(seen({"pod-a": 0})), ["pod-a", "pod-b"])
        self.kube.errors["annotate_pod"] = [
            KubeError("forbidden", "cannot patch pods", 403, "Forbidden")
        ]
        for _ in range(int(DELAY / INTERVAL)):
            self.poll(scaler)
            self.clock.advance(INTERVAL)
        decision = self.poll(scaler)
        self.assertEqual((decision.action, self.kube.replicas), (Action.DOWN, 1))
        warnings = [e for e in self.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("403 Forbidden: cannot patch pods", warnings[0]["error"])

    def test_conflict_reads_again(self) -> None:
        """
        When someone changes the Scale between the read and the write, the
        patch fails with 409, and the poll reads again and decides on the
        new size instead of overwriting it.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 7})))

        def someone_scales() -> None:
            if self.kube.count("patch_scale") == 0:
                self.kube.replicas = 2
                self.kube.version += 1

        self.kube.before_patch.append(someone_scales)
        decision = self.poll(scaler)
        self.assertEqual((decision.current, decision.target), (2, 3))
        patches = [arg for call, arg in self.kube.calls if call == "patch_scale"]
        self.assertEqual(patches, [(3, "1"), (3, "2")])
        self.assertEqual(self.kube.count("read_scale"), 2)
        self.assertIn(
            "changed while it was being written", self.events[0]["log_format"]
        )

    def test_conflicts_give_up(self) -> None:
        """
        A Scale that changes at every attempt is left alone for this poll,
        with a reason, and the next poll waits.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 7})))

        def someone_scales() -> None:
            self.kube.version += 1

        self.kube.before_patch.append(someone_scales)
        decision = self.poll(scaler)
        self.assertEqual(self.kube.count("patch_scale"), CONFLICT_ATTEMPTS)
        self.assertEqual((decision.action, decision.target), (Action.HOLD, 1))
        self.assertIn("wanted 3: 7 people online need 3", decision.reason)
        self.assertIn("409", decision.reason)
        self.assertIn("next try in 5s", decision.reason)

    def test_dry_run(self) -> None:
        """
        A dry run logs what it would do and changes nothing.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 9})), dry_run=True)
        decision = self.poll(scaler)
        self.assertEqual((decision.action, decision.target), (Action.UP, 3))
        self.assertEqual(self.kube.count("patch_scale"), 0)
        self.assertEqual(self.kube.replicas, 1)
        [event] = self.decisions()
        self.assertEqual(event["decision"], "would scale-up chat-server 1 -> 3")
        self.assertEqual((event["dry_run"], event["applied"]), (True, False))
        self.assertEqual(self.census.records[0]["applied"], False)

    def test_redis_unreadable(self) -> None:
        """
        When Redis cannot be read the size is held, the reason says so and
        the scaler is not ready.
        """
        scaler = self.make(2, FakeCensus(Unreadable("cannot read Redis: refused")))
        decision = self.poll(scaler)
        self.assertEqual((decision.action, decision.current), (Action.HOLD, 2))
        self.assertEqual(decision.reason, "cannot read Redis: refused; holding")
        self.assertEqual(self.kube.count("patch_scale"), 0)
        failure = self.failureResultOf(_deferred(scaler.ready_check()()))
        self.assertIn("not been read", str(failure.value))
        exposition = scaler.metrics.exposition().decode()
        self.assertIn('chat_scaler_errors_total{kind="redis"} 1.0', exposition)

    def test_stale_figures(self) -> None:
        """
        Figures older than the bound hold the size and count as stale.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 20}, stats_age=90)))
        decision = self.poll(scaler)
        self.assertEqual((decision.action, decision.target), (Action.HOLD, 1))
        self.assertIn("90s old", decision.reason)
        exposition = scaler.metrics.exposition().decode()
        self.assertIn('chat_scaler_errors_total{kind="stale"} 1.0', exposition)

    def test_repeats_are_quiet(self) -> None:
        """
        The same decision poll after poll is logged at info once, then at
        debug, and recorded once; the heartbeat is written every poll.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 2})))
        for _ in range(3):
            self.poll(scaler)
            self.clock.advance(INTERVAL)
        levels = [event["log_level"] for event in self.decisions()]
        self.assertEqual(levels, [LogLevel.info, LogLevel.debug, LogLevel.debug])
        self.assertEqual(len(self.census.records), 1)
        self.assertEqual(len(self.census.heartbeats), 3)

    def test_metrics(self) -> None:
        """
        The metrics give the decisions by action, the sizes and the people
        online.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 7})))
        self.poll(scaler)
        self.clock.advance(INTERVAL)
        self.poll(scaler)
        text = scaler.metrics.exposition().decode()
        for line in [
            'chat_scaler_decisions_total{action="scale-up"} 1.0',
            'chat_scaler_decisions_total{action="hold"} 1.0',
            'chat_scaler_decisions_total{action="scale-down"} 0.0',
            "chat_scaler_current_replicas 3.0",
            "chat_scaler_desired_replicas 3.0",
            "chat_scaler_online_users 7.0",
        ]:
            self.assertIn(line, text)


class BackoffTests(ScalerTestCase):
    def test_api_errors_back_off(self) -> None:
        """
        While the API server refuses the token, polls come after one
        interval, then two, four and eight, each decision saying why and
        when the next try is; a success goes back to every interval.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 4})))
        refused = KubeError("unauthorized", "Unauthorized", 401, "Unauthorized")
        self.kube.errors["read_scale"] = [refused] * 4
        scaler.start(now=True)
        self.clock.pump([INTERVAL] * 30)
        reads = [
            decision["time"]
            for decision in self.decisions()
            if decision["action"] in ("hold", "scale-up")
        ]
        self.assertEqual(reads[:6], [0.0, 5.0, 15.0, 35.0, 75.0, 80.0])
        first = self.decisions()[0]
        self.assertEqual(first["current"], None)
        self.assertIn("401 Unauthorized", first["reason"])
        self.assertIn("the API server refused the credentials", first["reason"])
        self.assertIn("next try in 5s", first["reason"])
        self.assertIn("next try in 40s", self.decisions()[3]["reason"])
        self.assertEqual(self.kube.replicas, 2)
        self.assertEqual(self.kube.count("read_scale"), 5 + int((150 - 75) / INTERVAL))
        exposition = scaler.metrics.exposition().decode()
        self.assertIn('chat_scaler_errors_total{kind="unauthorized"} 4.0', exposition)
        # The heartbeat went on while the polls waited.
        self.assertEqual(len(self.census.heartbeats), 31)
        self.successResultOf(_deferred(scaler.stop()))

    def test_backoff_is_capped(self) -> None:
        """
        However long the API server fails, polls come at least every five
        minutes.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 4})))
        self.kube.errors["read_scale"] = [
            KubeError("server", "etcd is down", 503, "ServiceUnavailable")
        ] * 100
        scaler.start(now=True)
        self.clock.pump([INTERVAL] * int(3600 / INTERVAL))
        times = [d["time"] for d in self.decisions()]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        self.assertEqual(max(gaps), 300.0)
        self.successResultOf(_deferred(scaler.stop()))

    def test_stop(self) -> None:
        """
        Stopping ends the polls and removes the heartbeat.
        """
        scaler = self.make(1, FakeCensus(seen({"pod-a": 1})))
        scaler.start(now=True)
        self.successResultOf(_deferred(scaler.stop()))
        self.assertFalse(scaler.running)
        self.assertTrue(self.census.withdrawn)
        self.clock.advance(INTERVAL * 3)
        self.assertEqual(self.kube.count("read_scale"), 1)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        """
        With only Redis named, the defaults are those of the issue: 3 per
        pod, 1 to 10 replicas, a poll every 5 s, 60 s before scaling down.
        """
        settings = self.parse("--redis", "redis://127.0.0.1:6379/0").settings()
        self.assertEqual(
            settings.target, Target("chat-app", "chat-server", 5.0, dry_run=False)
        )
        self.assertEqual(settings.policy, Policy(3, 1, 10, 60.0, 25.0))
        self.assertIsNone(settings.admin)
        self.assertIsNone(settings.kubeconfig)

    def test_environment(self) -> None:
        """
        Every option can come from the environment; the command line wins.
        """
        environment = {
            "CHAT_REDIS": "unix:/run/redis.sock?db=2",
            "CHAT_SCALER_NAMESPACE": "prod",
            "CHAT_SCALER_DEPLOYMENT": "chat",
            "CHAT_SCALER_USERS_PER_POD": "50",
            "CHAT_SCALER_MIN_REPLICAS": "2",
            "CHAT_SCALER_MAX_REPLICAS": "20",
            "CHAT_SCALER_INTERVAL": "2.5",
            "CHAT_SCALER_SCALE_DOWN_DELAY": "300",
            "CHAT_SCALER_MAX_STATS_AGE": "40",
            "CHAT_SCALER_KUBECONFIG": "/etc/kube/config",
            "CHAT_SCALER_ADMIN": "tcp:8080",
            "CHAT_SCALER_DRY_RUN": "yes",
        }
        self.patch(__import__("os"), "environ", environment)
        settings = self.parse("--max-replicas", "30").settings()
        self.assertEqual(settings.redis, "unix:/run/redis.sock?db=2")
        self.assertEqual(settings.target, Target("prod", "chat", 2.5, dry_run=True))
        self.assertEqual(settings.policy, Policy(50, 2, 30, 300.0, 40.0))
        self.assertEqual(
            (settings.kubeconfig, settings.admin), ("/etc/kube/config", "tcp:8080")
        )

    def test_refused(self) -> None:
        """
        Missing Redis, bad numbers and bounds that cannot work are usage
        errors that say what is wrong.
        """
        redis = ["--redis", "redis://127.0.0.1/0"]
        for args, words in [
            ([], "--redis"),
            (["--redis", "http://cache"], "--redis"),
            ([*redis, "--users-per-pod", "three"], "--users-per-pod takes"),
            ([*redis, "--interval", "0"], "--interval must be"),
            ([*redis, "--min-replicas", "0"], "at least 1"),
            ([*redis, "--min-replicas", "5", "--max-replicas", "4"], "below"),
            ([*redis, "--scale-down-delay", "-5"], "delay"),
            ([*redis, "--log-level", "loud"], "log level"),
        ]:
            with self.assertRaises(UsageError) as caught:
                self.parse(*args)
            self.assertIn(words, str(caught.exception), args)
