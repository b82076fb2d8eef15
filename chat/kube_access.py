"""
Where the Kubernetes API server is and how to prove who we are to it.

The C{kubernetes} package's loaders read the configuration: the pod's service
account when running in a cluster, else a kubeconfig file (C{$KUBECONFIG} or
C{~/.kube/config}); a file named explicitly is used on its own.  Only the
answer is kept: the server's URL, a way to get the current C{Authorization}
header, and the TLS settings for Twisted.  The loaders read files and may run
credential plugins, so everything here blocks: call it in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class AccessError(Exception):
    """
    No usable Kubernetes configuration was found.
    """


@implementer(IPolicyForHTTPS)
class ClusterTLS:
    """
    TLS to the API server: its CA (or the system's), an optional client
    certificate, and an optional name to expect in place of the host's.
    """

    def __init__(
        self,
        ca_pem: bytes | None = None,
        client_pem: bytes | None = None,
        server_name: str | None = None,
    ) -> None:
        if ca_pem is not None:
            blocks = _PEM_BLOCK.findall(ca_pem)
            if not blocks:
                raise AccessError("the cluster's CA file holds no certificate")
            self._trust: Any = trustRootFromCertificates(
                [Certificate.loadPEM(block) for block in blocks]
            )
        else:
            self._trust = platformTrust()
        self._client = (
            PrivateCertificate.loadPEM(client_pem) if client_pem is not None else None
        )
        self._server_name = server_name

    def creatorForNetloc(
        self, hostname: bytes, port: int
    ) -> IOpenSSLClientConnectionCreator:
        name = self._server_name or hostname.decode("ascii")
        creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(
            name, trustRoot=self._trust, clientCertificate=self._client
        )
        return creator


@dataclass(frozen=True)
class ApiAccess:
    """
    How to reach the API server.

    @ivar authorization: the current C{Authorization} header value, or None;
        it may reread a token file or run a credential plugin, so call it in
        a thread.
    @ivar tls: None for a plain C{http://} server.
    @ivar source: where the configuration came from, for the log.
    """

    server: str
    authorization: Callable[[], str | None]
    tls: IPolicyForHTTPS | None
    source: str


def load_access(kubeconfig: str | None = None) -> ApiAccess:
    """
    The access that the C{kubernetes} package's loaders find.

    Without C{kubeconfig}: the pod's service account, then the default
    kubeconfig.  With it: that file alone.

    @raise AccessError: when neither gives a usable configuration.
    """
    from kubernetes.client import Configuration
    from kubernetes.config import (
        ConfigException,
        load_incluster_config,
        load_kube_config,
    )

    configuration = Configuration()
    in_cluster = ""
    if kubeconfig is None:
        try:
            load_incluster_config(client_configuration=configuration)
            return _access(configuration, "the pod's service account")
        except ConfigException as e:
            in_cluster = str(e)
    source = f"kubeconfig {kubeconfig or '(default)'}"
    try:
        load_kube_config(
            config_file=kubeconfig,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError) as e:
        where = "" if kubeconfig else f"not in a cluster ({in_cluster}), and "
        raise AccessError(f"{where}cannot load {source}: {e}") from None
    return _access(configuration, source)


def _access(configuration: Any, source: str) -> ApiAccess:
    server = str(configuration.host).rstrip("/")
    tls: IPolicyForHTTPS | None = None
    if server.startswith("https://"):
        if not configuration.verify_ssl:
            raise AccessError(
                "insecure-skip-tls-verify is not supported: give the cluster's CA"
            )
        tls = ClusterTLS(
            _read(configuration.ssl_ca_cert),
            _client_pem(configuration.cert_file, configuration.key_file),
            getattr(configuration, "tls_server_name", None) or None,
        )
    elif not server.startswith("http://"):
        raise AccessError(f"the API server URL {server!r} is not http(s)")

    def authorization() -> str | None:
        value = configuration.get_api_key_with_prefix(
            "BearerToken", alias="authorization"
        )
        return str(value) if value else None

    return ApiAccess(server, authorization, tls, source)


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _client_pem(cert_file: str | None, key_file: str | None) -> bytes | None:
    if not cert_file or not key_file:
        return None
    return Path(key_file).read_bytes() + b"\n" + Path(cert_file).read_bytes()
