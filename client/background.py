"""
Work that runs on its own while the user goes on typing.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


def spawn(name: str, work: Coroutine[Any, Any, None]) -> Deferred[None]:
    """
    Start C{work}; if it fails, log the failure under C{name}.

    The returned Deferred never fails, so whoever keeps it may cancel it or
    drop it without losing an error.
    """
    d = Deferred.fromCoroutine(work)

    def failed(failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("background task {task} failed", failure, task=name)

    d.addErrback(failed)
    return d
