"""
A one-line input editor that lets other output appear above the line.

The editor receives raw key bytes and writes text with ANSI cursor controls.
When something must be shown while the user is typing, it erases the input
line, prints the text and draws the prompt and the partial input again.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed

ESC = "\x1b"
ERASE_TO_END = ESC + "[J"
MAX_ESCAPE_CHARS = 32

ENTER_KEYS = "\r\n"
BACKSPACE_KEYS = "\x7f\x08"
CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_U = "\x15"
CTRL_W = "\x17"


class LineEditor:
    """
    Line input with a prompt, hidden input and output printed above it.

    @ivar columns: the terminal width, used to erase input that wrapped.
    @ivar on_interrupt: called on Ctrl-C, and on Ctrl-D at an empty line.
    """

    def __init__(self, write: Callable[[str], None], columns: int = 80) -> None:
        self._write = write
        self.columns = columns
        self.on_interrupt: Callable[[], None] = lambda: None
        self._prompt = ""
        self._hidden = False
        self._keep = True
        self._buffer: list[str] = []
        self._reader: Deferred[str] | None = None
        self._typed_ahead: deque[str] = deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = ""
        self._after_cr = False

    def read_line(
        self, prompt: str, hidden: bool = False, keep: bool = True
    ) -> Deferred[str]:
        """
        Show C{prompt} and fire with the next line the user enters.

        Hidden input is not echoed at all.  Unless C{keep}, the finished line
        is erased from the screen instead of staying above the next prompt.
        """
        if self._reader is not None:
            raise RuntimeError("a line is already being read")
        if self._typed_ahead:
            return succeed(self._typed_ahead.popleft())

        erase = self._erase()
        self._prompt, self._hidden, self._keep = prompt, hidden, keep
        self._reader = Deferred(canceller=self._cancel_read)
        self._write(erase + self._visible())
        return self._reader

    def interject(self, prompt: str, hidden: bool = False) -> Deferred[str]:
        """
        Ask C{prompt} now, ahead of the line being read, if any.

        The prompt being answered and its partial input are set aside and
        come back unchanged once this line is entered or cancelled.  Lines
        typed ahead are left for whoever reads next.
        """
        set_aside = (self._reader, self._prompt, self._hidden, self._keep)
        buffer = self._buffer
        erase = self._erase()
        self._buffer = []
        self._prompt, self._hidden, self._keep = prompt, hidden, True
        reader: Deferred[str] = Deferred(canceller=self._cancel_read)
        self._reader = reader
        self._write(erase + self._visible())

        def restore(result: object) -> object:
            erase = self._erase()
            self._reader, self._prompt, self._hidden, self._keep = set_aside
            self._buffer = buffer
            self._write(erase + self._visible())
            return result

        reader.addBoth(restore)
        return reader

    def show(self, text: str) -> None:
        """
        Print a line of output above the input line.
        """
        self._write(self._erase() + text + "\n" + self._visible())

    def feed(self, data: bytes) -> None:
        """
        Handle bytes read from the keyboard.
        """
        for char in self._decoder.decode(data):
            self._key(char)

    @property
    def text(self) -> str:
        """
        The partial input typed so far.
        """
        return "".join(self._buffer)

    def _visible(self) -> str:
        return self._prompt + ("" if self._hidden else self.text)

    def _erase(self) -> str:
        # The cursor sits after the last visible character; input longer
        # than the terminal wrapped onto rows above it.
        rows_above = max(len(self._visible()) - 1, 0) // max(self.columns, 1)
        up = f"{ESC}[{rows_above}A" if rows_above else ""
        return "\r" + up + ERASE_TO_END

    def _key(self, char: str) -> None:
        if self._escape or char == ESC:
            self._skip_escape(char)
            return

        after_cr, self._after_cr = self._after_cr, char == "\r"
        if char in ENTER_KEYS:
            if not (char == "\n" and after_cr):
                self._enter()
        elif char in BACKSPACE_KEYS:
            self._edit(lambda: self._buffer.pop() if self._buffer else None)
        elif char == CTRL_U:
            self._edit(self._buffer.clear)
        elif char == CTRL_W:
            self._edit(self._delete_word)
        elif char == CTRL_C or (char == CTRL_D and not self._buffer):
            self.on_interrupt()
        elif unicodedata.category(char) != "Cc":
            self._buffer.append(char)
            if not self._hidden:
                self._write(char)

    def _skip_escape(self, char: str) -> None:
        # Arrow keys and other sequences are dropped: ESC [ ... final byte,
        # ESC O x, or ESC followed by a single character.  A control key
        # ends an unfinished sequence and then acts as usual.
        sequence = self._escape + char
        if char == ESC:
            self._escape = ESC
        elif unicodedata.category(char) == "Cc":
            self._escape = ""
            self._key(char)
        elif sequence in (ESC + "[", ESC + "O"):
            self._escape = sequence
        elif (
            sequence.startswith(ESC + "[")
            and not "\x40" <= char <= "\x7e"
            and len(sequence) < MAX_ESCAPE_CHARS
        ):
            self._escape = sequence
        else:
            self._escape = ""

    def _edit(self, change: Callable[[], object]) -> None:
        erase = self._erase()
        change()
        self._write(erase + self._visible())

    def _delete_word(self) -> None:
        while self._buffer and self._buffer[-1] == " ":
            self._buffer.pop()
        while self._buffer and self._buffer[-1] != " ":
            self._buffer.pop()

    def _enter(self) -> None:
        line = self.text
        self._write("\n" if self._keep else self._erase())
        self._buffer.clear()
        self._prompt, self._hidden, self._keep = "", False, True

        reader, self._reader = self._reader, None
        if reader is None:
            self._typed_ahead.append(line)
        else:
            reader.callback(line)

    def _cancel_read(self, reader: Deferred[str]) -> None:
        # The partial input answered the cancelled prompt; it goes too.
        self._write(self._erase())
        self._reader = None
        self._buffer.clear()
        self._prompt, self._hidden, self._keep = "", False, True
