"""
The daemon on a TLS endpoint, checked by a client that verifies the certificate.
"""

from __future__ import annotations

import datetime
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from chat.daemon import ChatDaemon, Settings
from chat.passwords import Passwords, cheap_hasher
from tests.test_daemon import LineClient


def self_signed(directory: str) -> tuple[str, str]:
    """
    A certificate for 127.0.0.1 and its key, written as PEM files.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class TLSTests(TestCase):
    async def test_chat_over_verified_tls(self) -> None:
        """
        With an ssl: endpoint the daemon speaks TLS, and a client that checks
        the certificate can sign up and chat.
        """
        directory = tempfile.mkdtemp(prefix="chat-tls-")
        cert_path, key_path = self_signed(directory)
        settings = Settings(
            listen=[
                f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
            ],
            database="sqlite:" + os.path.join(directory, "chat.db"),
            server_id="tls",
            passwords=Passwords(reactor, cheap_hasher()),
        )
        daemon = ChatDaemon(reactor, settings)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        await daemon.ready
        port = daemon.ports[0].getHost().port
        with open(cert_path) as f:
            authority = ssl.Certificate.loadPEM(f.read())
        options = ssl.optionsForClientTLS("localhost", trustRoot=authority)
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, options)
        client = await connectProtocol(endpoint, LineClient())
        await client.wait_for("/signup")
        client.send("/signup alice password123")
        await client.wait_for("Welcome, alice")
        client.send("/msg * over tls")
        await client.wait_for("alice to everyone: over tls")
        client.transport.loseConnection()
        await client.closed
