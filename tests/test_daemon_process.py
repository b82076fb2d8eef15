"""
The real C{twistd chat} daemon in a child process, talked to over TCP.
"""

from __future__ import annotations

import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.process import (
    PASSWORD,
    DaemonProcess,
    connect,
    signed_up,
    start_daemon,
)
from tests.servers import LOCALHOST, free_port


class CommandLineTests(TestCase):
    async def test_help_lists_options(self) -> None:
        """
        C{twistd chat --help} names every option and its environment variable.
        """
        daemon = DaemonProcess(["--help"], listen=False)
        self.addCleanup(daemon.destroy)
        self.assertEqual(await daemon.run_to_exit(), 0)
        for option in ("--listen", "--database", "--server-id", "--log-level"):
            self.assertIn(option, daemon.output)
        for variable in ("CHAT_LISTEN", "CHAT_DATABASE", "CHAT_SERVER_ID"):
            self.assertIn(variable, daemon.output)

    async def test_environment_is_honoured(self) -> None:
        """
        CHAT_LISTEN, CHAT_DATABASE and CHAT_SERVER_ID configure a daemon
        started with no options.
        """
        port = free_port()
        database = Path(self.mktemp()).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "CHAT_LISTEN": f"tcp:{port}:interface={LOCALHOST}",
            "CHAT_DATABASE": f"sqlite:{database}",
            "CHAT_SERVER_ID": "from-the-environment",
        }
        daemon = await start_daemon(self, env=env, listen=False, port=port)
        client = await connect(port)
        self.assertIn("Welcome to chat (from-the-environment)", client.lines[0])
        self.assertTrue(database.exists())
        self.assertFalse((daemon.directory / "chat-data").exists())
        await daemon.wait_for_log("chat from-the-environment listening on")

    async def test_option_wins_over_environment(self) -> None:
        """
        A command-line option overrides the environment variable.
        """
        daemon = await start_daemon(
            self,
            ["--server-id", "from-the-options"],
            env={"CHAT_SERVER_ID": "from-the-environment"},
        )
        client = await connect(daemon.port)
        self.assertIn("Welcome to chat (from-the-options)", client.lines[0])

    async def test_default_database_in_working_directory(self) -> None:
        """
        With no --database, the daemon keeps its data in chat-data/chat.db
        under its working directory.
        """
        daemon = await start_daemon(self)
        await signed_up(daemon.port, "alice")
        self.assertTrue((daemon.directory / "chat-data" / "chat.db").is_file())

    async def test_bad_log_level(self) -> None:
        """
        An unknown --log-level stops twistd at once with the allowed levels.
        """
        daemon = DaemonProcess(["--log-level", "loud"])
        self.addCleanup(daemon.destroy)
        self.assertNotEqual(await daemon.run_to_exit(), 0)
        self.assertIn(
            "log level must be one of debug, info, warn, error, critical",
            daemon.output,
        )

    async def test_port_in_use_is_reported(self) -> None:
        """
        A --listen port that another program holds makes the daemon say it
        could not start and why, and exit instead of running without a port.
        """
        holder = reactor.listenTCP(
            0, Factory.forProtocol(Protocol), interface=LOCALHOST
        )
        self.addCleanup(holder.stopListening)
        daemon = DaemonProcess(port=holder.getHost().port)
        self.addCleanup(daemon.destroy)
        await daemon.run_to_exit()
        self.assertIn("chat could not start", daemon.output)
        self.assertIn("Address already in use", daemon.output)

    async def test_unknown_endpoint_type_is_reported(self) -> None:
        """
        A --listen string that is no endpoint is named in the error.
        """
        daemon = DaemonProcess(["--listen", "nonsense:1"], listen=False)
        self.addCleanup(daemon.destroy)
        await daemon.run_to_exit()
        self.assertIn("chat could not start", daemon.output)
        self.assertIn("Unknown endpoint type: 'nonsense'", daemon.output)

    async def test_unusable_listen_exits_non_zero(self) -> None:
        """
        A daemon that could not listen ends with a non-zero exit status, so
        that a supervisor sees the failure.
        """
        daemon = DaemonProcess(["--listen", "nonsense:1"], listen=False)
        self.addCleanup(daemon.destroy)
        self.assertNotEqual(await daemon.run_to_exit(), 0)


class ChattingTests(TestCase):
    async def setUp(self) -> None:
        self.daemon = await start_daemon(self, ["--server-id", "replica-a"])

    async def test_text_mode(self) -> None:
        """
        Two people chat privately, on the broadcast channel and in a group
        over real sockets in text mode.
        """
        alice = await signed_up(self.daemon.port, "alice")
        bob = await signed_up(self.daemon.port, "bob")

        bob.send("/msg alice hello alice")
        await bob.expect("] bob -> alice: hello alice")
        await alice.expect("] bob (private): hello alice")

        alice.send("/msg * hello everyone")
        await alice.expect("] alice to everyone: hello everyone")
        await bob.expect("] alice to everyone: hello everyone")

        alice.send("/group create devs Our team")
        await alice.expect("ok: created #devs; you are its admin")
        alice.send("/group invite devs bob")
        await alice.expect("ok: added bob to #devs")
        await bob.expect("* alice added you to #devs")
        bob.send("/msg #devs standup in 5")
        await alice.expect("] bob in #devs: standup in 5")

        alice.send("/open bob")
        await alice.expect("--- last 1 message with bob ---")
        await alice.expect("] bob: hello alice")
        await alice.expect("--- now talking to bob")
        alice.send("just typing")
        await bob.expect("] alice (private): just typing")

        alice.send("/who")
        self.assertEqual(await alice.expect("Online"), "Online (2): alice, bob")
        bob.send("/quit")
        await bob.expect("Bye, bob.")
        await bob.closed

    async def test_json_mode(self) -> None:
        """
        The same conversations in JSON mode: replies carry the command id and
        messages arrive as typed events.
        """
        alice = await connect(self.daemon.port)
        alice.send("/mode json")
        await alice.expect_json(type="mode", mode="json")
        alice.send_json(cmd="signup", name="alice", password=PASSWORD, id=1)
        welcome = await alice.expect_json(id=1)
        contract = {"type", "id", "cmd", "user", "away"}
        self.assertEqual(
            {k: v for k, v in welcome.items() if k in contract},
            {
                "type": "ok",
                "id": 1,
                "cmd": "signup",
                "user": "alice",
                "away": {"private": 0, "group": 0, "broadcast": 0},
            },
        )
        bob = await connect(self.daemon.port)
        bob.send("/mode json")
        bob.send_json(cmd="signup", name="bob", password=PASSWORD, id="b1")
        await bob.expect_json(type="ok", id="b1")
        await alice.expect_json(type="presence", user="bob", online=True)

        bob.send_json(cmd="msg", target="alice", text="psst", id="b2")
        sent = (await bob.expect_json(type="sent", id="b2"))["message"]
        self.assertEqual(
            (sent["kind"], sent["from"], sent["to"], sent["text"]),
            ("private", "bob", "alice", "psst"),
        )
        self.assertRegex(sent["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        event = await alice.expect_json(type="message")
        self.assertEqual(event["message"], sent)

        alice.send_json(cmd="msg", target="*", text="all hands", id=2)
        await alice.expect_json(type="sent", id=2)
        broadcast = await bob.expect_json(type="message")
        self.assertEqual(broadcast["message"]["kind"], "broadcast")
        self.assertEqual(broadcast["message"]["to"], "*")

        alice.send_json(cmd="group_create", name="ops", description="on call", id=3)
        created = await alice.expect_json(type="ok", id=3)
        self.assertEqual(created["group"]["role"], "admin")
        alice.send_json(cmd="group_invite", group="ops", user="bob", id=4)
        await alice.expect_json(type="ok", id=4, cmd="group_invite")
        invited = await bob.expect_json(type="group")
        self.assertEqual((invited["event"], invited["by"]), ("invited", "alice"))
        bob.send_json(cmd="msg", target="#ops", text="paged", id="b3")
        await bob.expect_json(type="sent", id="b3")
        in_group = await alice.expect_json(type="message")
        self.assertEqual(in_group["message"]["to"], "#ops")

        alice.send_json(cmd="history", target="bob", id=5)
        history = await alice.expect_json(type="history", id=5)
        self.assertEqual([m["text"] for m in history["messages"]], ["psst"])
        alice.send_json(cmd="nope", id=6)
        error = await alice.expect_json(type="error", id=6)
        self.assertEqual(error["code"], "unknown_command")


class LifecycleTests(TestCase):
    async def test_sigterm_then_restart_keeps_everything(self) -> None:
        """
        SIGTERM shuts the daemon down in order, with a notice to whoever is
        connected; started again on the same database it still has the
        accounts and history, and tells a person how many messages arrived
        while they were away.
        """
        daemon = await start_daemon(self, ["--server-id", "replica-a"])
        alice = await signed_up(daemon.port, "alice")
        bob = await signed_up(daemon.port, "bob")
        alice.send("/quit")
        await alice.closed
        bob.send("/msg alice are you there?")
        await bob.expect("bob -> alice: are you there?")
        bob.send("/msg alice second try")
        await bob.expect("bob -> alice: second try")
        bob.send("/msg * news for all")
        await bob.expect("bob to everyone: news for all")

        # twistd shuts down cleanly, then ends itself with the same signal so
        # that whoever sent it sees it obeyed.
        self.assertEqual(await daemon.stop(), -signal.SIGTERM)
        self.assertIn("chat replica-a stopped", daemon.output)
        self.assertIn("Server Shut Down.", daemon.output)
        await bob.expect("*** ")
        await bob.closed

        await daemon.start()
        back = await connect(daemon.port)
        back.send(f"/login alice {PASSWORD}")
        self.assertEqual(
            await back.expect("Welcome back, alice!"),
            "Welcome back, alice! 3 new messages arrived while you were away"
            " (2 private, 1 broadcast); /open a conversation to read them.",
        )
        back.send("/history bob")
        await back.expect("--- last 2 messages with bob ---")
        await back.expect("] bob: are you there?")
        await back.expect("] bob: second try")
        again = await connect(daemon.port)
        again.send(f"/login bob {PASSWORD}")
        await again.expect("Welcome back, bob!")

    async def test_sigkill_keeps_acknowledged_messages(self) -> None:
        """
        A message the daemon acknowledged survives the daemon being killed.
        """
        daemon = await start_daemon(self)
        alice = await signed_up(daemon.port, "alice")
        alice.send("/msg * written before the crash")
        await alice.expect("alice to everyone: written before the crash")
        self.assertEqual(await daemon.kill(), -signal.SIGKILL)
        await alice.closed

        await daemon.start()
        back = await connect(daemon.port)
        back.send(f"/login alice {PASSWORD}")
        await back.expect("Welcome back, alice!")
        back.send("/history *")
        await back.expect("] alice: written before the crash")
