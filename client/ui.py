"""
What the user sees: prompts, output lines and the events the server pushes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import tzinfo

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from client.connection import JsonObject
from client.model import Away, MalformedData, Message, MessageEvent, parse_event
from client.render import (
    away_line,
    clean,
    event_line,
    interrupted_line,
    message_line,
    reconnected_line,
)
from client.terminal import LineEditor

QUIT_WORD = "bye"

# How many ids of pushed and sent messages are remembered to show each once.
REMEMBERED_MESSAGES = 1000


class Quit(Exception):
    """
    The user typed C{bye}.
    """


class ConsoleUi:
    """
    Prompts and output on a L{LineEditor}; listens to the connection or to
    the session that reconnects it.

    @ivar me: the name of the logged-in user, empty before login.
    @ivar open_target: the conversation on screen, if any; its messages are
        shown in full, all others as one-line notifications.
    @ivar on_disconnect: called when a single connection to the server ends.
    @ivar offline: whether the session is waiting to reconnect.
    """

    log = Logger()

    def __init__(self, editor: LineEditor, tz: tzinfo | None = None) -> None:
        self.editor = editor
        self.me = ""
        self.open_target: str | None = None
        self.on_disconnect: Callable[[], None] = lambda: None
        self.offline = False
        self._tz = tz
        self._shown: deque[int] = deque(maxlen=REMEMBERED_MESSAGES)

    def say(self, text: str) -> None:
        """
        Print lines above the prompt; C{text} must already be safe to print.
        """
        for line in text.split("\n"):
            self.editor.show(line)

    def show_message(self, message: Message) -> None:
        self.editor.show(message_line(message, self._tz))

    def show_sent(self, message: Message) -> None:
        """
        Show the user's own message as the server stored it, unless a resume
        already replayed it: a resent line comes back with the original id.
        """
        if self._first_time(message):
            self.show_message(message)

    def _first_time(self, message: Message) -> bool:
        if message.id in self._shown:
            return False
        self._shown.append(message.id)
        return True

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
        if isinstance(parsed, MessageEvent) and not self._first_time(parsed.message):
            return
        self.editor.show(event_line(parsed, self.me, self.open_target, self._tz))

    def connection_lost(self, reason: Failure) -> None:
        self.on_disconnect()

    def connection_interrupted(self, delay: float) -> None:
        self.offline = True
        self.editor.show(interrupted_line(delay))

    def reconnected(self, missed: int) -> None:
        self.offline = False
        self.editor.show(reconnected_line(missed))

    def logged_in_again(self, away: Away) -> None:
        self.offline = False
        self.editor.show(f"reconnected and logged in again as {clean(self.me)}.")
        summary = away_line(away)
        if summary is not None:
            self.editor.show(summary)

    def ask_password(self, user: str) -> Deferred[str]:
        self.editor.show(
            f"The server no longer knows this session; log in again as {clean(user)}."
        )
        return self.editor.interject("Password: ", hidden=True)
