"""
The real C{twistd -n chat} daemon as a child process, and line clients for it.

L{DaemonProcess} runs the daemon with this test process's own interpreter, in
a temporary working directory, listening on 127.0.0.1 on a free port.  It can
be stopped with SIGTERM, killed with SIGKILL and started again on the same
port and data; extra arguments and environment variables let several replicas
run side by side.  Everything waits through the reactor with a bound, and a
daemon that fails to come up is reported with its log.

L{LineClient} is a raw TCP connection that speaks the line protocol, in text
or JSON mode, and waits for the lines it expects.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.servers import LOCALHOST, free_port

CHECKOUT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 30.0
# A stopping daemon may drain its connections for up to 25 s (--drain), then
# give them 5 s more to close.
STOP_TIMEOUT_SECONDS = 45.0
EXIT_TIMEOUT_SECONDS = 30.0
REPLY_TIMEOUT_SECONDS = 10.0
CONNECT_RETRY_SECONDS = 0.05
LOG_TAIL_CHARS = 4000

# twisted.scripts.twistd has no main guard, so "python -m" on it does nothing.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class DaemonFailed(AssertionError):
    """
    The daemon did not start, or did not stop, as it should have.
    """


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """
    This process's environment without any C{CHAT_} setting, plus C{extra}.

    The checkout comes first on C{PYTHONPATH}, so the daemon runs the code
    under test whether or not the package is installed.  The admin endpoint
    is off unless a test asks for one, so that no test binds its default
    port.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    paths = [str(CHECKOUT), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["CHAT_ADMIN"] = "none"
    env.update(extra)
    return env


class _Child(ProcessProtocol):
    """
    One run of the daemon: keeps its output and tells when it ends.
    """

    def __init__(self, log: Path) -> None:
        self.output = ""
        self.ended: Deferred[int] = Deferred()
        self._log = log
        self._waiters: list[tuple[str, Deferred[None]]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        self.output += text
        with self._log.open("a", encoding="utf-8") as log:
            log.write(text)
        for waiter in [w for w in self._waiters if w[0] in self.output]:
            self._waiters.remove(waiter)
            waiter[1].callback(None)

    def wait_for(self, text: str) -> Deferred[None]:
        found: Deferred[None] = Deferred()
        if text in self.output:
            found.callback(None)
        else:
            self._waiters.append((text, found))
        return found

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated) and value.signal is not None:
            self.ended.callback(-value.signal)
        elif isinstance(value, ProcessDone | ProcessTerminated):
            self.ended.callback(value.exitCode or 0)
        else:
            self.ended.errback(reason)


class DaemonProcess:
    """
    A C{twistd -n chat} child in its own working directory.

    @ivar port: the TCP port it listens on, the same after a restart.
    @ivar returncode: how the last run ended, as in L{subprocess}: the exit
        status, or minus the signal that ended it; None while it runs.
    """

    def __init__(
        self,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        listen: bool = True,
        directory: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(env or {})
        self.listen = listen
        self.directory = directory or Path(tempfile.mkdtemp(prefix="chat-twistd-"))
        self.port = port or free_port()
        self.log_path = self.directory / "twistd.log"
        self.returncode: int | None = None
        self._child: _Child | None = None
        self._transport: IProcessTransport | None = None

    @property
    def command(self) -> list[str]:
        command = [*TWISTD, "-n", "--pidfile=", "chat"]
        if self.listen:
            command += ["--listen", f"tcp:{self.port}:interface={LOCALHOST}"]
        return command + self.args

    @property
    def running(self) -> bool:
        return self._child is not None and not self._child.ended.called

    @property
    def output(self) -> str:
        """
        What the current or last run wrote to stdout and stderr.
        """
        return self._child.output if self._child else ""

    def log_tail(self) -> str:
        return self.output[-LOG_TAIL_CHARS:] or "(the daemon wrote nothing)"

    def spawn(self) -> None:
        """
        Start the daemon without waiting for anything.
        """
        if self.running:
            raise DaemonFailed("the daemon is running already")
        self.returncode = None
        child = self._child = _Child(self.log_path)
        self._transport = reactor.spawnProcess(
            child,
            TWISTD[0],
            self.command,
            env=child_environment(self.env),
            path=str(self.directory),
        )
        child.ended.addCallback(self._ended)

    def _ended(self, code: int) -> int:
        self.returncode = code
        return code

    async def start(self) -> None:
        """
        Start the daemon and return once its port accepts connections.
        """
        self.spawn()
        await self._until_listening()

    async def _until_listening(self) -> None:
        deadline = reactor.seconds() + START_TIMEOUT_SECONDS
        endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, self.port, timeout=1)
        while True:
            if not self.running:
                raise DaemonFailed(
                    f"the daemon exited with {self.returncode} before listening"
                    f" on port {self.port}:\n{self.log_tail()}"
                )
            try:
                probe = await connectProtocol(endpoint, Protocol())
            except ConnectError:
                if reactor.seconds() > deadline:
                    await self.kill()
                    raise DaemonFailed(
                        f"the daemon did not listen on port {self.port} within"
                        f" {START_TIMEOUT_SECONDS}s:\n{self.log_tail()}"
                    ) from None
                await deferLater(reactor, CONNECT_RETRY_SECONDS, lambda: None)
                continue
            assert probe.transport is not None
            probe.transport.loseConnection()
            return

    async def wait_for_exit(self, timeout: float = EXIT_TIMEOUT_SECONDS) -> int:
        """
        Wait until the daemon exits by itself; return its L{returncode}.
        """
        if self._child is None:
            raise DaemonFailed("the daemon was never started")
        ended = self._child.ended
        if not ended.called:
            await _bounded(Deferred.fromCoroutine(_fired(ended)), timeout, self._late)
        assert self.returncode is not None
        return self.returncode

    def _late(self) -> str:
        return f"the daemon is still running:\n{self.log_tail()}"

    async def run_to_exit(self, timeout: float = EXIT_TIMEOUT_SECONDS) -> int:
        """
        Run the daemon until it exits by itself, as for C{--help}.
        """
        self.spawn()
        try:
            return await self.wait_for_exit(timeout)
        finally:
            await self.kill()

    async def wait_for_log(
        self, text: str, timeout: float = REPLY_TIMEOUT_SECONDS
    ) -> None:
        """
        Wait until the current run has written C{text}.
        """
        if self._child is None:
            raise DaemonFailed("the daemon was never started")

        def explain() -> str:
            return f"{text!r} not in the daemon's log:\n{self.log_tail()}"

        await _bounded(self._child.wait_for(text), timeout, explain)

    async def _signal(self, name: str) -> int:
        if self.running:
            assert self._transport is not None
            self._transport.signalProcess(name)
        return await self.wait_for_exit(STOP_TIMEOUT_SECONDS)

    async def stop(self) -> int:
        """
        Send SIGTERM and wait for the daemon to exit.
        """
        if not self.running:
            return self.returncode if self.returncode is not None else 0
        try:
            return await self._signal("TERM")
        except DaemonFailed:
            await self.kill()
            raise

    async def kill(self) -> int:
        """
        Send SIGKILL, as a crash would, and wait for the daemon to be gone.
        """
        if not self.running:
            return self.returncode if self.returncode is not None else 0
        return await self._signal("KILL")

    async def restart(self) -> None:
        """
        Stop the daemon with SIGTERM and start it on the same port and data.
        """
        await self.stop()
        await self.start()

    async def destroy(self) -> None:
        """
        Kill the daemon if it still runs and remove its working directory.
        """
        try:
            await self.kill()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


async def start_daemon(
    case: TestCase,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> DaemonProcess:
    """
    A started daemon that is killed and removed when C{case} ends.
    """
    daemon = DaemonProcess(args, env, **options)
    case.addCleanup(lambda: Deferred.fromCoroutine(daemon.destroy()))
    await daemon.start()
    return daemon


async def _fired(d: Deferred[Any]) -> None:
    # Waiting on a copy leaves the result to everyone else who waits on d.
    waiter: Deferred[None] = Deferred()

    def passthrough(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(passthrough)
    await waiter


async def _bounded(d: Deferred[Any], timeout: float, explain: Callable[[], str]) -> Any:
    def timed_out(result: object, timeout: float) -> None:
        raise DaemonFailed(f"nothing after {timeout}s: {explain()}")

    return await d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


class LineClient(LineReceiver):
    """
    A raw connection to the chat server that waits for expected lines.

    Each expectation searches the lines after the one the previous
    expectation matched, so a test reads the conversation in order.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed: Deferred[None] = Deferred()
        self._read = 0
        self._waiting: tuple[Callable[[str], bool], Deferred[str]] | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.rstrip(b"\r").decode("utf-8", errors="replace"))
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)

    def send(self, line: str) -> None:
        self.sendLine(line.encode("utf-8"))

    def send_json(self, **command: Any) -> None:
        self.send(json.dumps(command))

    def _check(self) -> None:
        if self._waiting is None:
            return
        matches, found = self._waiting
        for index in range(self._read, len(self.lines)):
            if matches(self.lines[index]):
                self._read = index + 1
                self._waiting = None
                found.callback(self.lines[index])
                return

    async def wait_line(self, matches: Callable[[str], bool], what: str) -> str:
        """
        The next line for which C{matches} holds.
        """
        found: Deferred[str] = Deferred()
        self._waiting = (matches, found)
        self._check()

        def explain() -> str:
            return f"no line {what}; unread lines: {self.lines[self._read :][-20:]}"

        try:
            return str(await _bounded(found, REPLY_TIMEOUT_SECONDS, explain))
        finally:
            self._waiting = None

    async def expect(self, text: str) -> str:
        """
        The next line that contains C{text}.
        """
        return await self.wait_line(lambda line: text in line, f"with {text!r}")

    async def expect_json(self, **fields: Any) -> dict[str, Any]:
        """
        The next JSON line that has every one of C{fields}.
        """

        def matches(line: str) -> bool:
            try:
                obj = json.loads(line)
            except ValueError:
                return False
            return isinstance(obj, dict) and all(
                k in obj and obj[k] == v for k, v in fields.items()
            )

        line = await self.wait_line(matches, f"with {fields!r}")
        obj: dict[str, Any] = json.loads(line)
        return obj


async def connect(port: int) -> LineClient:
    """
    A L{LineClient} connected to the server on 127.0.0.1, its banner read.
    """
    endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, port, timeout=5)
    client = LineClient()
    await connectProtocol(endpoint, client)
    await client.expect("/signup")
    return client


PASSWORD = "correct horse"


async def signed_up(port: int, name: str) -> LineClient:
    """
    A text-mode connection with a new account C{name}, logged in.
    """
    client = await connect(port)
    client.send(f"/signup {name} {PASSWORD}")
    await client.expect(f"Welcome, {name}! Your account is ready.")
    return client
