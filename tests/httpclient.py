"""
A small HTTP client for tests: one GET, the whole answer, within a bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.web.client import Agent, readBody

FETCH_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Answer:
    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


async def fetch(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> Answer:
    """
    GET C{url} and read the whole answer.
    """
    agent = Agent(reactor)
    d = agent.request(b"GET", url.encode("ascii"))
    d.addTimeout(timeout, reactor)
    response = await d
    body = await readBody(response)
    headers = {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in response.headers.getAllRawHeaders()
    }
    return Answer(response.code, headers, body)
