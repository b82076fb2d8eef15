"""
A stand-in for the Kubernetes API server, for what the autoscaler uses.

It serves, on 127.0.0.1 over plain HTTP, with a bearer token:

    - C{GET}, C{PUT} and C{PATCH} (merge and strategic merge) of
      C{/apis/apps/v1/namespaces/NS/deployments/NAME/scale};
    - C{GET} of C{/api/v1/namespaces/NS/pods} with a C{labelSelector} of
      C{key=value} terms, and C{GET} and C{PATCH} of one pod.

It answers as the real server does: C{autoscaling/v1} Scale objects,
C{PodList}s whose items carry no C{kind}, C{Status} objects for errors with
their C{reason} and C{code}, a 401 without the right token, a 403 for what
the role does not allow, 404 for what does not exist, 409 for a write whose
C{resourceVersion} is stale, 415 for a patch type it does not take, 400 for
an annotation that is not a string.  Every write moves one cluster-wide
C{resourceVersion} counter on.

Tests can make the next requests fail (any status, with C{Retry-After}) or
hang, look at every request made, and let a small controller act as a
ReplicaSet would: add pods on a scale-up, and on a scale-down remove those
with the lowest C{controller.kubernetes.io/pod-deletion-cost} first.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.servers import LOCALHOST

TOKEN = "fake-service-account-token"
USER = "system:serviceaccount:chat-app:chat-scaler"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
# What the chart's Role for the autoscaler allows, as (verb, resource) pairs.
SCALER_ROLE = frozenset(
    {
        ("get", "deployments/scale"),
        ("patch", "deployments/scale"),
        ("list", "pods"),
        ("patch", "pods"),
    }
)
# Everything this stand-in serves.
EVERYTHING = SCALER_ROLE | {("update", "deployments/scale"), ("get", "pods")}
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """
    An answer with a Status object.
    """

    def __init__(
        self,
        code: int,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": _REASONS.get(self.code, "Unknown"),
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


@dataclass
class Fault:
    """
    The next C{times} requests whose method is C{method} and whose path
    contains C{path} fail with C{code}, or hang when C{code} is None.
    """

    method: str
    path: str
    code: int | None
    times: int = 1
    retry_after: int | None = None
    message: str = "the fake API server was told to fail"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    body: Any


@dataclass
class FakeDeployment:
    name: str
    labels: dict[str, str]
    replicas: int
    uid: str
    created: str
    resource_version: int = 1

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


@dataclass
class FakePod:
    name: str
    labels: dict[str, str]
    uid: str
    created: str
    order: int
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: int = 1
    phase: str = "Running"

    @property
    def deletion_cost(self) -> int:
        try:
            return int(self.annotations.get(DELETION_COST, "0"))
        except ValueError:
            return 0


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """
    RFC 7386: objects merge key by key, null removes, anything else replaces.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKubernetes(Resource):
    """
    The API server's state and its HTTP face, in one namespace.

    @ivar calls: every request, in order.
    @ivar scale_changes: C{(time, replicas)} each time a Deployment's size
        changed.
    @ivar removed: the pods the controller removed, in order.
    @ivar on_pods_removed: called with the names of the pods removed by one
        scale-down.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        namespace: str = "chat-app",
        token: str = TOKEN,
        allowed: frozenset[tuple[str, str]] = SCALER_ROLE,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.namespace = namespace
        self.token = token
        self.allowed = allowed
        self.deployments: dict[str, FakeDeployment] = {}
        self.pods: dict[str, FakePod] = {}
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.scale_changes: list[tuple[float, int]] = []
        self.removed: list[str] = []
        self.controller = False
        self.pod_names: Callable[[FakeDeployment], str] = self._next_pod_name
        self.on_pods_removed: list[Callable[[list[str]], None]] = []
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)
        self._pod_order = itertools.count(1)
        self._hanging: list[Request] = []
        self._port: IListeningPort | None = None
        self._scheme = "http"

    # Setting up

    def add_deployment(
        self, name: str, replicas: int, labels: dict[str, str] | None = None
    ) -> FakeDeployment:
        deployment = FakeDeployment(
            name=name,
            labels=labels or {"app": name},
            replicas=replicas,
            uid=self._uid(),
            created=_timestamp(self.reactor.seconds()),
            resource_version=next(self._versions),
        )
        self.deployments[name] = deployment
        return deployment

    def add_pod(
        self,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> FakePod:
        pod = FakePod(
            name=name,
            labels=dict(labels),
            uid=self._uid(),
            created=_timestamp(self.reactor.seconds()),
            order=next(self._pod_order),
            annotations=dict(annotations or {}),
            resource_version=next(self._versions),
        )
        self.pods[name] = pod
        return pod

    def fail(
        self,
        method: str,
        path: str,
        code: int | None,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """
        Make the next matching requests fail with C{code}, or hang for None.
        """
        self.faults.append(Fault(method, path, code, times, retry_after))

    def _uid(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._uids):012d}"

    def _next_pod_name(self, deployment: FakeDeployment) -> str:
        return f"{deployment.name}-{next(self._pod_order):05d}"

    # Running

    async def start(self, tls: Any = None) -> str:
        """
        Listen on a free port of 127.0.0.1, over TLS with C{tls} (server
        context options); return the server's URL.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

        endpoint: Any
        if tls is None:
            endpoint = TCP4ServerEndpoint(self.reactor, 0, interface=LOCALHOST)
        else:
            endpoint = SSL4ServerEndpoint(self.reactor, 0, tls, interface=LOCALHOST)
        self._scheme = "http" if tls is None else "https"
        site = Site(self)
        site.log = lambda request: None  # type: ignore[method-assign]
        self._port = await endpoint.listen(site)
        return self.url

    @property
    def url(self) -> str:
        assert self._port is not None
        return f"{self._scheme}://{LOCALHOST}:{self._port.getHost().port}"

    def _hang(self, request: Request) -> None:
        self._hanging.append(request)

        def gone(reason: object) -> None:
            if request in self._hanging:
                self._hanging.remove(request)

        request.notifyFinish().addBoth(gone)

    async def stop(self) -> None:
        for request in list(self._hanging):
            request.setResponseCode(503)
            request.finish()
        self._hanging = []
        if self._port is not None:
            await self._port.stopListening()
            self._port = None

    def write_kubeconfig(
        self, path: Path, token: str | None = None, ca_pem: bytes | None = None
    ) -> Path:
        """
        A kubeconfig file for this server, with C{token} (the right one by
        default) and the CA that signed its certificate, if it has one.
        """
        cluster: dict[str, str] = {"server": self.url}
        if ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "scaler", "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {
                        "cluster": "fake",
                        "user": "scaler",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    # HTTP

    def render(self, request: Request) -> bytes | int:
        call = self._record(request)
        try:
            self._authenticate(call)
            fault = self._fault(call)
            if fault is not None and fault.code is None:
                self._hang(request)
                return NOT_DONE_YET
            if fault is not None:
                raise ApiError(
                    fault.code,
                    fault.message,
                    {"retryAfterSeconds": fault.retry_after}
                    if fault.retry_after
                    else None,
                    fault.retry_after,
                )
            code, body = self._route(call)
        except ApiError as e:
            if e.retry_after is not None:
                request.setHeader(b"retry-after", str(e.retry_after).encode())
            code, body = e.code, e.status()
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode("utf-8")

    def _record(self, request: Request) -> Call:
        raw = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        content_type = request.getHeader(b"content-type")
        authorization = request.getHeader(b"authorization")
        call = Call(
            method=request.method.decode("ascii"),
            path=unquote(request.path.decode("ascii")),
            query={
                k.decode(): [v.decode() for v in vs]
                for k, vs in (request.args or {}).items()
            },
            content_type=content_type.decode() if content_type else None,
            authorization=authorization.decode() if authorization else None,
            body=body,
        )
        self.calls.append(call)
        return call

    def _authenticate(self, call: Call) -> None:
        scheme, _, token = (call.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            raise ApiError(401, "Unauthorized")

    def _fault(self, call: Call) -> Fault | None:
        for fault in self.faults:
            if fault.method == call.method and fault.path in call.path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _route(self, call: Call) -> tuple[int, dict[str, Any]]:
        parts = call.path.strip("/").split("/")
        apps = ["apis", "apps", "v1", "namespaces"]
        core = ["api", "v1", "namespaces"]
        if (
            parts[:4] == apps
            and len(parts) == 8
            and parts[5] == "deployments"
            and parts[7] == "scale"
        ):
            self._in_namespace(parts[4], "deployments", "apps", parts[6])
            return self._scale(call, parts[6])
        if parts[:3] == core and len(parts) in (5, 6) and parts[4] == "pods":
            name = parts[5] if len(parts) == 6 else None
            self._in_namespace(parts[3], "pods", "", name)
            if name is None:
                return self._pod_list(call)
            return self._pod(call, name)
        raise ApiError(404, "the server could not find the requested resource")

    def _in_namespace(
        self, namespace: str, resource: str, group: str, name: str | None
    ) -> None:
        if namespace != self.namespace:
            what = f"{resource}.{group}" if group else resource
            raise ApiError(
                404,
                f'{what} "{name}" not found' if name else "namespace not found",
                {"name": name or "", "group": group, "kind": resource},
            )

    def _authorize(
        self, verb: str, resource: str, group: str, name: str | None
    ) -> None:
        if (verb, resource) in self.allowed:
            return
        kind = resource.split("/")[0]
        what = f"{kind}.{group}" if group else kind
        subject = f'{what} "{name}"' if name else what
        where = f'in API group "{group}" in the namespace "{self.namespace}"'
        raise ApiError(
            403,
            f'{subject} is forbidden: User "{USER}" cannot {verb} resource'
            f' "{resource}" {where}',
            {"name": name or "", "group": group, "kind": kind},
        )

    # Deployments

    def _deployment(self, name: str) -> FakeDeployment:
        deployment = self.deployments.get(name)
        if deployment is None:
            raise ApiError(
                404,
                f'deployments.apps "{name}" not found',
                {"name": name, "group": "apps", "kind": "deployments"},
            )
        return deployment

    def scale_json(self, deployment: FakeDeployment) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if deployment.replicas:
            spec["replicas"] = deployment.replicas
        running = sum(
            1 for pod in self.pods.values() if self._selects(deployment.labels, pod)
        )
        status: dict[str, Any] = {"replicas": running, "selector": deployment.selector}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": deployment.name,
                "namespace": self.namespace,
                "uid": deployment.uid,
                "resourceVersion": str(deployment.resource_version),
                "creationTimestamp": deployment.created,
            },
            "spec": spec,
            "status": status,
        }

    def _scale(self, call: Call, name: str) -> tuple[int, dict[str, Any]]:
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(call.method)
        if verb is None:
            raise ApiError(405, f"the server does not allow {call.method} here")
        self._authorize(verb, "deployments/scale", "apps", name)
        deployment = self._deployment(name)
        if verb == "get":
            return 200, self.scale_json(deployment)
        if verb == "update":
            if call.content_type != "application/json":
                raise ApiError(415, f"unsupported media type {call.content_type!r}")
            wanted = call.body
        else:
            if call.content_type not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "the body of the request was in an unknown format - accepted"
                    " media types include: " + ", ".join(PATCH_TYPES),
                )
            if not isinstance(call.body, dict):
                raise ApiError(400, "the patch is not a JSON object")
            wanted = merge_patch(self.scale_json(deployment), call.body)
        self._write_scale(deployment, wanted)
        return 200, self.scale_json(deployment)

    def _write_scale(self, deployment: FakeDeployment, wanted: Any) -> None:
        if not isinstance(wanted, dict) or wanted.get("kind", "Scale") != "Scale":
            raise ApiError(400, "the body is not a Scale object")
        metadata = wanted.get("metadata") or {}
        if metadata.get("name", deployment.name) != deployment.name:
            raise ApiError(
                400,
                "the name of the object does not match the name on the URL",
            )
        version = metadata.get("resourceVersion")
        if version and str(version) != str(deployment.resource_version):
            raise ApiError(
                409,
                "Operation cannot be fulfilled on deployments.apps"
                f' "{deployment.name}": the object has been modified; please'
                " apply your changes to the latest version and try again",
                {"name": deployment.name, "group": "apps", "kind": "deployments"},
            )
        replicas = (wanted.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422,
                f'Scale.autoscaling "{deployment.name}" is invalid: spec.replicas:'
                f" Invalid value: {json.dumps(replicas)}: must be greater than or"
                " equal to 0",
            )
        self.set_replicas(deployment, replicas)

    def set_replicas(self, deployment: FakeDeployment, replicas: int) -> None:
        """
        Change a Deployment's size, as a write through the API would.
        """
        deployment.resource_version = next(self._versions)
        if replicas == deployment.replicas:
            return
        deployment.replicas = replicas
        self.scale_changes.append((self.reactor.seconds(), replicas))
        if self.controller:
            self._reconcile(deployment)

    def _reconcile(self, deployment: FakeDeployment) -> None:
        mine = [p for p in self.pods.values() if self._selects(deployment.labels, p)]
        while len(mine) < deployment.replicas:
            mine.append(self.add_pod(self.pod_names(deployment), deployment.labels))
        # Lowest deletion cost first, then the newest, as a ReplicaSet does.
        ranked = sorted(mine, key=lambda pod: (pod.deletion_cost, -pod.order))
        victims = [pod.name for pod in ranked[: len(mine) - deployment.replicas]]
        for name in victims:
            del self.pods[name]
        if victims:
            self.removed += victims
            for callback in list(self.on_pods_removed):
                callback(victims)

    # Pods

    @staticmethod
    def _selects(labels: dict[str, str], pod: FakePod) -> bool:
        return all(pod.labels.get(k) == v for k, v in labels.items())

    def pod_json(self, pod: FakePod) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": pod.name,
            "namespace": self.namespace,
            "uid": pod.uid,
            "resourceVersion": str(pod.resource_version),
            "creationTimestamp": pod.created,
            "labels": dict(pod.labels),
        }
        if pod.annotations:
            metadata["annotations"] = dict(pod.annotations)
        return {
            "metadata": metadata,
            "spec": {"containers": [{"name": "chat", "image": "chat:latest"}]},
            "status": {"phase": pod.phase},
        }

    def _pod_list(self, call: Call) -> tuple[int, dict[str, Any]]:
        if call.method != "GET":
            raise ApiError(405, f"the server does not allow {call.method} here")
        self._authorize("list", "pods", "", None)
        wanted = self._parse_selector(call.query.get("labelSelector", [""])[-1])
        # Items of a list carry no kind of their own.
        items = [
            self.pod_json(pod)
            for pod in sorted(self.pods.values(), key=lambda pod: pod.name)
            if self._selects(wanted, pod)
        ]
        return 200, {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    @staticmethod
    def _parse_selector(selector: str) -> dict[str, str]:
        wanted: dict[str, str] = {}
        for term in filter(None, selector.split(",")):
            key, equals, value = term.replace("==", "=").partition("=")
            if not equals or not key.strip():
                raise ApiError(
                    400,
                    f"unable to parse requirement: {term!r} (this stand-in only"
                    " takes key=value terms)",
                )
            wanted[key.strip()] = value.strip()
        return wanted

    def _pod(self, call: Call, name: str) -> tuple[int, dict[str, Any]]:
        verb = {"GET": "get", "PATCH": "patch"}.get(call.method)
        if verb is None:
            raise ApiError(405, f"the server does not allow {call.method} here")
        self._authorize(verb, "pods", "", name)
        pod = self.pods.get(name)
        if pod is None:
            raise ApiError(
                404, f'pods "{name}" not found', {"name": name, "kind": "pods"}
            )
        if verb == "patch":
            if call.content_type not in PATCH_TYPES:
                raise ApiError(415, f"unsupported media type {call.content_type!r}")
            self._patch_pod(pod, call.body)
        return 200, {"kind": "Pod", "apiVersion": "v1", **self.pod_json(pod)}

    def _patch_pod(self, pod: FakePod, patch: Any) -> None:
        if not isinstance(patch, dict):
            raise ApiError(400, "the patch is not a JSON object")
        annotations = (patch.get("metadata") or {}).get("annotations")
        if annotations is None:
            return
        for key, value in annotations.items():
            if value is not None and not isinstance(value, str):
                raise ApiError(
                    400,
                    "json: cannot unmarshal number into Go struct field"
                    " ObjectMeta.metadata.annotations of type string"
                    f" (annotation {key!r})",
                )
        pod.annotations = merge_patch(pod.annotations, annotations)
        pod.resource_version = next(self._versions)


def wait_for(
    reactor: Any, check: Callable[[], bool], timeout: float, step: float = 0.05
) -> Deferred[float]:
    """
    Fire with the seconds waited once C{check} holds; fail after C{timeout}.
    """
    from twisted.internet.task import LoopingCall

    started = reactor.seconds()
    done: Deferred[float] = Deferred()

    def poll() -> None:
        if check():
            loop.stop()
            done.callback(reactor.seconds() - started)
        elif reactor.seconds() - started > timeout:
            loop.stop()
            done.errback(AssertionError(f"not within {timeout}s"))

    loop = LoopingCall(poll)
    loop.clock = reactor
    loop.start(step, now=True)
    return done
