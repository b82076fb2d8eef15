"""
Who may do what in a group, proven through the protocol in both modes.

L{GroupRules} is written once over a small L{Mode} interface and runs twice:
in text mode, where a refusal is an C{error:} line, and in JSON mode, where it
also carries a stable code.  Every test starts from the same cast: alice
created C{#tea} and is its admin, bob joined it, carol is in no group.
docs/authorization.md maps each rule to the test that proves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.trial.unittest import TestCase

from chat.commands import COMMANDS
from chat.records import Group, User
from tests.harness import Client, Harness

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

PASSWORD = "password123"


@dataclass(frozen=True)
class Reply:
    """
    What one command wrote back to its own connection.

    C{code} is the error code, which only JSON mode shows; C{text} is the
    error's text.
    """

    lines: list[str]
    error: bool
    code: str | None = None
    text: str = ""
    body: Any = None

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.lines)


class Mode:
    """
    How a test talks to the harness in one of the protocol's modes.
    """

    async def person(self, harness: Harness, name: str) -> Client:
        raise NotImplementedError()

    async def run(self, client: Client, verb: str, *args: str) -> Reply:
        """
        Run one command, named as in L{COMMANDS}, and return its reply.
        """
        raise NotImplementedError()

    def pending(self, client: Client) -> list[Any]:
        """
        What reached C{client} unasked since its last command.
        """
        raise NotImplementedError()

    def notice(self, change: str, group: str, by: str) -> list[Any]:
        """
        What a person sees when C{by} adds them to or removes them from a group.
        """
        raise NotImplementedError()

    def listing(self, reply: Reply) -> list[tuple[str, str, int]]:
        """
        The name, role (C{-} for none) and member count of each listed group.
        """
        raise NotImplementedError()


class TextMode(Mode):
    async def person(self, harness: Harness, name: str) -> Client:
        return await harness.user(name, PASSWORD)

    async def run(self, client: Client, verb: str, *args: str) -> Reply:
        client.output()
        lines = await client.send("/" + " ".join(verb.split("_") + list(args)))
        if lines and lines[0].startswith("error: "):
            return Reply(lines, True, None, lines[0].removeprefix("error: "))
        return Reply(lines, False)

    def pending(self, client: Client) -> list[Any]:
        return client.lines()

    def notice(self, change: str, group: str, by: str) -> list[Any]:
        verb = "added you to" if change == "invited" else "removed you from"
        return [f"* {by} {verb} #{group}"]

    def listing(self, reply: Reply) -> list[tuple[str, str, int]]:
        listed = []
        for line in reply.lines[1:]:
            if line.startswith("  #"):
                name, role, count = line.split()[:3]
                listed.append((name[1:], role, int(count)))
        return listed


class JsonMode(Mode):
    def __init__(self) -> None:
        self._ids = 0

    async def person(self, harness: Harness, name: str) -> Client:
        client = harness.connect()
        await client.send("/mode json")
        reply = await self.run(client, "signup", name, PASSWORD)
        assert not reply.error, reply
        return client

    async def run(self, client: Client, verb: str, *args: str) -> Reply:
        self._ids += 1
        command: dict[str, Any] = {"cmd": verb, "id": self._ids}
        command.update(zip(COMMANDS[verb].params, args, strict=False))
        client.output()
        await client.send_bytes(json.dumps(command).encode() + b"\n")
        lines = client.lines()
        replies = [o for o in map(json.loads, lines) if o.get("id") == self._ids]
        assert len(replies) == 1, lines
        reply = replies[0]
        if reply["type"] == "error":
            return Reply(lines, True, reply["code"], reply["message"], reply)
        return Reply(lines, False, body=reply)

    def pending(self, client: Client) -> list[Any]:
        return client.json()

    def notice(self, change: str, group: str, by: str) -> list[Any]:
        return [{"type": "group", "event": change, "group": group, "by": by}]

    def listing(self, reply: Reply) -> list[tuple[str, str, int]]:
        return [
            (g["name"], g["role"] or "-", g["members"]) for g in reply.body["groups"]
        ]


class GroupRules(_Base):
    """
    The rules of groups, whatever the mode.
    """

    mode_type: type[Mode]

    async def setUp(self) -> None:  # type: ignore[override]
        self.mode = self.mode_type()
        self.harness = Harness()
        await self.harness.start()
        self.addCleanup(self.harness.stop)
        self.alice = await self.person("alice")
        self.bob = await self.person("bob")
        self.carol = await self.person("carol")
        await self.done(self.alice, "group_create", "tea", "all about tea")
        await self.done(self.bob, "group_join", "tea")

    async def person(self, name: str) -> Client:
        return await self.mode.person(self.harness, name)

    async def ask(self, client: Client, verb: str, *args: str) -> Reply:
        return await self.mode.run(client, verb, *args)

    async def done(self, client: Client, verb: str, *args: str) -> Reply:
        """
        Run a command that must succeed.
        """
        reply = await self.ask(client, verb, *args)
        self.assertFalse(reply.error, reply.lines)
        return reply

    async def refused(
        self, client: Client, code: str, phrase: str, verb: str, *args: str
    ) -> Reply:
        """
        Run a command that must be refused, saying C{phrase}, with C{code}
        wherever the mode shows codes.
        """
        reply = await self.ask(client, verb, *args)
        self.assertTrue(reply.error, reply.lines)
        self.assertIn(phrase, reply.text)
        if reply.code is not None:
            self.assertEqual(reply.code, code)
        return reply

    async def user(self, name: str) -> User:
        found = await self.harness.store.find_user(name)
        assert found is not None
        return found[0]

    async def tea(self, viewer: str = "alice") -> Group | None:
        return await self.harness.store.find_group("tea", await self.user(viewer))

    async def is_private(self) -> bool:
        group = await self.tea()
        assert group is not None
        return group.is_private

    def received(self, client: Client, text: str) -> bool:
        """
        Whether C{text} reached C{client} unasked since its last command.
        """
        return text in json.dumps(self.mode.pending(client), ensure_ascii=False)

    async def roles(self) -> dict[str, str]:
        """
        Each member of C{#tea} and their role; empty once it is closed.
        """
        group = await self.tea()
        if group is None:
            return {}
        return {m.name: m.role.value for m in await self.harness.store.members(group)}

    async def posted(self, body: str) -> None:
        """
        Alice posts C{body} to C{#tea}.
        """
        await self.done(self.alice, "msg", "#tea", body)

    # Posting

    async def test_admin_posts(self) -> None:
        """
        An admin's message to the group reaches its members and nobody else.
        """
        self.bob.output()
        self.carol.output()
        await self.done(self.alice, "msg", "#tea", "from the admin")
        self.assertTrue(self.received(self.bob, "from the admin"))
        self.assertFalse(self.received(self.carol, "from the admin"))

    async def test_member_posts(self) -> None:
        """
        A member's message to the group reaches its members and nobody else.
        """
        self.alice.output()
        self.carol.output()
        await self.done(self.bob, "msg", "#tea", "from a member")
        self.assertTrue(self.received(self.alice, "from a member"))
        self.assertFalse(self.received(self.carol, "from a member"))

    async def test_non_member_cannot_post(self) -> None:
        """
        A non-member's message to the group is refused and stored nowhere.
        """
        self.alice.output()
        await self.refused(
            self.carol, "not_member", "not a member", "msg", "#tea", "let me in"
        )
        self.assertEqual(self.mode.pending(self.alice), [])
        self.assertEqual(await self.harness.store.count_messages(), 0)

    # Reading the history

    async def test_admin_reads_history(self) -> None:
        """
        An admin reads the group's history.
        """
        await self.done(self.bob, "msg", "#tea", "earlier")
        self.assertTrue(
            (await self.done(self.alice, "history", "#tea")).shows("earlier")
        )

    async def test_member_reads_history(self) -> None:
        """
        A member reads the group's history.
        """
        await self.posted("earlier")
        self.assertTrue((await self.done(self.bob, "history", "#tea")).shows("earlier"))

    async def test_non_member_cannot_read_history(self) -> None:
        """
        A non-member asking for the group's history is refused and sees none
        of it.
        """
        await self.posted("earlier")
        reply = await self.refused(
            self.carol, "not_member", "not a member", "history", "#tea"
        )
        self.assertFalse(reply.shows("earlier"))

    # Opening the group

    async def test_admin_opens(self) -> None:
        """
        An admin opens the group and sees its history.
        """
        await self.posted("earlier")
        self.assertTrue((await self.done(self.alice, "open", "#tea")).shows("earlier"))

    async def test_member_opens(self) -> None:
        """
        A member opens the group and sees its history.
        """
        await self.posted("earlier")
        self.assertTrue((await self.done(self.bob, "open", "#tea")).shows("earlier"))

    async def test_non_member_cannot_open(self) -> None:
        """
        A non-member cannot open the group, nor see its history that way.
        """
        await self.posted("earlier")
        reply = await self.refused(
            self.carol, "not_member", "not a member", "open", "#tea"
        )
        self.assertFalse(reply.shows("earlier"))

    # Listing members

    async def test_admin_lists_members(self) -> None:
        """
        An admin lists the members.
        """
        reply = await self.done(self.alice, "group_members", "tea")
        self.assertTrue(reply.shows("alice") and reply.shows("bob"))

    async def test_member_lists_members(self) -> None:
        """
        A member lists the members.
        """
        reply = await self.done(self.bob, "group_members", "tea")
        self.assertTrue(reply.shows("alice") and reply.shows("bob"))

    async def test_non_member_cannot_list_members(self) -> None:
        """
        A non-member cannot list the members.
        """
        reply = await self.refused(
            self.carol, "not_member", "not a member", "group_members", "tea"
        )
        self.assertFalse(reply.shows("bob"))

    # Inviting

    async def test_admin_invites(self) -> None:
        """
        An admin adds someone, who becomes a plain member.
        """
        await self.done(self.alice, "group_invite", "tea", "carol")
        self.assertEqual(
            await self.roles(), {"alice": "admin", "bob": "member", "carol": "member"}
        )

    async def test_member_cannot_invite(self) -> None:
        """
        A member who is not an admin cannot add anyone.
        """
        await self.refused(
            self.bob, "forbidden", "only an admin", "group_invite", "tea", "carol"
        )
        self.assertNotIn("carol", await self.roles())

    async def test_non_member_cannot_invite(self) -> None:
        """
        A non-member cannot add anyone, themselves included.
        """
        dave = await self.person("dave")
        await self.refused(
            self.carol, "not_member", "not a member", "group_invite", "tea", "dave"
        )
        await self.refused(
            dave, "not_member", "not a member", "group_invite", "tea", "dave"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_invite_existing_member_refused(self) -> None:
        """
        Inviting someone already in the group is refused and changes nothing.
        """
        await self.refused(
            self.alice, "bad_request", "already in", "group_invite", "tea", "bob"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_invited_user_gets_one_line_notice(self) -> None:
        """
        Someone who is added to a group is told so, in one line, by whom.
        """
        self.carol.output()
        await self.done(self.alice, "group_invite", "tea", "carol")
        self.assertEqual(
            self.mode.pending(self.carol), self.mode.notice("invited", "tea", "alice")
        )

    # Removing

    async def test_admin_removes(self) -> None:
        """
        An admin removes a member, who is told so.
        """
        self.bob.output()
        await self.done(self.alice, "group_remove", "tea", "bob")
        self.assertEqual(await self.roles(), {"alice": "admin"})
        self.assertEqual(
            self.mode.pending(self.bob), self.mode.notice("removed", "tea", "alice")
        )

    async def test_member_cannot_remove(self) -> None:
        """
        A member who is not an admin cannot remove anyone.
        """
        await self.refused(
            self.bob, "forbidden", "only an admin", "group_remove", "tea", "alice"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_non_member_cannot_remove(self) -> None:
        """
        A non-member cannot remove anyone.
        """
        await self.refused(
            self.carol, "not_member", "not a member", "group_remove", "tea", "bob"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_remove_non_member_refused(self) -> None:
        """
        Removing someone who is not in the group is refused.
        """
        await self.refused(
            self.alice, "bad_request", "is not in", "group_remove", "tea", "carol"
        )

    async def test_remove_self_refused(self) -> None:
        """
        An admin cannot remove themselves; they are pointed to leaving.
        """
        await self.refused(
            self.alice, "bad_request", "group leave", "group_remove", "tea", "alice"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_removed_user_cannot_post(self) -> None:
        """
        Once removed, a former member can neither post to the group nor read
        it.
        """
        await self.done(self.alice, "group_remove", "tea", "bob")
        await self.refused(self.bob, "not_member", "not a member", "msg", "#tea", "hi")
        await self.refused(self.bob, "not_member", "not a member", "history", "#tea")
        self.assertEqual(await self.harness.store.count_messages(), 0)

    # Private or public

    async def test_admin_sets_private(self) -> None:
        """
        An admin makes the group private, and public again.
        """
        await self.done(self.alice, "group_private", "tea", "on")
        self.assertTrue(await self.is_private())
        await self.done(self.alice, "group_private", "tea", "off")
        self.assertFalse(await self.is_private())

    async def test_member_cannot_set_private(self) -> None:
        """
        A member who is not an admin cannot make the group private.
        """
        await self.refused(
            self.bob, "forbidden", "only an admin", "group_private", "tea", "on"
        )
        self.assertFalse(await self.is_private())

    async def test_non_member_cannot_set_private(self) -> None:
        """
        A non-member cannot make the group private, or public.
        """
        await self.done(self.alice, "group_private", "tea", "on")
        await self.refused(
            self.carol, "not_member", "not a member", "group_private", "tea", "off"
        )
        self.assertTrue(await self.is_private())

    # Joining

    async def test_admin_cannot_join_again(self) -> None:
        """
        An admin joining their own group is told they are in it already.
        """
        await self.refused(self.alice, "bad_request", "already in", "group_join", "tea")
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_member_cannot_join_again(self) -> None:
        """
        A member joining again is told they are in it already.
        """
        await self.refused(self.bob, "bad_request", "already in", "group_join", "tea")

    async def test_non_member_joins_public(self) -> None:
        """
        Anyone may join a public group, as a plain member.
        """
        await self.done(self.carol, "group_join", "tea")
        self.assertEqual((await self.roles())["carol"], "member")

    async def test_non_member_cannot_join_private(self) -> None:
        """
        Nobody joins a private group on their own: an admin must invite them.
        """
        await self.done(self.alice, "group_private", "tea", "on")
        await self.refused(self.carol, "forbidden", "must invite", "group_join", "tea")
        self.assertNotIn("carol", await self.roles())

    # Leaving

    async def test_admin_leaves(self) -> None:
        """
        An admin may leave; the longest-standing member becomes admin.
        """
        await self.done(self.alice, "group_leave", "tea")
        self.assertEqual(await self.roles(), {"bob": "admin"})

    async def test_member_leaves(self) -> None:
        """
        A member may leave, and is no longer in the group.
        """
        await self.done(self.bob, "group_leave", "tea")
        self.assertEqual(await self.roles(), {"alice": "admin"})
        await self.refused(self.bob, "not_member", "not a member", "history", "#tea")

    async def test_non_member_cannot_leave(self) -> None:
        """
        Someone not in the group cannot leave it.
        """
        await self.refused(
            self.carol, "not_member", "not a member", "group_leave", "tea"
        )
        self.assertEqual(await self.roles(), {"alice": "admin", "bob": "member"})

    async def test_last_member_leaving_closes_group(self) -> None:
        """
        When the last member leaves, the group is closed and its name is free
        for anyone to open a new group.
        """
        await self.done(self.bob, "group_leave", "tea")
        await self.done(self.alice, "group_leave", "tea")
        self.assertIsNone(await self.tea())
        await self.refused(
            self.carol, "no_such_group", "no group called", "group_join", "tea"
        )
        await self.done(self.carol, "group_create", "tea", "a new tea")
        self.assertEqual(await self.roles(), {"carol": "admin"})

    # Creating and listing

    async def test_creator_is_admin(self) -> None:
        """
        Whoever creates a group is its only member and its admin.
        """
        await self.done(self.carol, "group_create", "coffee")
        reply = await self.done(self.carol, "groups")
        self.assertEqual(self.mode.listing(reply), [("coffee", "admin", 1)])

    async def test_group_name_taken(self) -> None:
        """
        An open group's name cannot be taken again, in any case.
        """
        await self.refused(
            self.carol, "name_taken", "exists", "group_create", "TEA", "mine"
        )

    async def test_groups_show_role_and_count(self) -> None:
        """
        /groups lists my groups with my role in each and its member count.
        """
        await self.done(self.bob, "group_create", "coffee")
        await self.done(self.alice, "group_invite", "tea", "carol")
        self.assertEqual(
            self.mode.listing(await self.done(self.bob, "groups")),
            [("coffee", "admin", 1), ("tea", "member", 3)],
        )
        self.assertEqual(
            self.mode.listing(await self.done(self.alice, "groups")),
            [("tea", "admin", 3)],
        )

    async def test_groups_all_searches(self) -> None:
        """
        /groups all TEXT lists the groups whose name or description holds
        TEXT, in any case, with the viewer's role.
        """
        await self.done(self.bob, "group_create", "coffee", "strong and black")
        await self.done(self.bob, "group_create", "juice", "TEA-free zone")
        reply = await self.done(self.carol, "groups_all", "TEA")
        self.assertEqual(self.mode.listing(reply), [("juice", "-", 1), ("tea", "-", 2)])
        reply = await self.done(self.alice, "groups_all", "black")
        self.assertEqual(self.mode.listing(reply), [("coffee", "-", 1)])

    async def test_private_group_hidden_from_non_members(self) -> None:
        """
        Browsing shows a private group to its members only.
        """
        await self.done(self.alice, "group_private", "tea", "on")
        await self.done(self.carol, "group_create", "coffee")
        carol_sees = await self.done(self.carol, "groups_all")
        self.assertEqual(self.mode.listing(carol_sees), [("coffee", "admin", 1)])
        bob_sees = await self.done(self.bob, "groups_all")
        self.assertEqual(
            self.mode.listing(bob_sees), [("coffee", "-", 1), ("tea", "member", 2)]
        )

    # Private conversations

    async def test_nobody_reads_another_pairs_messages(self) -> None:
        """
        The history of a private conversation is always the viewer's own with
        that person: a third person sees none of another pair's messages.
        """
        await self.done(self.alice, "msg", "bob", "alice-to-bob")
        await self.done(self.bob, "msg", "alice", "bob-to-alice")
        await self.done(self.carol, "msg", "bob", "carol-to-bob")
        secret = ("alice-to-bob", "bob-to-alice")
        for target in ("bob", "alice"):
            for verb in ("history", "open"):
                reply = await self.done(self.carol, verb, target)
                self.assertFalse(any(reply.shows(text) for text in secret))
        carol_bob = await self.done(self.carol, "history", "bob")
        self.assertTrue(carol_bob.shows("carol-to-bob"))
        alice_bob = await self.done(self.alice, "history", "bob")
        self.assertTrue(all(alice_bob.shows(text) for text in secret))
        self.assertFalse(alice_bob.shows("carol-to-bob"))


class TextModeGroupTests(GroupRules, TestCase):
    """
    The group rules, for a person at a terminal.
    """

    mode_type = TextMode


class JsonModeGroupTests(GroupRules, TestCase):
    """
    The group rules, for a program speaking JSON, with error codes.
    """

    mode_type = JsonMode
