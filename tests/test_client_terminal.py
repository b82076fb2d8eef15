"""
Tests for L{client.terminal.LineEditor}, checked on a model of the screen.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from client.terminal import LineEditor

CONTROL = re.compile(r"\x1b\[(\d*)([AJK])|[\r\n]|[^\x1b\r\n]")


class Screen:
    """
    Just enough of a terminal to replay what the editor writes.

    It understands carriage return, newline, cursor up, erase to end of line
    and erase to end of screen, and wraps at C{columns}.
    """

    def __init__(self, columns: int = 80) -> None:
        self.columns = columns
        self.rows: list[str] = [""]
        self.row = 0
        self.column = 0
        self.written = ""

    def write(self, text: str) -> None:
        self.written += text
        for match in CONTROL.finditer(text):
            self._apply(match)

    def _apply(self, match: re.Match[str]) -> None:
        char = match.group(0)
        if char == "\r":
            self.column = 0
        elif char == "\n":
            self._next_row()
        elif match.group(2) == "A":
            self.row -= int(match.group(1) or 1)
        elif match.group(2) in ("J", "K"):
            self.rows[self.row] = self.rows[self.row][: self.column]
            if match.group(2) == "J":
                del self.rows[self.row + 1 :]
        else:
            if self.column == self.columns:
                self._next_row()
            line = self.rows[self.row].ljust(self.column)
            self.rows[self.row] = line[: self.column] + char + line[self.column + 1 :]
            self.column += 1

    def _next_row(self) -> None:
        self.row += 1
        self.column = 0
        if self.row == len(self.rows):
            self.rows.append("")

    @property
    def lines(self) -> list[str]:
        return [row.rstrip() for row in self.rows]


class LineEditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.screen = Screen()
        self.editor = LineEditor(self.screen.write, columns=self.screen.columns)
        self.interrupts = 0

        def interrupted() -> None:
            self.interrupts += 1

        self.editor.on_interrupt = interrupted

    def test_typing_and_enter(self) -> None:
        """
        Typed characters are echoed after the prompt and Enter ends the line.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"hello")
        self.assertEqual(self.screen.lines, ["> hello"])

        self.editor.feed(b"\r")

        self.assertEqual(self.successResultOf(line), "hello")
        self.assertEqual(self.screen.lines, ["> hello", ""])

    def test_backspace(self) -> None:
        """
        Backspace and DEL remove the last character from input and screen.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"helpp\x7f\x7f\x08lo")
        self.assertEqual(self.screen.lines, ["> helo"])
        self.editor.feed(b"\x7f" * 10 + b"ok\n")
        self.assertEqual(self.successResultOf(line), "ok")

    def test_incoming_line_redraws_partial_input(self) -> None:
        """
        Output shown while typing goes above the prompt, which keeps the input.
        """
        line = self.editor.read_line("you> ")
        self.editor.feed(b"half a sen")

        self.editor.show("bob: hello")
        self.editor.show("carol: hi")

        self.assertEqual(
            self.screen.lines, ["bob: hello", "carol: hi", "you> half a sen"]
        )
        self.editor.feed(b"tence\r")
        self.assertEqual(self.successResultOf(line), "half a sentence")

    def test_incoming_line_redraws_wrapped_input(self) -> None:
        """
        Input longer than the terminal width is erased entirely before output.
        """
        self.screen.columns = self.editor.columns = 10
        self.editor.read_line("> ")
        self.editor.feed(b"abcdefghijklmnopqrstu")

        self.editor.show("news")

        self.assertEqual(self.screen.lines, ["news", "> abcdefgh", "ijklmnopqr", "stu"])

    def test_hidden_input(self) -> None:
        """
        Hidden input is never written, not even when output redraws the line.
        """
        line = self.editor.read_line("Password: ", hidden=True)
        self.editor.feed(b"s3cret")
        self.editor.show("-- bob is now online")
        self.editor.feed(b"\r")

        self.assertEqual(self.successResultOf(line), "s3cret")
        self.assertNotIn("s3cret", self.screen.written)
        self.assertEqual(self.screen.lines, ["-- bob is now online", "Password:", ""])

    def test_line_not_kept(self) -> None:
        """
        A line read with C{keep=False} disappears from the screen on Enter.
        """
        self.editor.show("before")
        line = self.editor.read_line("> ", keep=False)
        self.editor.feed(b"gone\r")

        self.assertEqual(self.successResultOf(line), "gone")
        self.assertEqual(self.screen.lines, ["before", ""])

    def test_escape_sequences_ignored(self) -> None:
        """
        Arrow keys and other escape sequences do not reach the input.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"a\x1b[Ab\x1bOCc\x1b[1;5Dd\x1bxe\r")
        self.assertEqual(self.successResultOf(line), "abcde")

    def test_control_key_after_escape(self) -> None:
        """
        A control key right after a lone Escape still acts.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"junk\x1b\x15ok\r")
        self.assertEqual(self.successResultOf(line), "ok")

    def test_utf8_split_across_reads(self) -> None:
        """
        A multibyte character split between two reads arrives whole.
        """
        line = self.editor.read_line("> ")
        data = "né€".encode()
        self.editor.feed(data[:2])
        self.editor.feed(data[2:] + b"\r")
        self.assertEqual(self.successResultOf(line), "né€")

    def test_kill_line_and_word(self) -> None:
        """
        Ctrl-U clears the input and Ctrl-W deletes the last word.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"scrap this\x15one two  \x17three\r")
        self.assertEqual(self.successResultOf(line), "one three")

    def test_interrupt_keys(self) -> None:
        """
        Ctrl-C interrupts; Ctrl-D interrupts only at an empty line.
        """
        self.editor.read_line("> ")
        self.editor.feed(b"x\x04")
        self.assertEqual(self.interrupts, 0)
        self.editor.feed(b"\x03\x15\x04")
        self.assertEqual(self.interrupts, 2)

    def test_cancel_read(self) -> None:
        """
        Cancelling a read removes its prompt and input; the next read works.
        """
        first = self.editor.read_line("first> ")
        self.editor.feed(b"abandoned")
        first.cancel()
        self.failureResultOf(first)
        second = self.editor.read_line("second> ")
        self.editor.feed(b"ok\r")
        self.assertEqual(self.successResultOf(second), "ok")
        self.assertEqual(self.screen.lines, ["second> ok", ""])

    def test_typed_ahead(self) -> None:
        """
        A line entered while nothing is reading goes to the next read.
        """
        self.editor.feed(b"early\r\n")
        self.assertEqual(self.successResultOf(self.editor.read_line("> ")), "early")
        self.assertNoResult(self.editor.read_line("> "))

    def test_control_characters_not_inserted(self) -> None:
        """
        Other control characters typed by the user are dropped.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"a\x07b\x00c\tz\r")
        self.assertEqual(self.successResultOf(line), "abcz")

    def test_interject_sets_line_aside(self) -> None:
        """
        An interjected hidden prompt takes the keys, then the prompt it
        interrupted comes back with its partial input unchanged.
        """
        line = self.editor.read_line("[broadcast] > ", keep=False)
        self.editor.feed(b"half typed")

        password = self.editor.interject("Password: ", hidden=True)
        self.assertEqual(self.screen.lines, ["Password:"])
        self.editor.feed(b"s3cret\r")

        self.assertEqual(self.successResultOf(password), "s3cret")
        self.assertNoResult(line)
        self.assertEqual(self.screen.lines, ["Password:", "[broadcast] > half typed"])
        self.assertNotIn("s3cret", self.screen.written)
        self.editor.feed(b" line\r")
        self.assertEqual(self.successResultOf(line), "half typed line")

    def test_interject_cancelled(self) -> None:
        """
        Cancelling an interjected prompt also brings the earlier one back.
        """
        line = self.editor.read_line("> ")
        self.editor.feed(b"abc")
        password = self.editor.interject("Password: ", hidden=True)
        self.editor.feed(b"xy")

        password.cancel()

        self.failureResultOf(password)
        self.assertEqual(self.screen.lines, ["> abc"])
        self.editor.feed(b"\r")
        self.assertEqual(self.successResultOf(line), "abc")

    def test_interject_leaves_typed_ahead(self) -> None:
        """
        Lines typed ahead stay for the next reader, not the interjection.
        """
        self.editor.feed(b"queued\r")
        password = self.editor.interject("Password: ", hidden=True)
        self.assertNoResult(password)
        self.editor.feed(b"pw\r")

        self.assertEqual(self.successResultOf(password), "pw")
        self.assertEqual(self.successResultOf(self.editor.read_line("> ")), "queued")
