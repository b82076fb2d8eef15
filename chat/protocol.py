"""
The chat's line protocol: parsing what a connection sends, rendering what it
receives, and the little state a connection keeps.

Commands from one connection run one at a time, in the order they arrived:
while one is in flight the protocol stops reading, so a client that pipelines
gets its replies in order and cannot queue unbounded work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import commands, logs, names, telnet
from chat.commands import Command
from chat.db import DatabaseUnavailable
from chat.events import DeliveryLog, Event, MessageEvent, NoticeEvent, PresenceEvent
from chat.fanout import Fanout
from chat.guard import FloodGuard, Limits, OutputGuard, keep_alive
from chat.records import Group, Message
from chat.render import JsonRenderer, Renderer, TextRenderer, group_json, wire
from chat.service import (
    HISTORY_DEFAULT,
    ChatError,
    ChatService,
    Login,
    Resumed,
    unavailable,
)
from chat.text import BadEncoding, decode

if TYPE_CHECKING:
    from chat.factory import ConnectionRegistry

MAX_LINE = 4096
# The largest message id a client may name: PostgreSQL's BIGINT.
MAX_ID = 2**63 - 1
# Activity refreshes the session token no more often than this, in seconds.
TOUCH_INTERVAL = 60.0

_PROMPTS = {
    "name": "Name: ",
    "password": "Password: ",
    "confirm": "Password again: ",
}
_SECRET = {"password", "confirm"}


@dataclass
class _Prompting:
    """
    An account command being completed one answer at a time.
    """

    verb: str
    answers: dict[str, str]
    asking: list[str] = field(default_factory=list)


@implementer(IHalfCloseableProtocol)
class ChatProtocol(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger(observer=logs.observer)

    def __init__(
        self,
        service: ChatService,
        registry: ConnectionRegistry,
        limits: Limits | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.limits = limits or Limits()
        self._flood = FloodGuard(service.clock, self.limits)
        self._output = OutputGuard(self.limits.max_queued, self._not_reading)
        self._login_timer: IDelayedCall | None = None
        self._host = ""
        self._admitted = False
        self.renderer: Renderer = TextRenderer()
        self.login: Login | None = None
        self.delivered = DeliveryLog(0)
        # Live messages kept back while a resume reads what it missed.
        self._held: list[Message] | None = None
        self.open_target = ""
        self._telnet = telnet.TelnetFilter()
        self._discarding = False
        self._prompting: _Prompting | None = None
        self._gone = False
        self._input_ended = False
        self._running: Deferred[None] | None = None
        self._overflow: bytes | None = None
        self._touched = 0.0

    # Connection life

    def connectionMade(self) -> None:
        self._host = getattr(self.transport.getPeer(), "host", "")
        if not self.registry.admit(self._host):
            self._error(
                ChatError(
                    "too_many_connections",
                    "too many connections from your address; close one first",
                )
            )
            self.transport.loseConnection()
            return
        self._admitted = True
        keep_alive(self.transport)
        self.registry.add(self)
        self.transport.registerProducer(self._output, True)
        if self.limits.login_timeout:
            self._login_timer = self.service.clock.callLater(
                self.limits.login_timeout, self._login_timed_out
            )
        self._send(self.renderer.banner(self.service.server_id))

    def _login_timed_out(self) -> None:
        self._login_timer = None
        self._error(ChatError("timeout", "no login within the time allowed; bye"))
        self.transport.loseConnection()

    def _not_reading(self) -> None:
        self.log.info(
            "{user} stopped reading; disconnecting", user=self.user or self._host
        )
        self._gone = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        if not self._admitted:
            return
        self.registry.leave(self._host)
        self.registry.remove(self)
        if self.login is not None:
            login, self.login = self.login, None
            self.registry.unregister(login.folded, self)
            self.registry.spawn("logout", self.service.logout(login))

    def readConnectionLost(self) -> None:
        """
        The peer will send nothing more (C{nc -N}, C{shutdown(SHUT_WR)}): answer
        what it sent, a last line without its line ending included, then close.
        """
        self._input_ended = True
        self._finish_input()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def _finish_input(self) -> None:
        if not self._input_ended or self._running is not None or self._gone:
            return
        rest = self.clearLineBuffer()
        if rest.strip():
            self._split(rest if rest.endswith(b"\n") else rest + b"\n")
            if self._running is not None:
                return
        self.transport.loseConnection()

    @property
    def busy(self) -> Deferred[None] | None:
        """
        The command in flight, if any; it fires once the reply is written.
        """
        return self._running

    @property
    def user(self) -> str:
        return self.login.user.name if self.login else ""

    # Bytes in

    def dataReceived(self, data: bytes) -> None:
        self._split(self._telnet.feed(data))

    def _split(self, data: bytes) -> None:
        while True:
            if self._discarding:
                end = data.find(b"\n")
                if end < 0:
                    return
                data, self._discarding = data[end + 1 :], False
            self._overflow = None
            super().dataReceived(data)
            if self._overflow is None:
                return
            data = self._overflow

    def lineLengthExceeded(self, line: bytes) -> None:
        self._error(
            ChatError("line_too_long", f"lines are limited to {MAX_LINE} bytes")
        )
        end = line.find(b"\n")
        if end < 0:
            self._discarding = True
        else:
            self._overflow = line[end + 1 :]

    def lineReceived(self, line: bytes) -> None:
        if self._gone or self.transport.disconnecting:
            return
        try:
            text = decode(line.rstrip(b"\r"))
        except BadEncoding as e:
            self._error(ChatError("bad_encoding", str(e)))
            return
        if self._prompting is not None:
            self._answer(text)
            return
        text = text.strip()
        if not text:
            return
        try:
            command = self._parse(text)
        except ChatError as e:
            self._error(e)
            return
        if command.verb != "resume" and not self._allowed(command):
            return
        self._run(command)

    def _allowed(self, command: Command) -> bool:
        verdict = self._flood.check()
        if verdict == FloodGuard.REFUSE:
            wait = max(1, math.ceil(self._flood.wait()))
            self._error(
                ChatError(
                    "rate_limited",
                    f"slow down: you are sending too fast; lines are dropped"
                    f" for {wait} s",
                ),
                command.id,
            )
        elif verdict == FloodGuard.CUT:
            self._error(ChatError("rate_limited", "flooding; disconnected"))
            self.transport.loseConnection()
        return verdict == FloodGuard.OK

    def _parse(self, text: str) -> Command:
        if isinstance(self.renderer, JsonRenderer) and text.lstrip("\ufeff")[:1] in (
            "{",
            "[",
            '"',
        ):
            return commands.parse_json(text.lstrip("\ufeff"))
        if text.startswith("/"):
            return commands.parse_text(text)
        if text.lower() in ("bye", "exit") and not self.open_target:
            return commands.parse_text(text)
        if self.login is not None and self.open_target:
            return Command("msg", (self.open_target, text))
        if self.login is None:
            raise ChatError(
                "not_logged_in", "type /login or /signup first (/help for more)"
            )
        raise ChatError(
            "bad_request",
            "no conversation is open: use /open TARGET or /msg TARGET TEXT",
        )

    # Running commands, one at a time

    def _run(self, command: Command) -> None:
        self.paused = True
        self.transport.pauseProducing()
        d = Deferred.fromCoroutine(self._dispatch(command))
        self._running = d
        d.addErrback(self._unexpected, command)
        d.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self._running = None
        if self._gone or self.transport.disconnecting:
            return
        self.paused = False
        self.transport.resumeProducing()
        self.dataReceived(b"")
        self._finish_input()

    def _unexpected(self, failure: Failure, command: Command) -> None:
        self.log.failure(
            "command {verb} from {user} failed",
            failure,
            verb=command.verb,
            user=self.user,
        )
        self._error(
            ChatError("internal", "something went wrong on the server"), command.id
        )

    async def _dispatch(self, command: Command) -> None:
        spec = commands.COMMANDS[command.verb]
        try:
            if self.login is None and not spec.before_login:
                raise ChatError(
                    "not_logged_in", "log in first: /login NAME or /signup NAME"
                )
            if self.login is not None and not spec.after_login:
                raise ChatError("already_logged_in", f"you are {self.user} already")
            handler = getattr(self, "do_" + command.verb)
            await handler(command)
            await self._keep_alive()
        except ChatError as e:
            self._error(e, command.id)
        except DatabaseUnavailable as e:
            self.log.warn("database unavailable: {error}", error=str(e))
            self._error(unavailable(e), command.id)

    async def _keep_alive(self) -> None:
        """
        Refresh the session token, at most once per L{TOUCH_INTERVAL}.
        """
        now = self.service.clock.seconds()
        if self.login is not None and now - self._touched >= TOUCH_INTERVAL:
            self._touched = now
            await self.service.heartbeat(self.login)

    # Bytes out

    def _send(self, lines: list[str]) -> None:
        data = wire(lines)
        self._write(data, sum(map(len, data)))

    def _write(self, data: list[bytes], size: int) -> None:
        if not self._gone:
            self.transport.writeSequence(data)
            self._output.wrote(size)

    def _error(self, error: ChatError, id: Any = None) -> None:
        self.service.metrics.errors.labels(error.code).inc()
        if id is None:
            id = error.id
        self._send(self.renderer.error(error.code, error.text, id))

    def deliver(self, event: Event) -> None:
        """
        Show an event pushed by the service to this connection alone.
        """
        fanout = Fanout(event)
        self.show(fanout)
        fanout.finish()

    def show(self, fanout: Fanout) -> None:
        """
        Show the event of a fan-out, in the rendering this viewer shares.
        """
        event = fanout.event
        if self.login is None:
            if isinstance(event, NoticeEvent):
                self._write(*fanout.rendered(self.renderer, "", ""))
            return
        me = self.login.user.name
        if isinstance(event, MessageEvent):
            if self._held is not None:
                self._held.append(event.message)
                return
            if not self.delivered.first_time(event.message.id):
                return
            self.service.saw(self.login, event.message)
            if event.message.sender == me:
                return
            fanout.count(self.service)
        if isinstance(event, PresenceEvent) and event.user == me:
            return
        self._write(*fanout.rendered(self.renderer, me, self.open_target))

    # Accounts

    async def do_signup(self, command: Command) -> None:
        await self._account(command, ["name", "password", "confirm"])

    async def do_login(self, command: Command) -> None:
        await self._account(command, ["name", "password"])

    async def _account(self, command: Command, fields: list[str]) -> None:
        answers = dict(zip(fields, command.args, strict=False))
        if "confirm" in fields and len(command.args) == 2:
            answers["confirm"] = command.args[1]
        missing = [f for f in fields if f not in answers]
        if not missing:
            await self._complete(command.verb, answers, command.id)
            return
        if isinstance(self.renderer, JsonRenderer):
            raise ChatError("bad_request", "a JSON login or signup needs every field")
        self._prompting = _Prompting(command.verb, answers, missing)
        self._ask()

    def _ask(self) -> None:
        assert self._prompting is not None
        field_name = self._prompting.asking[0]
        if field_name in _SECRET and self._telnet.telnet:
            self.transport.write(telnet.WILL_ECHO)
        self.transport.write(_PROMPTS[field_name].encode())

    def _answer(self, text: str) -> None:
        assert self._prompting is not None
        prompting = self._prompting
        field_name = prompting.asking.pop(0)
        if field_name in _SECRET and self._telnet.telnet:
            self.transport.write(telnet.WONT_ECHO + b"\r\n")
        value = text if field_name in _SECRET else text.strip()
        if not value:
            self._prompting = None
            self._send(self.renderer.ok(prompting.verb, "cancelled", {}, None))
            return
        if prompting.verb == "signup" and field_name == "name":
            try:
                names.check_name(value, "user name")
            except names.InvalidName as e:
                self._prompting = None
                self._error(ChatError("invalid_name", f"{e}; /signup to try again"))
                return
        prompting.answers[field_name] = value
        if prompting.asking:
            self._ask()
            return
        self._prompting = None
        answers = prompting.answers
        if "confirm" in answers and answers["confirm"] != answers["password"]:
            self._error(
                ChatError("bad_request", "the passwords differ; /signup to try again")
            )
            return
        self._run(Command(prompting.verb, (answers["name"], answers["password"])))

    async def _complete(self, verb: str, answers: dict[str, str], id: Any) -> None:
        if verb == "signup":
            login = await self.service.signup(answers["name"], answers["password"])
        else:
            login = await self.service.login(
                answers["name"], answers["password"], self.transport.getPeer().host
            )
        if self._adopt(login):
            self._send(self.renderer.welcome(verb, login, id))

    def _adopt(self, login: Login, shown_up_to: int | None = None) -> bool:
        """
        Make C{login} this connection's session, unless it closed meanwhile.

        Messages up to C{shown_up_to} (by default the login's C{seen_up_to})
        count as shown already.
        """
        if self._gone:
            self.registry.spawn("logout", self.service.logout(login))
            return False
        self.login = login
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self.delivered = DeliveryLog(
            login.seen_up_to if shown_up_to is None else shown_up_to
        )
        self._touched = self.service.clock.seconds()
        self.registry.register(login.folded, self)
        return True

    async def do_resume(self, command: Command) -> None:
        last_id = command.arg(1)
        if last_id and not (last_id.isascii() and last_id.isdigit()):
            raise ChatError("bad_request", "usage: /resume TOKEN [LAST_ID]")
        if last_id and int(last_id) > MAX_ID:
            raise ChatError("bad_request", "usage: /resume TOKEN [LAST_ID]")
        resumed = await self.service.resume(
            command.args[0], int(last_id) if last_id else None
        )
        if not self._adopt(resumed.login, resumed.after):
            return
        self._send(self.renderer.resumed(resumed, command.id))
        for message in resumed.missed:
            self.delivered.first_time(message.id)
            self._send(self.renderer.event(MessageEvent(message), self.user, ""))
        if resumed.gap:
            notice = NoticeEvent(
                f"more than {len(resumed.missed)} messages arrived while you were"
                " away; the older ones are in /history"
            )
            self._send(self.renderer.event(notice, self.user, ""))
        await self._stored_during_resume(resumed)

    async def _stored_during_resume(self, resumed: Resumed) -> None:
        """
        Show what was stored while the resume ran.

        The replay was read before this connection was registered, and until
        then live messages for the person reached no connection here, so the
        database is read once more; what was shown already is skipped.  Live
        messages that arrive during that read wait for it, so that everything
        is shown in id order.
        """
        login = resumed.login
        stored: list[Message] = []
        self._held = []
        try:
            stored = await self.service.stored_after(login, login.seen_up_to)
        finally:
            held, self._held = self._held, None
            for message in sorted(stored + held, key=lambda m: m.id):
                if self.login is not login:
                    break
                self.deliver(MessageEvent(message))

    def replaced(self) -> None:
        """
        A resumed session elsewhere has taken this connection's place.
        """
        if self.login is not None:
            self.login.replaced = True
        self._send(
            self.renderer.event(
                NoticeEvent("your session was resumed elsewhere", "replaced"), "", ""
            )
        )
        self.transport.loseConnection()

    async def do_ping(self, command: Command) -> None:
        self._send(self.renderer.pong(command.id))

    async def do_quit(self, command: Command) -> None:
        self._send(self.renderer.bye(self.user or None, command.id))
        if self.login is not None:
            login, self.login = self.login, None
            self.registry.unregister(login.folded, self)
            self.registry.spawn("logout", self.service.logout(login, revoke=True))
        self.transport.loseConnection()

    async def do_mode(self, command: Command) -> None:
        mode = command.arg(0).lower()
        if mode == "json":
            self.renderer = JsonRenderer()
        elif mode == "text":
            self.renderer = TextRenderer()
        else:
            raise ChatError("bad_request", "usage: /mode text|json")
        self._send(self.renderer.mode(mode))

    async def do_help(self, command: Command) -> None:
        self._send(self.renderer.help(commands.help_text(command.arg(0)), command.id))

    # Messages

    def _me(self) -> Any:
        assert self.login is not None
        return self.login.user

    async def do_msg(self, command: Command) -> None:
        sent = await self.service.send(
            self._me(), command.args[0], command.args[1], command.options.get("ref")
        )
        self._send(self.renderer.sent(sent, self.user, self.open_target, command.id))

    async def do_history(self, command: Command) -> None:
        limit_text = command.arg(1, str(HISTORY_DEFAULT))
        if not limit_text.isdigit():
            raise ChatError("bad_request", "usage: /history TARGET [N]")
        target = await self.service.resolve_target(self._me(), command.args[0])
        messages = await self.service.history(self._me(), target, int(limit_text))
        self._send(self.renderer.history(target, messages, command.id, False))

    async def do_open(self, command: Command) -> None:
        target = await self.service.resolve_target(self._me(), command.args[0])
        messages = await self.service.history(self._me(), target, HISTORY_DEFAULT)
        self.open_target = target
        self._send(self.renderer.history(target, messages, command.id, True))

    async def do_back(self, command: Command) -> None:
        if not self.open_target:
            raise ChatError("bad_request", "no conversation is open")
        target, self.open_target = self.open_target, ""
        self._send(self.renderer.closed(target, command.id))

    async def do_who(self, command: Command) -> None:
        self._send(self.renderer.who(await self.service.who(), command.id))

    async def do_users(self, command: Command) -> None:
        self._send(self.renderer.users(await self.service.users(), command.id))

    # Groups

    async def do_groups(self, command: Command) -> None:
        groups = await self.service.my_groups(self._me())
        self._send(self.renderer.groups(groups, False, command.id))

    async def do_groups_all(self, command: Command) -> None:
        groups = await self.service.browse_groups(self._me(), command.arg(0))
        self._send(self.renderer.groups(groups, True, command.id))

    async def do_group_create(self, command: Command) -> None:
        group = await self.service.create_group(
            self._me(), command.args[0].lstrip("#"), command.arg(1)
        )
        text = f"created #{group.name}; you are its admin"
        self._ok(command, text, group=group_json(group))

    async def do_group_invite(self, command: Command) -> None:
        name, user = command.args[0].lstrip("#"), command.args[1]
        group = await self.service.invite(self._me(), name, user)
        self._ok(command, f"added {user} to #{group.name}", group=group, user=user)

    async def do_group_remove(self, command: Command) -> None:
        name, user = command.args[0].lstrip("#"), command.args[1]
        group = await self.service.remove(self._me(), name, user)
        self._ok(command, f"removed {user} from #{group.name}", group=group, user=user)

    async def do_group_join(self, command: Command) -> None:
        group = await self.service.join(self._me(), command.args[0].lstrip("#"))
        self._ok(command, f"joined #{group.name}", group=group)

    async def do_group_leave(self, command: Command) -> None:
        name = command.args[0].lstrip("#")
        remaining = await self.service.leave(self._me(), name)
        if self.open_target.lower() == "#" + name.lower():
            self.open_target = ""
        closed = "; it had no members left and is closed" if not remaining else ""
        self._ok(command, f"left #{name}{closed}", group=name)

    async def do_group_members(self, command: Command) -> None:
        group, members = await self.service.members(
            self._me(), command.args[0].lstrip("#")
        )
        self._send(self.renderer.members(group, members, command.id))

    async def do_group_private(self, command: Command) -> None:
        flag = command.args[1].lower()
        if flag not in ("on", "off"):
            raise ChatError("bad_request", "usage: /group private NAME on|off")
        private = flag == "on"
        group = await self.service.set_private(
            self._me(), command.args[0].lstrip("#"), private
        )
        state = "private (invite only)" if private else "public"
        self._ok(command, f"#{group.name} is now {state}", group=group, private=private)

    def _ok(self, command: Command, text: str, **fields: Any) -> None:
        group = fields.get("group")
        if isinstance(group, Group):
            fields["group"] = group.name
        self._send(self.renderer.ok(command.verb, text, fields, command.id))
