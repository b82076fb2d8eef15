"""
What the user sees: prompts, output lines and the events the server pushes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from twisted.logger import Logger
from twisted.python.failure import Failure

from client.connection import JsonObject
from client.model import MalformedData, Message, parse_event
from client.render import event_line, message_line
from client.terminal import LineEditor

QUIT_WORD = "bye"


class Quit(Exception):
    """
    The user typed C{bye}.
    """


class ConsoleUi:
    """
    Prompts and output on a L{LineEditor}; listens to the connection.

    @ivar me: the name of the logged-in user, empty before login.
    @ivar open_target: the conversation on screen, if any; its messages are
        shown in full, all others as one-line notifications.
    @ivar on_disconnect: called when the connection to the server ends.
    """

    log = Logger()

    def __init__(self, editor: LineEditor, tz: tzinfo | None = None) -> None:
        self.editor = editor
        self.me = ""
        self.open_target: str | None = None
        self.on_disconnect: Callable[[], None] = lambda: None
        self._tz = tz

    def say(self, text: str) -> None:
        """
        Print lines above the prompt; C{text} must already be safe to print.
        """
        for line in text.split("\n"):
            self.editor.show(line)

    def show_message(self, message: Message) -> None:
        self.editor.show(message_line(message, self._tz))

    async def ask(self, prompt: str, hidden: bool = False, keep: bool = True) -> str:
        """
        Read one line; visible answers are stripped and C{bye} raises L{Quit}.
        """
        line = await self.editor.read_line(prompt, hidden=hidden, keep=keep)
        if hidden:
            return line
        line = line.strip()
        if line.lower() == QUIT_WORD:
            raise Quit()
        return line

    def event_received(self, event: JsonObject) -> None:
        try:
            parsed = parse_event(event)
        except MalformedData as e:
            self.log.warn("ignored a malformed event: {problem}", problem=str(e))
            return
        if parsed is None:
            self.log.debug("ignored an event of type {type!r}", type=event["type"])
            return
        self.editor.show(event_line(parsed, self.me, self.open_target, self._tz))

    def connection_lost(self, reason: Failure) -> None:
        self.on_disconnect()
