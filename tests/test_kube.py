"""
Tests for the Kubernetes client (L{chat.kube}) and how it finds its access
(L{chat.kube_access}), against the stand-in API server of L{tests.fakekube}
on 127.0.0.1, over real HTTP and HTTPS.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import PrivateCertificate
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chat.kube import (
    DELETION_COST,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    Conflict,
    KubeClient,
    KubeError,
)
from chat.kube_access import AccessError, ApiAccess, load_access
from tests.fakekube import EVERYTHING, TOKEN, FakeKubernetes
from tests.servers import free_port

NAMESPACE = "chat-app"
DEPLOYMENT = "chat-server"
LABELS = {"app": "chat-server"}
# Short enough for tests; the defaults are for a real cluster.
TIMEOUT_SECONDS = 0.3
RETRY_FIRST_SECONDS = 0.05


class ApiTestCase(TestCase):
    """
    A fresh stand-in API server with one Deployment of two pods, and a
    client that found its access through a kubeconfig file.
    """

    timeout = 30

    def setUp(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._set_up())

    async def _set_up(self) -> None:
        self.api = FakeKubernetes(reactor, NAMESPACE, allowed=EVERYTHING)
        self.api.add_deployment(DEPLOYMENT, 2, LABELS)
        self.api.add_pod("chat-server-a", LABELS)
        self.api.add_pod("chat-server-b", LABELS, {"team": "chat"})
        self.api.add_pod("redis-0", {"app": "redis"})
        await self.api.start(self.server_tls())
        self.addCleanup(lambda: Deferred.fromCoroutine(self.api.stop()))
        self.directory = Path(tempfile.mkdtemp(prefix="chat-test-kube-"))
        self.client = self.make_client()

    def server_tls(self) -> Any:
        return None

    def make_client(
        self, token: str | None = None, attempts: int = 3, **kubeconfig: Any
    ) -> KubeClient:
        path = self.directory / f"kubeconfig-{len(self.api.calls)}-{token}"
        self.api.write_kubeconfig(path, token, **kubeconfig)
        client = KubeClient(
            reactor,
            load_access(str(path)),
            NAMESPACE,
            timeout=TIMEOUT_SECONDS,
            attempts=attempts,
            retry_first=RETRY_FIRST_SECONDS,
        )
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    def calls(self, method: str) -> int:
        return sum(1 for call in self.api.calls if call.method == method)


class ScaleTests(ApiTestCase):
    async def test_read(self) -> None:
        """
        Reading the scale gives the size asked for, the pods running, the
        pods' selector and the version, and sends the kubeconfig's token.
        """
        scale = await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(
            (scale.name, scale.replicas, scale.running, scale.selector),
            (DEPLOYMENT, 2, 2, "app=chat-server"),
        )
        self.assertEqual(
            scale.resource_version,
            str(self.api.deployments[DEPLOYMENT].resource_version),
        )
        call = self.api.calls[-1]
        self.assertEqual(call.authorization, f"Bearer {TOKEN}")
        self.assertEqual(
            call.path,
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale",
        )

    async def test_replace(self) -> None:
        """
        Writing the Scale back with another size changes the Deployment and
        returns the new Scale with a new version.
        """
        scale = await self.client.read_scale(DEPLOYMENT)
        written = await self.client.replace_scale(scale, 5)
        self.assertEqual(written.replicas, 5)
        self.assertNotEqual(written.resource_version, scale.resource_version)
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 5)
        put = [call for call in self.api.calls if call.method == "PUT"][0]
        self.assertEqual(put.content_type, "application/json")
        self.assertEqual(put.body["kind"], "Scale")
        self.assertEqual(
            put.body["metadata"]["resourceVersion"], scale.resource_version
        )

    async def test_stale_replace_conflicts(self) -> None:
        """
        Writing back a Scale that someone else changed meanwhile fails with
        a 409 Conflict, is not tried again, and leaves their size alone.
        """
        scale = await self.client.read_scale(DEPLOYMENT)
        other = await self.client.read_scale(DEPLOYMENT)
        await self.client.replace_scale(other, 4)
        with self.assertRaises(Conflict) as caught:
            await self.client.replace_scale(scale, 1)
        error = caught.exception
        self.assertEqual(
            (error.status, error.reason, error.kind), (409, "Conflict", "conflict")
        )
        self.assertIn("the object has been modified", str(error))
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 4)
        self.assertEqual(self.calls("PUT"), 2)

    async def test_patches(self) -> None:
        """
        Merge and strategic merge patches set the size; with a version, a
        stale patch conflicts.
        """
        scale = await self.client.patch_scale(DEPLOYMENT, 3)
        self.assertEqual(scale.replicas, 3)
        scale = await self.client.patch_scale(
            DEPLOYMENT, 6, STRATEGIC_MERGE_PATCH, scale.resource_version
        )
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 6)
        types = [call.content_type for call in self.api.calls if call.method == "PATCH"]
        self.assertEqual(types, [MERGE_PATCH, STRATEGIC_MERGE_PATCH])
        with self.assertRaises(Conflict):
            await self.client.patch_scale(DEPLOYMENT, 1, resource_version="1")
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 6)

    async def test_unknown_patch_type(self) -> None:
        """
        A patch type the server does not take is refused with 415.
        """
        with self.assertRaises(KubeError) as caught:
            await self.client.patch_scale(DEPLOYMENT, 3, "application/json-patch+json")
        self.assertEqual(
            (caught.exception.status, caught.exception.kind), (415, "rejected")
        )

    async def test_zero(self) -> None:
        """
        A Deployment scaled to zero has no C{spec.replicas} in its JSON, and
        reads as zero.
        """
        await self.client.patch_scale(DEPLOYMENT, 0)
        self.assertNotIn(
            "replicas", self.api.scale_json(self.api.deployments[DEPLOYMENT])["spec"]
        )
        self.assertEqual((await self.client.read_scale(DEPLOYMENT)).replicas, 0)


class PodTests(ApiTestCase):
    async def test_list_by_selector(self) -> None:
        """
        Listing by the Deployment's selector gives its pods only, with their
        annotations.
        """
        pods = await self.client.list_pods("app=chat-server")
        self.assertEqual([pod.name for pod in pods], ["chat-server-a", "chat-server-b"])
        self.assertEqual(pods[1].annotations, {"team": "chat"})
        self.assertEqual(pods[0].phase, "Running")
        self.assertEqual(
            self.api.calls[-1].query, {"labelSelector": ["app=chat-server"]}
        )

    async def test_annotate(self) -> None:
        """
        Annotating a pod sets that annotation and keeps the others.
        """
        pod = await self.client.annotate_pod("chat-server-b", {DELETION_COST: "7"})
        self.assertEqual(pod.annotations, {"team": "chat", DELETION_COST: "7"})
        self.assertEqual(self.api.pods["chat-server-b"].deletion_cost, 7)
        self.assertEqual(self.api.calls[-1].content_type, MERGE_PATCH)

    async def test_annotation_must_be_text(self) -> None:
        """
        The server refuses an annotation that is not a string, as the real
        one does, with 400.
        """
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/chat-server-a"
        body = {"metadata": {"annotations": {DELETION_COST: 3}}}
        with self.assertRaises(KubeError) as caught:
            await self.client.call("PATCH", path, body, MERGE_PATCH)
        self.assertEqual(
            (caught.exception.status, caught.exception.reason), (400, "BadRequest")
        )

    async def test_missing_pod(self) -> None:
        """
        Annotating a pod that is gone is a 404.
        """
        with self.assertRaises(KubeError) as caught:
            await self.client.annotate_pod("chat-server-z", {DELETION_COST: "0"})
        self.assertEqual(caught.exception.kind, "not_found")
        self.assertIn('pods "chat-server-z" not found', str(caught.exception))


class ErrorTests(ApiTestCase):
    async def test_bad_token(self) -> None:
        """
        A token the server does not accept is a 401, not tried again.
        """
        client = self.make_client(token="stolen")
        with self.assertRaises(KubeError) as caught:
            await client.read_scale(DEPLOYMENT)
        error = caught.exception
        self.assertEqual(
            (error.status, error.kind, error.reason),
            (401, "unauthorized", "Unauthorized"),
        )
        self.assertFalse(error.transient)
        self.assertEqual(self.calls("GET"), 1)

    async def test_not_found(self) -> None:
        """
        A Deployment that does not exist is a 404 whose message names it.
        """
        with self.assertRaises(KubeError) as caught:
            await self.client.read_scale("chat-servr")
        self.assertEqual(caught.exception.kind, "not_found")
        self.assertIn('deployments.apps "chat-servr" not found', str(caught.exception))
        self.assertEqual(self.calls("GET"), 1)

    async def test_forbidden(self) -> None:
        """
        What the role does not allow is a 403 whose message says which verb
        on which resource was refused.
        """
        self.api.allowed = frozenset({("get", "deployments/scale")})
        scale = await self.client.read_scale(DEPLOYMENT)
        with self.assertRaises(KubeError) as caught:
            await self.client.replace_scale(scale, 3)
        self.assertEqual(caught.exception.kind, "forbidden")
        self.assertIn(
            'cannot update resource "deployments/scale"', str(caught.exception)
        )

    async def test_throttled(self) -> None:
        """
        A 429 is tried again after the seconds its Retry-After asks for.
        """
        self.api.fail("GET", "/scale", 429, retry_after=1)
        started = reactor.seconds()
        scale = await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(scale.replicas, 2)
        self.assertGreaterEqual(reactor.seconds() - started, 0.95)
        self.assertEqual(self.calls("GET"), 2)

    async def test_server_errors(self) -> None:
        """
        Server errors are tried again with a growing wait, and succeed when
        the server recovers.
        """
        self.api.fail("PUT", "/scale", 500, times=2)
        scale = await self.client.read_scale(DEPLOYMENT)
        started = reactor.seconds()
        await self.client.replace_scale(scale, 3)
        self.assertGreaterEqual(reactor.seconds() - started, 3 * RETRY_FIRST_SECONDS)
        self.assertEqual(self.calls("PUT"), 3)
        self.assertEqual(self.api.deployments[DEPLOYMENT].replicas, 3)

    async def test_server_errors_give_up(self) -> None:
        """
        After the last attempt a server error is raised with its message.
        """
        self.api.fail("GET", "/scale", 503, times=5)
        with self.assertRaises(KubeError) as caught:
            await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(
            (caught.exception.status, caught.exception.kind), (503, "server")
        )
        self.assertIn("told to fail", str(caught.exception))
        self.assertEqual(self.calls("GET"), 3)

    async def test_timeout(self) -> None:
        """
        A server that does not answer is given up on after the time-out,
        and the request is tried again.
        """
        self.api.fail("GET", "/scale", None)
        started = reactor.seconds()
        scale = await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(scale.replicas, 2)
        self.assertGreaterEqual(reactor.seconds() - started, TIMEOUT_SECONDS)
        self.assertEqual(self.calls("GET"), 2)

    async def test_timeouts_give_up(self) -> None:
        """
        When every attempt times out the error says so.
        """
        self.api.fail("GET", "/scale", None, times=3)
        with self.assertRaises(KubeError) as caught:
            await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(caught.exception.kind, "timeout")
        self.assertIn("no answer within 0.3s", str(caught.exception))

    async def test_refused(self) -> None:
        """
        No server at the address is a connection error, tried again, then
        raised.
        """
        access = ApiAccess(
            f"http://127.0.0.1:{free_port()}", lambda: None, None, "a test"
        )
        client = KubeClient(
            reactor, access, NAMESPACE, timeout=1, retry_first=RETRY_FIRST_SECONDS
        )
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        with self.assertRaises(KubeError) as caught:
            await client.read_scale(DEPLOYMENT)
        self.assertEqual(caught.exception.kind, "connection")
        self.assertTrue(caught.exception.transient)


def _certificates() -> tuple[bytes, bytes]:
    """
    A CA certificate, and a key and certificate for 127.0.0.1 that it signed.
    """
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("fake cluster CA"))
        .issuer_name(name("fake cluster CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    server = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + certificate.public_bytes(pem)
    return ca.public_bytes(pem), server


class TLSTests(ApiTestCase):
    """
    The same calls over HTTPS, trusting the CA named in the kubeconfig.
    """

    def server_tls(self) -> Any:
        self.ca_pem, server_pem = _certificates()
        return PrivateCertificate.loadPEM(server_pem).options()

    def make_client(
        self, token: str | None = None, attempts: int = 3, **kubeconfig: Any
    ) -> KubeClient:
        kubeconfig.setdefault("ca_pem", self.ca_pem)
        return super().make_client(token, attempts, **kubeconfig)

    async def test_read_over_tls(self) -> None:
        """
        With the cluster's CA the scale reads over HTTPS.
        """
        self.assertTrue(self.api.url.startswith("https://"))
        scale = await self.client.read_scale(DEPLOYMENT)
        self.assertEqual(scale.replicas, 2)

    async def test_unknown_ca(self) -> None:
        """
        A server whose certificate another CA signed is refused as a
        connection error, before any request reaches it.
        """
        other_ca, _ = _certificates()
        client = self.make_client(attempts=1, ca_pem=other_ca)
        calls = len(self.api.calls)
        with self.assertRaises(KubeError) as caught:
            await client.read_scale(DEPLOYMENT)
        self.assertEqual(caught.exception.kind, "connection")
        self.assertEqual(len(self.api.calls), calls)


class AccessTests(SynchronousTestCase):
    def test_missing_kubeconfig(self) -> None:
        """
        A kubeconfig file that does not exist is an access error that names
        it.
        """
        with self.assertRaises(AccessError) as caught:
            load_access("/nonexistent/kubeconfig")
        self.assertIn("/nonexistent/kubeconfig", str(caught.exception))

    def test_kubeconfig(self) -> None:
        """
        A kubeconfig gives the server, the token as a bearer header, and
        says where it came from.
        """
        path = Path(tempfile.mkdtemp(prefix="chat-test-kube-")) / "config"
        cluster = {"name": "c", "cluster": {"server": "http://127.0.0.1:6443/"}}
        config = {
            "clusters": [cluster],
            "users": [{"name": "u", "user": {"token": "abc"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        path.write_text(json.dumps(config))
        access = load_access(str(path))
        self.assertEqual(access.server, "http://127.0.0.1:6443")
        self.assertEqual(access.authorization(), "Bearer abc")
        self.assertIsNone(access.tls)
        self.assertEqual(access.source, f"kubeconfig {path}")

    def test_insecure_refused(self) -> None:
        """
        A kubeconfig that turns TLS verification off is refused rather than
        followed.
        """
        path = Path(tempfile.mkdtemp(prefix="chat-test-kube-")) / "config"
        server = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
        config = {
            "clusters": [{"name": "c", "cluster": server}],
            "users": [{"name": "u", "user": {"token": "abc"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        path.write_text(json.dumps(config))
        with self.assertRaises(AccessError) as caught:
            load_access(str(path))
        self.assertIn("insecure-skip-tls-verify", str(caught.exception))
