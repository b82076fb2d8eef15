"""
No password or token ever reaches a log line.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher

from tests.test_protocol import ProtocolTestCase
from tests.test_resume import token_of


class SecretsInLogsTests(ProtocolTestCase):
    async def test_passwords_and_tokens_stay_out_of_logs(self) -> None:
        """
        Through signup, failed and good logins, resume and quit at debug
        level, no logged event mentions the password or a token.
        """
        from chat import logs

        logs.set_level("debug")
        self.addCleanup(logs.set_level, "info")
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        password = "Sup3r-secret-pw"
        alice = self.harness.connect()
        alice.output()
        first = token_of(await alice.send(f"/signup alice {password}"))
        await alice.send("/msg * hello")
        await alice.disconnect()
        other = self.harness.connect()
        other.output()
        await other.send(f"/login alice {password}x")
        second = token_of(await other.send(f"/resume {first}"))
        await other.send("/quit")
        await other.disconnect()

        self.assertTrue(events, "nothing was logged, so the test proves nothing")
        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn("alice", text)
        for secret in (password, first, second):
            self.assertNotIn(secret, text)
