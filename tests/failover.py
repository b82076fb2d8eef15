"""
The people of the failover test and the ledger of their messages.

A L{Person} is the listener of one real client L{client.session.Session}: it
records what the session was shown and how it resumed.  L{Traffic} makes
everyone send paced messages of every kind, keeps each acknowledged one with
the people it was meant for, and says what each person lacks, got twice or
got out of order.
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from client.connection import JsonObject
from client.model import Away
from client.session import Session, SessionOver
from tests.servers import LOCALHOST

SEED = 20261204
# One message per person every SEND_INTERVAL_SECONDS on average: with 33
# people about 50 a second, well below the per-connection command limit
# even when the messages queued during an outage all go out at once.
SEND_INTERVAL_SECONDS = 0.7
KIND_WEIGHTS = {"private": 2, "group": 1, "broadcast": 1}
POLL_SECONDS = 0.05
# How many problems of each kind a failure message lists per person.
SHOWN_PROBLEMS = 6


@dataclass(frozen=True)
class Sent:
    """
    One acknowledged message, who should be shown it, and where it was sent.
    """

    id: int
    kind: str
    sender: str
    target: str
    text: str
    ref: str
    recipients: frozenset[str]
    replica: str


@dataclass(frozen=True)
class Resumed:
    """
    One resumption of a session as the client saw it: when, where, and the
    last message id it resumed after.
    """

    at: float
    replica: str
    last_id: int
    missed: int


@dataclass
class Person:
    """
    One user of the real client's session layer, and what they were shown.

    It is the session's listener: it keeps the ids of the messages shown (live
    or replayed on resume) in the order they came, the notices, and each
    resumption.  Being asked for the password counts as losing the session.
    """

    name: str
    home: str
    ports: dict[int, str]
    received: list[int] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    resumes: list[Resumed] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    password_asked: int = 0
    logins_again: int = 0
    session: Session | None = None
    caught_up_at: float | None = None
    ended: bool = False
    connected: bool = False
    final_replica: str = ""
    _awaited: set[int] = field(default_factory=set)

    @property
    def replica(self) -> str:
        """
        The replica the session is on, or is about to try.
        """
        assert self.session is not None
        return self.ports[self.session.address.port]

    def note_end(self) -> None:
        """
        Record the state of the session at the end of the run.
        """
        assert self.session is not None
        self.ended = self.session.ended.called
        self.connected = self.session.connected
        self.final_replica = self.replica

    def await_ids(self, ids: set[int]) -> None:
        """
        Set C{caught_up_at} to the time when every one of C{ids} was shown.
        """
        self._awaited = ids - set(self.received)
        self.caught_up_at = None if self._awaited else reactor.seconds()

    def event_received(self, event: JsonObject) -> None:
        if event.get("type") == "message":
            message_id = event["message"]["id"]
            self.received.append(message_id)
            if message_id in self._awaited:
                self._awaited.discard(message_id)
                if not self._awaited:
                    self.caught_up_at = reactor.seconds()
        elif event.get("type") == "notice":
            self.notices.append(str(event.get("code")))

    def connection_interrupted(self, delay: float) -> None:
        pass

    def reconnected(self, missed: int) -> None:
        assert self.session is not None
        resumed = Resumed(reactor.seconds(), self.replica, self.session.last_id, missed)
        self.resumes.append(resumed)

    def logged_in_again(self, away: Away) -> None:
        self.logins_again += 1

    def ask_password(self, user: str) -> Deferred[str]:
        self.password_asked += 1
        return fail(SessionOver(f"{user} was asked for the password"))


class Traffic:
    """
    Paced messages of every kind from everyone, and the ledger of what was
    acknowledged and whom it was for.
    """

    def __init__(self, people: list[Person]) -> None:
        self.people = people
        self.members: dict[str, frozenset[str]] = {}
        self.rng = random.Random(SEED)
        self.sent: dict[int, Sent] = {}
        self.refs: dict[str, int] = {}
        self.errors: list[str] = []
        self.deduplicated = 0
        self.replies: list[Deferred[None]] = []
        self.running = False

    def start(self) -> list[Deferred[None]]:
        self.running = True
        return [Deferred.fromCoroutine(self._chatter(p)) for p in self.people]

    async def _chatter(self, person: Person) -> None:
        number = 0
        while self.running:
            number += 1
            self.send(person, *self._pick(person), f"{person.name}-{number}")
            await sleep(SEND_INTERVAL_SECONDS * (0.5 + self.rng.random()))

    def _pick(self, person: Person) -> tuple[str, str, frozenset[str]]:
        """
        A random kind of message, its target and everyone it is for.
        """
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "private":
            peer = self.rng.choice([p for p in self.people if p is not person])
            return kind, peer.name, frozenset({peer.name})
        if kind == "group":
            group = self.rng.choice(person.groups)
            return kind, "#" + group, self.members[group]
        return kind, "*", frozenset(p.name for p in self.people)

    def send(
        self, person: Person, kind: str, target: str, everyone: frozenset[str], ref: str
    ) -> None:
        """
        Send a message under C{ref}; once it is acknowledged, enter it in the
        ledger with its recipients, everyone but the sender.
        """
        text = f"{kind} {ref}"
        assert person.session is not None
        reply = person.session.request("msg", target=target, text=text, ref=ref)

        def acknowledged(reply: JsonObject) -> None:
            message = reply["message"]
            if message["text"] != text:
                self.errors.append(f"acknowledged with another text: {reply}")
            if reply.get("duplicate"):
                # The first answer may have been lost with its connection,
                # so a duplicate can be the only acknowledgement.
                self.deduplicated += 1
                if self.refs.get(ref, message["id"]) != message["id"]:
                    self.errors.append(f"a duplicate of another message: {reply}")
                if ref in self.refs:
                    return
            elif message["id"] in self.sent or ref in self.refs:
                self.errors.append(f"acknowledged twice: {reply}")
            recipients = everyone - {person.name}
            self.sent[message["id"]] = Sent(
                message["id"],
                kind,
                person.name,
                target,
                text,
                ref,
                recipients,
                person.replica,
            )
            self.refs[ref] = message["id"]

        def failed(failure: Failure) -> None:
            self.errors.append(f"{ref} to {target} failed: {failure.value!r}")

        self.replies.append(reply.addCallbacks(acknowledged, failed))

    def expected_for(self, person: Person, among: set[int] | None = None) -> set[int]:
        """
        The ids of the acknowledged messages (of C{among}) meant for C{person}.
        """
        return {
            sent.id
            for sent in self.sent.values()
            if person.name in sent.recipients and (among is None or sent.id in among)
        }

    def missing(self) -> dict[str, set[int]]:
        gaps = {p.name: self.expected_for(p) - set(p.received) for p in self.people}
        return {name: ids for name, ids in gaps.items() if ids}

    def describe(self, message_id: int) -> str:
        sent = self.sent.get(message_id)
        if sent is None:
            return str(message_id)
        return f"{message_id} ({sent.kind} by {sent.sender} on {sent.replica})"

    def _resumes(self, person: Person) -> str:
        resumes = ", ".join(
            f"on {r.replica} after {r.last_id} ({r.missed} missed)"
            for r in person.resumes
        )
        return f"{person.name} (home {person.home}; resumed {resumes or 'never'})"

    def lost(self, person: Person) -> list[int]:
        """
        The messages meant for C{person} that they were never shown.
        """
        return sorted(self.expected_for(person) - set(person.received))

    def delivery_problems(self, person: Person) -> str | None:
        """
        What was lost, shown twice or shown to the wrong person, or None.
        """
        counts = Counter(person.received)
        twice = sorted(i for i, n in counts.items() if n > 1)
        lost = self.lost(person)
        stray = sorted(counts.keys() - self.expected_for(person))
        if not (twice or lost or stray):
            return None
        some = slice(SHOWN_PROBLEMS)
        return (
            f"{self._resumes(person)}:"
            f" lost {len(lost)} {[self.describe(i) for i in lost[some]]};"
            f" twice {len(twice)} {[self.describe(i) for i in twice[some]]};"
            f" stray {len(stray)} {stray[some]}"
        )

    def disorder(self, person: Person) -> list[tuple[int, int]]:
        """
        Each message shown to C{person} right after one with a higher id.
        """
        shown = person.received
        return [(a, b) for a, b in zip(shown, shown[1:], strict=False) if b < a]

    def order_problems(self, person: Person) -> str | None:
        """
        What was shown right after a higher id, or None.
        """
        pairs = self.disorder(person)
        if not pairs:
            return None
        shown = [(self.describe(a), self.describe(b)) for a, b in pairs]
        return (
            f"{self._resumes(person)}: {len(pairs)} shown after a higher id,"
            f" such as {shown[slice(SHOWN_PROBLEMS)]}"
        )


def flush_redis(port: int, number: int) -> None:
    """
    Empty one Redis database, so that no presence or token left by an
    earlier run in this process can get in the way.
    """
    with socket.create_connection((LOCALHOST, port), timeout=5) as connection:
        connection.sendall(f"SELECT {number}\r\nFLUSHDB\r\n".encode())
        replies = b""
        while replies.count(b"\r\n") < 2:
            chunk = connection.recv(64)
            if not chunk:
                break
            replies += chunk
    if replies != b"+OK\r\n+OK\r\n":
        raise AssertionError(f"Redis did not flush database {number}: {replies!r}")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_until(check: Callable[[], bool], bound: float) -> float | None:
    """
    Wait until C{check} holds and return the time, or None after C{bound} s.
    """
    deadline = reactor.seconds() + bound
    while not check():
        if reactor.seconds() > deadline:
            return None
        await sleep(POLL_SECONDS)
    return reactor.seconds()
