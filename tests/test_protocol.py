"""
The line protocol, driven through StringTransports over a real SQLite store.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from chat import commands, telnet
from chat.db import DatabaseUnavailable
from chat.limits import FAILURE_WINDOW, FAILURES_FREE
from tests.harness import Harness


class ProtocolTestCase(TestCase):
    async def setUp(self) -> None:
        self.harness = Harness()
        await self.harness.start()
        self.addCleanup(self.harness.stop)


class AccountTests(ProtocolTestCase):
    async def test_banner(self) -> None:
        """
        A new connection is told how to start.
        """
        client = self.harness.connect()
        banner = client.lines()
        self.assertIn("/signup", banner[1])
        self.assertIn("/login", banner[1])

    async def test_signup_then_login(self) -> None:
        """
        An account made with /signup logs in again with its password.
        """
        alice = await self.harness.user("alice", "correct horse")
        await alice.send("/quit")
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        lines = await again.send("/login alice correct horse")
        self.assertTrue(lines[0].startswith("Welcome back, alice!"), lines)

    async def test_wrong_password_and_unknown_user_look_alike(self) -> None:
        """
        A wrong password and an unknown name get the same error.
        """
        await self.harness.user("alice")
        client = self.harness.connect()
        client.output()
        wrong = await client.send("/login alice not-the-password")
        unknown = await client.send("/login zed not-the-password")
        self.assertEqual(wrong, ["error: wrong name or password"])
        self.assertEqual(unknown, wrong)

    async def test_names_fold_case(self) -> None:
        """
        Names are unique whatever their case, and log in in any case.
        """
        await self.harness.user("Alice")
        client = self.harness.connect()
        client.output()
        taken = await client.send("/signup alice password123")
        self.assertEqual(taken, ["error: the name 'alice' is taken"])

    async def test_invalid_and_reserved_names(self) -> None:
        """
        Names that break the rule, or are reserved, are refused with the rule.
        """
        client = self.harness.connect()
        client.output()
        short = await client.send("/signup ab password123")
        self.assertIn("3 to 20 characters", short[0])
        odd = await client.send("/signup 9lives password123")
        self.assertIn("starts with a letter", odd[0])
        reserved = await client.send("/signup Admin password123")
        self.assertIn("reserved", reserved[0])
        weak = await client.send("/signup carol short")
        self.assertIn("8 to 256", weak[0])

    async def test_second_login_refused(self) -> None:
        """
        A person already connected cannot log in a second time.
        """
        await self.harness.user("alice")
        second = self.harness.connect()
        second.output()
        lines = await second.send("/login alice password123")
        self.assertEqual(len(lines), 1)
        self.assertIn("already logged in", lines[0])
        self.assertTrue(lines[0].startswith("error:"))

    async def test_prompted_signup_hides_password_from_telnet(self) -> None:
        """
        /signup alone asks for each field; a telnet client is asked not to echo
        the passwords, and echo is handed back afterwards.
        """
        client = self.harness.connect()
        client.output()
        await client.send_bytes(b"/signup\r\n")
        self.assertEqual(client.output(), b"Name: ")
        await client.send_bytes(b"carol\r\n")
        self.assertEqual(client.output(), telnet.WILL_ECHO + b"Password: ")
        await client.send_bytes(b"sesame-street\r\n")
        self.assertEqual(
            client.output(),
            telnet.WONT_ECHO + b"\r\n" + telnet.WILL_ECHO + b"Password again: ",
        )
        await client.send_bytes(b"sesame-street\r\n")
        out = client.output()
        self.assertTrue(out.startswith(telnet.WONT_ECHO + b"\r\nWelcome, carol!"))

    async def test_prompted_login_sends_no_telnet_bytes_to_nc(self) -> None:
        """
        A client that ends lines with a bare LF (nc) never receives IAC bytes.
        """
        client = self.harness.connect()
        client.output()
        await client.send_bytes(b"/login\n")
        self.assertEqual(client.output(), b"Name: ")
        await client.send_bytes(b"eve\n")
        self.assertEqual(client.output(), b"Password: ")
        await client.send_bytes(b"whatever1\n")
        out = client.output()
        self.assertNotIn(b"\xff", out)
        self.assertEqual(out, b"error: wrong name or password\r\n")

    async def test_mismatched_confirmation(self) -> None:
        """
        Two different passwords at signup make no account.
        """
        client = self.harness.connect()
        client.output()
        for line in (b"/signup erin", b"first-password", b"second-password"):
            await client.send_bytes(line + b"\r\n")
        self.assertTrue(
            client.output().endswith(
                b"error: the passwords differ; /signup to try again\r\n"
            )
        )
        self.assertIsNone(await self.harness.store.find_user("erin"))

    async def test_commands_need_login(self) -> None:
        """
        Chat commands before login say to log in first.
        """
        client = self.harness.connect()
        client.output()
        lines = await client.send("/msg bob hi")
        self.assertEqual(lines, ["error: log in first: /login NAME or /signup NAME"])

    async def test_disconnect_during_login_leaves_nobody_online(self) -> None:
        """
        A connection that closes while its login is in flight leaves no one
        online and does not block a later login.
        """
        frank = await self.harness.user("frank")
        await frank.disconnect()
        client = self.harness.connect()
        client.protocol.dataReceived(b"/login frank password123\r\n")
        self.assertIsNotNone(client.protocol.busy)
        await client.disconnect()
        self.assertFalse(await self.harness.service.presence.is_online("frank"))
        again = self.harness.connect()
        again.output()
        lines = await again.send("/login frank password123")
        self.assertTrue(lines[0].startswith("Welcome back, frank!"), lines)


class TextModeMessagingTests(ProtocolTestCase):
    async def test_private_message_reaches_recipient(self) -> None:
        """
        A private message is acknowledged with its time and shown to the
        recipient as a one-line notification.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        alice.output()
        sent = await bob.send("/msg alice hello there")
        self.assertEqual(sent, ["[15:00] bob -> alice: hello there"])
        self.assertEqual(alice.lines(), ["[15:00] bob (private): hello there"])

    async def test_open_conversation(self) -> None:
        """
        /open shows the history oldest first, then plain lines go there until
        /back.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        await bob.send("/msg alice one")
        self.harness.clock.advance(60)
        await bob.send("/msg alice two")
        alice.output()
        opened = await alice.send("/open bob")
        self.assertEqual(
            opened,
            [
                "--- last 2 messages with bob ---",
                "[2026-12-04 15:00] bob: one",
                "[2026-12-04 15:01] bob: two",
                "--- now talking to bob: lines without / go there; /back to leave ---",
            ],
        )
        self.assertEqual(await alice.send("three"), ["[15:01] alice: three"])
        self.assertEqual(bob.lines(), ["[15:01] alice (private): three"])
        self.assertEqual(
            await alice.send("/back"), ["ok: left the conversation with bob"]
        )
        self.assertIn("no conversation is open", (await alice.send("four"))[0])

    async def test_message_in_open_conversation_is_shown_in_full(self) -> None:
        """
        With a conversation open, its messages show without a label while
        others arrive as labelled notifications.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        carol = await self.harness.user("carol")
        await alice.send("/open bob")
        await bob.send("/msg alice in here")
        await carol.send("/msg alice elsewhere")
        self.assertEqual(
            alice.lines(),
            ["[15:00] bob: in here", "[15:00] carol (private): elsewhere"],
        )

    async def test_broadcast_reaches_everyone_online(self) -> None:
        """
        A broadcast reaches everyone online except its sender, once.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        carol = await self.harness.user("carol")
        alice.output()
        bob.output()
        await carol.send("/msg * hello all")
        self.assertEqual(alice.lines(), ["[15:00] carol to everyone: hello all"])
        self.assertEqual(bob.lines(), ["[15:00] carol to everyone: hello all"])
        self.assertEqual(carol.lines(), [])

    async def test_offline_messages_counted_at_login(self) -> None:
        """
        Messages sent while someone was away are in their history, and they
        are told how many arrived.
        """
        alice = await self.harness.user("alice")
        await alice.send("/quit")
        await alice.disconnect()
        bob = await self.harness.user("bob")
        await bob.send("/msg alice are you there?")
        await bob.send("/msg * news")
        back = self.harness.connect()
        back.output()
        lines = await back.send("/login alice password123")
        self.assertEqual(
            lines[0],
            "Welcome back, alice! 2 new messages arrived while you were away"
            " (1 private, 1 broadcast); /open a conversation to read them.",
        )
        self.assertTrue(lines[1].startswith("token: "))
        history = await back.send("/history bob")
        self.assertIn("[2026-12-04 15:00] bob: are you there?", history)

    async def test_messages_delivered_live_are_not_counted_as_away(self) -> None:
        """
        What a person saw while online is not reported as missed next time.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        await bob.send("/msg alice seen live")
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        lines = await again.send("/login alice password123")
        self.assertIn("No new messages", lines[0])

    async def test_who_and_users(self) -> None:
        """
        /who lists online people; /users lists everyone with their status.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        await bob.disconnect()
        self.assertEqual(await alice.send("/who"), ["Online (1): alice"])
        users = await alice.send("/users")
        self.assertEqual(users[0], "Users (2):")
        self.assertEqual(users[1].split(), ["alice", "online"])
        self.assertEqual(users[2].split(), ["bob", "offline"])

    async def test_unknown_target(self) -> None:
        """
        A message to a user who does not exist is an error, and nothing else.
        """
        alice = await self.harness.user("alice")
        lines = await alice.send("/msg nobody1 hi")
        self.assertEqual(lines, ["error: there is no user called 'nobody1'"])

    async def test_terminal_escapes_are_neutralised(self) -> None:
        """
        Escape sequences and control characters in a message never reach
        another person's terminal.
        """
        alice = await self.harness.user("alice")
        bob = await self.harness.user("bob")
        alice.output()
        await bob.send_bytes("/msg alice \x1b[2Jboo\x07\u202eevil\r\n".encode())
        received = alice.output()
        self.assertNotIn(b"\x1b", received)
        self.assertNotIn(b"\x07", received)
        self.assertNotIn("\u202e".encode(), received)
        self.assertIn("\ufffd[2Jboo".encode(), received)


class BadInputTests(ProtocolTestCase):
    async def test_long_line_is_refused_and_connection_goes_on(self) -> None:
        """
        A line over the limit gets one error, is dropped whole, and the next
        line works.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"/msg * " + b"x" * 10000)
        await alice.send_bytes(b"y" * 5000 + b"\r\n/who\r\n")
        self.assertEqual(
            alice.lines(),
            ["error: lines are limited to 4096 bytes", "Online (1): alice"],
        )
        self.assertEqual(await self.harness.store.count_messages(), 0)

    async def test_long_line_in_one_packet(self) -> None:
        """
        An overlong line followed by a good one in the same packet loses only
        the overlong one.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"z" * 5000 + b"\n/who\n")
        self.assertEqual(
            alice.lines(),
            ["error: lines are limited to 4096 bytes", "Online (1): alice"],
        )

    async def test_invalid_utf8(self) -> None:
        """
        Bytes that are not UTF-8 get an error; nothing is stored.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"/msg * caf\xe9\r\n")
        lines = alice.lines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("error: the line is not valid UTF-8"))
        self.assertEqual(await self.harness.store.count_messages(), 0)

    async def test_telnet_negotiation_is_not_text(self) -> None:
        """
        IAC sequences from a telnet client are consumed, even split across
        packets.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"/w\xff\xfd")
        await alice.send_bytes(b"\x01ho\xff\xfa\x18\x01\xff\xf0\r\n")
        self.assertEqual(alice.lines(), ["Online (1): alice"])

    async def test_line_endings(self) -> None:
        """
        CR LF, LF, bare CR and CR NUL all end a line.
        """
        alice = await self.harness.user("alice")
        await alice.send_bytes(b"/who\r\n/who\n/who\r/who\r\x00")
        self.assertEqual(alice.lines(), ["Online (1): alice"] * 4)

    async def test_malformed_commands(self) -> None:
        """
        Unknown commands and missing arguments get one error line with what to
        do, and the connection stays usable.
        """
        alice = await self.harness.user("alice")
        self.assertEqual(
            await alice.send("/frobnicate"),
            ["error: unknown command 'frobnicate'; type /help for the list"],
        )
        self.assertEqual(
            await alice.send("/msg bob"), ["error: usage: /msg TARGET TEXT"]
        )
        self.assertEqual(await alice.send("/who"), ["Online (1): alice"])


class JsonModeTests(ProtocolTestCase):
    async def test_json_round_trip(self) -> None:
        """
        In JSON mode replies echo the command id, and messages carry a server
        id and a UTC timestamp.
        """
        bob = await self.harness.user("bob")
        client = self.harness.connect()
        client.output()
        self.assertEqual(
            await client.send("/mode json"), ['{"type":"mode","mode":"json"}']
        )
        login = await client.send_json(
            cmd="signup", name="alice", password="password123", id=1
        )
        self.assertGreaterEqual(len(login[0].pop("token")), 43)
        self.assertEqual(login[0].pop("last_id"), 0)
        self.assertEqual(
            login,
            [
                {
                    "type": "ok",
                    "id": 1,
                    "cmd": "signup",
                    "user": "alice",
                    "away": {"private": 0, "group": 0, "broadcast": 0},
                }
            ],
        )
        sent = await client.send_json(cmd="msg", target="bob", text="hi", id="m1")
        self.assertEqual(
            sent,
            [
                {
                    "type": "sent",
                    "id": "m1",
                    "message": {
                        "id": 1,
                        "kind": "private",
                        "from": "alice",
                        "to": "bob",
                        "text": "hi",
                        "ts": "2026-12-04T15:00:00.000Z",
                    },
                }
            ],
        )
        self.assertIn("[15:00] alice (private): hi", bob.lines())

    async def test_json_events(self) -> None:
        """
        A JSON client receives messages and presence changes as typed events.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="password123")
        bob = await self.harness.user("bob")
        await bob.send("/msg * hey")
        events = client.json()
        self.assertEqual(events[0], {"type": "presence", "user": "bob", "online": True})
        self.assertEqual(events[1]["type"], "message")
        self.assertEqual(events[1]["message"]["kind"], "broadcast")
        self.assertEqual(events[1]["message"]["to"], "*")

    async def test_json_errors_echo_id(self) -> None:
        """
        Errors in JSON mode carry a code and the id of the command.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        self.assertEqual(
            await client.send_json(cmd="msg", target="bob", text="x", id=9),
            [
                {
                    "type": "error",
                    "id": 9,
                    "code": "not_logged_in",
                    "message": "log in first: /login NAME or /signup NAME",
                }
            ],
        )
        self.assertEqual(
            (await client.send_json(cmd="nope", id=10))[0]["code"],
            "unknown_command",
        )
        await client.send_bytes(b"{not json\n")
        self.assertEqual(client.json()[0]["code"], "bad_request")

    async def test_ids_that_look_false_are_echoed(self) -> None:
        """
        An id of 0 or the empty string comes back on an error like any other.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        for id in (0, ""):
            [reply] = await client.send_json(cmd="users", id=id)
            self.assertEqual((reply["code"], reply["id"]), ("not_logged_in", id))


class ThrottleTests(ProtocolTestCase):
    async def test_repeated_failures_are_throttled(self) -> None:
        """
        After the free failures a login is refused with the wait, whether the
        name exists or not, and the wait passes with time.
        """
        await self.harness.user("alice")
        for name in ("alice", "nobody1"):
            client = self.harness.connect()
            client.output()
            for _ in range(FAILURES_FREE):
                await client.send(f"/login {name} wrong-password")
            self.assertEqual(
                await client.send(f"/login {name} wrong-password"),
                ["error: wrong name or password"],
            )
            self.assertEqual(
                await client.send(f"/login {name} wrong-password"),
                ["error: too many failed logins; try again in 1 s"],
            )
            self.harness.clock.advance(FAILURE_WINDOW + 1)


class LookAlikeNameTests(ProtocolTestCase):
    async def test_look_alike_names_are_refused(self) -> None:
        """
        A name that only looks like an existing one is refused at signup.
        """
        await self.harness.user("alice")
        await self.harness.user("bob.smith")
        client = self.harness.connect()
        client.output()
        for name in ("a1ice", "AIice", "bob_smith", "bob-smith"):
            lines = await client.send(f"/signup {name} password123")
            self.assertEqual(len(lines), 1)
            self.assertIn("looks too much like the existing name", lines[0])
        lines = await client.send("/signup alicia password123")
        self.assertTrue(lines[0].startswith("Welcome, alicia!"))


class StoredTextTests(ProtocolTestCase):
    async def test_control_characters_are_never_stored(self) -> None:
        """
        A NUL or an escape sent inside a JSON string is neutralised before it
        is stored, so no database ever sees it.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="password123")
        await client.send_json(cmd="group_create", name="devs", description="a\u0000b")
        reply = await client.send_json(cmd="msg", target="*", text="x\u0000\u001b[2Jy")
        self.assertEqual(reply[0]["message"]["text"], "x\ufffd\ufffd[2Jy")
        history = await self.harness.store.broadcast_history(1)
        self.assertEqual(history[0].body, "x\ufffd\ufffd[2Jy")
        groups = await client.send_json(cmd="groups")
        self.assertEqual(groups[0]["groups"][0]["description"], "a\ufffdb")


class HostileJsonTests(ProtocolTestCase):
    async def json_client(self) -> Any:
        client = self.harness.connect()
        await client.send("/mode json")
        await client.send_json(cmd="signup", name="alice", password="password123")
        return client

    async def test_deep_nesting_is_a_bad_request(self) -> None:
        """
        JSON nested too deeply for the parser gets an error, not a dropped
        connection.
        """
        client = await self.json_client()
        line = '{"cmd":"ping","id":' + "[" * 2000 + "]" * 2000 + "}"
        await client.send_bytes(line.encode() + b"\n")
        self.assertEqual(client.json()[0]["code"], "bad_request")
        self.assertFalse(client.transport.disconnecting)

    async def test_lone_surrogates_are_refused(self) -> None:
        """
        Text that UTF-8 cannot carry is refused before it reaches the store.
        """
        client = await self.json_client()
        await client.send_bytes(b'{"cmd":"msg","target":"*","text":"a\\ud800b"}\n')
        self.assertEqual(client.json()[0]["code"], "bad_request")
        await client.send_bytes(b'{"cmd":"who","id":"\\ud800"}\n')
        self.assertEqual(client.json()[0]["code"], "bad_request")
        self.assertEqual(await self.harness.store.count_messages(), 0)

    async def test_non_finite_ids_are_refused(self) -> None:
        """
        An id the server could not echo as valid JSON is refused.
        """
        client = await self.json_client()
        for id in ("NaN", "-Infinity", "1e999"):
            await client.send_bytes(b'{"cmd":"who","id":' + id.encode() + b"}\n")
            reply = client.json()[0]
            self.assertEqual(reply["code"], "bad_request")
            self.assertNotIn("id", reply)

    async def test_json_that_is_not_an_object(self) -> None:
        """
        In JSON mode an array or a string is a bad request, not chat text.
        """
        client = await self.json_client()
        await client.send_json(cmd="open", target="*")
        for line in (b"[1,2,3]", b'"x"', '\ufeff{"cmd":"who"}'.encode()):
            await client.send_bytes(line + b"\n")
        replies = client.json()
        self.assertEqual([r["type"] for r in replies], ["error", "error", "who"])
        self.assertEqual(await self.harness.store.count_messages(), 0)

    async def test_huge_last_id(self) -> None:
        """
        A resume naming an id beyond any message is refused and leaves the
        token and presence as they were.
        """
        alice = self.harness.connect()
        alice.output()
        lines = await alice.send("/signup alice password123")
        token = lines[1].split()[1]
        await alice.disconnect()
        again = self.harness.connect()
        again.output()
        refused = await again.send(f"/resume {token} {'9' * 30}")
        self.assertEqual(refused, ["error: usage: /resume TOKEN [LAST_ID]"])
        self.assertFalse(await self.harness.service.presence.is_online("alice"))
        resumed = await again.send(f"/resume {token}")
        self.assertTrue(resumed[0].startswith("Welcome back, alice!"))


class ByeTests(ProtocolTestCase):
    async def test_bye_in_a_conversation_is_a_message(self) -> None:
        """
        In an open conversation "bye" is said to the other person; outside
        one it logs out.
        """
        alice = await self.harness.user("alice")
        await self.harness.user("bob")
        await alice.send("/open bob")
        self.assertEqual(await alice.send("bye"), ["[15:00] alice: bye"])
        await alice.send("/back")
        self.assertEqual(await alice.send("bye"), ["Bye, alice."])


class PromptedSignupTests(ProtocolTestCase):
    async def test_bad_name_is_refused_before_the_password(self) -> None:
        """
        A prompted signup checks the name's form at once, before asking for
        a password.
        """
        client = self.harness.connect()
        client.output()
        await client.send_bytes(b"/signup\n")
        await client.send_bytes(b"x\n")
        self.assertEqual(
            client.output(),
            b"Name: error: a user name has 3 to 20 characters; /signup to try"
            b" again\r\n",
        )
        self.assertEqual(
            await client.send("/who"),
            ["error: log in first: /login NAME or /signup NAME"],
        )


class HalfCloseTests(ProtocolTestCase):
    async def test_lines_before_end_of_input_are_answered(self) -> None:
        """
        A peer that stops sending (C{nc -N}) still gets the replies to what it
        sent, a last line without its line ending included, and then the
        server closes the connection.
        """
        client = self.harness.connect()
        client.output()
        client.protocol.dataReceived(b"/signup carol password123\n/who")
        client.protocol.readConnectionLost()
        self.assertFalse(client.transport.disconnecting)
        await client.settle()
        lines = client.lines()
        self.assertTrue(lines[0].startswith("Welcome, carol!"), lines)
        self.assertIn("Online (1): carol", lines)
        self.assertTrue(client.transport.disconnecting)

    async def test_idle_connection_closes_at_end_of_input(self) -> None:
        """
        With nothing left to answer, the end of input closes the connection.
        """
        client = self.harness.connect()
        client.protocol.dataReceived(b"  ")
        client.protocol.readConnectionLost()
        self.assertTrue(client.transport.disconnecting)


class HelpTests(ProtocolTestCase):
    async def test_help_fits_a_terminal(self) -> None:
        """
        Every line of the help, the summary and each command's, fits in 79
        columns, so that an 80-column telnet window does not wrap it.
        """
        client = await self.harness.user("erin")
        topics = [""] + [verb.replace("_", " ") for verb in commands.COMMANDS]
        for topic in topics:
            lines = await client.send(f"/help {topic}".strip())
            self.assertTrue(lines, topic)
            too_wide = [line for line in lines if len(line) > 79]
            self.assertEqual(too_wide, [], topic)


class JsonArgumentTests(ProtocolTestCase):
    async def test_fraction_where_a_number_goes(self) -> None:
        """
        A fraction as a parameter is refused with a message that says what
        is accepted.
        """
        client = self.harness.connect()
        await client.send("/mode json")
        [reply] = await client.send_json(cmd="resume", token="t", last_id=1.5)
        self.assertEqual(reply["code"], "bad_request")
        self.assertEqual(
            reply["message"], '"last_id" must be a string or a whole number'
        )


class SignupWithoutSessionTests(ProtocolTestCase):
    async def test_account_created_but_not_logged_in(self) -> None:
        """
        When the account is stored but the session cannot start (shared state
        out of reach), the person is told the account exists and to log in.
        """
        presence = self.harness.service.presence
        claim = presence.claim

        async def unreachable(*args: object) -> bool:
            raise DatabaseUnavailable("not connected to Redis")

        self.patch(presence, "claim", unreachable)
        client = self.harness.connect()
        client.output()
        [line] = await client.send("/signup frank password123")
        self.assertEqual(
            line,
            "error: your account 'frank' was created, but the server could not"
            " log you in just now; log in shortly",
        )
        self.patch(presence, "claim", claim)
        lines = await client.send("/login frank password123")
        self.assertTrue(lines[0].startswith("Welcome"), lines)


class RecipientLookupTests(ProtocolTestCase):
    async def test_recipient_read_once(self) -> None:
        """
        A recipient is read from the store once, then kept; a name that did
        not exist yet is read again, so an account made since is found.
        """
        store = self.harness.store
        find_user = store.find_user
        reads: list[str] = []

        async def counting(folded: str) -> object:
            reads.append(folded)
            return await find_user(folded)

        alice = await self.harness.user("alice")
        await self.harness.user("bob")
        self.patch(store, "find_user", counting)
        await alice.send("/msg bob one")
        await alice.send("/msg bob two")
        self.assertEqual(reads, ["bob"])
        lines = await alice.send("/msg carol hi")
        self.assertEqual(lines, ["error: there is no user called 'carol'"])
        self.patch(store, "find_user", find_user)
        await self.harness.user("carol")
        self.patch(store, "find_user", counting)
        lines = await alice.send("/msg carol hi")
        self.assertIn("alice -> carol: hi", lines[0])
        self.assertEqual(reads, ["bob", "carol", "carol"])
