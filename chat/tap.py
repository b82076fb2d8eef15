"""
The C{twistd chat} command: its options and the service it builds.

Every option can also come from an environment variable (named in the help),
which is how containers configure it; a command-line option wins.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from chat.daemon import (
    DEFAULT_DATABASE,
    DEFAULT_DRAIN,
    DEFAULT_LISTEN,
    ChatDaemon,
    Settings,
)
from chat.guard import Limits
from chat.limits import (
    COMMAND_BURST,
    COMMAND_RATE,
    CONNECTIONS_PER_ADDRESS,
    LOGIN_TIMEOUT,
)
from chat.options import LOG_LEVEL_OPTION, EnvironmentOptions

ENVIRONMENT = {
    "database": "CHAT_DATABASE",
    "server-id": "CHAT_SERVER_ID",
    "log-level": "CHAT_LOG_LEVEL",
    "drain": "CHAT_DRAIN_SECONDS",
    "redis": "CHAT_REDIS",
    "admin": "CHAT_ADMIN",
    "command-rate": "CHAT_COMMAND_RATE",
    "command-burst": "CHAT_COMMAND_BURST",
    "max-per-address": "CHAT_MAX_PER_ADDRESS",
    "login-timeout": "CHAT_LOGIN_TIMEOUT",
}
LISTEN_ENVIRONMENT = "CHAT_LISTEN"
DEFAULT_ADMIN = "tcp:8080"


class Options(EnvironmentOptions):
    environment = ENVIRONMENT

    synopsis = "[options]"
    longdesc = (
        "Run a chat server that people reach with telnet or nc and programs "
        "reach in JSON mode. With no options it keeps its data in SQLite under "
        "./chat-data and listens on TCP port 30080."
    )
    optParameters = [
        [
            "database",
            "d",
            DEFAULT_DATABASE,
            "database URL: sqlite:PATH or postgresql://... [$CHAT_DATABASE]",
        ],
        [
            "server-id",
            None,
            None,
            "this replica's name, default the host name [$CHAT_SERVER_ID]",
        ],
        [
            "redis",
            None,
            None,
            "cluster mode: Redis URL redis://HOST:PORT/DB or unix:/PATH?db=N,"
            " shared by every replica; needs a postgresql:// database"
            " [$CHAT_REDIS]",
        ],
        [
            "admin",
            None,
            DEFAULT_ADMIN,
            "endpoint of /healthz, /readyz and /metrics, or none [$CHAT_ADMIN]",
        ],
        [
            "drain",
            None,
            str(DEFAULT_DRAIN),
            "seconds between the maintenance notice and closing connections"
            " at shutdown [$CHAT_DRAIN_SECONDS]",
        ],
        [
            "command-rate",
            None,
            str(COMMAND_RATE),
            "commands per second one connection may send after its burst;"
            " 0 for no limit [$CHAT_COMMAND_RATE]",
        ],
        [
            "command-burst",
            None,
            str(COMMAND_BURST),
            "commands one connection may send at once [$CHAT_COMMAND_BURST]",
        ],
        [
            "max-per-address",
            None,
            str(CONNECTIONS_PER_ADDRESS),
            "open connections allowed from one address (loopback is not"
            " counted); 0 for no limit [$CHAT_MAX_PER_ADDRESS]",
        ],
        [
            "login-timeout",
            None,
            str(LOGIN_TIMEOUT),
            "seconds a connection may stay without logging in; 0 for no limit"
            " [$CHAT_LOGIN_TIMEOUT]",
        ],
        LOG_LEVEL_OPTION,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        Twisted endpoint to listen on, e.g. tcp:30080:interface=127.0.0.1 (may be repeated) [$CHAT_LISTEN, space-separated] [default: tcp:30080:backlog=1024]
        """  # noqa: E501
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["listen"]:
            variable = os.environ.get(LISTEN_ENVIRONMENT, "")
            self["listen"] = variable.split() or [DEFAULT_LISTEN]
        try:
            self["drain"] = float(self["drain"])
        except ValueError:
            raise usage.UsageError("--drain takes a number of seconds") from None
        if not 0 <= self["drain"] <= 25:
            raise usage.UsageError("--drain must be between 0 and 25 seconds")
        try:
            self.limits = Limits(
                command_burst=int(self["command-burst"]),
                command_rate=float(self["command-rate"]),
                per_address=int(self["max-per-address"]),
                login_timeout=float(self["login-timeout"]),
            )
        except ValueError:
            raise usage.UsageError(
                "--command-rate, --command-burst, --max-per-address and"
                " --login-timeout take numbers"
            ) from None
        if min(self.limits.command_burst, self.limits.command_rate) < 0:
            raise usage.UsageError("rate limits cannot be negative")
        self.set_log_level()
        if self["redis"]:
            self._check_cluster()

    def _check_cluster(self) -> None:
        scheme = self["database"].split(":", 1)[0].lower()
        if scheme not in ("postgres", "postgresql"):
            raise usage.UsageError(
                "--redis (cluster mode) needs a postgresql:// --database that"
                " every replica shares; SQLite serves a single process"
            )
        try:
            from chat.cluster.redisconn import parse_redis_url
        except ImportError as e:
            raise usage.UsageError(
                f"--redis needs the cluster extra (pip install 'chat[cluster]'): {e}"
            ) from None
        try:
            parse_redis_url(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None


def makeService(options: Options, reactor: Any = None) -> ChatDaemon:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings = Settings(
        listen=options["listen"],
        database=options["database"],
        drain=options["drain"],
        redis=options["redis"] or None,
        limits=options.limits,
        admin=None if options["admin"].lower() == "none" else options["admin"],
        exit_on_failure=True,
    )
    if options["server-id"]:
        settings.server_id = options["server-id"]
    return ChatDaemon(reactor, settings)
