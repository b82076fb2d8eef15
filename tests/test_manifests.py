"""
Offline checks of the Helm chart in manifests/chat and of manifests/chat.yaml.

The chart is linted and rendered by Helm's own library (helm-python-sdk), for
the defaults and each documented set of values; every object is validated
against the Kubernetes OpenAPI schemas (kubernetes-validate) of the oldest
Kubernetes the chart supports and of the newest one the package knows.  The
consistency checks read their truth from the code: the twistd plugins'
Options parse each container's arguments and environment, the admin resource
and the dashboard's routes answer the probe paths, and the Kubernetes client
of the scaler, run against the fake API server, shows which calls the Role
must allow.  A missing tool is an import error, so the checks fail rather
than skip.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import helm_python
import kubernetes_validate
import yaml
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat import daemon, logs, metrics
from chat.admin import Readiness, admin_resource
from chat.cluster.redisconn import parse_redis_url
from chat.kube import DELETION_COST, IKube, KubeClient
from chat.kube_access import ApiAccess
from chat.postgres import connect_keywords
from tests.charts import (
    CHECKOUT,
    GRACE_MARGIN_SECONDS,
    KUBERNETES_VERSIONS,
    LIBPQ_VARIABLES,
    ParsingTestCase,
    container_env,
    find,
    kinds,
    listening,
    our_containers,
    plugins,
    pod_specs,
    ports_of,
    rbac_call,
    render,
    rendered,
)
from tests.fakekube import TOKEN, FakeKubernetes


class RenderTests(SynchronousTestCase):
    """
    Helm lints and renders the chart with each documented set of values.
    """

    def test_lints_cleanly(self) -> None:
        """
        helm lint --strict finds no warning or error for any value set, at
        the oldest and newest Kubernetes versions checked.
        """
        for name, values in render.value_sets().items():
            for version in KUBERNETES_VERSIONS:
                report = helm_python.lint(
                    render.CHART,
                    values,
                    strict=True,
                    namespace=render.NAMESPACE,
                    kube_version=f"v{version}",
                )
                problems = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(([], []), (report["errors"], problems), name)

    def test_renders_objects_without_namespace(self) -> None:
        """
        Every value set renders named objects that leave the namespace to
        `helm -n` or `kubectl -n`, so none clashes with --create-namespace.
        """
        for name in render.value_sets():
            objects = rendered(name)
            self.assertTrue(objects, name)
            for obj in objects:
                self.assertTrue(obj["metadata"]["name"], name)
                self.assertNotIn("namespace", obj["metadata"], name)

    def test_schema_rejects_unknown_values(self) -> None:
        """
        values.schema.json turns a misspelt value into an error.
        """
        with self.assertRaises(helm_python.HelmValuesError):
            render.render({"chat": {"drainSecond": 3}})

    def test_log_levels_match_the_code(self) -> None:
        """
        The schema's log levels are exactly those the plugins accept.
        """
        schema = yaml.safe_load((render.CHART / "values.schema.json").read_text())
        for section in ("chat", "scaler", "dashboard"):
            levels = schema["properties"][section]["properties"]["logLevel"]["enum"]
            self.assertEqual(list(logs.LEVELS), levels, section)

    def test_value_sets_are_documented(self) -> None:
        """
        docs/deploy.md names every value file under manifests/values.
        """
        guide = (CHECKOUT / "docs" / "deploy.md").read_text(encoding="utf-8")
        for path in sorted(render.VALUES.glob("*.yaml")):
            self.assertIn(f"manifests/values/{path.name}", guide)

    def test_static_manifest_is_current(self) -> None:
        """
        manifests/chat.yaml is exactly a fresh render (python
        manifests/render.py writes it).
        """
        current = render.STATIC.read_text(encoding="utf-8")
        self.assertEqual(render.static_manifest(), current)


class SchemaTests(SynchronousTestCase):
    """
    The rendered objects are valid Kubernetes objects.
    """

    def test_every_object_validates(self) -> None:
        """
        Every built-in object of every value set validates, strictly (no
        unknown field), against the OpenAPI schemas of each version checked.
        """
        for name in render.value_sets():
            for obj in rendered(name):
                if obj["apiVersion"].startswith("keda.sh/"):
                    continue
                for version in KUBERNETES_VERSIONS:
                    try:
                        kubernetes_validate.validate(obj, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        what = f"{name}: {obj['kind']} {obj['metadata']['name']}"
                        self.fail(f"{what} on {version}: {e.message} at {e.path}")

    def test_oldest_version_is_the_charts_floor(self) -> None:
        """
        The oldest version validated is the one Chart.yaml requires.
        """
        chart = yaml.safe_load((render.CHART / "Chart.yaml").read_text())
        self.assertEqual(f">={KUBERNETES_VERSIONS[0]}-0", chart["kubeVersion"])


class ChatServerTests(ParsingTestCase):
    """
    The chat Deployment agrees with what `twistd chat` accepts and serves.
    """

    def chat(self, name: str = "defaults") -> tuple[dict[str, Any], dict[str, Any]]:
        deployment = find(rendered(name), "Deployment", render.RELEASE)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return deployment, container

    def test_options_accept_the_container(self) -> None:
        """
        For every value set, `twistd chat` accepts the container's arguments
        and environment, listens on its chat and admin ports, takes its name
        from the pod and joins the cluster on PostgreSQL and Redis.
        """
        for name in render.value_sets():
            _, container = self.chat(name)
            options = self.parse(container, container_env(rendered(name), container))
            ports = ports_of(container)
            self.assertEqual(["chat"], container["args"])
            self.assertEqual(
                [(ports["chat"], "")], [listening(e) for e in options["listen"]]
            )
            self.assertEqual((ports["admin"], ""), listening(options["admin"]))
            self.assertEqual("chat-6c9f7d-x2x4q", options["server-id"])
            self.assertTrue(options["redis"], name)
            self.assertTrue(options["database"].startswith("postgresql://"), name)

    def test_every_variable_is_read(self) -> None:
        """
        Each CHAT_* variable the chart sets changes what `twistd chat`
        parses; the only others are libpq's.
        """
        objects = rendered("defaults")
        _, container = self.chat()
        env = container_env(objects, container)
        full = dict(self.parse(container, env))
        for variable in env:
            if variable in LIBPQ_VARIABLES:
                continue
            self.assertTrue(variable.startswith("CHAT_"), variable)
            self.assertRead(container, env, full, variable)

    def test_password_only_through_libpq(self) -> None:
        """
        The in-cluster database URL holds no password, so libpq takes
        PGPASSWORD from the Secret; the URL names the chart's PostgreSQL.
        """
        objects = rendered("defaults")
        _, container = self.chat()
        env = container_env(objects, container)
        keywords = connect_keywords(env["CHAT_DATABASE"])
        self.assertNotIn("password", keywords)
        statefulset = find(objects, "StatefulSet", f"{render.RELEASE}-postgresql")
        postgres = statefulset["spec"]["template"]["spec"]["containers"][0]
        server_env = {e["name"]: e.get("value") for e in postgres["env"]}
        service = find(objects, "Service", statefulset["spec"]["serviceName"])
        self.assertEqual(
            (
                service["metadata"]["name"],
                str(service["spec"]["ports"][0]["port"]),
                server_env["POSTGRES_USER"],
                server_env["POSTGRES_DB"],
            ),
            (
                keywords["host"],
                keywords.get("port", "5432"),
                keywords["user"],
                keywords["dbname"],
            ),
        )
        ref = next(e for e in container["env"] if e["name"] == "PGPASSWORD")
        server_ref = next(
            e for e in postgres["env"] if e["name"] == "POSTGRES_PASSWORD"
        )
        self.assertEqual(server_ref["valueFrom"], ref["valueFrom"])

    def test_redis_url_names_the_charts_redis(self) -> None:
        """
        CHAT_REDIS parses with the cluster's own parser and names the
        chart's Redis Service and port.
        """
        objects = rendered("defaults")
        _, container = self.chat()
        address = parse_redis_url(container_env(objects, container)["CHAT_REDIS"])
        service = find(objects, "Service", f"{render.RELEASE}-redis")
        self.assertIn(service["metadata"]["name"], repr(address))
        self.assertIn(str(service["spec"]["ports"][0]["port"]), repr(address))

    def test_probes_are_served_by_the_admin_endpoint(self) -> None:
        """
        Startup and liveness ask /healthz and readiness asks /readyz of the
        admin port, and the admin resource answers them and /metrics with
        200; no probe touches the chat port.
        """
        from twisted.web.resource import getChildForRequest
        from twisted.web.test.requesthelper import DummyRequest

        _, container = self.chat()
        wanted = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in wanted.items():
            self.assertEqual(
                {"path": path, "port": "admin"}, container[probe]["httpGet"]
            )
        clock: Any = Clock()
        readiness = Readiness(clock, {}, started=lambda: True)
        root = admin_resource(readiness, lambda: b"", metrics.CONTENT_TYPE)
        scraped = render.load_values(render.CHART / "values.yaml")["metrics"]["path"]
        for path in {*wanted.values(), scraped}:
            request = DummyRequest(path.lstrip("/").encode().split(b"/"))
            finished = request.notifyFinish()
            request.render(getChildForRequest(root, request))
            self.successResultOf(finished)
            self.assertIn(request.responseCode, (None, 200), path)

    def test_grace_period_covers_prestop_and_drain(self) -> None:
        """
        terminationGracePeriodSeconds exceeds the preStop pause, the drain
        the daemon is given and its close grace, with a margin; the chart
        refuses values that would not.
        """
        for name in render.value_sets():
            deployment, container = self.chat(name)
            spec = deployment["spec"]["template"]["spec"]
            options = self.parse(container, container_env(rendered(name), container))
            pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            needed = pause + options["drain"] + daemon.CLOSE_GRACE
            self.assertGreaterEqual(
                spec["terminationGracePeriodSeconds"],
                needed + GRACE_MARGIN_SECONDS,
                name,
            )
        short = {"chat": {"drainSeconds": 20, "terminationGracePeriodSeconds": 30}}
        with self.assertRaises(helm_python.HelmRenderError):
            render.render(short)

    def test_no_replicas_field(self) -> None:
        """
        The chat Deployment leaves replicas to the scaler or KEDA.
        """
        for name in render.value_sets():
            deployment, _ = self.chat(name)
            self.assertNotIn("replicas", deployment["spec"], name)

    def test_service_node_port(self) -> None:
        """
        The chat Service is NodePort 30080 by default and sends to the
        container's chat port.
        """
        objects = rendered("defaults")
        service = find(objects, "Service", render.RELEASE)
        _, container = self.chat()
        (port,) = service["spec"]["ports"]
        self.assertEqual(
            ("NodePort", 30080), (service["spec"]["type"], port["nodePort"])
        )
        self.assertIn(port["targetPort"], ports_of(container))


class DashboardTests(ParsingTestCase):
    """
    The dashboard Deployment agrees with `twistd chat-dashboard`.
    """

    def test_options_accept_the_container(self) -> None:
        """
        `twistd chat-dashboard` accepts the container, listens on every
        interface of the pod at its http port, and reads the same database
        and Redis as the chat replicas; every variable set is read.
        """
        for name in render.value_sets():
            objects = rendered(name)
            deployment = find(objects, "Deployment", f"{render.RELEASE}-dashboard")
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            env = container_env(objects, container)
            options = self.parse(container, env)
            self.assertEqual(
                (ports_of(container)["http"], ""), listening(options["listen"])
            )
            chat = find(objects, "Deployment", render.RELEASE)
            chat_env = container_env(
                objects, chat["spec"]["template"]["spec"]["containers"][0]
            )
            self.assertEqual(
                (chat_env["CHAT_DATABASE"], chat_env["CHAT_REDIS"]),
                (options["database"], options["redis"]),
            )
            full = dict(options)
            for variable in env:
                if variable not in LIBPQ_VARIABLES:
                    self.assertRead(container, env, full, variable)

    def test_probes_are_routes(self) -> None:
        """
        The dashboard's probes ask a route that its web app serves.
        """
        from chat.web import Dashboard

        deployment = find(
            rendered("defaults"), "Deployment", f"{render.RELEASE}-dashboard"
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        routes = Dashboard.app.url_map.bind("localhost")
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            self.assertIn(get["port"], ports_of(container))
            routes.match(get["path"], method="GET")


class ScrapeTests(SynchronousTestCase):
    """
    Prometheus finds every admin port.
    """

    def test_annotations_on_every_admin_port(self) -> None:
        """
        Each pod with an admin port carries the prometheus.io annotations
        naming that port and the metrics path.
        """
        path = render.load_values(render.CHART / "values.yaml")["metrics"]["path"]
        for name in render.value_sets():
            for template, container in our_containers(rendered(name)):
                admin = ports_of(container).get("admin")
                if admin is None:
                    continue
                annotations = template["metadata"].get("annotations", {})
                self.assertEqual(
                    {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(admin),
                        "prometheus.io/path": path,
                    },
                    {
                        k: v
                        for k, v in annotations.items()
                        if k.startswith("prometheus")
                    },
                )


class SecurityTests(SynchronousTestCase):
    """
    Containers run unprivileged, on read-only root filesystems.
    """

    def test_non_root_read_only(self) -> None:
        """
        Every pod runs as a non-root user with the runtime's seccomp
        profile; every container drops all capabilities, cannot escalate
        and has a read-only root filesystem.
        """
        for name in render.value_sets():
            for template in pod_specs(rendered(name)):
                spec = template["spec"]
                context = spec["securityContext"]
                self.assertTrue(context["runAsNonRoot"])
                self.assertGreater(context["runAsUser"], 0)
                self.assertEqual("RuntimeDefault", context["seccompProfile"]["type"])
                for container in spec["containers"]:
                    own = container["securityContext"]
                    self.assertFalse(own["allowPrivilegeEscalation"])
                    self.assertTrue(own["readOnlyRootFilesystem"])
                    self.assertEqual(["ALL"], own["capabilities"]["drop"])

    def test_image_user_and_plugins(self) -> None:
        """
        Pods of the chat image run as the Dockerfile's user, and each picks
        one of the image's twistd plugins.
        """
        dockerfile = (CHECKOUT / "Dockerfile").read_text(encoding="utf-8")
        users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, re.MULTILINE)
        (uid, gid) = users[-1]
        for name in render.value_sets():
            for template, container in our_containers(rendered(name)):
                context = template["spec"]["securityContext"]
                self.assertEqual(
                    (int(uid), int(gid)), (context["runAsUser"], context["runAsGroup"])
                )
                self.assertIn(container["args"][0], plugins())

    def test_only_the_scaler_gets_a_token(self) -> None:
        """
        Only the scaler's pods mount a service account token.
        """
        for name in render.value_sets():
            for template in pod_specs(rendered(name)):
                spec = template["spec"]
                mounts = spec.get("automountServiceAccountToken")
                component = template["metadata"]["labels"][
                    "app.kubernetes.io/component"
                ]
                self.assertEqual(component == "scaler", mounts, component)
                self.assertEqual(mounts, "serviceAccountName" in spec, component)


class SecretTests(SynchronousTestCase):
    """
    No password is written into the chart, its values or chat.yaml.
    """

    def test_generated_password_is_random(self) -> None:
        """
        The chart's PostgreSQL Secret holds a password generated at render
        time (two renders differ), which appears in no file of the chart.
        """
        first, second = (
            find(
                tuple(render.objects(render.render())),
                "Secret",
                f"{render.RELEASE}-postgresql",
            )
            for _ in range(2)
        )
        self.assertNotEqual(first["data"], second["data"])
        self.assertEqual(
            "keep", first["metadata"]["annotations"]["helm.sh/resource-policy"]
        )
        password = base64.b64decode(first["data"]["password"]).decode()
        self.assertGreaterEqual(len(password), 24)
        for path in render.HERE.rglob("*"):
            if path.is_file():
                self.assertNotIn(password.encode(), path.read_bytes(), path)

    def test_no_literal_secret(self) -> None:
        """
        The only Secret any value set renders is the generated one, and no
        container gets a password, token or key as a literal value.
        """
        template = render.CHART / "templates" / "postgresql-secret.yaml"
        self.assertIn("randAlphaNum", template.read_text(encoding="utf-8"))
        secret_like = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
        for name in render.value_sets():
            objects = rendered(name)
            self.assertLessEqual(
                {s["metadata"]["name"] for s in kinds(objects, "Secret")},
                {f"{render.RELEASE}-postgresql"},
                name,
            )
            for template_spec in pod_specs(objects):
                for container in template_spec["spec"]["containers"]:
                    for entry in container.get("env", []):
                        if secret_like.search(entry["name"]):
                            self.assertIn("secretKeyRef", entry.get("valueFrom", {}))

    def test_static_manifest_has_no_secret(self) -> None:
        """
        chat.yaml holds no Secret: its password Secret is the user's.
        """
        static = list(yaml.safe_load_all(render.STATIC.read_text(encoding="utf-8")))
        self.assertEqual([], [o for o in static if o and o["kind"] == "Secret"])


class KedaTests(SynchronousTestCase):
    """
    The KEDA switch replaces the custom scaler with the same rule.
    """

    def test_scaled_object_replaces_the_scaler(self) -> None:
        """
        With keda.enabled the scaler and its RBAC are gone, and a
        ScaledObject scales the chat Deployment within the scaler's bounds,
        at usersPerPod people per pod, after the same scale-down delay.
        """
        values = render.value_sets()["keda"]
        scaler = render.load_values(render.CHART / "values.yaml")["scaler"]
        objects = rendered("keda")
        components = {
            o["metadata"]["labels"].get("app.kubernetes.io/component") for o in objects
        }
        self.assertNotIn("scaler", components)
        self.assertEqual([], kinds(objects, "Role"))
        scaled = find(objects, "ScaledObject", render.RELEASE)
        spec = scaled["spec"]
        self.assertEqual(
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": render.RELEASE},
            spec["scaleTargetRef"],
        )
        (trigger,) = spec["triggers"]
        self.assertEqual(
            (
                scaler["minReplicas"],
                scaler["maxReplicas"],
                scaler["intervalSeconds"],
                scaler["scaleDownDelaySeconds"],
                str(scaler["usersPerPod"]),
                "AverageValue",
                values["keda"]["prometheus"]["serverAddress"],
            ),
            (
                spec["minReplicaCount"],
                spec["maxReplicaCount"],
                spec["pollingInterval"],
                spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
                    "scaleDown"
                ]["stabilizationWindowSeconds"],
                trigger["metadata"]["threshold"],
                trigger["metricType"],
                trigger["metadata"]["serverAddress"],
            ),
        )

    def test_query_reads_a_gauge_of_the_replicas(self) -> None:
        """
        The default query sums a gauge that the chat replicas export: the
        people logged in on each.
        """
        (trigger,) = find(rendered("keda"), "ScaledObject", render.RELEASE)["spec"][
            "triggers"
        ]
        (metric,) = re.findall(r"([a-z_]+)\{", trigger["metadata"]["query"])
        families = {f.name: f for f in metrics.ChatMetrics().registry.collect()}
        self.assertIn(metric, families)
        self.assertEqual("gauge", families[metric].type)
        self.assertIn("logged in", families[metric].documentation)

    def test_scaled_object_fields(self) -> None:
        """
        The ScaledObject uses only fields of KEDA's v1alpha1 API, and the
        parts it shares with a HorizontalPodAutoscaler validate as one.
        """
        scaled = find(rendered("keda"), "ScaledObject", render.RELEASE)
        self.assertEqual("keda.sh/v1alpha1", scaled["apiVersion"])
        spec = scaled["spec"]
        self.assertLessEqual(
            set(spec),
            {
                "scaleTargetRef",
                "minReplicaCount",
                "maxReplicaCount",
                "pollingInterval",
                "cooldownPeriod",
                "idleReplicaCount",
                "advanced",
                "triggers",
                "fallback",
            },
        )
        self.assertLessEqual(
            set(spec["advanced"]),
            {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount"},
        )
        for trigger in spec["triggers"]:
            self.assertLessEqual(
                set(trigger), {"type", "metadata", "metricType", "name"}
            )
            self.assertTrue(
                all(isinstance(v, str) for v in trigger["metadata"].values())
            )
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": scaled["metadata"],
            "spec": {
                "scaleTargetRef": spec["scaleTargetRef"],
                "minReplicas": spec["minReplicaCount"],
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"][
                    "behavior"
                ],
            },
        }
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(hpa, version, strict=True)


class ScalerTests(ParsingTestCase):
    """
    The scaler Deployment agrees with `twistd chat-scaler`.
    """

    def scaler(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        deployment = find(rendered(name), "Deployment", f"{render.RELEASE}-scaler")
        return deployment, deployment["spec"]["template"]["spec"]["containers"][0]

    def test_options_accept_the_container(self) -> None:
        """
        `twistd chat-scaler` accepts the container and reads from it the
        chat Deployment and namespace, the rule's values, the admin port and
        the replicas' Redis; every variable set is read.
        """
        for name, values in render.value_sets().items():
            if values.get("keda", {}).get("enabled"):
                continue
            objects = rendered(name)
            settings = render.load_values(render.CHART / "values.yaml")["scaler"]
            settings.update(values.get("scaler", {}))
            _, container = self.scaler(name)
            env = container_env(objects, container)
            options = self.parse(container, env)
            chat = find(objects, "Deployment", render.RELEASE)
            chat_env = container_env(
                objects, chat["spec"]["template"]["spec"]["containers"][0]
            )
            policy = options["policy"]
            self.assertEqual(
                (
                    "chat-app",
                    chat["metadata"]["name"],
                    settings["usersPerPod"],
                    settings["minReplicas"],
                    settings["maxReplicas"],
                    settings["scaleDownDelaySeconds"],
                    settings["intervalSeconds"],
                    settings["dryRun"],
                    (ports_of(container)["admin"], ""),
                    chat_env["CHAT_REDIS"],
                ),
                (
                    options["namespace"],
                    options["deployment"],
                    policy.users_per_pod,
                    policy.min_replicas,
                    policy.max_replicas,
                    policy.scale_down_delay,
                    options["interval"],
                    bool(options["dry-run"]),
                    listening(options["admin"]),
                    options["redis"],
                ),
            )
            full = dict(options)
            for variable in env:
                self.assertRead(container, env, full, variable)

    def test_probes_are_served_by_the_admin_endpoint(self) -> None:
        """
        The scaler's probes ask /healthz and /readyz of its admin port.
        """
        _, container = self.scaler("defaults")
        self.assertEqual(
            (
                {"path": "/healthz", "port": "admin"},
                {"path": "/readyz", "port": "admin"},
            ),
            (
                container["livenessProbe"]["httpGet"],
                container["readinessProbe"]["httpGet"],
            ),
        )


class RoleTests(TestCase):
    """
    The scaler's Role allows exactly the calls its Kubernetes client makes.
    """

    async def test_role_matches_the_client(self) -> None:
        """
        Against a stand-in API server that allows only what the rendered Role
        grants, every call of the scaler's client succeeds, and every grant
        (verb, group, resource, name) is used by one of them.
        """
        from twisted.internet import reactor

        objects = rendered("defaults")
        name = f"{render.RELEASE}-scaler"
        role = find(objects, "Role", name)
        binding = find(objects, "RoleBinding", name)
        deployment = find(objects, "Deployment", name)
        self.assertEqual(
            (
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                [{"kind": "ServiceAccount", "name": name}],
                name,
            ),
            (
                binding["roleRef"],
                binding["subjects"],
                deployment["spec"]["template"]["spec"]["serviceAccountName"],
            ),
        )
        find(objects, "ServiceAccount", name)
        granted = {
            (verb, group, resource, tuple(rule.get("resourceNames", ())))
            for rule in role["rules"]
            for verb in rule["verbs"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }
        self.assertEqual(
            {"read_scale", "patch_scale", "list_pods", "annotate_pod"},
            set(IKube.names()) - {"namespace"},
            "the scaler's client changed: teach this test its new calls",
        )

        chat = find(objects, "Deployment", render.RELEASE)
        labels = chat["spec"]["selector"]["matchLabels"]
        api = FakeKubernetes(
            reactor,
            namespace="chat-app",
            allowed=frozenset((verb, resource) for verb, _, resource, _ in granted),
        )
        api.add_deployment(render.RELEASE, 1, labels)
        api.add_pod(f"{render.RELEASE}-1", labels)
        await api.start()
        self.addCleanup(api.stop)
        access = ApiAccess(api.url, lambda: f"Bearer {TOKEN}", None, "a test")
        client = KubeClient(reactor, access, "chat-app")
        self.addCleanup(client.close)

        scale = await client.read_scale(render.RELEASE)
        await client.patch_scale(
            render.RELEASE, 2, resource_version=scale.resource_version
        )
        (pod, *_) = await client.list_pods(scale.selector)
        await client.annotate_pod(pod.name, {DELETION_COST: "1"})

        used = {rbac_call(call.path, call.method) for call in api.calls}
        for verb, group, resource, names in granted:
            matching = [
                called
                for (v, g, r, called) in used
                if (v, g, r) == (verb, group, resource)
            ]
            self.assertTrue(matching, f"{verb} {resource} is granted but not used")
            if names:
                self.assertLessEqual(set(matching), set(names))
        for verb, group, resource, called in used:
            self.assertTrue(
                any(
                    (v, g, r) == (verb, group, resource) and (not n or called in n)
                    for v, g, r, n in granted
                ),
                f"{verb} {resource} {called} is used but not granted",
            )
