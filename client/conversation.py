"""
An open conversation: its history, then each line typed is sent to it.

In a group, lines starting with C{/} are group commands instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from client.api import ChatApi
from client.background import spawn
from client.connection import ConnectionClosed, ServerError
from client.model import BROADCAST, GROUP_PREFIX, MalformedData
from client.render import clean, conversation_title
from client.ui import ConsoleUi

BACK_WORD = "back"

GROUP_HELP = (
    "Group commands: /members, /invite USER, /remove USER, /leave,"
    " /private on|off (admins)"
)


def _prompt(target: str) -> str:
    if target == BROADCAST:
        return "[broadcast] > "
    if target.startswith(GROUP_PREFIX):
        return f"[{clean(target)}] > "
    return f"[to {clean(target)}] > "


_Handler = Callable[[str, str], Awaitable[bool]]


class Conversation:
    """
    The screen of one conversation, until the user types C{back}.
    """

    def __init__(self, api: ChatApi, ui: ConsoleUi, target: str) -> None:
        self._api = api
        self._ui = ui
        self._target = target
        is_group = target.startswith(GROUP_PREFIX)
        self._group = target.removeprefix(GROUP_PREFIX) if is_group else None
        self._commands: dict[str, tuple[bool, _Handler]] = {
            # name: (takes an argument, handler returning True to close the chat)
            "members": (False, self._members),
            "invite": (True, self._invite),
            "remove": (True, self._remove),
            "leave": (False, self._leave),
            "private": (True, self._private),
        }

    async def run(self) -> None:
        await self._show_history()
        self._ui.open_target = self._target
        try:
            await self._chat()
        finally:
            self._ui.open_target = None

    async def _show_history(self) -> None:
        messages = await self._api.history(self._target)
        self._ui.say(f"=== {conversation_title(self._target)} ===")
        if not messages:
            self._ui.say("No messages yet.")
        for message in messages:
            self._ui.show_message(message)
        hint = "Type a message and press Enter; 'back' returns, 'bye' logs out."
        self._ui.say(hint if self._group is None else f"{hint}\n{GROUP_HELP}")

    async def _chat(self) -> None:
        while True:
            line = await self._ui.ask(_prompt(self._target), keep=False)
            if line == BACK_WORD:
                return
            if not line:
                continue
            try:
                if self._group is not None and line.startswith("/"):
                    if await self._command(self._group, line[1:]):
                        return
                else:
                    self._send_in_background(line)
            except ServerError as e:
                self._ui.say(f"!! {clean(e.message)}")

    def _send_in_background(self, line: str) -> None:
        # The prompt comes back at once, so lines typed while the connection
        # is down wait in the session, in order, instead of in the keyboard.
        if self._ui.offline:
            self._ui.say(f"(queued until reconnected) {clean(line)}")
        spawn("sending a message", self._send(line))

    async def _send(self, line: str) -> None:
        try:
            self._ui.show_sent(await self._api.send(self._target, line))
        except ServerError as e:
            self._ui.say(f"!! {clean(e.message)}")
        except MalformedData:
            self._ui.say("!! The server sent a reply this client cannot read.")
        except ConnectionClosed:
            self._ui.say(f"!! not sent: {clean(line)}")

    async def _command(self, group: str, line: str) -> bool:
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        takes_argument, handler = self._commands.get(name.lower(), (False, None))
        if handler is None or takes_argument != bool(argument):
            self._ui.say(GROUP_HELP)
            return False
        return await handler(group, argument)

    async def _members(self, group: str, argument: str) -> bool:
        members = await self._api.members(group)
        self._ui.say(f"Members of {clean(self._target)}:")
        for member in members:
            self._ui.say(f"  {clean(member.name)} ({clean(member.role)})")
        return False

    async def _invite(self, group: str, user: str) -> bool:
        await self._api.invite(group, user)
        self._ui.say(f"{clean(user)} is now a member of {clean(self._target)}.")
        return False

    async def _remove(self, group: str, user: str) -> bool:
        await self._api.remove(group, user)
        self._ui.say(f"{clean(user)} was removed from {clean(self._target)}.")
        return False

    async def _leave(self, group: str, argument: str) -> bool:
        await self._api.leave(group)
        self._ui.say(f"You left {clean(self._target)}.")
        return True

    async def _private(self, group: str, setting: str) -> bool:
        if setting not in ("on", "off"):
            self._ui.say(GROUP_HELP)
            return False
        await self._api.set_private(group, setting == "on")
        state = "private" if setting == "on" else "public"
        self._ui.say(f"{clean(self._target)} is now {state}.")
        return False
