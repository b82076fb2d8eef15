"""
The chat-client program: connect, run the screens, log out, restore the terminal.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import platformTrust
from twisted.internet.task import react
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from client.api import ChatApi
from client.connection import CertificateRejected, ConnectionClosed
from client.console import Console, TerminalModes
from client.render import clean
from client.screens import Screens
from client.session import Address, Connector, Session, tcp_connector
from client.tls import load_trust_root, tls_connector
from client.ui import ConsoleUi, Quit

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

QUIT_TIMEOUT_SECONDS = 2.0

log = Logger()


def parse_address(text: str) -> Address:
    """
    C{HOST:PORT}, with an IPv6 host in brackets: C{[::1]:4000}.
    """
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return Address(host, int(port))


def trust_root_file(path: str) -> IOpenSSLTrustRoot:
    """
    The certificates of the PEM file at C{path}, as the only ones trusted.
    """
    try:
        return load_trust_root(path)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"cannot use {path!r}: {e}") from e


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat-client",
        description="Talk to a chat server from a terminal.",
        epilog="When the connection drops, the client reconnects to the same"
        " server or the next of the given ones and resumes the session.",
    )
    parser.add_argument("host", help="name or address of the chat server")
    parser.add_argument("port", type=int, help="its TCP port")
    parser.add_argument(
        "more",
        nargs="*",
        type=parse_address,
        metavar="HOST:PORT",
        help="other servers of the same chat service, tried in turn",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS and verify each server's certificate against its"
        " host name",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        type=trust_root_file,
        dest="trust_root",
        help="with --tls, trust the certificates of this PEM file instead of the"
        " system's certificate authorities",
    )
    parser.add_argument("--log-file", help="append diagnostic logs to this file")
    options = parser.parse_args(argv)
    if options.trust_root is not None and not options.tls:
        parser.error("--cafile only makes sense with --tls")
    options.addresses = [Address(options.host, options.port), *options.more]
    return options


def connector_for(reactor: Any, options: argparse.Namespace) -> Connector:
    """
    Plain TCP, or TLS trusting the --cafile or else the system's authorities.
    """
    if not options.tls:
        return tcp_connector(reactor)
    trust_root = options.trust_root or platformTrust()  # type: ignore[no-untyped-call]
    return tls_connector(reactor, trust_root)


async def session(
    reactor: IReactorTime,
    addresses: Sequence[Address],
    ui: ConsoleUi,
    connect: Connector | None = None,
) -> int:
    """
    Run the whole session; the result is the exit status.
    """
    chat = Session(reactor, connect or tcp_connector(reactor), addresses, ui)
    ui.say(f"Connecting to {clean(str(addresses[0]))} ...")
    connecting = Deferred.fromCoroutine(chat.start())
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        connecting.cancel()

    ui.editor.on_interrupt = interrupt
    try:
        await connecting
    except CertificateRejected as e:
        ui.say(f"Cannot connect to {clean(str(chat.address))}: {clean(str(e))}")
        return 1
    except Exception as e:
        # Cancelling a name lookup surfaces as a lookup error, not a cancel.
        if not interrupted:
            tried = " or ".join(str(address) for address in addresses)
            ui.say(f"Cannot connect to {clean(tried)}: {clean(str(e))}")
        return 1

    api = ChatApi(chat)
    gave_up: list[str] = []
    screens = Deferred.fromCoroutine(Screens(api, ui).run())

    def ended(reason: str | None) -> None:
        if reason is not None:
            gave_up.append(reason)
            screens.cancel()

    chat.ended.addCallback(ended)
    ui.editor.on_interrupt = screens.cancel
    try:
        await screens
    except (Quit, CancelledError, ConnectionClosed):
        pass
    except Exception as e:
        log.failure("the client stopped on an unexpected error")
        ui.say(f"!! The client stopped on an unexpected error: {clean(repr(e))}")

    if gave_up:
        ui.say(clean(gave_up[0]))
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
    connect = connector_for(reactor, options)
    status = await session(reactor, options.addresses, ui, connect)
    await console.close()
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """
    The C{chat-client [--tls [--cafile FILE]] HOST PORT [HOST:PORT ...]} command.
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
