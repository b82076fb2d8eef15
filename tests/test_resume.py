"""
Resuming a session with its token, and sending without duplicates.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from chat import service
from chat.db import DatabaseUnavailable
from chat.records import Message
from chat.service import Login
from chat.sessions import SESSION_IDLE
from tests.harness import Client
from tests.test_protocol import ProtocolTestCase


def token_of(lines: list[str]) -> str:
    for line in lines:
        if line.startswith("token: "):
            return line.split()[1]
    raise AssertionError(f"no token in {lines!r}")


class ResumeTests(ProtocolTestCase):
    async def json_user(self, name: str) -> tuple[Client, dict[str, Any]]:
        client = self.harness.connect()
        await client.send("/mode json")
        reply = await client.send_json(cmd="signup", name=name, password="pw-123456")
        return client, reply[0]

    async def test_text_resume_after_disconnect(self) -> None:
        """
        A person cut off resumes with /resume TOKEN on a new connection, gets
        what arrived meanwhile in order, and a new token.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        bob = await self.harness.user("bob")
        await alice.disconnect()
        await bob.send("/msg alice first")
        await bob.send("/msg * second")
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertEqual(
            lines[0],
            "Welcome back, alice! Session resumed; 2 messages arrived while you"
            " were away.",
        )
        new_token = token_of(lines)
        self.assertNotEqual(new_token, token)
        self.assertEqual(
            lines[3:],
            ["[15:00] bob (private): first", "[15:00] bob to everyone: second"],
        )
        await bob.send("/msg alice live")
        self.assertEqual(again.lines(), ["[15:00] bob (private): live"])

    async def test_old_token_stops_working(self) -> None:
        """
        After a resume the old token is refused.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        await alice.disconnect()
        first = self.harness.connect()
        first.output()
        await first.send(f"/resume {token}")
        await first.disconnect()
        second = self.harness.connect()
        second.output()
        self.assertEqual(
            await second.send(f"/resume {token}"),
            ["error: that session has expired or ended; log in with your password"],
        )

    async def test_resume_takes_over_a_live_connection(self) -> None:
        """
        A resume replaces the person's stale connection instead of being
        refused; the old connection is told and closed, and the person stays
        online.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        bob = await self.harness.user("bob")
        fresh = self.harness.connect()
        fresh.output()
        await fresh.send(f"/resume {token}")
        self.assertEqual(alice.lines(), ["*** your session was resumed elsewhere"])
        self.assertTrue(alice.transport.disconnecting)
        alice.protocol.connectionLost()
        await alice.settle()
        self.assertTrue(await self.harness.service.presence.is_online("alice"))
        await bob.send("/msg alice still here?")
        self.assertEqual(fresh.lines(), ["[15:00] bob (private): still here?"])

    async def test_password_login_still_refused_while_online(self) -> None:
        """
        Only a token takes over a live session; the password does not.
        """
        await self.harness.user("alice")
        other = self.harness.connect()
        other.output()
        lines = await other.send("/login alice password123")
        self.assertIn("already logged in", lines[0])

    async def test_json_resume_after_last_id(self) -> None:
        """
        A JSON resume sends every message after the client's last id, in
        order, after the reply.
        """
        alice, reply = await self.json_user("alice")
        bob = await self.harness.user("bob")
        await bob.send("/msg alice one")
        seen = alice.json()[-1]["message"]["id"]
        await alice.disconnect()
        await bob.send("/msg alice two")
        await bob.send("/msg alice three")
        again = self.harness.connect()
        await again.send("/mode json")
        events = await again.send_json(
            cmd="resume", token=reply["token"], last_id=seen, id="r"
        )
        self.assertEqual(events[0]["cmd"], "resume")
        self.assertEqual(events[0]["id"], "r")
        self.assertEqual(events[0]["missed"], 2)
        self.assertFalse(events[0]["gap"])
        texts = [e["message"]["text"] for e in events[1:]]
        self.assertEqual(texts, ["two", "three"])

    async def away_for_three_of_two(self) -> tuple[str, Client]:
        """
        With a resume sending at most 2 messages, alice leaves and bob sends
        her 3: alice's token and bob's connection.
        """
        self.patch(service, "RESUME_MAX", 2)
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        await alice.disconnect()
        bob = await self.harness.user("bob")
        for n in range(3):
            await bob.send(f"/msg alice m{n}")
        return token, bob

    async def test_gap_is_reported(self) -> None:
        """
        When more was missed than one resume sends, the person is told where
        the rest is.
        """
        token, _ = await self.away_for_three_of_two()
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token} 0")
        self.assertEqual(
            lines[-1],
            "*** more than 2 messages arrived while you were away; the older"
            " ones are in /history",
        )

    async def test_gap_resume_still_reads_what_came_meanwhile(self) -> None:
        """
        A resume that sends only the newest messages still shows those stored
        while it ran, after them.
        """
        token, bob = await self.away_for_three_of_two()
        stored_after = self.harness.service.stored_after

        async def meanwhile(login: Login, after: int) -> list[Message]:
            await bob.send("/msg alice during")
            return await stored_after(login, after)

        self.patch(self.harness.service, "stored_after", meanwhile)
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token} 0")
        shown = [line for line in lines if "(private)" in line]
        self.assertEqual(
            shown,
            [
                "[15:00] bob (private): m1",
                "[15:00] bob (private): m2",
                "[15:00] bob (private): during",
            ],
        )

    async def test_failed_resume_keeps_token_and_connection(self) -> None:
        """
        A resume that fails because the database is unavailable neither uses
        up the token nor closes the person's live connection.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        store = self.harness.store
        messages_for = store.messages_for

        async def unavailable(*args: Any, **kwargs: Any) -> list[Message]:
            raise DatabaseUnavailable("connection refused")

        self.patch(store, "messages_for", unavailable)
        attempt = self.harness.connect()
        attempt.output()
        lines = await attempt.send(f"/resume {token}")
        self.assertIn("cannot reach its database", lines[0])
        self.assertEqual(alice.lines(), [])
        self.assertFalse(alice.transport.disconnecting)
        self.patch(store, "messages_for", messages_for)
        lines = await attempt.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("Welcome back, alice!"), lines)

    async def test_last_id_beyond_every_message(self) -> None:
        """
        A last id higher than any stored message does not hide the messages
        that come after the resume.
        """
        alice, reply = await self.json_user("alice")
        bob = await self.harness.user("bob")
        await alice.disconnect()
        again = self.harness.connect()
        await again.send("/mode json")
        events = await again.send_json(
            cmd="resume", token=reply["token"], last_id=999999999
        )
        self.assertEqual(events[0]["missed"], 0)
        await bob.send("/msg alice after")
        [event] = again.json()
        self.assertEqual(event["message"]["text"], "after")

    async def test_last_id_of_other_digits(self) -> None:
        """
        Digits other than 0 to 9 in LAST_ID are a usage error.
        """
        client = self.harness.connect()
        client.output()
        for odd in ("\u00b2", "\u2460", "\u0661"):
            self.assertEqual(
                await client.send(f"/resume sometoken {odd}"),
                ["error: usage: /resume TOKEN [LAST_ID]"],
            )

    async def test_takeover_without_last_id_repeats_nothing(self) -> None:
        """
        A text-mode /resume TOKEN, which names no last id, from a second
        connection while the first is still open, shows none of the messages
        the first connection showed.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        bob = await self.harness.user("bob")
        await bob.send("/msg alice one")
        await bob.send("/msg alice two")
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("Welcome back, alice!"), lines)
        self.assertFalse([line for line in lines if "(private)" in line], lines)

    async def test_progress_is_recorded(self) -> None:
        """
        How far a person has been shown messages reaches the database while
        they are still connected, so that a resume after a crash starts there.
        """
        alice = self.harness.connect()
        alice.output()
        await alice.send("/signup alice password123")
        bob = await self.harness.user("bob")
        await bob.send("/msg alice one")
        [line] = alice.lines()
        user, _ = await self.harness.store.find_user("alice")
        self.assertEqual(await self.harness.store.seen_up_to(user), 0)
        await self.harness.service.save_seen()
        stored = await self.harness.store.messages_for(user, 0, 10)
        self.assertEqual(await self.harness.store.seen_up_to(user), stored[-1].id)

    async def test_token_expires_when_idle(self) -> None:
        """
        A token unused for ten minutes no longer resumes.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        await alice.disconnect()
        self.harness.clock.advance(SESSION_IDLE + 1)
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("error: that session has expired"))

    async def test_activity_keeps_token_alive(self) -> None:
        """
        A person who keeps sending commands keeps a resumable token.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        for _ in range(3):
            self.harness.clock.advance(SESSION_IDLE - 60)
            await alice.send("/ping")
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("Welcome back, alice!"), lines)

    async def test_quit_revokes_token(self) -> None:
        """
        /quit ends the session for good: its token no longer resumes.
        """
        alice = self.harness.connect()
        alice.output()
        token = token_of(await alice.send("/signup alice password123"))
        await alice.send("/quit")
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        lines = await again.send(f"/resume {token}")
        self.assertTrue(lines[0].startswith("error: that session has expired"))

    async def test_sessions_log_records_each_kind(self) -> None:
        """
        The sessions log records signup, login and resume, with logout times.
        """
        alice = self.harness.connect()
        alice.output()
        await alice.send("/signup alice password123")
        await alice.send("/quit")
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        token = token_of(await again.send("/login alice password123"))
        await again.disconnect()
        third = self.harness.connect()
        third.output()
        await third.send(f"/resume {token}")
        await third.disconnect()

        async def work(txn: Any) -> list[Any]:
            return await txn.execute(
                "SELECT kind, logout_at IS NOT NULL FROM sessions ORDER BY id"
            )

        rows = await self.harness.db.transaction(work)
        self.assertEqual(
            [tuple(r) for r in rows],
            [("signup", 1), ("login", 1), ("resume", 1)],
        )


class DeduplicationTests(ProtocolTestCase):
    async def test_resend_with_same_ref_is_stored_once(self) -> None:
        """
        A message resent with the same ref is acknowledged with the original
        id, and neither stored nor delivered again.
        """
        bob = await self.harness.user("bob")
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="pw-123456")
        bob.output()
        first = await client.send_json(cmd="msg", target="bob", text="hi", ref="r-1")
        again = await client.send_json(cmd="msg", target="bob", text="hi", ref="r-1")
        self.assertNotIn("duplicate", first[0])
        self.assertTrue(again[0]["duplicate"])
        self.assertEqual(again[0]["message"], first[0]["message"])
        self.assertEqual(await self.harness.store.count_messages(), 1)
        self.assertEqual(bob.lines(), ["[15:00] alice (private): hi"])

    async def test_refs_belong_to_their_sender(self) -> None:
        """
        Two people may use the same ref without one swallowing the other.
        """
        clients = []
        for name in ("alice", "bob"):
            client = self.harness.connect()
            await client.send("/mode json")
            await client.send_json(cmd="signup", name=name, password="pw-123456")
            clients.append(client)
        for client in clients:
            await client.send_json(cmd="msg", target="*", text="x", ref="same")
        self.assertEqual(await self.harness.store.count_messages(), 2)

    async def test_ref_across_kinds(self) -> None:
        """
        A resent group message with a known ref is found again, with its
        group as target.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="pw-123456")
        await client.send_json(cmd="group_create", name="devs")
        first = await client.send_json(cmd="msg", target="#devs", text="a", ref="g1")
        again = await client.send_json(cmd="msg", target="#devs", text="a", ref="g1")
        self.assertEqual(again[0]["message"], first[0]["message"])
        self.assertEqual(again[0]["message"]["to"], "#devs")


class ReplayTests(ProtocolTestCase):
    async def test_replay_starts_after_last_id(self) -> None:
        """
        A resume replays exactly the messages after the client's last id:
        messages reach people in id order, so those below it were seen.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        replies = await client.send_json(
            cmd="signup", name="alice", password="pw-123456"
        )
        token = replies[0]["token"]
        bob = await self.harness.user("bob")
        for text in ("one", "two", "three"):
            await bob.send(f"/msg alice {text}")
        received = [e["message"]["id"] for e in client.json() if e["type"] == "message"]
        await client.disconnect()
        again = self.harness.connect()
        await again.send("/mode json")
        events = await again.send_json(cmd="resume", token=token, last_id=received[0])
        replayed = [e["message"]["id"] for e in events if e["type"] == "message"]
        self.assertEqual(replayed, received[1:])
        self.assertEqual(events[0]["missed"], 2)

    async def test_live_messages_wait_for_the_second_read(self) -> None:
        """
        Live messages that arrive while a resume reads what was stored in the
        meantime are shown after it, in id order, each once.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        replies = await client.send_json(
            cmd="signup", name="alice", password="pw-123456"
        )
        bob = await self.harness.user("bob")
        await client.disconnect()
        reading: Deferred[None] = Deferred()
        release: Deferred[None] = Deferred()
        stored_after = self.harness.service.stored_after

        async def slow(login: Login, after: int) -> list[Message]:
            reading.callback(None)
            await release
            return await stored_after(login, after)

        self.harness.service.stored_after = slow  # type: ignore[method-assign]
        again = self.harness.connect()
        await again.send("/mode json")
        resume = {"cmd": "resume", "token": replies[0]["token"]}
        again.protocol.dataReceived(json.dumps(resume).encode() + b"\n")
        await reading
        store = self.harness.store
        found = [await store.find_user(name) for name in ("bob", "alice")]
        sender, recipient = (f[0] for f in found if f is not None)
        await store.add_private(sender, recipient, "stored", self.harness.service.now())
        await bob.send("/msg alice live")
        release.callback(None)
        await again.settle()
        shown = [e["message"]["text"] for e in again.json() if e["type"] == "message"]
        self.assertEqual(shown, ["stored", "live"])


class ResendTests(ProtocolTestCase):
    async def test_resend_passes_the_message_on_again(self) -> None:
        """
        A resend of a stored message reaches its recipient, who sees it once
        even if it had arrived before.
        """
        bob = await self.harness.user("bob")
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="pw-123456")
        bob.output()
        await client.send_json(cmd="msg", target="bob", text="hi", ref="r-9")
        self.assertEqual(bob.lines(), ["[15:00] alice (private): hi"])
        again = await client.send_json(cmd="msg", target="bob", text="hi", ref="r-9")
        self.assertTrue(again[0]["duplicate"])
        self.assertEqual(bob.lines(), [])

    async def test_resend_delivers_what_was_stored_but_not_passed_on(self) -> None:
        """
        A message stored by a replica that died before passing it on reaches
        its recipient when the sender resends it.
        """
        bob = await self.harness.user("bob")
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="pw-123456")
        alice_user, _ = await self.harness.store.find_user("alice")
        bob_user, _ = await self.harness.store.find_user("bob")
        await self.harness.store.add_private(
            alice_user, bob_user, "lost?", self.harness.service.now(), "r-10"
        )
        bob.output()
        again = await client.send_json(
            cmd="msg", target="bob", text="lost?", ref="r-10"
        )
        self.assertTrue(again[0]["duplicate"])
        self.assertEqual(bob.lines(), ["[15:00] alice (private): lost?"])
