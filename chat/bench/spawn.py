"""
A throwaway C{twistd -n chat} for one benchmark run.

It listens on 127.0.0.1 on a free port, keeps its SQLite database (unless a
database URL is given) and its log in a temporary directory, and is stopped
by its PID at the end: SIGTERM, then SIGKILL if it lingers.  Several can share
one database, as replicas do.  Unless asked to keep them, it runs without the
per-connection command rate limit and login timeout.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

import chat
from chat.bench.addresses import Address

LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.05
LOG_TAIL_CHARS = 3000
# The directory that holds the chat package, so the child finds the same
# code, and its twistd plugin, whether or not the package is installed.
CODE_ROOT = Path(chat.__file__).resolve().parent.parent
# twisted.scripts.twistd has no main guard, so "python -m" on it does nothing.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# The tool measures what the server can do, not its per-connection limits:
# a saturating sender would meet the command rate limit, and connections
# waiting their turn to sign up would meet the login timeout.
NO_LIMITS = ["--command-rate", "0", "--login-timeout", "0"]


class SpawnFailed(RuntimeError):
    """
    The daemon did not come up, with the tail of its log.
    """


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def child_environment() -> dict[str, str]:
    """
    This environment without C{CHAT_} settings, the chat's code path first.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    paths = [str(CODE_ROOT), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # A throwaway daemon needs no admin endpoint on the default port.  Its
    # limits are set on its command line (see NO_LIMITS), so that
    # --keep-limits can leave them as they are.
    env["CHAT_ADMIN"] = "none"
    return env


class _Ended(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class SpawnedServer:
    """
    One daemon child.

    @ivar address: where it listens.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        server_id: str,
        database: str = "",
        redis: str = "",
        limits: bool = False,
        backlog: int = 0,
    ) -> None:
        self.reactor = reactor
        self.directory = directory
        self.server_id = server_id
        self.database = database or f"sqlite:{directory / 'chat.db'}"
        self.redis = redis
        self.limits = limits
        self.backlog = backlog
        self.address = Address(LOCALHOST, free_port())
        self.log_path = directory / f"{server_id}.log"
        self._child = _Ended()
        self._transport: IProcessTransport | None = None

    @property
    def command(self) -> list[str]:
        command = [*TWISTD, "-n", "--pidfile=", f"--logfile={self.log_path}"]
        listen = f"tcp:{self.address.port}:interface={LOCALHOST}"
        if self.backlog:
            listen += f":backlog={self.backlog}"
        command += ["chat", "--listen", listen]
        command += ["--database", self.database, "--server-id", self.server_id]
        command += ["--drain", "0"]
        if not self.limits:
            command += NO_LIMITS
        if self.redis:
            command += ["--redis", self.redis]
        return command

    @property
    def pid(self) -> int | None:
        if self._transport is None or self.ended:
            return None
        pid = self._transport.pid
        return int(pid) if pid is not None else None

    @property
    def ended(self) -> bool:
        return self._child.ended.called

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-LOG_TAIL_CHARS:] or "(empty log)"

    async def start(self) -> None:
        """
        Start the daemon and return once it accepts connections.
        """
        self.log.info("starting {command}", command=" ".join(self.command))
        # Stopped however the run ends, even by a signal to this process.
        self.reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: Deferred.fromCoroutine(self.stop())
        )
        self._transport = self.reactor.spawnProcess(
            self._child,
            TWISTD[0],
            self.command,
            env=child_environment(),
            path=str(self.directory),
        )
        deadline = self.reactor.seconds() + START_TIMEOUT_SECONDS
        endpoint = TCP4ClientEndpoint(
            self.reactor, LOCALHOST, self.address.port, timeout=1
        )
        while True:
            if self.ended:
                raise SpawnFailed(f"the daemon exited at start:\n{self.log_tail()}")
            try:
                probe = await connectProtocol(endpoint, Protocol())
            except ConnectError:
                if self.reactor.seconds() > deadline:
                    await self.kill()
                    raise SpawnFailed(
                        f"the daemon did not listen within {START_TIMEOUT_SECONDS}"
                        f" s:\n{self.log_tail()}"
                    ) from None
                await deferLater(self.reactor, POLL_SECONDS, lambda: None)
                continue
            assert probe.transport is not None
            probe.transport.loseConnection()
            return

    async def kill(self) -> None:
        """
        SIGKILL, as a crash would; return once the child is gone.
        """
        await self._signal("KILL")

    async def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{STOP_TIMEOUT_SECONDS}.
        """
        try:
            await self._signal("TERM")
        except SpawnFailed:
            await self.kill()

    async def _signal(self, name: str) -> None:
        if self._transport is None or self.ended:
            return
        self._transport.signalProcess(name)
        waiting: Deferred[None] = Deferred()

        def ended(result: object) -> object:
            if not waiting.called:
                waiting.callback(None)
            return result

        self._child.ended.addBoth(ended)

        def late(result: object, timeout: float) -> None:
            raise SpawnFailed(f"the daemon outlived SIG{name} by {timeout} s")

        await waiting.addTimeout(
            STOP_TIMEOUT_SECONDS, self.reactor, onTimeoutCancel=late
        )
