"""
The chat's rules: who may do what, what is stored, and who is told.

Nothing here knows about lines, telnet or JSON.  Every method takes the acting
person and either returns a result or raises L{ChatError}, whose code and text
the protocol renders.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs, names
from chat.db import DatabaseUnavailable
from chat.events import Event, GroupEvent, MessageEvent, PresenceEvent
from chat.limits import LoginThrottle
from chat.metrics import ChatMetrics
from chat.passwords import Passwords
from chat.presence import IPresence, Presence
from chat.records import (
    BROADCAST_TARGET,
    GROUP_PREFIX,
    AwayCounts,
    Group,
    Kind,
    Member,
    Message,
    Role,
    User,
    utc_from_timestamp,
)
from chat.sessions import ITokens, LocalTokens
from chat.storage import DuplicateRef, NameTaken, Store
from chat.text import neutralise

HISTORY_DEFAULT = 50
HISTORY_MAX = 500
MAX_MESSAGE = 2000
MAX_REF = 64
# The most missed messages one resume sends, the newest; older ones stay in
# /history.
RESUME_MAX = 1000
# How many accounts the service keeps at hand for addressing messages.
USERS_KEPT = 10_000


class ChatError(Exception):
    """
    A request that cannot be done; C{code} is stable, C{text} is for people.
    """

    def __init__(self, code: str, text: str, id: Any = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.id = id


class IRouter(Protocol):
    """
    Carries events to people wherever they are connected.
    """

    def deliver(self, folded_names: list[str], event: Event) -> None: ...

    def deliver_all(self, event: Event) -> None: ...

    def replace(self, folded_name: str) -> None:
        """
        Close the person's live connections, wherever they are: a resumed
        session has taken their place.
        """


@dataclass
class Login:
    """
    A person's logged-in session, as the service tracks it.
    """

    user: User
    session_id: int
    away: AwayCounts
    seen_up_to: int
    token: str = ""
    replaced: bool = False
    folded: str = field(init=False)

    def __post_init__(self) -> None:
        self.folded = names.fold(self.user.name)


@dataclass(frozen=True)
class Resumed:
    """
    A resumed session and what the person missed, oldest first.

    C{after} is the message id the missed ones come after; C{gap} is true
    when more was missed than one resume delivers.
    """

    login: Login
    missed: list[Message]
    gap: bool
    after: int = 0


@dataclass(frozen=True)
class Sent:
    """
    A stored message; C{duplicate} when it was stored by an earlier send.
    """

    message: Message
    duplicate: bool = False


@dataclass(frozen=True)
class UserStatus:
    name: str
    online: bool


class ChatService:
    """
    The rules of the chat, over a store, presence and a router.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        store: Store,
        presence: IPresence,
        router: IRouter,
        passwords: Passwords,
        clock: IReactorTime,
        server_id: str,
        tokens: ITokens | None = None,
    ) -> None:
        self.store = store
        self.presence = presence
        self.router = router
        self.passwords = passwords
        self.clock = clock
        self.server_id = server_id
        self.tokens = tokens or LocalTokens(clock)
        self.throttle = LoginThrottle(clock)
        self.metrics = ChatMetrics()
        # Sessions shown messages since their progress was last recorded.
        self._unsaved: dict[int, Login] = {}
        # Recently named accounts, the least recently used first.
        self._users: OrderedDict[str, User] = OrderedDict()

    def now(self) -> datetime:
        return utc_from_timestamp(self.clock.seconds())

    # Accounts and sessions

    async def signup(self, name: str, password: str) -> Login:
        try:
            names.check_name(name, "user name")
            names.check_password(password)
        except names.InvalidName as e:
            code = "invalid_password" if "password" in str(e) else "invalid_name"
            raise ChatError(code, str(e)) from e
        folded = names.fold(name)
        if await self.store.find_user(folded) is not None:
            raise ChatError("name_taken", f"the name {name!r} is taken")
        similar = await self.store.look_alike(name)
        if similar is not None:
            raise ChatError(
                "name_taken",
                f"{name!r} looks too much like the existing name {similar!r};"
                " choose another",
            )
        password_hash = await self.passwords.hash(password)
        try:
            user = await self.store.create_user(name, folded, password_hash, self.now())
        except NameTaken:
            raise ChatError("name_taken", f"the name {name!r} is taken") from None
        self.log.info("new user {user}", user=user.name)
        try:
            return await self._start_session(user, "signup")
        except DatabaseUnavailable:
            raise ChatError(
                "unavailable",
                f"your account {user.name!r} was created, but the server could"
                " not log you in just now; log in shortly",
            ) from None

    async def login(self, name: str, password: str, address: str = "") -> Login:
        """
        Check a password and start a session.

        Failures are throttled per account and per C{address}; an unknown name
        is checked against a decoy hash and throttled like a known one, so
        neither the answer nor its timing tells whether the name exists.
        """
        keys = ("user:" + names.fold(name), "address:" + address)
        wait = self.throttle.delay(*keys)
        if wait > 0:
            raise ChatError(
                "throttled",
                f"too many failed logins; try again in {math.ceil(wait)} s",
            )
        found = await self.store.find_user(names.fold(name))
        stored = found[1] if found else None
        if not await self.passwords.verify(stored, password) or found is None:
            self.throttle.failed(*keys)
            raise ChatError("bad_credentials", "wrong name or password")
        self.throttle.succeeded(keys[0])
        return await self._start_session(found[0], "login")

    async def _start_session(self, user: User, kind: str) -> Login:
        folded = names.fold(user.name)
        claim = Presence(user.name, self.server_id, self.clock.seconds())
        if not await self.presence.claim(folded, claim):
            raise ChatError(
                "already_online",
                f"{user.name} is already logged in elsewhere; log out there first",
            )
        try:
            away = await self.store.away_counts(user)
            seen = await self.store.last_message_id()
            session_id = await self.store.record_login(
                user, self.server_id, self.now(), kind
            )
            token = await self.tokens.issue(folded)
        except BaseException:
            await self.presence.release(folded, self.server_id)
            raise
        self.log.info("{user} logged in ({kind})", user=user.name, kind=kind)
        self.metrics.logins.labels(kind).inc()
        self.router.deliver_all(PresenceEvent(user.name, True))
        return Login(user, session_id, away, seen, token)

    async def resume(self, token: str, last_id: int | None) -> Resumed:
        """
        Restore a session from its token, taking over any connection the
        person still has, and return what they missed after C{last_id}
        (by default, after what they were last shown).

        Everything that needs the database happens before the token is
        exchanged and the old connection closed, so a resume that fails for
        want of the database leaves both as they were.
        """
        folded = await self.tokens.owner(token)
        found = await self.store.find_user(folded) if folded else None
        if folded is None or found is None:
            raise _expired()
        user = found[0]
        if last_id is None:
            last_id = await self.store.seen_up_to(user)
            shown_here = self._unsaved.get(user.id)
            if shown_here is not None:
                last_id = max(last_id, shown_here.seen_up_to)
        else:
            # An id beyond every stored one would hide the messages to come.
            last_id = min(last_id, await self.store.last_message_id())
        batch = await self.store.messages_for(
            user, last_id, RESUME_MAX + 1, newest=True
        )
        missed, gap = batch[-RESUME_MAX:], len(batch) > RESUME_MAX
        seen = max([last_id] + [m.id for m in missed])
        session_id = await self.store.record_login(
            user, self.server_id, self.now(), "resume"
        )
        rotated = await self.tokens.rotate(token)
        if rotated is None or rotated[0] != folded:
            raise _expired()
        new_token = rotated[1]
        was_online = await self.presence.is_online(folded)
        self.router.replace(folded)
        await self.presence.take_over(
            folded, Presence(user.name, self.server_id, self.clock.seconds())
        )
        self.log.info(
            "{user} resumed, {count} missed", user=user.name, count=len(missed)
        )
        away = AwayCounts(
            private=sum(m.kind is Kind.PRIVATE for m in missed),
            group=sum(m.kind is Kind.GROUP for m in missed),
            broadcast=sum(m.kind is Kind.BROADCAST for m in missed),
        )
        if not was_online:
            self.router.deliver_all(PresenceEvent(user.name, True))
        self.metrics.resumes.inc()
        login = Login(user, session_id, away, seen, new_token)
        return Resumed(login, missed, gap, last_id)

    async def stored_after(self, login: Login, after: int) -> list[Message]:
        """
        Messages for the person of C{login} with an id above C{after}, oldest
        first, as many as one resume delivers.
        """
        return await self.store.messages_for(login.user, after, RESUME_MAX)

    async def heartbeat(self, login: Login) -> None:
        """
        Keep the session's token alive.
        """
        await self.tokens.touch(login.token)

    async def logout(self, login: Login, revoke: bool = False) -> None:
        """
        End a session: the person is offline, and the log says when.

        A session that another connection took over leaves presence alone.
        C{revoke} ends the token too, as C{/quit} does; a dropped connection
        keeps it so that the person can resume.
        """
        if revoke:
            await self.tokens.revoke(login.token)
        if not login.replaced:
            await self.presence.release(login.folded, self.server_id)
            self.router.deliver_all(PresenceEvent(login.user.name, False))
        await self.store.mark_seen(login.user, login.seen_up_to)
        await self.store.record_logout(login.session_id, self.now())
        self.log.info("{user} logged out", user=login.user.name)

    def saw(self, login: Login, message: Message) -> None:
        """
        Note that a message reached the person of C{login}; L{save_seen}
        records it.
        """
        if message.id > login.seen_up_to:
            login.seen_up_to = message.id
            self._unsaved[login.user.id] = login

    async def save_seen(self) -> None:
        """
        Record how far each person has been shown messages since the last
        call, so that a resume without a last id, after a crash or from a
        second connection, does not show them again.
        """
        unsaved, self._unsaved = self._unsaved, {}
        marks = [(login.user, login.seen_up_to) for login in unsaved.values()]
        try:
            await self.store.mark_seen_many(marks)
        except DatabaseUnavailable:
            for user_id, login in unsaved.items():
                self._unsaved.setdefault(user_id, login)
            raise

    def delivered(self, message: Message, count: int) -> None:
        """
        Note that C{message} was just shown on C{count} connections here.
        """
        self.metrics.delivered(message, self.clock.seconds(), count)

    # Messages

    async def _user(self, name: str) -> User:
        # Accounts are never renamed or removed, so one found stays right.
        folded = names.fold(name)
        user = self._users.get(folded)
        if user is not None:
            self._users.move_to_end(folded)
            return user
        found = await self.store.find_user(folded)
        if found is None:
            raise ChatError("no_such_user", f"there is no user called {name!r}")
        self._users[folded] = found[0]
        if len(self._users) > USERS_KEPT:
            self._users.popitem(last=False)
        return found[0]

    async def _group(self, me: User, name: str) -> Group:
        group = await self.store.find_group(names.fold(name), me)
        if group is None:
            raise ChatError("no_such_group", f"there is no group called {name!r}")
        return group

    async def _member_group(self, me: User, name: str) -> Group:
        group = await self._group(me, name)
        if group.my_role is None:
            raise ChatError("not_member", f"you are not a member of #{group.name}")
        return group

    async def _admin_group(self, me: User, name: str) -> Group:
        group = await self._member_group(me, name)
        if group.my_role is not Role.ADMIN:
            raise ChatError("forbidden", f"only an admin of #{group.name} can do that")
        return group

    async def send(
        self, me: User, target: str, text: str, ref: str | None = None
    ) -> Sent:
        """
        Store a message, then pass it to everyone it is for who is online.

        A C{ref} that C{me} used before names a resend: the original message
        is returned, not stored again, and passed on once more, because a
        replica that went away may have stored it without passing it on;
        connections show each message id once.
        """
        if ref is not None:
            if len(ref) > MAX_REF:
                raise ChatError(
                    "bad_request", f"a ref has at most {MAX_REF} characters"
                )
            earlier = await self.store.find_by_ref(me, ref)
            if earlier is not None:
                return await self._resent(earlier)
        try:
            return Sent(await self._send(me, target, text, ref))
        except DuplicateRef:
            earlier = await self.store.find_by_ref(me, ref or "")
            assert earlier is not None
            return await self._resent(earlier)

    async def _resent(self, message: Message) -> Sent:
        folded = await audience(self.store, message)
        if folded is None:
            self.router.deliver_all(MessageEvent(message))
        else:
            self.router.deliver(folded, MessageEvent(message))
        return Sent(message, duplicate=True)

    async def _send(self, me: User, target: str, text: str, ref: str | None) -> Message:
        text = neutralise(text).strip()
        if not text:
            raise ChatError("bad_request", "the message is empty")
        if len(text) > MAX_MESSAGE:
            raise ChatError(
                "bad_request", f"a message has at most {MAX_MESSAGE} characters"
            )
        now = self.now()
        if target == BROADCAST_TARGET:
            message = await self.store.add_broadcast(me, text, now, ref)
            self.router.deliver_all(MessageEvent(message))
        elif target.startswith(GROUP_PREFIX):
            group = await self._member_group(me, target[1:])
            message = await self.store.add_group_message(me, group, text, now, ref)
            members = await self.store.members(group)
            self.router.deliver(
                [names.fold(m.name) for m in members], MessageEvent(message)
            )
        else:
            other = await self._user(target)
            if other.id == me.id:
                raise ChatError("bad_request", "you cannot send a message to yourself")
            message = await self.store.add_private(me, other, text, now, ref)
            self.router.deliver([names.fold(other.name)], MessageEvent(message))
        self.metrics.messages.labels(message.kind.value).inc()
        self.log.debug(
            "message {id} from {user} to {target}",
            id=message.id,
            user=me.name,
            target=message.target,
        )
        return message

    async def history(self, me: User, target: str, limit: int) -> list[Message]:
        limit = max(1, min(limit, HISTORY_MAX))
        if target == BROADCAST_TARGET:
            return await self.store.broadcast_history(limit)
        if target.startswith(GROUP_PREFIX):
            group = await self._member_group(me, target[1:])
            return await self.store.group_history(group, limit)
        other = await self._user(target)
        return await self.store.private_history(me, other, limit)

    async def resolve_target(self, me: User, target: str) -> str:
        """
        The canonical spelling of a target that C{me} may read, or an error.
        """
        if target == BROADCAST_TARGET:
            return target
        if target.startswith(GROUP_PREFIX):
            group = await self._member_group(me, target[1:])
            return GROUP_PREFIX + group.name
        return (await self._user(target)).name

    # Who is here

    async def who(self) -> list[str]:
        online = await self.presence.online()
        return sorted((p.name for p in online), key=names.fold)

    async def users(self) -> list[UserStatus]:
        online = {names.fold(p.name) for p in await self.presence.online()}
        return [
            UserStatus(u.name, names.fold(u.name) in online)
            for u in await self.store.list_users()
        ]

    # Groups

    async def my_groups(self, me: User) -> list[Group]:
        return await self.store.groups_of(me)

    async def browse_groups(self, me: User, search: str) -> list[Group]:
        return await self.store.browse_groups(me, search)

    async def create_group(self, me: User, name: str, description: str) -> Group:
        try:
            names.check_name(name, "group name")
        except names.InvalidName as e:
            raise ChatError("invalid_name", str(e)) from e
        description = neutralise(description).strip()
        if len(description) > names.MAX_DESCRIPTION:
            raise ChatError(
                "bad_request",
                f"a description has at most {names.MAX_DESCRIPTION} characters",
            )
        try:
            group = await self.store.create_group(
                me, name, names.fold(name), description, self.now()
            )
        except NameTaken:
            raise ChatError("name_taken", f"a group called #{name} exists") from None
        self.log.info("{user} created group {group}", user=me.name, group=name)
        return group

    async def invite(self, me: User, group_name: str, user_name: str) -> Group:
        group = await self._admin_group(me, group_name)
        other = await self._user(user_name)
        if not await self.store.add_member(group, other, Role.MEMBER, self.now()):
            raise ChatError("bad_request", f"{other.name} is already in #{group.name}")
        self.router.deliver(
            [names.fold(other.name)], GroupEvent("invited", group.name, me.name)
        )
        return group

    async def remove(self, me: User, group_name: str, user_name: str) -> Group:
        group = await self._admin_group(me, group_name)
        other = await self._user(user_name)
        if other.id == me.id:
            raise ChatError(
                "bad_request", f"use /group leave {group.name} to leave a group"
            )
        if not any(m.name == other.name for m in await self.store.members(group)):
            raise ChatError("bad_request", f"{other.name} is not in #{group.name}")
        await self.store.remove_member(group, other, self.now())
        self.router.deliver(
            [names.fold(other.name)], GroupEvent("removed", group.name, me.name)
        )
        return group

    async def join(self, me: User, group_name: str) -> Group:
        group = await self._group(me, group_name)
        if group.my_role is not None:
            raise ChatError("bad_request", f"you are already in #{group.name}")
        if group.is_private:
            raise ChatError(
                "forbidden", f"#{group.name} is private: an admin must invite you"
            )
        await self.store.add_member(group, me, Role.MEMBER, self.now())
        return group

    async def leave(self, me: User, group_name: str) -> int:
        """
        Leave a group; return how many members remain (none: it is closed).
        """
        group = await self._member_group(me, group_name)
        return await self.store.remove_member(group, me, self.now())

    async def members(self, me: User, group_name: str) -> tuple[Group, list[Member]]:
        group = await self._member_group(me, group_name)
        return group, await self.store.members(group)

    async def set_private(self, me: User, group_name: str, private: bool) -> Group:
        group = await self._admin_group(me, group_name)
        await self.store.set_private(group, private)
        return group


async def audience(store: Store, message: Message) -> list[str] | None:
    """
    The folded names of the people a stored message is for, or C{None} when
    it is for everyone.  A group message is for the group's members as they
    are now.
    """
    if message.kind is Kind.BROADCAST:
        return None
    if message.kind is Kind.GROUP:
        return await store.group_member_names(message.target[len(GROUP_PREFIX) :])
    return [names.fold(message.target)]


def _expired() -> ChatError:
    return ChatError(
        "bad_token", "that session has expired or ended; log in with your password"
    )


def unavailable(error: DatabaseUnavailable) -> ChatError:
    """
    The error a person sees while the database or Redis cannot be reached.
    """
    return ChatError(
        "unavailable", f"the server cannot reach its {error.what}; try again shortly"
    )
