"""
Headless Chromium driven over the DevTools protocol, for the browser tests.

Chromium runs with C{--remote-debugging-pipe}: it reads protocol commands on
its file descriptor 3 and writes answers and events on 4, each message a JSON
text ended by a NUL byte.  No port is opened and no WebSocket library is
needed.  Host names other than the loopback address resolve to nothing, so
the browser can reach only servers on this machine.

A missing browser is a failure with what to install, never a skip.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

BINARIES = ("chromium", "chromium-browser")
COMMAND_TIMEOUT_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.2
OUTPUT_TAIL_CHARS = 3000
WINDOW = {"width": 1280, "height": 900}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-pipe",
]


class BrowserFailed(AssertionError):
    """
    The browser is missing, died, or did not answer.
    """


def find_chromium() -> str:
    """
    The Chromium program on the PATH.

    @raise BrowserFailed: when there is none, saying what to install.
    """
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserFailed(
        "headless Chromium is needed for the browser tests and was not found"
        " (looked for: chromium, chromium-browser): install Debian's package"
        " with 'apt-get install chromium', as .ci/run does"
    )


class _Pipe(ProcessProtocol):
    """
    The browser process and its protocol pipe.
    """

    def __init__(self) -> None:
        self.output = ""
        self.ended: Deferred[None] = Deferred()
        self.on_message: Callable[[dict[str, Any]], None] = lambda message: None
        self.on_end: Callable[[str], None] = lambda why: None
        self._buffer = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != 4:
            self.output = (self.output + data.decode(errors="replace"))[
                -OUTPUT_TAIL_CHARS:
            ]
            return
        self._buffer += data
        *messages, self._buffer = self._buffer.split(b"\0")
        for message in messages:
            self.on_message(json.loads(message))

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated | ProcessDone):
            why = f"exit status {value.exitCode}, signal {value.signal}"
        else:
            why = str(value)
        self.on_end(f"the browser ended ({why}):\n{self.output}")
        self.ended.callback(None)


class Chromium:
    """
    One headless browser with one page, which records what its page says on
    the console.

    @ivar problems: console errors, uncaught exceptions, failed loads and
        dialogs of the page, as text.
    """

    def __init__(self, profile: Path) -> None:
        self.problems: list[str] = []
        self._pipe = _Pipe()
        self._pipe.on_message = self._received
        self._pipe.on_end = self._ended
        self._next_id = 0
        self._waiting: dict[int, Deferred[dict[str, Any]]] = {}
        self._session = ""
        self._transport: IProcessTransport | None = None
        self._profile = profile

    @classmethod
    async def start(cls, profile: Path) -> Chromium:
        """
        Launch the browser and open a page.
        """
        browser = cls(profile)
        binary = find_chromium()
        command = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        browser._transport = reactor.spawnProcess(
            browser._pipe,
            binary,
            command,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )
        try:
            await browser._open_page()
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _open_page(self) -> None:
        created = await self.command("Target.createTarget", url="about:blank")
        attached = await self.command(
            "Target.attachToTarget", targetId=created["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            await self.page_command(f"{domain}.enable")
        await self.page_command(
            "Emulation.setDeviceMetricsOverride",
            deviceScaleFactor=1,
            mobile=False,
            **WINDOW,
        )

    # The protocol

    def _send(
        self, method: str, params: dict[str, Any], session: str | None
    ) -> Deferred[dict[str, Any]]:
        if self._transport is None or self._pipe.ended.called:
            raise BrowserFailed(f"the browser is gone:\n{self._pipe.output}")
        self._next_id += 1
        message: dict[str, Any] = {
            "id": self._next_id,
            "method": method,
            "params": params,
        }
        if session:
            message["sessionId"] = session
        answer: Deferred[dict[str, Any]] = Deferred()
        self._waiting[self._next_id] = answer
        self._transport.writeToChild(3, json.dumps(message).encode() + b"\0")

        def late(result: Any, timeout: float) -> None:
            raise BrowserFailed(f"no answer to {method} within {timeout}s")

        return answer.addTimeout(COMMAND_TIMEOUT_SECONDS, reactor, late)

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        """
        A command to the browser itself.
        """
        return await self._send(method, params, None)

    async def page_command(self, method: str, **params: Any) -> dict[str, Any]:
        """
        A command to the page.
        """
        return await self._send(method, params, self._session)

    def _received(self, message: dict[str, Any]) -> None:
        if "id" in message:
            answer = self._waiting.pop(message["id"], None)
            if answer is None:
                return
            if "error" in message:
                answer.errback(BrowserFailed(f"DevTools error: {message['error']}"))
            else:
                answer.callback(message.get("result", {}))
            return
        self._event(message.get("method", ""), message.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "assert",
        ):
            texts = [str(a.get("value", a.get("description"))) for a in params["args"]]
            self.problems.append("console: " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            self.problems.append(f"exception: {details.get('text')} {thrown}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.problems.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Page.javascriptDialogOpening":
            self.problems.append(f"dialog: {params.get('message')}")
            d = self.page_command("Page.handleJavaScriptDialog", accept=False)
            d.addErrback(lambda failure: None)

    def _ended(self, why: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            answer.errback(BrowserFailed(why))

    # What tests do

    async def goto(self, url: str) -> None:
        navigated = await self.page_command("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserFailed(f"could not load {url}: {navigated['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        """
        The value of a JavaScript expression in the page, awaited if it is
        a promise.
        """
        result = await self.page_command(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise BrowserFailed(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, bound: float, what: str) -> Any:
        """
        Evaluate C{expression} until it is truthy; its value.
        """
        deadline = reactor.seconds() + bound
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if reactor.seconds() > deadline:
                raise BrowserFailed(
                    f"{what}: not within {bound}s; problems: {self.problems}"
                )
            await deferLater(reactor, POLL_SECONDS, lambda: None)

    async def screenshot(self, path: Path) -> None:
        """
        Save the whole page as a PNG.
        """
        layout = await self.page_command("Page.getLayoutMetrics")
        size = layout["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        shot = await self.page_command(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**clip, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        """
        Close the browser; kill it if it does not go.
        """
        if self._transport is None or self._pipe.ended.called:
            return
        try:
            await self.command("Browser.close")
        except BrowserFailed:
            pass
        ended = self._pipe.ended
        timer = reactor.callLater(CLOSE_TIMEOUT_SECONDS, self._kill)
        await ended
        if timer.active():
            timer.cancel()

    def _kill(self) -> None:
        if self._transport is not None and not self._pipe.ended.called:
            self._transport.signalProcess("KILL")
