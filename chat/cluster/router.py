"""
Routing events between replicas over Redis pub/sub.

People connected here get their events straight from the registry.  Messages
go to every replica on one shared channel, with the names of the people each
is for, and every replica hands them on in id order through a
L{chat.cluster.sequence.Sequencer}, its own messages included, so that
everyone sees messages in the order of their ids.  For other events, presence
says which replica holds the people concerned, and one PUBLISH per replica
carries the event on that replica's own channel; events for everyone go on
the shared channel too.  Each replica listens to its own channel and the
shared one.

Pub/sub forgets what it could not deliver, and while a replica is cut off
from Redis others cannot find its people.  Every message is stored before it
is routed, so once a replica has both its connections back and its presence
restored it fills the gap from the database: each local session gets the
messages for its person that came after the last one it was shown.  Messages
this replica could not publish meanwhile are published again.  A session shows
a message at most once (L{chat.events.DeliveryLog}), so overlaps are harmless.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import logs
from chat.cluster.codec import BadEnvelope, Envelope, decode, encode
from chat.cluster.keys import KEYS, Keys
from chat.cluster.presence import RedisPresence
from chat.cluster.redisconn import RedisClient, RedisUnavailable
from chat.cluster.sequence import Audience, Sequencer
from chat.db import DatabaseUnavailable
from chat.events import Event, MessageEvent
from chat.records import Message
from chat.service import audience
from chat.storage import Store

if TYPE_CHECKING:
    from chat.factory import ConnectionRegistry
    from chat.protocol import ChatProtocol

# The most messages one session is sent when catching up after a gap.
CATCH_UP_LIMIT = 500
# The most messages kept to publish again once Redis is back.
UNSENT_LIMIT = 1000


@dataclass
class Traffic:
    """
    Message counts since start: C{sent} by people here, C{shown} to people
    here (one per connection reached).
    """

    sent: int = 0
    shown: int = 0


class RedisRouter:
    """
    L{chat.service.IRouter} for a cluster.
    """

    log = Logger(observer=logs.observer)

    def __init__(
        self,
        registry: ConnectionRegistry,
        presence: RedisPresence,
        redis: RedisClient,
        store: Store,
        server_id: str,
        clock: IReactorTime,
        keys: Keys = KEYS,
    ) -> None:
        self._registry = registry
        self._presence = presence
        self._redis = redis
        self._store = store
        self._server_id = server_id
        self._keys = keys
        self.traffic = Traffic()
        # The highest message id this replica has handled, and the highest
        # it had handled when the subscriber last proved to be working.
        self._known = 0
        self._confirmed = 0
        # Set while a gap is open: the mark to catch up from.
        self._gap_from: int | None = None
        self._unsent: deque[tuple[Audience, MessageEvent]] = deque(maxlen=UNSENT_LIMIT)
        self.in_order = Sequencer(clock, self._missed, self._hand_on, registry.spawn)

    async def start(self) -> None:
        """
        Take the newest message stored so far as the point to hand on from.
        """
        try:
            self.in_order.start_after(await self._store.last_message_id())
        except DatabaseUnavailable as e:
            self.log.warn(
                "the database is unavailable, so messages are handed on in"
                " order from the first one to arrive: {error}",
                error=str(e),
            )

    @property
    def channels(self) -> list[str]:
        return [self._keys.replica(self._server_id), self._keys.everyone]

    # IRouter

    def deliver(self, folded_names: list[str], event: Event) -> None:
        self._sent(event)
        if isinstance(event, MessageEvent):
            self.in_order.feed(event.message, folded_names)
            self._to_everyone(Envelope(self._server_id, event, folded_names))
            return
        by_user = self._registry.by_user
        self._show([name for name in folded_names if name in by_user], event)
        remote = [name for name in folded_names if name not in by_user]
        if remote:
            self._registry.spawn("route", self._route(remote, event))

    def deliver_all(self, event: Event) -> None:
        self._sent(event)
        if isinstance(event, MessageEvent):
            self.in_order.feed(event.message, None)
        else:
            self._show(None, event)
        self._to_everyone(Envelope(self._server_id, event))

    def replace(self, folded_name: str) -> None:
        self._registry.replace(folded_name)
        self._to_everyone(Envelope(self._server_id, replace=folded_name))

    # Out

    def _sent(self, event: Event) -> None:
        if isinstance(event, MessageEvent):
            self.traffic.sent += 1
            self._known = max(self._known, event.message.id)

    def _show(self, folded_names: Sequence[str] | None, event: Event) -> None:
        if folded_names is None:
            connections = [c for held in self._registry.by_user.values() for c in held]
        else:
            by_user = self._registry.by_user
            connections = [c for name in folded_names for c in by_user.get(name, ())]
        self._registry.show(connections, event)
        if isinstance(event, MessageEvent):
            self.traffic.shown += len(connections)

    def _hand_on(self, message: Message, to: Audience) -> None:
        self._show(to, MessageEvent(message))

    async def _missed(
        self, after: int, before: int, limit: int
    ) -> list[tuple[Message, Audience]]:
        messages = await self._store.messages_between(after, before, limit)
        return [(m, await audience(self._store, m)) for m in messages]

    def _to_everyone(self, envelope: Envelope) -> None:
        publishing = self._publish([(self._keys.everyone, envelope)])
        self._registry.spawn("publish", publishing)

    async def _route(self, folded_names: list[str], event: Event) -> None:
        try:
            where = await self._presence.where(folded_names)
        except RedisUnavailable as e:
            self._not_passed_on(folded_names, event, e)
            return
        by_server: dict[str, list[str]] = {}
        for name, server in where.items():
            if server != self._server_id:
                by_server.setdefault(server, []).append(name)
        await self._publish(
            [
                (self._keys.replica(server), Envelope(self._server_id, event, names))
                for server, names in by_server.items()
            ]
        )

    async def _publish(self, envelopes: list[tuple[str, Envelope]]) -> None:
        # Every PUBLISH is written before any reply is awaited, so events
        # leave in the order the service handed them over.
        sending = [
            Deferred.fromCoroutine(
                self._redis.execute("PUBLISH", channel, encode(envelope))
            )
            for channel, envelope in envelopes
        ]
        try:
            await gatherResults(sending, consumeErrors=True)
        except Exception as e:
            error = getattr(e, "subFailure", None)
            cause = error.value if error is not None else e
            if not isinstance(cause, RedisUnavailable):
                raise
            for _, envelope in envelopes:
                if envelope.event is not None:
                    self._not_passed_on(envelope.to, envelope.event, cause)

    def _not_passed_on(
        self, folded_names: list[str] | None, event: Event, error: Exception
    ) -> None:
        # Messages are kept to publish again; other events are lost, as they
        # would be to anyone offline.
        self.log.warn(
            "could not pass {event} to other replicas: {error}",
            event=type(event).__name__,
            error=str(error),
        )
        if isinstance(event, MessageEvent):
            self._unsent.append((folded_names, event))

    # In

    def received(self, channel: str, text: str) -> None:
        """
        Hand an event from another replica to the people here it is for.
        """
        try:
            envelope = decode(text)
        except BadEnvelope as e:
            self.log.warn(
                "ignored a message on {channel}: {error}", channel=channel, error=str(e)
            )
            return
        event = envelope.event
        if isinstance(event, MessageEvent):
            self._known = max(self._known, event.message.id)
        self._confirmed = self._known
        if envelope.origin == self._server_id and channel == self._keys.everyone:
            return
        if envelope.replace is not None:
            self._registry.replace(envelope.replace)
        elif isinstance(event, MessageEvent):
            self.in_order.feed(event.message, envelope.to)
        elif event is not None:
            self._show(envelope.to, event)

    def heard(self) -> None:
        """
        The subscriber's ping came back: nothing published before it was lost.
        """
        self._confirmed = self._known

    def cut_off(self) -> None:
        """
        A Redis connection was lost: a gap opens, unless one is open already.
        """
        if self._gap_from is None:
            self._gap_from = self._confirmed

    def subscribed(self, complete: bool) -> None:
        """
        The subscriber is listening again.
        """
        self._confirmed = self._known
        self.restored(complete)

    def restored(self, complete: bool) -> None:
        """
        A connection or this replica's presence is back: catch up on the gap,
        and publish again what could not be published.

        @param complete: whether both connections are up and presence is
            restored, which closes the gap; until then each step catches up
            on what it can.
        """
        gap_from = self._gap_from
        if gap_from is None:
            return
        if complete:
            self._gap_from = None
            unsent, self._unsent = list(self._unsent), deque(maxlen=UNSENT_LIMIT)
            for folded_names, event in unsent:
                self._to_everyone(Envelope(self._server_id, event, folded_names))
        self._registry.spawn("catch-up", self.catch_up(gap_from))

    async def catch_up(self, gap_from: int) -> None:
        """
        Show each session here the messages for its person after
        C{gap_from}, or after the last one it was shown if that is lower.
        """
        shown = 0
        for held in list(self._registry.by_user.values()):
            for connection in list(held):
                try:
                    shown += await self._catch_up_one(connection, gap_from)
                except DatabaseUnavailable as e:
                    self.log.warn(
                        "catch-up stopped, the database is unavailable: {error}",
                        error=str(e),
                    )
                    return
        self.log.info(
            "caught up after losing Redis: {count} messages shown", count=shown
        )

    async def _catch_up_one(self, connection: ChatProtocol, gap_from: int) -> int:
        login = connection.login
        if login is None:
            return 0
        log = connection.delivered
        after = max(log.horizon, min(log.last, gap_from))
        messages = await self._store.messages_for(login.user, after, CATCH_UP_LIMIT)
        shown = 0
        for message in messages:
            if connection.login is not login:
                break
            if message.id not in log:
                connection.deliver(MessageEvent(message))
                shown += 1
        self._known = max([self._known] + [m.id for m in messages])
        return shown
