"""
The chat-client program: connect, run the screens, log out, restore the terminal.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from client.api import ChatApi
from client.connection import ConnectionClosed, JsonLineProtocol
from client.console import Console, TerminalModes
from client.render import clean
from client.screens import Screens
from client.ui import ConsoleUi, Quit

CONNECT_TIMEOUT_SECONDS = 10.0
MODE_TIMEOUT_SECONDS = 10.0
QUIT_TIMEOUT_SECONDS = 2.0

log = Logger()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat-client", description="Talk to a chat server from a terminal."
    )
    parser.add_argument("host", help="name or address of the chat server")
    parser.add_argument("port", type=int, help="its TCP port")
    parser.add_argument("--log-file", help="append diagnostic logs to this file")
    return parser.parse_args(argv)


async def connect(
    reactor: IReactorTime, host: str, port: int, ui: ConsoleUi
) -> ChatApi:
    """
    Connect and switch the server to JSON mode.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT_SECONDS)
    protocol = JsonLineProtocol(ui)
    await connectProtocol(endpoint, protocol)
    try:
        await protocol.ready.addTimeout(MODE_TIMEOUT_SECONDS, reactor)
    except Exception:
        protocol.close()
        raise
    return ChatApi(protocol)


async def session(reactor: IReactorTime, host: str, port: int, ui: ConsoleUi) -> int:
    """
    Run the whole session; the result is the exit status.
    """
    ui.say(f"Connecting to {clean(host)}:{port} ...")
    connecting = Deferred.fromCoroutine(connect(reactor, host, port, ui))
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        connecting.cancel()

    ui.editor.on_interrupt = interrupt
    try:
        api = await connecting
    except Exception as e:
        # Cancelling a name lookup surfaces as a lookup error, not a cancel.
        if not interrupted:
            ui.say(f"Cannot connect to {clean(host)}:{port}: {clean(str(e))}")
        return 1

    lost = False
    screens = Deferred.fromCoroutine(Screens(api, ui).run())

    def disconnected() -> None:
        nonlocal lost
        lost = True
        screens.cancel()

    ui.on_disconnect = disconnected
    ui.editor.on_interrupt = screens.cancel
    try:
        await screens
    except (Quit, CancelledError, ConnectionClosed):
        pass
    except Exception as e:
        log.failure("the client stopped on an unexpected error")
        ui.say(f"!! The client stopped on an unexpected error: {clean(repr(e))}")

    ui.on_disconnect = lambda: None
    if lost:
        ui.say("The connection to the server was lost.")
        return 1
    await log_out(reactor, api, ui)
    ui.say("Goodbye.")
    return 0


async def log_out(reactor: IReactorTime, api: ChatApi, ui: ConsoleUi) -> None:
    """
    Say goodbye to the server, without waiting long for its answer.
    """
    quitting = Deferred.fromCoroutine(api.quit())
    ui.editor.on_interrupt = quitting.cancel
    try:
        await quitting.addTimeout(QUIT_TIMEOUT_SECONDS, reactor)
    except Exception as e:
        log.info("logging out did not finish cleanly: {problem}", problem=str(e))
    api.close()


async def run(
    reactor: IReactorTime, options: argparse.Namespace, modes: TerminalModes
) -> None:
    """
    The client between start-up and exit, on a running reactor.
    """
    console = Console(reactor)
    modes.make_raw()
    ui = ConsoleUi(console.editor)
    status = await session(reactor, options.host, options.port, ui)
    await console.close()
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """
    The C{chat-client HOST PORT} command.
    """
    options = parse_args(argv)
    if options.log_file:
        observer = textFileLogObserver(open(options.log_file, "a", encoding="utf-8"))
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    modes = TerminalModes()
    try:
        react(run, (options, modes))
    finally:
        modes.restore()
