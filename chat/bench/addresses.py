"""
Where the benchmark connects, and the rule that keeps it on this machine.

Host names other than C{localhost} are never looked up: deciding whether a
name is local would itself send a query out, so such a target counts as
remote.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LOCAL_NAMES = ("localhost",)


class BadTarget(ValueError):
    """
    A target that cannot be used: malformed, or remote without permission.
    """


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """
    C{HOST:PORT}, with an IPv6 host in brackets: C{[::1]:30080}.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadTarget(f"a target is HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise BadTarget(f"{number} is not a TCP port")
    return Address(host, number)


def is_loopback(host: str) -> bool:
    """
    Whether C{host} certainly means this machine, judged without a lookup.
    """
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_targets(texts: list[str], allow_remote: bool) -> list[Address]:
    """
    Every address in C{texts}, each a comma-separated list of C{HOST:PORT}.

    @raise BadTarget: for a malformed address, or a remote one unless
        C{allow_remote}.
    """
    addresses = [
        parse_address(part.strip())
        for text in texts
        for part in text.split(",")
        if part.strip()
    ]
    for address in addresses:
        if not allow_remote and not is_loopback(address.host):
            raise BadTarget(
                f"{address} is not a loopback address; pass --allow-remote to"
                " load a server on another machine"
            )
    return addresses
