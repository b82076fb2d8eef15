"""
The chat commands as typed calls over a connection or a reconnecting session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from client.connection import JsonObject, Requester
from client.model import Away, Contact, Group, MalformedData, Member, Message

HISTORY_LIMIT = 50


def _list(reply: JsonObject, key: str) -> list[Any]:
    items = reply.get(key)
    if not isinstance(items, list):
        raise MalformedData(f"{key!r} should be a list")
    return items


def _logged_in(reply: JsonObject, name: str) -> tuple[str, Away]:
    user = reply.get("user")
    if not isinstance(user, str) or not user:
        user = name
    return user, Away.from_json(reply.get("away"))


class ChatApi:
    """
    One user's commands; each call waits for the server's reply.
    """

    def __init__(
        self,
        protocol: Requester,
        new_ref: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._protocol = protocol
        self._new_ref = new_ref

    async def _call(self, cmd: str, **fields: Any) -> JsonObject:
        return await self._protocol.request(cmd, **fields)

    async def login(self, name: str, password: str) -> tuple[str, Away]:
        """
        Log in; returns the name the server knows the user by and the away counts.
        """
        reply = await self._call("login", name=name, password=password)
        return _logged_in(reply, name)

    async def signup(self, name: str, password: str) -> tuple[str, Away]:
        """
        Create an account, which also logs in.
        """
        reply = await self._call("signup", name=name, password=password)
        return _logged_in(reply, name)

    async def send(self, target: str, text: str) -> Message:
        """
        Send a message under a fresh C{ref}, so a resend is stored only once.
        """
        reply = await self._call("msg", target=target, text=text, ref=self._new_ref())
        return Message.from_json(reply.get("message"))

    async def history(self, target: str, limit: int = HISTORY_LIMIT) -> list[Message]:
        reply = await self._call("history", target=target, limit=limit)
        return [Message.from_json(item) for item in _list(reply, "messages")]

    async def users(self) -> list[Contact]:
        reply = await self._call("users")
        return [Contact.from_json(item) for item in _list(reply, "users")]

    async def my_groups(self) -> list[Group]:
        reply = await self._call("groups")
        return [Group.from_json(item) for item in _list(reply, "groups")]

    async def all_groups(self, search: str = "") -> list[Group]:
        fields = {"search": search} if search else {}
        reply = await self._call("groups_all", **fields)
        return [Group.from_json(item) for item in _list(reply, "groups")]

    async def create_group(self, name: str, description: str) -> Group:
        reply = await self._call("group_create", name=name, description=description)
        return Group.from_json(reply.get("group"))

    async def invite(self, group: str, user: str) -> None:
        await self._call("group_invite", group=group, user=user)

    async def remove(self, group: str, user: str) -> None:
        await self._call("group_remove", group=group, user=user)

    async def join(self, group: str) -> None:
        await self._call("group_join", group=group)

    async def leave(self, group: str) -> None:
        await self._call("group_leave", group=group)

    async def members(self, group: str) -> list[Member]:
        reply = await self._call("group_members", group=group)
        return [Member.from_json(item) for item in _list(reply, "members")]

    async def set_private(self, group: str, private: bool) -> None:
        await self._call("group_private", group=group, private=private)

    def close(self) -> None:
        """
        Drop the connection without logging out.
        """
        self._protocol.close()

    async def quit(self) -> None:
        """
        Log out; the server answers and then closes the connection.
        """
        await self._call("quit")
