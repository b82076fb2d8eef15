"""
The real terminal: raw keyboard mode, and stdin/stdout through the reactor.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import termios
from types import FrameType
from typing import Any

from twisted.internet import defer, stdio
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from client.terminal import LineEditor

FLUSH_TIMEOUT_SECONDS = 2.0


class TerminalModes:
    """
    Saves the terminal settings of stdin and stdout and puts them back.
    """

    def __init__(self, stdin: int = 0, stdout: int = 1) -> None:
        self._stdin = stdin
        self._fds = (stdin, stdout)
        self._flags = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in self._fds}
        self._attrs: list[Any] | None = None
        if os.isatty(stdin):
            self._attrs = termios.tcgetattr(stdin)

    def make_raw(self) -> None:
        """
        Deliver every key at once, unechoed, with Ctrl-C as a plain byte.

        Output processing stays on, so a newline still starts a new line.
        """
        if self._attrs is None:
            return
        attrs = termios.tcgetattr(self._stdin)
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        attrs[0] &= ~termios.IXON
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._stdin, termios.TCSANOW, attrs)

    def restore(self) -> None:
        """
        Put back the settings found at start; safe to call more than once.
        """
        if self._attrs is not None:
            termios.tcsetattr(self._stdin, termios.TCSADRAIN, self._attrs)
        for fd, flags in self._flags.items():
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)


@implementer(IHalfCloseableProtocol)
class _Keyboard(Protocol):
    def __init__(self, editor: LineEditor) -> None:
        self._editor = editor
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._editor.feed(data)

    def readConnectionLost(self) -> None:
        # End of input (a closed pipe) means the same as Ctrl-D.
        self._editor.on_interrupt()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


class Console:
    """
    A line editor wired to stdin and stdout of this process.
    """

    def __init__(self, reactor: IReactorTime, stdin: int = 0, stdout: int = 1) -> None:
        self._reactor = reactor
        self.editor = LineEditor(self._write, shutil.get_terminal_size().columns)
        self._keyboard = _Keyboard(self.editor)
        self._stdio = stdio.StandardIO(
            self._keyboard, stdin=stdin, stdout=stdout, reactor=reactor
        )
        self._previous_winch = signal.signal(signal.SIGWINCH, self._resized)

    def _write(self, text: str) -> None:
        self._stdio.write(text.encode("utf-8", errors="replace"))

    def _resized(self, signum: int, frame: FrameType | None) -> None:
        self.editor.columns = shutil.get_terminal_size().columns

    async def close(self) -> None:
        """
        Stop reading keys and wait, for a short while, until output is written.
        """
        signal.signal(signal.SIGWINCH, self._previous_winch)
        self._stdio.loseConnection()
        try:
            await self._keyboard.closed.addTimeout(FLUSH_TIMEOUT_SECONDS, self._reactor)
        except defer.TimeoutError:
            pass
