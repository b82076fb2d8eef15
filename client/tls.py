"""
Reaching the chat server over TLS, and only a server that proves who it is.

L{tls_connector} makes a connector for L{client.session.Session} whose every
connection is wrapped in TLS with options from C{optionsForClientTLS}: the
server's certificate must chain to the trust root and be valid for the host
name that was dialled.  The chat protocol is attached only once the handshake
has finished, so a connection counts as made only after that check; when the
check fails the attempt fails with L{CertificateRejected}, which the session
reports and does not retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL.SSL import Error as OpenSSLError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    VerificationError,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from client.connection import CertificateRejected
from client.session import CONNECT_TIMEOUT_SECONDS, Address, Connector

if TYPE_CHECKING:
    # twisted.internet.ssl does not re-export the interface of trust roots.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

# How OpenSSL names a certificate that does not chain to a trusted root, has
# expired or is otherwise unacceptable; it says no more than that.
CHAIN_REJECTED = "certificate verify failed"


def load_trust_root(path: str) -> IOpenSSLTrustRoot:
    """
    Trust exactly the certificates of the PEM file at C{path}.

    Raises L{OSError} if the file cannot be read and L{ValueError} if it
    holds no certificate.
    """
    with open(path, "rb") as f:
        pem = f.read()
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"{path} holds no PEM certificate") from e
    trusted = [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    root: IOpenSSLTrustRoot
    root = trustRootFromCertificates(trusted)  # type: ignore[no-untyped-call]
    return root


def tls_connector(
    reactor: Any,
    trust_root: IOpenSSLTrustRoot,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> Connector:
    """
    Connect protocols over verified TLS, resolving host names, through
    C{reactor}; both the TCP connection and the handshake get C{timeout}.
    """

    async def connect_verified(address: Address, protocol: Protocol) -> Protocol:
        options = optionsForClientTLS(address.host, trustRoot=trust_root)
        tcp = HostnameEndpoint(reactor, address.host, address.port, timeout)
        gate = _HandshakeGate(protocol, address.host)
        endpoint = wrapClientTLS(options, tcp)  # type: ignore[arg-type]
        await connectProtocol(endpoint, gate)  # type: ignore[no-untyped-call]
        await gate.verified.addTimeout(timeout, reactor)
        return protocol

    def connect(address: Address, protocol: Protocol) -> Deferred[Any]:
        return Deferred.fromCoroutine(connect_verified(address, protocol))

    return connect


@implementer(IHandshakeListener)
class _HandshakeGate(Protocol):
    """
    Stands in for the chat protocol until the handshake is over, then hands
    it the connection.

    @ivar verified: fires when the server's certificate has been accepted;
        fails with L{CertificateRejected} when it has not, or with another
        error when the connection ended for some other reason first.
        Cancelling it drops the connection.
    """

    def __init__(self, inner: Protocol, host: str) -> None:
        self._inner = inner
        self._host = host
        self._passed = False
        self.verified: Deferred[None] = Deferred(lambda d: self._drop())

    def handshakeCompleted(self) -> None:
        # A renegotiation calls this again; and a check that failed may
        # already have aborted the connection before OpenSSL finished.
        if self.verified.called or getattr(self.transport, "disconnecting", True):
            return
        self._passed = True
        self._inner.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        self.verified.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self._passed:
            self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._passed:
            self._inner.connectionLost(reason)
        elif not self.verified.called:
            self.verified.errback(explain_handshake_failure(reason, self._host))

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


def explain_handshake_failure(reason: Failure, host: str) -> Exception:
    """
    What a connection that ended before the handshake finished means: a
    L{CertificateRejected} when the certificate was the problem.
    """
    error = reason.value
    if isinstance(error, VerificationError):
        return CertificateRejected(f"it is not valid for the name {host}")
    if not isinstance(error, OpenSSLError):
        return error if isinstance(error, Exception) else ConnectionError(str(error))
    problems = _openssl_reasons(error)
    if CHAIN_REJECTED in problems:
        return CertificateRejected(
            "it is not signed by an authority this client trusts, or it has"
            f" expired or is not valid yet (OpenSSL: {CHAIN_REJECTED})"
        )
    return ConnectionError(f"the TLS handshake failed: {'; '.join(problems)}")


def _openssl_reasons(error: BaseException) -> list[str]:
    """
    The reason strings of an OpenSSL error, which holds a list of
    C{(library, function, reason)} triples.
    """
    triples = error.args[0] if error.args else []
    if not isinstance(triples, list):
        return [str(error)]
    return [str(t[-1]) for t in triples if isinstance(t, tuple) and t]
