"""
The chat chart rendered for the tests, and what they read from its objects:
the environment Kubernetes would give a container, the twistd plugin that
parses its command line, the ports an endpoint string listens on, and what
RBAC sees in a request to the API server.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
from chat import logs

CHECKOUT = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# What the chat pod's grace period must leave beyond the preStop pause, the
# drain and the daemon's close grace.
GRACE_MARGIN_SECONDS = 5.0
# Variables that libpq reads by itself, beside a URL that has no password.
LIBPQ_VARIABLES = frozenset({"PGPASSWORD"})
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "manifests_render", CHECKOUT / "manifests" / "render.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """
    The objects of one documented value set, rendered once per test run.
    """
    return tuple(render.objects(render.render(render.value_sets()[name])))


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in the rendered chart")


def kinds(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_specs(objects: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj["spec"]["template"]


def our_containers(
    objects: tuple[dict[str, Any], ...],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """
    Each container that runs the chat image, with its pod template.
    """
    image = render.load_values(render.CHART / "values.yaml")["image"]["repository"]
    for template in pod_specs(objects):
        for container in template["spec"]["containers"]:
            if container["image"].split(":")[0] == image:
                yield template, container


def container_env(
    objects: tuple[dict[str, Any], ...], container: Mapping[str, Any]
) -> dict[str, str]:
    """
    The environment Kubernetes would give a container, with stand-ins for
    the values of Secrets that the user creates and for the pod's fields.
    """
    env: dict[str, str] = {}
    fields = {"metadata.name": "chat-6c9f7d-x2x4q", "metadata.namespace": "chat-app"}
    for entry in container.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            value = expand(entry.get("value", ""), env)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = find(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in source:
            value = _secret_value(objects, source["secretKeyRef"])
        else:
            value = fields[source["fieldRef"]["fieldPath"]]
        env[entry["name"]] = value
    return env


def _secret_value(objects: tuple[dict[str, Any], ...], ref: Mapping[str, str]) -> str:
    for secret in kinds(objects, "Secret"):
        if secret["metadata"]["name"] == ref["name"]:
            return base64.b64decode(secret["data"][ref["key"]]).decode("utf-8")
    # A Secret that the person installing creates; its value is theirs.
    if ref["key"] == "url" and "redis" in ref["name"]:
        return "redis://:their-password@redis.example.internal:6379/0"
    if ref["key"] == "url":
        return "postgresql://chat:their-password@db.example.internal:5432/chat"
    return "their-password"


def expand(text: str, env: Mapping[str, str]) -> str:
    """
    Replace $(NAME) references as Kubernetes does; unknown ones stay.
    """
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@cache
def plugins() -> dict[str, IServiceMaker]:
    return {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}


def listening(description: str) -> tuple[int, str]:
    """
    The TCP port and interface that a Twisted endpoint string listens on.
    """
    reactor = MemoryReactor()
    serverFromString(reactor, description).listen(Factory())
    port, _, _, interface = reactor.tcpServers[-1]
    return port, interface


def ports_of(container: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


class ParsingTestCase(SynchronousTestCase):
    """
    Parses a container's command line with its plugin's Options, in the
    container's environment only.
    """

    def parse(
        self, container: Mapping[str, Any], env: Mapping[str, str]
    ) -> usage.Options:
        args = [expand(a, env) for a in container.get("args", [])]
        maker = plugins().get(args[0])
        self.assertIsNotNone(maker, f"{args[0]!r} is not a twistd plugin")
        kept = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CHAT_", "PG")) and k != "KUBECONFIG"
        }
        self.patch(os, "environ", {**kept, **env})
        self.addCleanup(logs.set_level, "info")
        assert maker is not None
        options: usage.Options = maker.options()
        options.parseOptions(args[1:])
        return options

    def assertRead(
        self,
        container: Mapping[str, Any],
        env: Mapping[str, str],
        full: Mapping[str, Any],
        variable: str,
    ) -> None:
        """
        Changing C{variable} to nonsense changes what the plugin parses, or
        makes it refuse: the plugin reads it.
        """
        changed = {**env, variable: "not-what-anyone-expects"}
        try:
            parsed = dict(self.parse(container, changed))
        except usage.UsageError:
            return
        self.assertNotEqual(dict(full), parsed, f"{variable} is not read")


def rbac_call(path: str, method: str) -> tuple[str, str, str, str | None]:
    """
    The verb, API group, resource (with subresource) and object name that
    RBAC sees in one request to the API server.
    """
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[4:]
    else:
        group, rest = parts[1], parts[5:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verbs = {"PUT": "update", "PATCH": "patch", "POST": "create", "DELETE": "delete"}
    verb = verbs.get(method) or ("get" if name else "list")
    return verb, group, resource, name
