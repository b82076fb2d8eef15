"""
An in-memory chat server that speaks the JSON contract, for the client's tests.

It follows the contract's wire format exactly (banner, C{/mode json}, replies
carrying the command's id, pushed events without one) and keeps users,
messages and groups in dictionaries.  Where the contract leaves a rule open
the fake picks a simple one: any member may invite, only admins may remove or
change privacy, and signing up also logs in.

Sessions follow the contract's last section: login and signup hand out a
token, C{ping} answers C{pong}, C{resume} rotates the token, takes over an
older connection of the same person and replays the messages after
C{last_id}, and a C{msg} whose C{ref} was seen before is not stored again.
The open rules here: a person has one live token at a time, a resume replays
the messages addressed to the person but, unless told to, not those the
person sent, and C{ping} is answered before login too.  One L{FakeChatState}
plays the shared database and each L{FakeChatFactory} one replica in front of
it, so tests can drop every connection of a replica, or announce its
maintenance, on demand.

Run C{python -m tests.fakeserver PORT [PORT ...]} to try the client against
it by hand: one replica per port; SIGUSR1 announces maintenance on all of
them and SIGUSR2 drops every connection.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

JsonObject = dict[str, Any]

BANNER = ["Fake chat server for tests.", "Send /mode json to talk JSON."]
NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
HISTORY_LIMIT = 50
BROADCAST = "*"
TOKEN_IDLE_SECONDS = 600.0
MAINTENANCE_TEXT = "SERVER MAINTENANCE: reconnecting in a few seconds"
GAP_TEXT = "Some messages from while you were away could not be replayed."


class Refusal(Exception):
    """
    A command failed; becomes an error reply.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


@dataclass
class FakeGroup:
    name: str
    description: str
    private: bool = False
    roles: dict[str, str] = field(default_factory=dict)
    joined: dict[str, str] = field(default_factory=dict)

    def as_json(self, me: str) -> JsonObject:
        return {
            "name": self.name,
            "description": self.description,
            "private": self.private,
            "members": len(self.roles),
            "role": self.roles.get(me),
        }


@dataclass
class FakeToken:
    user: str
    last_active: float


class FakeChatState:
    """
    Everything the fake server knows, shared by all its connections.

    @ivar replay_limit: the most messages a resume replays; beyond it the
        resume reports a gap.  None for no limit.
    @ivar replay_own: whether a resume also replays the person's own
        messages, which the contract leaves open.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.passwords: dict[str, str] = {}
        self.online: dict[str, FakeChatProtocol] = {}
        self.connections: set[FakeChatProtocol] = set()
        self.messages: list[JsonObject] = []
        self.groups: dict[str, FakeGroup] = {}
        self.away: dict[str, dict[str, int]] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.seen: dict[str, int] = {}
        self.refs: dict[tuple[str, str], JsonObject] = {}
        self.replay_limit: int | None = None
        self.replay_own = False

    def add_user(self, name: str, password: str) -> None:
        self.passwords[name] = password
        self.away[name] = {"private": 0, "group": 0, "broadcast": 0}

    def issue_token(self, user: str) -> str:
        """
        A fresh token for C{user}; any older one of theirs stops working.
        """
        self.revoke(user)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = FakeToken(user, self.clock.seconds())
        return token

    def token_user(self, token: str) -> str | None:
        """
        Whose session C{token} carries, if it is known and not expired.
        """
        held = self.tokens.get(token)
        if held is None:
            return None
        if self.clock.seconds() - held.last_active > TOKEN_IDLE_SECONDS:
            del self.tokens[token]
            return None
        return held.user

    def touch(self, user: str) -> None:
        """
        C{user} did something: their token stays valid a while longer.
        """
        for held in self.tokens.values():
            if held.user == user:
                held.last_active = self.clock.seconds()

    def revoke(self, user: str) -> None:
        for token in [t for t, held in self.tokens.items() if held.user == user]:
            del self.tokens[token]

    def missed(self, user: str, last_id: int) -> list[JsonObject]:
        """
        The messages for C{user} after C{last_id}, oldest first.
        """
        found = []
        for message in self.messages:
            if message["id"] <= last_id:
                continue
            if message["from"] == user:
                if self.replay_own:
                    found.append(message)
                continue
            to = message["to"]
            group = self.groups.get(to[1:]) if to.startswith("#") else None
            if to in (user, BROADCAST) or group is not None and user in group.roles:
                found.append(message)
        return found

    def drop_all(self) -> None:
        """
        Cut every connection at once, as a crashing server would.
        """
        for connection in list(self.connections):
            connection.transport.abortConnection()

    def now(self) -> str:
        moment = datetime.fromtimestamp(self.clock.seconds(), UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def push(self, user: str, event: JsonObject) -> None:
        connection = self.online.get(user)
        if connection is not None:
            connection.send(event)

    def deliver(
        self, kind: str, sender: str, to: str, recipients: list[str], text: str
    ) -> JsonObject:
        """
        Store a message and push it to the recipients who are online.
        """
        message = {
            "id": len(self.messages) + 1,
            "kind": kind,
            "from": sender,
            "to": to,
            "text": text,
            "ts": self.now(),
        }
        self.messages.append(message)
        self.seen[sender] = message["id"]
        for user in recipients:
            if user == sender:
                continue
            if user in self.online:
                self.seen[user] = message["id"]
                self.push(user, {"type": "message", "message": message})
            else:
                self.away[user][kind] += 1
        return message

    def group(self, name: Any) -> FakeGroup:
        group = self.groups.get(name) if isinstance(name, str) else None
        if group is None:
            raise Refusal("no_such_group", f"there is no group {name!r}")
        return group

    def user(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self.passwords:
            raise Refusal("no_such_user", f"there is no user {name!r}")
        return name


def _text(command: JsonObject, key: str) -> str:
    value = command.get(key)
    if not isinstance(value, str):
        raise Refusal("bad_request", f"{key!r} must be a string")
    return value


def _group_name(command: JsonObject) -> str:
    return _text(command, "group")


Handler = Callable[["FakeChatProtocol", JsonObject], JsonObject]


class FakeChatProtocol(LineReceiver):
    """
    One client connection to the fake server.
    """

    delimiter = b"\n"

    def __init__(
        self, state: FakeChatState, replica: FakeChatFactory | None = None
    ) -> None:
        self.state = state
        self.replica = replica
        self.user: str | None = None
        self.json_mode = False
        self.silent = False
        self.received: list[JsonObject] = []
        self._after_reply: list[JsonObject] = []

    def connectionMade(self) -> None:
        self.state.connections.add(self)
        if self.replica is not None:
            self.replica.connections.add(self)
        for line in BANNER:
            self.sendLine(line.encode("utf-8"))

    def connectionLost(self, reason: object = None) -> None:
        self.state.connections.discard(self)
        if self.replica is not None:
            self.replica.connections.discard(self)
        if self.user is not None and self.state.online.get(self.user) is self:
            del self.state.online[self.user]
            self._announce(online=False)

    def send(self, obj: JsonObject) -> None:
        if not self.silent:
            self.sendLine(json.dumps(obj).encode("utf-8"))

    def go_silent(self) -> None:
        """
        Stop answering anything while the connection stays open, as a link
        does when the network in between dies quietly.
        """
        self.silent = True

    def replaced(self) -> None:
        """
        A resume elsewhere took this session over: say so and hang up.
        """
        self.user = None
        self.send({"type": "notice", "code": "replaced", "text": "resumed elsewhere"})
        self.transport.loseConnection()

    def _refuse(self, code: str, message: str) -> None:
        self.send({"type": "error", "code": code, "message": message})

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse("line_too_long", "the line is too long")

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not self.json_mode:
            if line.strip() == b"/mode json":
                self.json_mode = True
                self.send({"type": "mode", "mode": "json"})
            else:
                self.sendLine(b"This fake only speaks JSON: send /mode json")
            return
        try:
            command = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            self._refuse("bad_encoding", "the line is not UTF-8")
            return
        except ValueError:
            self._refuse("bad_request", "the line is not JSON")
            return
        if not isinstance(command, dict):
            self._refuse("bad_request", "the line is not a JSON object")
            return
        self.received.append(command)
        reply = self._answer(command)
        if "id" in command:
            reply["id"] = command["id"]
        self.send(reply)
        after, self._after_reply = self._after_reply, []
        for event in after:
            self.send(event)
        if reply["type"] == "bye":
            self.transport.loseConnection()

    def _answer(self, command: JsonObject) -> JsonObject:
        name = command.get("cmd")
        handler = COMMANDS.get(name) if isinstance(name, str) else None
        try:
            if handler is None:
                raise Refusal("unknown_command", f"unknown command {name!r}")
            if self.user is None and name not in BEFORE_LOGIN:
                raise Refusal("not_logged_in", "log in first")
            if self.user is not None:
                self.state.touch(self.user)
            return handler(self, command)
        except Refusal as refusal:
            return {"type": "error", "code": refusal.code, "message": refusal.message}

    def _announce(self, online: bool) -> None:
        event = {"type": "presence", "user": self.user, "online": online}
        for user in list(self.state.online):
            if user != self.user:
                self.state.push(user, event)

    def _logged_in(self, cmd: str, name: str) -> JsonObject:
        self.user = name
        self.state.online[name] = self
        away = self.state.away[name]
        self.state.away[name] = {"private": 0, "group": 0, "broadcast": 0}
        self._announce(online=True)
        token = self.state.issue_token(name)
        return {"type": "ok", "cmd": cmd, "user": name, "away": away, "token": token}

    def me(self) -> str:
        assert self.user is not None
        return self.user

    # Handlers, one per command; each returns the success reply.

    def signup(self, command: JsonObject) -> JsonObject:
        if self.user is not None:
            raise Refusal("already_logged_in", "you are logged in")
        name, password = _text(command, "name"), _text(command, "password")
        if not NAME.fullmatch(name):
            raise Refusal("invalid_name", "names are letters, digits and _.-")
        if name in self.state.passwords:
            raise Refusal("name_taken", f"{name} is taken")
        if len(password) < 4:
            raise Refusal("invalid_password", "passwords have 4 characters or more")
        self.state.add_user(name, password)
        return self._logged_in("signup", name)

    def login(self, command: JsonObject) -> JsonObject:
        if self.user is not None:
            raise Refusal("already_logged_in", "you are logged in")
        name, password = _text(command, "name"), _text(command, "password")
        if self.state.passwords.get(name) != password:
            raise Refusal("bad_credentials", "wrong name or password")
        if name in self.state.online:
            raise Refusal("already_online", f"{name} is logged in elsewhere")
        return self._logged_in("login", name)

    def ping(self, command: JsonObject) -> JsonObject:
        return {"type": "pong"}

    def resume(self, command: JsonObject) -> JsonObject:
        if self.user is not None:
            raise Refusal("already_logged_in", "you are logged in")
        token, last_id = _text(command, "token"), command.get("last_id")
        if last_id is None:
            # Like the server: resume after the last message it delivered.
            last_id = self.state.seen.get(self.state.token_user(token) or "", 0)
        if not isinstance(last_id, int) or isinstance(last_id, bool) or last_id < 0:
            raise Refusal("bad_request", "last_id must be a message id")
        user = self.state.token_user(token)
        if user is None:
            raise Refusal("bad_token", "this session has expired; log in again")

        older = self.state.online.get(user)
        self.user = user
        self.state.online[user] = self
        if older is not None:
            older.replaced()
        else:
            self._announce(online=True)
        self.state.away[user] = {"private": 0, "group": 0, "broadcast": 0}

        missed = self.state.missed(user, last_id)
        limit = self.state.replay_limit
        gap = limit is not None and len(missed) > limit
        if gap:
            missed = missed[len(missed) - limit :] if limit else []
            self._after_reply.append({"type": "notice", "text": GAP_TEXT})
        self._after_reply += [{"type": "message", "message": m} for m in missed]
        return {
            "type": "ok",
            "cmd": "resume",
            "user": user,
            "token": self.state.issue_token(user),
            "missed": len(missed),
            "gap": gap,
        }

    def msg(self, command: JsonObject) -> JsonObject:
        target, text = _text(command, "target"), _text(command, "text")
        if not text:
            raise Refusal("bad_request", "empty message")
        me = self.me()
        ref = command.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise Refusal("bad_request", "ref must be a string")
        if ref is not None and (me, ref) in self.state.refs:
            original = self.state.refs[(me, ref)]
            return {"type": "sent", "message": original, "duplicate": True}
        if target == BROADCAST:
            recipients = list(self.state.passwords)
            message = self.state.deliver("broadcast", me, target, recipients, text)
        elif target.startswith("#"):
            group = self._member_of(target[1:])
            message = self.state.deliver("group", me, target, list(group.roles), text)
        else:
            user = self.state.user(target)
            message = self.state.deliver("private", me, user, [user], text)
        if ref is not None:
            self.state.refs[(me, ref)] = message
        return {"type": "sent", "message": message}

    def history(self, command: JsonObject) -> JsonObject:
        target = _text(command, "target")
        limit = command.get("limit", HISTORY_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise Refusal("bad_request", "limit must be a positive integer")
        me = self.me()
        if target == BROADCAST or target.startswith("#"):
            if target != BROADCAST:
                self._member_of(target[1:])
            found = [m for m in self.state.messages if m["to"] == target]
        else:
            other = self.state.user(target)
            pair = {(me, other), (other, me)}
            found = [
                m
                for m in self.state.messages
                if m["kind"] == "private" and (m["from"], m["to"]) in pair
            ]
        return {"type": "history", "target": target, "messages": found[-limit:]}

    def open(self, command: JsonObject) -> JsonObject:
        return self.history({"target": command.get("target")})

    def who(self, command: JsonObject) -> JsonObject:
        return {"type": "who", "users": sorted(self.state.online)}

    def users(self, command: JsonObject) -> JsonObject:
        users = [
            {"name": name, "online": name in self.state.online}
            for name in sorted(self.state.passwords)
        ]
        return {"type": "users", "users": users}

    def groups(self, command: JsonObject) -> JsonObject:
        me = self.me()
        mine = [g.as_json(me) for g in self.state.groups.values() if me in g.roles]
        return {"type": "groups", "groups": mine}

    def groups_all(self, command: JsonObject) -> JsonObject:
        me = self.me()
        search = command.get("search") or ""
        if not isinstance(search, str):
            raise Refusal("bad_request", "search must be a string")
        found = [
            g.as_json(me)
            for g in self.state.groups.values()
            if (not g.private or me in g.roles)
            and search.casefold() in (g.name + " " + g.description).casefold()
        ]
        return {"type": "groups", "groups": found}

    def group_create(self, command: JsonObject) -> JsonObject:
        name = _text(command, "name")
        description = command.get("description") or ""
        if not NAME.fullmatch(name) or not isinstance(description, str):
            raise Refusal("invalid_name", "names are letters, digits and _.-")
        if name in self.state.groups:
            raise Refusal("name_taken", f"#{name} exists")
        group = FakeGroup(name, description)
        group.roles[self.me()] = "admin"
        group.joined[self.me()] = self.state.now()
        self.state.groups[name] = group
        return {"type": "ok", "cmd": "group_create", "group": group.as_json(self.me())}

    def group_invite(self, command: JsonObject) -> JsonObject:
        group = self._member_of(_group_name(command))
        user = self.state.user(command.get("user"))
        if user not in group.roles:
            group.roles[user] = "member"
            group.joined[user] = self.state.now()
            event = {"type": "group", "event": "invited", "group": group.name}
            self.state.push(user, {**event, "by": self.me()})
        return {"type": "ok", "cmd": "group_invite", "group": group.name, "user": user}

    def group_remove(self, command: JsonObject) -> JsonObject:
        group = self._admin_of(_group_name(command))
        user = self.state.user(command.get("user"))
        if user not in group.roles:
            raise Refusal("not_member", f"{user} is not in #{group.name}")
        del group.roles[user], group.joined[user]
        event = {"type": "group", "event": "removed", "group": group.name}
        self.state.push(user, {**event, "by": self.me()})
        return {"type": "ok", "cmd": "group_remove", "group": group.name, "user": user}

    def group_join(self, command: JsonObject) -> JsonObject:
        group = self.state.group(_group_name(command))
        me = self.me()
        if me not in group.roles:
            if group.private:
                raise Refusal("forbidden", f"#{group.name} is private")
            group.roles[me] = "member"
            group.joined[me] = self.state.now()
        return {"type": "ok", "cmd": "group_join", "group": group.name}

    def group_leave(self, command: JsonObject) -> JsonObject:
        group = self._member_of(_group_name(command))
        del group.roles[self.me()], group.joined[self.me()]
        return {"type": "ok", "cmd": "group_leave", "group": group.name}

    def group_members(self, command: JsonObject) -> JsonObject:
        group = self._member_of(_group_name(command))
        members = [
            {"name": name, "role": role, "joined_at": group.joined[name]}
            for name, role in sorted(group.roles.items())
        ]
        return {"type": "members", "group": group.name, "members": members}

    def group_private(self, command: JsonObject) -> JsonObject:
        group = self._admin_of(_group_name(command))
        private = command.get("private")
        if not isinstance(private, bool):
            raise Refusal("bad_request", "private must be true or false")
        group.private = private
        reply = {"type": "ok", "cmd": "group_private", "group": group.name}
        return {**reply, "private": private}

    def help(self, command: JsonObject) -> JsonObject:
        return {"type": "help", "text": "commands: " + ", ".join(sorted(COMMANDS))}

    def quit(self, command: JsonObject) -> JsonObject:
        if self.user is not None:
            self.state.revoke(self.user)
        return {"type": "bye"}

    def _member_of(self, name: str) -> FakeGroup:
        group = self.state.group(name)
        if self.me() not in group.roles:
            raise Refusal("not_member", f"you are not in #{group.name}")
        return group

    def _admin_of(self, name: str) -> FakeGroup:
        group = self._member_of(name)
        if group.roles[self.me()] != "admin":
            raise Refusal("forbidden", f"only admins of #{group.name} may do that")
        return group


BEFORE_LOGIN = {"signup", "login", "resume", "ping", "help", "quit"}
COMMANDS: dict[str, Handler] = {
    name: getattr(FakeChatProtocol, name)
    for name in (
        "signup login msg history open who users groups groups_all group_create"
        " group_invite group_remove group_join group_leave group_members"
        " group_private help quit ping resume"
    ).split()
}


class FakeChatFactory(Factory):
    """
    One replica: builds connections that share one L{FakeChatState}.
    """

    def __init__(self, state: FakeChatState) -> None:
        self.state = state
        self.connections: set[FakeChatProtocol] = set()

    def buildProtocol(self, addr: object) -> FakeChatProtocol:
        return FakeChatProtocol(self.state, self)

    def drop_all(self) -> None:
        """
        Cut every connection of this replica at once.
        """
        for connection in list(self.connections):
            connection.transport.abortConnection()

    def announce_maintenance(
        self, retry_after: float | None = 2, close_after: float = 2.0
    ) -> None:
        """
        Warn this replica's connections, then close them C{close_after} later.
        """
        notice: JsonObject = {
            "type": "notice",
            "code": "maintenance",
            "text": MAINTENANCE_TEXT,
        }
        if retry_after is not None:
            notice["retry_after"] = retry_after
        leaving = list(self.connections)
        for connection in leaving:
            connection.send(notice)

        def close() -> None:
            for connection in leaving:
                connection.transport.loseConnection()

        self.state.clock.callLater(close_after, close)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    state = FakeChatState(reactor)
    for name in ("alice", "bob", "carol"):
        state.add_user(name, "secret")
    replicas = []
    for wanted in [int(arg) for arg in argv[1:]] or [0]:
        replica = FakeChatFactory(state)
        port = reactor.listenTCP(wanted, replica, interface="127.0.0.1")
        replicas.append(replica)
        print(f"fake chat server on 127.0.0.1:{port.getHost().port}")
    print("users alice, bob, carol, password secret")

    def maintenance(signum: int, frame: object) -> None:
        for replica in replicas:
            reactor.callFromThread(replica.announce_maintenance)

    signal.signal(signal.SIGUSR1, maintenance)
    signal.signal(signal.SIGUSR2, lambda *_: reactor.callFromThread(state.drop_all))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
