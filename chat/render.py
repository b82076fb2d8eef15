"""
How replies and events look: plain lines for people, JSON objects for programs.

Both renderers offer the same methods and return the lines to send, so the
protocol picks one per connection and never formats anything itself.  Text
that came from a person is neutralised here, at the last step before it
reaches another terminal.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any, Protocol

from chat.events import Event, GroupEvent, MessageEvent, NoticeEvent, PresenceEvent
from chat.records import AwayCounts, Group, Kind, Member, Message
from chat.service import Login, Resumed, Sent, UserStatus
from chat.text import neutralise


def iso(when: datetime) -> str:
    """
    A UTC timestamp in ISO 8601 with millisecond precision and a C{Z}.
    """
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def wire(lines: list[str]) -> list[bytes]:
    """
    Rendered lines as they go to the socket: UTF-8, each ended by CR LF.
    """
    return [line.encode("utf-8") + b"\r\n" for line in lines]


class Renderer(Protocol):
    def banner(self, server_id: str) -> list[str]: ...

    def mode(self, mode: str) -> list[str]: ...

    def welcome(self, cmd: str, login: Login, id: Any) -> list[str]: ...

    def resumed(self, resumed: Resumed, id: Any) -> list[str]: ...

    def pong(self, id: Any) -> list[str]: ...

    def sent(self, sent: Sent, me: str, open_target: str, id: Any) -> list[str]: ...

    def event(self, event: Event, me: str, open_target: str) -> list[str]: ...

    def viewpoint(self, event: Event, me: str, open_target: str) -> Hashable:
        """
        What, besides the event, decides how L{event} renders it: any two
        viewers with equal viewpoints get the same lines.
        """

    def history(
        self, target: str, messages: Sequence[Message], id: Any, opened: bool
    ) -> list[str]: ...

    def closed(self, target: str, id: Any) -> list[str]: ...

    def who(self, names: list[str], id: Any) -> list[str]: ...

    def users(self, users: list[UserStatus], id: Any) -> list[str]: ...

    def groups(self, groups: list[Group], browsing: bool, id: Any) -> list[str]: ...

    def members(self, group: Group, members: list[Member], id: Any) -> list[str]: ...

    def ok(self, cmd: str, text: str, fields: dict[str, Any], id: Any) -> list[str]: ...

    def help(self, lines: list[str], id: Any) -> list[str]: ...

    def bye(self, user: str | None, id: Any) -> list[str]: ...

    def error(self, code: str, text: str, id: Any) -> list[str]: ...


def _away_text(away: AwayCounts) -> str:
    if not away.total:
        return "No new messages while you were away."
    parts = [
        f"{n} {kind}"
        for kind, n in (
            ("private", away.private),
            ("group", away.group),
            ("broadcast", away.broadcast),
        )
        if n
    ]
    plural = "s" if away.total != 1 else ""
    return (
        f"{away.total} new message{plural} arrived while you were away"
        f" ({', '.join(parts)}); /open a conversation to read them."
    )


def conversation_of(message: Message, me: str) -> str:
    """
    The target under which C{me} would open this message's conversation.
    """
    if message.kind is Kind.PRIVATE:
        return message.target if message.sender == me else message.sender
    return message.target


class TextRenderer:
    """
    Lines for a person at a terminal.  Times are UTC.
    """

    def banner(self, server_id: str) -> list[str]:
        return [
            f"Welcome to chat ({server_id}). Times are shown in UTC.",
            "Type /signup to create an account or /login to log in."
            " /help lists every command.",
        ]

    def mode(self, mode: str) -> list[str]:
        return [f"ok: {mode} mode"]

    def _token(self, token: str) -> list[str]:
        return [
            f"token: {token}",
            "If you are cut off, connect again and type /resume and this token"
            " within 10 minutes.",
        ]

    def welcome(self, cmd: str, login: Login, id: Any) -> list[str]:
        user = login.user.name
        if cmd == "signup":
            first = f"Welcome, {user}! Your account is ready. /help lists commands."
        else:
            first = f"Welcome back, {user}! {_away_text(login.away)}"
        return [first, *self._token(login.token)]

    def resumed(self, resumed: Resumed, id: Any) -> list[str]:
        login = resumed.login
        count = login.away.total
        plural = "s" if count != 1 else ""
        return [
            f"Welcome back, {login.user.name}! Session resumed;"
            f" {count} message{plural} arrived while you were away.",
            *self._token(login.token),
        ]

    def pong(self, id: Any) -> list[str]:
        return ["pong"]

    def _line(self, message: Message, me: str, open_target: str, day: bool) -> str:
        stamp = message.created_at.strftime("%Y-%m-%d %H:%M" if day else "%H:%M")
        body = neutralise(message.body)
        sender = message.sender
        if day or conversation_of(message, me) == open_target:
            return f"[{stamp}] {sender}: {body}"
        if message.kind is Kind.PRIVATE:
            if sender == me:
                return f"[{stamp}] {sender} -> {message.target}: {body}"
            return f"[{stamp}] {sender} (private): {body}"
        if message.kind is Kind.GROUP:
            return f"[{stamp}] {sender} in {message.target}: {body}"
        return f"[{stamp}] {sender} to everyone: {body}"

    def sent(self, sent: Sent, me: str, open_target: str, id: Any) -> list[str]:
        return [self._line(sent.message, me, open_target, False)]

    def event(self, event: Event, me: str, open_target: str) -> list[str]:
        if isinstance(event, MessageEvent):
            return [self._line(event.message, me, open_target, False)]
        if isinstance(event, GroupEvent):
            if event.change == "invited":
                return [f"* {event.by} added you to #{event.group}"]
            return [f"* {event.by} removed you from #{event.group}"]
        if isinstance(event, NoticeEvent):
            return [f"*** {event.text}"]
        return []

    def viewpoint(self, event: Event, me: str, open_target: str) -> Hashable:
        # Only a message's line depends on the viewer, and only through the
        # branches of _line: open conversation, or which side of a private one.
        if not isinstance(event, MessageEvent):
            return None
        message = event.message
        if conversation_of(message, me) == open_target:
            return "open"
        if message.kind is Kind.PRIVATE:
            return "from me" if message.sender == me else "to me"
        return None

    def history(
        self, target: str, messages: Sequence[Message], id: Any, opened: bool
    ) -> list[str]:
        title = "everyone" if target == "*" else target
        if not messages:
            lines = [f"--- no messages with {title} yet ---"]
        else:
            count = f"{len(messages)} message" + ("s" if len(messages) > 1 else "")
            lines = [f"--- last {count} with {title} ---"]
            lines += [self._line(m, "", target, True) for m in messages]
        if opened:
            lines.append(
                f"--- now talking to {title}: lines without / go there;"
                " /back to leave ---"
            )
        return lines

    def closed(self, target: str, id: Any) -> list[str]:
        return [f"ok: left the conversation with {target}"]

    def who(self, names: list[str], id: Any) -> list[str]:
        return [f"Online ({len(names)}): {', '.join(names) or 'nobody'}"]

    def users(self, users: list[UserStatus], id: Any) -> list[str]:
        lines = [f"Users ({len(users)}):"]
        lines += [
            f"  {u.name:<20} {'online' if u.online else 'offline'}" for u in users
        ]
        return lines

    def groups(self, groups: list[Group], browsing: bool, id: Any) -> list[str]:
        title = "Groups" if browsing else "My groups"
        lines = [f"{title} ({len(groups)}):"]
        for g in groups:
            role = g.my_role.value if g.my_role else "-"
            access = "private" if g.is_private else "public"
            count = f"{g.member_count} member" + ("s" if g.member_count != 1 else "")
            lines.append(
                f"  #{g.name:<20} {role:<7} {count:<11} {access:<8}"
                f" {neutralise(g.description)}".rstrip()
            )
        if browsing and groups:
            lines.append("Join a public group with /group join NAME.")
        return lines

    def members(self, group: Group, members: list[Member], id: Any) -> list[str]:
        lines = [f"Members of #{group.name} ({len(members)}):"]
        lines += [
            f"  {m.name:<20} {m.role.value:<7} joined {m.joined_at:%Y-%m-%d}"
            for m in members
        ]
        return lines

    def ok(self, cmd: str, text: str, fields: dict[str, Any], id: Any) -> list[str]:
        return [f"ok: {text}"]

    def help(self, lines: list[str], id: Any) -> list[str]:
        return lines

    def bye(self, user: str | None, id: Any) -> list[str]:
        return [f"Bye, {user}." if user else "Bye."]

    def error(self, code: str, text: str, id: Any) -> list[str]:
        return [f"error: {text}"]


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind.value,
        "from": message.sender,
        "to": message.target,
        "text": message.body,
        "ts": iso(message.created_at),
    }


def group_json(group: Group) -> dict[str, Any]:
    return {
        "name": group.name,
        "description": group.description,
        "private": group.is_private,
        "members": group.member_count,
        "role": group.my_role.value if group.my_role else None,
    }


class JsonRenderer:
    """
    One JSON object a line, each with a C{type}; replies echo the command id.
    """

    def _out(self, type: str, id: Any = None, **fields: Any) -> list[str]:
        obj = {"type": type}
        if id is not None:
            obj["id"] = id
        obj.update(fields)
        return [json.dumps(obj, ensure_ascii=False, separators=(",", ":"))]

    def banner(self, server_id: str) -> list[str]:
        return self._out("hello", server=server_id)

    def mode(self, mode: str) -> list[str]:
        return self._out("mode", mode=mode)

    def welcome(self, cmd: str, login: Login, id: Any) -> list[str]:
        away = login.away
        counts = {
            "private": away.private,
            "group": away.group,
            "broadcast": away.broadcast,
        }
        return self._out(
            "ok",
            id,
            cmd=cmd,
            user=login.user.name,
            away=counts,
            token=login.token,
            last_id=login.seen_up_to,
        )

    def resumed(self, resumed: Resumed, id: Any) -> list[str]:
        login = resumed.login
        return self._out(
            "ok",
            id,
            cmd="resume",
            user=login.user.name,
            token=login.token,
            missed=login.away.total,
            gap=resumed.gap,
            last_id=login.seen_up_to,
        )

    def pong(self, id: Any) -> list[str]:
        return self._out("pong", id)

    def sent(self, sent: Sent, me: str, open_target: str, id: Any) -> list[str]:
        if sent.duplicate:
            return self._out(
                "sent", id, message=message_json(sent.message), duplicate=True
            )
        return self._out("sent", id, message=message_json(sent.message))

    def event(self, event: Event, me: str, open_target: str) -> list[str]:
        if isinstance(event, MessageEvent):
            return self._out("message", message=message_json(event.message))
        if isinstance(event, PresenceEvent):
            return self._out("presence", user=event.user, online=event.online)
        if isinstance(event, GroupEvent):
            return self._out(
                "group", event=event.change, group=event.group, by=event.by
            )
        fields: dict[str, Any] = {"text": event.text}
        if event.code:
            fields["code"] = event.code
        if event.retry_after is not None:
            fields["retry_after"] = event.retry_after
        return self._out("notice", **fields)

    def viewpoint(self, event: Event, me: str, open_target: str) -> Hashable:
        return None

    def history(
        self, target: str, messages: Sequence[Message], id: Any, opened: bool
    ) -> list[str]:
        return self._out(
            "history", id, target=target, messages=[message_json(m) for m in messages]
        )

    def closed(self, target: str, id: Any) -> list[str]:
        return self._out("ok", id, cmd="back", target=target)

    def who(self, names: list[str], id: Any) -> list[str]:
        return self._out("who", id, users=names)

    def users(self, users: list[UserStatus], id: Any) -> list[str]:
        return self._out(
            "users", id, users=[{"name": u.name, "online": u.online} for u in users]
        )

    def groups(self, groups: list[Group], browsing: bool, id: Any) -> list[str]:
        return self._out("groups", id, groups=[group_json(g) for g in groups])

    def members(self, group: Group, members: list[Member], id: Any) -> list[str]:
        return self._out(
            "members",
            id,
            group=group.name,
            members=[
                {"name": m.name, "role": m.role.value, "joined_at": iso(m.joined_at)}
                for m in members
            ],
        )

    def ok(self, cmd: str, text: str, fields: dict[str, Any], id: Any) -> list[str]:
        return self._out("ok", id, cmd=cmd, **fields)

    def help(self, lines: list[str], id: Any) -> list[str]:
        return self._out("help", id, text="\n".join(lines))

    def bye(self, user: str | None, id: Any) -> list[str]:
        return self._out("bye", id)

    def error(self, code: str, text: str, id: Any) -> list[str]:
        return self._out("error", id, code=code, message=text)
