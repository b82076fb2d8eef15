"""
The menus: log in or sign up, then the main menu and its screens.

C{back} returns to the previous screen and C{bye} (raised as L{Quit} by the
UI) ends the session from anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from client.api import ChatApi
from client.connection import ServerError
from client.conversation import BACK_WORD, Conversation
from client.model import BROADCAST, GROUP_PREFIX, Away, Contact, Group, MalformedData
from client.render import away_line, clean
from client.ui import ConsoleUi

T = TypeVar("T")

START_MENU = "1. Login\n2. Sign up\nType 'bye' to quit."

MAIN_MENU = "\n".join(
    [
        "---------------- Main menu ----------------",
        "1. Private Messages",
        "2. Broadcast Channel",
        "3. My Groups",
        "4. Browse All Groups",
        "5. Create New Group",
        "Type 'bye' to log out.",
    ]
)


def pick(items: Sequence[T], answer: str, name: Callable[[T], str]) -> T | None:
    """
    The item chosen by its number in the list or by its name.
    """
    if answer.isdigit():
        index = int(answer)
        return items[index - 1] if 1 <= index <= len(items) else None
    wanted = answer.removeprefix(GROUP_PREFIX).casefold()
    return next((item for item in items if name(item).casefold() == wanted), None)


def _contact_line(number: int, contact: Contact) -> str:
    mark = "online" if contact.online else "offline"
    return f"{number:3}. {clean(contact.name)} [{mark}]"


def _group_line(number: int, group: Group) -> str:
    access = "private" if group.private else "public"
    role = f", {clean(group.role)}" if group.role else ""
    about = f" - {clean(group.description)}" if group.description else ""
    size = f"{group.members} member" + ("" if group.members == 1 else "s")
    return f"{number:3}. #{clean(group.name)}{about} ({size}, {access}{role})"


class Screens:
    """
    The whole session of one user, from the start screen to C{bye}.
    """

    def __init__(self, api: ChatApi, ui: ConsoleUi) -> None:
        self._api = api
        self._ui = ui

    async def run(self) -> None:
        await self.start()
        await self.main_menu()

    async def start(self) -> None:
        """
        Ask until the user has logged in or signed up.
        """
        while True:
            self._ui.say(START_MENU)
            choice = await self._ui.ask("Choose 1 or 2: ")
            if choice == "1" and await self._login():
                return
            if choice == "2" and await self._signup():
                return

    async def _login(self) -> bool:
        while True:
            name = await self._ui.ask("Username (or back): ")
            if name == BACK_WORD:
                return False
            password = await self._ui.ask("Password: ", hidden=True)
            try:
                self._welcome(*await self._api.login(name, password))
            except ServerError as e:
                self._ui.say(f"Login failed: {clean(e.message)}")
                continue
            return True

    async def _signup(self) -> bool:
        while True:
            name = await self._ui.ask("Choose a username (or back): ")
            if name == BACK_WORD:
                return False
            password = await self._ui.ask("Choose a password: ", hidden=True)
            again = await self._ui.ask("Type the password again: ", hidden=True)
            if password != again:
                self._ui.say("The passwords do not match; try again.")
                continue
            try:
                self._welcome(*await self._api.signup(name, password))
            except ServerError as e:
                self._ui.say(f"Sign-up failed: {clean(e.message)}")
                continue
            return True

    def _welcome(self, user: str, away: Away) -> None:
        self._ui.me = user
        self._ui.say(f"Welcome, {clean(user)}!")
        summary = away_line(away)
        if summary is not None:
            self._ui.say(summary)

    async def main_menu(self) -> None:
        """
        Offer the main menu until the user says C{bye}.
        """
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "1": self.private_messages,
            "2": self.broadcast,
            "3": self.my_groups,
            "4": self.browse_groups,
            "5": self.create_group,
        }
        while True:
            self._ui.say(MAIN_MENU)
            action = actions.get(await self._ui.ask("Choose 1-5: "))
            if action is None:
                continue
            try:
                await action()
            except ServerError as e:
                self._ui.say(f"!! {clean(e.message)}")
            except MalformedData:
                self._ui.say("!! The server sent a reply this client cannot read.")

    async def _chat(self, target: str) -> None:
        try:
            await Conversation(self._api, self._ui, target).run()
        except ServerError as e:
            self._ui.say(f"!! {clean(e.message)}")

    async def private_messages(self) -> None:
        while True:
            users = await self._api.users()
            contacts = [user for user in users if user.name != self._ui.me]
            if not contacts:
                self._ui.say("There is nobody else to talk to yet.")
                return
            self._ui.say("Users:")
            for number, contact in enumerate(contacts, 1):
                self._ui.say(_contact_line(number, contact))
            answer = await self._ui.ask("Talk to (number or name, or back): ")
            if answer == BACK_WORD:
                return
            chosen = pick(contacts, answer, lambda contact: contact.name)
            if chosen is None:
                self._ui.say("No such user in the list.")
            else:
                await self._chat(chosen.name)

    async def broadcast(self) -> None:
        await self._chat(BROADCAST)

    async def my_groups(self) -> None:
        while True:
            groups = await self._api.my_groups()
            if not groups:
                self._ui.say("You are not in any group yet.")
                return
            chosen = await self._choose_group("Your groups:", groups, "Open")
            if chosen is None:
                return
            await self._chat(chosen.target)

    async def browse_groups(self) -> None:
        search = await self._ui.ask("Search groups (empty for all, or back): ")
        if search == BACK_WORD:
            return
        while True:
            groups = await self._api.all_groups(search)
            if not groups:
                self._ui.say("No group matches.")
                return
            chosen = await self._choose_group("Groups:", groups, "Join or open")
            if chosen is None:
                return
            if chosen.role is None:
                try:
                    await self._api.join(chosen.name)
                except ServerError as e:
                    self._ui.say(f"!! {clean(e.message)}")
                    continue
                self._ui.say(f"You joined #{clean(chosen.name)}.")
            await self._chat(chosen.target)

    async def _choose_group(
        self, title: str, groups: list[Group], verb: str
    ) -> Group | None:
        """
        List C{groups} and ask for one; None when the user goes back.
        """
        while True:
            self._ui.say(title)
            for number, group in enumerate(groups, 1):
                self._ui.say(_group_line(number, group))
            answer = await self._ui.ask(f"{verb} (number or name, or back): ")
            if answer == BACK_WORD:
                return None
            chosen = pick(groups, answer, lambda group: group.name)
            if chosen is not None:
                return chosen
            self._ui.say("No such group in the list.")

    async def create_group(self) -> None:
        name = await self._ui.ask("Name of the new group (or back): ")
        if name in ("", BACK_WORD):
            return
        description = await self._ui.ask("Description: ")
        name = name.removeprefix(GROUP_PREFIX)
        group = await self._api.create_group(name, description)
        self._ui.say(f"Created #{clean(group.name)}; it is listed under My Groups.")
