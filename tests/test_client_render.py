"""
Tests for L{client.render} and the event parsing in L{client.model}.
"""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from client.model import (
    Away,
    Event,
    GroupEvent,
    MalformedData,
    Message,
    MessageEvent,
    NoticeEvent,
    PresenceEvent,
    parse_event,
)
from client.render import (
    away_line,
    clean,
    clock,
    event_line,
    interrupted_line,
    message_line,
    reconnected_line,
)

PARIS_WINTER = timezone(timedelta(hours=1))


MESSAGE = {
    "id": 7,
    "kind": "private",
    "from": "bob",
    "to": "alice",
    "text": "hello",
    "ts": "2026-12-04T15:46:37.123Z",
}


def message(**fields: object) -> Message:
    return Message.from_json({**MESSAGE, **fields})


class CleanTests(SynchronousTestCase):
    def test_escape_sequences_neutralised(self) -> None:
        """
        Escape, other C0 and C1 controls and DEL never reach the terminal.
        """
        text = clean("a\x1b[2Jb\x07c\x9bd\x7fe\r\nf")
        for char in "\x1b\x07\x9b\x7f\r\n":
            self.assertNotIn(char, text)
        self.assertIn("[2Jb", text)

    def test_message_fields_cleaned(self) -> None:
        """
        Sender and text of a shown message are both neutralised.
        """
        line = message_line(
            message(**{"from": "ev\x1bil", "text": "x\x1b]0;t\x07"}), UTC
        )
        self.assertNotIn("\x1b", line)
        self.assertNotIn("\x07", line)

    def test_events_cleaned(self) -> None:
        """
        Text in presence, group and notice events is neutralised.
        """
        events: list[Event] = [
            PresenceEvent("b\x1bob", True),
            GroupEvent("invited", "g\x1b", "x\x1b"),
            NoticeEvent("down\x1b[5m"),
            MessageEvent(message(text="\x1b[31mred", to="#g\x1b", kind="group")),
        ]
        for event in events:
            self.assertNotIn("\x1b", event_line(event, "alice", None, UTC))


class FormatTests(SynchronousTestCase):
    def test_clock_in_local_zone(self) -> None:
        """
        Times are shown as HH:MM in the given zone.
        """
        self.assertEqual(clock(message().sent_at, UTC), "15:46")
        self.assertEqual(clock(message().sent_at, PARIS_WINTER), "16:46")
        self.assertEqual(clock(None), "--:--")

    def test_open_conversation_in_full(self) -> None:
        """
        A message for the conversation on screen is shown in full.
        """
        event = MessageEvent(message(text="a" * 100))
        self.assertEqual(
            event_line(event, "alice", "bob", UTC), f"[15:46] bob: {'a' * 100}"
        )

    def test_other_conversation_notified(self) -> None:
        """
        A message for another conversation is a short line naming its origin.
        """
        private = event_line(MessageEvent(message(text="a" * 100)), "alice", "*", UTC)
        group = event_line(
            MessageEvent(message(kind="group", to="#devs")), "alice", "carol", UTC
        )
        broadcast = event_line(
            MessageEvent(message(kind="broadcast", to="*")), "alice", None, UTC
        )

        self.assertIn("private message from bob", private)
        self.assertLessEqual(len(private), 80)
        self.assertIn("#devs from bob", group)
        self.assertIn("broadcast from bob", broadcast)

    def test_group_message_in_open_group(self) -> None:
        """
        A group message is shown in full when that group is open.
        """
        event = MessageEvent(message(kind="group", to="#devs"))
        self.assertEqual(event_line(event, "alice", "#devs", UTC), "[15:46] bob: hello")

    def test_away_summary(self) -> None:
        """
        The login summary counts what arrived while away, or says nothing.
        """
        self.assertIsNone(away_line(Away(0, 0, 0)))
        line = away_line(Away.from_json({"private": 2, "group": 0, "broadcast": 1}))
        self.assertEqual(
            line, "3 messages arrived while you were away (2 private, 1 broadcast)."
        )


class ParseTests(SynchronousTestCase):
    def test_message_event(self) -> None:
        """
        A message event carries a typed message with an aware timestamp.
        """
        event = parse_event({"type": "message", "message": MESSAGE})
        self.assertEqual(event, MessageEvent(message()))
        assert isinstance(event, MessageEvent) and event.message.sent_at is not None
        self.assertEqual(event.message.sent_at.utcoffset(), timedelta(0))

    def test_group_event_with_name_or_object(self) -> None:
        """
        A group event may name the group or carry the group object.
        """
        for group in ("devs", "#devs", {"name": "devs", "members": 2}):
            event = parse_event({"type": "group", "event": "invited", "group": group})
            self.assertEqual(event, GroupEvent("invited", "devs", ""))

    def test_unknown_event_ignored(self) -> None:
        """
        Event types this client does not know parse to None.
        """
        self.assertIsNone(parse_event({"type": "typing", "user": "bob"}))

    def test_malformed_event(self) -> None:
        """
        Known events without their fields are refused.
        """
        for event in (
            {"type": "message", "message": {"id": "x"}},
            {"type": "presence", "user": 5, "online": True},
            {"type": "notice"},
        ):
            self.assertRaises(MalformedData, parse_event, event)

    def test_notice_with_code(self) -> None:
        """
        A notice keeps its code, and one with only a code still shows.
        """
        maintenance = {"type": "notice", "code": "maintenance", "text": "going down"}
        self.assertEqual(
            parse_event(maintenance), NoticeEvent("going down", "maintenance")
        )
        replaced = parse_event({"type": "notice", "code": "replaced"})
        self.assertEqual(replaced, NoticeEvent("", "replaced"))
        assert replaced is not None
        self.assertEqual(event_line(replaced, "me", None), "** SERVER: replaced")

    def test_connection_status_lines(self) -> None:
        """
        The offline status names the wait in whole seconds, at least one;
        the reconnected line counts the missed messages.
        """
        self.assertEqual(
            interrupted_line(1.7), "connection lost; reconnecting in 2 s..."
        )
        self.assertEqual(
            interrupted_line(0.2), "connection lost; reconnecting in 1 s..."
        )
        self.assertEqual(
            reconnected_line(3), "reconnected; 3 messages arrived while you were away"
        )
        self.assertEqual(
            reconnected_line(1), "reconnected; 1 message arrived while you were away"
        )
