"""
The few Kubernetes API calls that the autoscaler makes, over treq.

A Deployment's size is read and written through its C{scale} subresource; the
chat pods are listed by the Deployment's label selector and annotated with a
merge patch.  Answers that may pass (429, 5xx, time-outs, lost connections)
are tried again a few times with a growing wait, honouring C{Retry-After};
the others are raised at once as L{KubeError}, with the API server's own
message.  A write that carries a C{resourceVersion} fails with L{Conflict}
when the object changed meanwhile: the caller reads again and decides again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from zope.interface import Attribute, Interface, implementer

from chat import logs
from chat.kube_access import ApiAccess
from chat.scaling import Backoff

REQUEST_TIMEOUT_SECONDS = 10.0
ATTEMPTS = 3
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
# A longer Retry-After than this is cut short: the next poll comes anyway.
RETRY_AFTER_MAX_SECONDS = 30.0
# How much of a body that is not JSON goes into an error message.
BODY_EXCERPT_CHARS = 200

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
USER_AGENT = "chat-scaler"

# The kind of each error, by HTTP status, for logs and metrics.
_KINDS = {
    400: "rejected",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    415: "rejected",
    422: "rejected",
    429: "throttled",
}
_TRANSIENT = {"throttled", "server", "timeout", "connection"}


class KubeError(Exception):
    """
    A call to the API server failed.

    @ivar kind: C{unauthorized}, C{forbidden}, C{not_found}, C{conflict},
        C{throttled}, C{server}, C{timeout}, C{connection}, C{rejected} or
        C{bad_response}.
    @ivar status: the HTTP status, when there was an answer.
    @ivar reason: the C{reason} of the Status object, when there was one.
    @ivar retry_after: seconds the server asked to wait, if it did.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.kind in _TRANSIENT

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status} {self.reason or self.kind}: {self.message}"


class Conflict(KubeError):
    """
    The object changed since it was read (HTTP 409).
    """


@dataclass(frozen=True)
class Scale:
    """
    A Deployment's C{autoscaling/v1} Scale.

    @ivar replicas: the size asked for (C{spec.replicas}).
    @ivar running: the pods that exist now (C{status.replicas}).
    @ivar selector: the label selector of its pods, as a query string.
    @ivar body: the object as read, to be written back.
    """

    name: str
    replicas: int
    running: int
    selector: str
    resource_version: str
    body: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Scale:
        try:
            metadata = body["metadata"]
            status = body.get("status") or {}
            return cls(
                name=str(metadata["name"]),
                # Both are left out of the JSON when they are zero.
                replicas=int((body.get("spec") or {}).get("replicas", 0)),
                running=int(status.get("replicas", 0)),
                selector=str(status.get("selector", "")),
                resource_version=str(metadata.get("resourceVersion", "")),
                body=body,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise KubeError("bad_response", f"not a Scale object: {e!r}") from None


@dataclass(frozen=True)
class Pod:
    name: str
    annotations: dict[str, str]
    phase: str
    deleting: bool

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Pod:
        try:
            metadata = body["metadata"]
            return cls(
                name=str(metadata["name"]),
                annotations=dict(metadata.get("annotations") or {}),
                phase=str((body.get("status") or {}).get("phase", "")),
                deleting=bool(metadata.get("deletionTimestamp")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise KubeError("bad_response", f"not a Pod object: {e!r}") from None


class IKube(Interface):
    """
    What the autoscaler asks of Kubernetes.
    """

    namespace = Attribute("the namespace every call is made in")

    def read_scale(name: str) -> Any:
        """
        Coroutine: the Scale of Deployment C{name}.
        """

    def patch_scale(
        name: str,
        replicas: int,
        patch_type: str = MERGE_PATCH,
        resource_version: str | None = None,
    ) -> Any:
        """
        Coroutine: set the size of Deployment C{name}; with
        C{resource_version}, L{Conflict} if its Scale changed since then.
        """

    def list_pods(selector: str) -> Any:
        """
        Coroutine: the pods that match a label selector.
        """

    def annotate_pod(name: str, annotations: dict[str, str]) -> Any:
        """
        Coroutine: set annotations on one pod, leaving the others.
        """


@implementer(IKube)
class KubeClient:
    """
    L{IKube} over HTTP, with the access that L{chat.kube_access} found.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        reactor: Any,
        access: ApiAccess,
        namespace: str,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        attempts: int = ATTEMPTS,
        retry_first: float = RETRY_FIRST_SECONDS,
        retry_max: float = RETRY_MAX_SECONDS,
    ) -> None:
        self.namespace = namespace
        self._reactor = reactor
        self._access = access
        self._timeout = timeout
        self._attempts = attempts
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False
        agent = (
            Agent(reactor, contextFactory=access.tls, pool=self._pool)
            if access.tls is not None
            else Agent(reactor, pool=self._pool)
        )
        self._http = HTTPClient(agent)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    # The calls

    def _scale_path(self, name: str) -> str:
        return (
            f"/apis/apps/v1/namespaces/{quote(self.namespace, safe='')}"
            f"/deployments/{quote(name, safe='')}/scale"
        )

    def _pods_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods"

    async def read_scale(self, name: str) -> Scale:
        return Scale.from_json(await self.call("GET", self._scale_path(name)))

    async def replace_scale(self, scale: Scale, replicas: int) -> Scale:
        body = json.loads(json.dumps(scale.body))
        body.setdefault("spec", {})["replicas"] = replicas
        answer = await self.call("PUT", self._scale_path(scale.name), body=body)
        return Scale.from_json(answer)

    async def patch_scale(
        self,
        name: str,
        replicas: int,
        patch_type: str = MERGE_PATCH,
        resource_version: str | None = None,
    ) -> Scale:
        """
        Set the size with a patch; with C{resource_version}, only if the
        Scale has not changed since that version.
        """
        patch: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        answer = await self.call(
            "PATCH", self._scale_path(name), body=patch, content_type=patch_type
        )
        return Scale.from_json(answer)

    async def list_pods(self, selector: str) -> list[Pod]:
        answer = await self.call(
            "GET", self._pods_path(), params={"labelSelector": selector}
        )
        items = answer.get("items")
        if not isinstance(items, list):
            raise KubeError("bad_response", "a pod list without items")
        return [Pod.from_json(item) for item in items]

    async def annotate_pod(self, name: str, annotations: dict[str, str]) -> Pod:
        answer = await self.call(
            "PATCH",
            f"{self._pods_path()}/{quote(name, safe='')}",
            body={"metadata": {"annotations": annotations}},
            content_type=MERGE_PATCH,
        )
        return Pod.from_json(answer)

    # HTTP

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """
        One API call, tried again while its failure may pass.

        @raise KubeError: when it fails for good.
        """
        backoff = Backoff(self._retry_first, self._retry_max)
        attempt = 1
        while True:
            try:
                return await self._bounded(method, path, body, content_type, params)
            except KubeError as e:
                if not e.transient or attempt >= self._attempts:
                    raise
                delay = backoff.failed()
                if e.retry_after is not None:
                    delay = min(e.retry_after, RETRY_AFTER_MAX_SECONDS)
                self.log.warn(
                    "Kubernetes API {method} {path}: {error}; trying again in"
                    " {delay}s (attempt {attempt} of {attempts})",
                    method=method,
                    path=path,
                    error=str(e),
                    kind=e.kind,
                    delay=delay,
                    attempt=attempt,
                    attempts=self._attempts,
                )
                await deferLater(self._reactor, delay, lambda: None)
                attempt += 1

    async def _bounded(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str,
        params: dict[str, str] | None,
    ) -> dict[str, Any]:
        def timed_out(result: object, timeout: float) -> NoReturn:
            # Whatever the cancelled request failed with, the cause is this.
            raise KubeError(
                "timeout", f"{method} {path}: no answer within {timeout:g}s"
            )

        exchange = Deferred.fromCoroutine(
            self._exchange(method, path, body, content_type, params)
        )
        exchange.addTimeout(self._timeout, self._reactor, onTimeoutCancel=timed_out)
        try:
            return await exchange
        except (
            ConnectError,
            ConnectionLost,
            ResponseFailed,
            RequestTransmissionFailed,
            SchemeNotSupported,
        ) as e:
            raise KubeError("connection", f"{method} {path}: {_describe(e)}") from None

    async def _exchange(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str,
        params: dict[str, str] | None,
    ) -> dict[str, Any]:
        headers: dict[str | bytes, list[str | bytes]] = {
            "Accept": [JSON],
            "User-Agent": [USER_AGENT],
        }
        authorization = await deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._access.authorization
        )
        if authorization:
            headers["Authorization"] = [authorization]
        data = None
        if body is not None:
            headers["Content-Type"] = [content_type]
            data = json.dumps(body).encode("utf-8")
        response = await self._http.request(
            method,
            self._access.server + path,
            params=params,
            headers=headers,
            data=data,
            allow_redirects=False,
            reactor=self._reactor,
        )
        text = await response.content()
        return _answer(method, path, response.code, response.headers, text)


def _answer(
    method: str, path: str, code: int, headers: Any, text: bytes
) -> dict[str, Any]:
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if 200 <= code < 300:
        if not isinstance(decoded, dict):
            raise KubeError(
                "bad_response", f"{method} {path}: {code} with a body that is not JSON"
            )
        return decoded
    status = decoded if isinstance(decoded, dict) else {}
    message = status.get("message") or _excerpt(text) or "(no message)"
    kind = _KINDS.get(code, "server" if code >= 500 else "rejected")
    error_class = Conflict if code == 409 else KubeError
    raise error_class(
        kind,
        f"{method} {path}: {message}",
        status=code,
        reason=status.get("reason") or None,
        retry_after=_retry_after(headers, status),
    )


def _retry_after(headers: Any, status: dict[str, Any]) -> float | None:
    values = headers.getRawHeaders(b"retry-after") or []
    details = status.get("details")
    if not values and isinstance(details, dict):
        values = [str(details.get("retryAfterSeconds", ""))]
    for value in values:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if text.strip().isdigit():
            return float(text.strip())
    return None


def _excerpt(text: bytes) -> str:
    return text[:BODY_EXCERPT_CHARS].decode("utf-8", "replace").strip()


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(reason.value) for reason in reasons)
    return str(error) or type(error).__name__
