"""
Fan-out: one rendering per viewpoint, the same bytes a viewer would get alone,
and one count of the deliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

from twisted.trial.unittest import SynchronousTestCase

from chat.events import Event, GroupEvent, MessageEvent, NoticeEvent, PresenceEvent
from chat.fanout import Fanout
from chat.metrics import ChatMetrics, CountedHistogram
from chat.records import Kind, Message
from chat.render import JsonRenderer, Renderer, TextRenderer, wire
from tests.test_admin import sample

WHEN = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
PEOPLE = ["alice", "bob", "carol", ""]
TARGETS = ["", "alice", "bob", "carol", "#team", "*"]


def message(kind: Kind, target: str, id: int = 7) -> Message:
    return Message(id, kind, "alice", target, "hi \x1b[31mthere", WHEN)


EVENTS: list[Event] = [
    MessageEvent(message(Kind.PRIVATE, "bob")),
    MessageEvent(message(Kind.GROUP, "#team")),
    MessageEvent(message(Kind.BROADCAST, "*")),
    PresenceEvent("alice", True),
    GroupEvent("invited", "team", "alice"),
    NoticeEvent("going down", "maintenance", 5.0),
]


class CountingRenderer(TextRenderer):
    """
    The text renderer, counting how often it renders an event.
    """

    def __init__(self) -> None:
        self.renders = 0

    def event(self, event: Event, me: str, open_target: str) -> list[str]:
        self.renders += 1
        return super().event(event, me, open_target)


class Counter:
    def __init__(self) -> None:
        self.counts: list[tuple[Message, int]] = []

    def delivered(self, message: Message, count: int) -> None:
        self.counts.append((message, count))


class RenderedTests(SynchronousTestCase):
    def test_same_bytes_as_alone(self) -> None:
        """
        Every viewer, in either mode, gets from a shared fan-out exactly the
        bytes its renderer gives it alone.
        """
        renderers: list[Renderer] = [TextRenderer(), JsonRenderer()]
        for event in EVENTS:
            fanout = Fanout(event)
            for renderer, me, open_target in product(renderers, PEOPLE, TARGETS):
                data, size = fanout.rendered(renderer, me, open_target)
                alone = wire(renderer.event(event, me, open_target))
                self.assertEqual(data, alone, (event, me, open_target))
                self.assertEqual(size, sum(map(len, alone)))

    def test_json_renders_once(self) -> None:
        """
        In JSON mode all viewers of an event share one rendering.
        """
        fanout = Fanout(EVENTS[2])
        first = fanout.rendered(JsonRenderer(), "bob", "")
        for me, open_target in product(PEOPLE, TARGETS):
            self.assertIs(fanout.rendered(JsonRenderer(), me, open_target), first)

    def test_text_renders_per_viewpoint(self) -> None:
        """
        A private message in text mode is rendered once for its recipient with
        the conversation open, once without, and once for its sender.
        """
        renderer = CountingRenderer()
        fanout = Fanout(EVENTS[0])
        for _ in range(3):
            fanout.rendered(renderer, "bob", "alice")
            fanout.rendered(renderer, "bob", "")
            fanout.rendered(renderer, "bob", "#team")
            fanout.rendered(renderer, "alice", "")
        self.assertEqual(renderer.renders, 3)

    def test_broadcast_text_once_per_view(self) -> None:
        """
        A broadcast in text mode renders twice at most: for those with the
        broadcast conversation open and for everyone else.
        """
        renderer = CountingRenderer()
        fanout = Fanout(EVENTS[2])
        for me, open_target in product(PEOPLE, TARGETS):
            fanout.rendered(renderer, me, open_target)
        self.assertEqual(renderer.renders, 2)


class CountTests(SynchronousTestCase):
    def test_counted_once(self) -> None:
        """
        The deliveries of a fan-out reach the counter once, with their number.
        """
        counter = Counter()
        fanout = Fanout(EVENTS[1])
        for _ in range(9):
            fanout.count(counter)
        self.assertEqual(counter.counts, [])
        fanout.finish()
        self.assertEqual(counter.counts, [(message(Kind.GROUP, "#team"), 9)])

    def test_nothing_shown(self) -> None:
        """
        A fan-out that showed its message to nobody reports nothing.
        """
        fanout = Fanout(EVENTS[0])
        fanout.finish()
        self.assertEqual(fanout.shown, 0)


class CountedHistogramTests(SynchronousTestCase):
    def test_buckets(self) -> None:
        """
        Observations land in the first bucket whose bound they do not exceed,
        as many times as counted, and the sum weighs them by their count.
        """
        metrics = ChatMetrics()
        metrics.delivery.observe(0.001, 3)
        metrics.delivery.observe(0.002, 2)
        metrics.delivery.observe(60.0)
        text = metrics.exposition()
        self.assertEqual(sample(text, 'chat_delivery_seconds_bucket{le="0.001"}'), 3)
        self.assertEqual(sample(text, 'chat_delivery_seconds_bucket{le="0.0025"}'), 5)
        self.assertEqual(sample(text, 'chat_delivery_seconds_bucket{le="10.0"}'), 5)
        self.assertEqual(sample(text, 'chat_delivery_seconds_bucket{le="+Inf"}'), 6)
        self.assertEqual(sample(text, "chat_delivery_seconds_count"), 6)
        self.assertAlmostEqual(sample(text, "chat_delivery_seconds_sum"), 60.007)

    def test_empty(self) -> None:
        """
        Before any observation every bucket reads zero.
        """
        histogram = CountedHistogram("x_seconds", "x", (1.0, 2.0))
        (family,) = histogram.collect()
        self.assertEqual([s.value for s in family.samples], [0, 0, 0, 0, 0.0])
