"""
What the twistd glue of every chat service shares: each option may come from
an environment variable (a command-line option wins), every service takes
C{--log-level}, and a service that cannot start ends its process with a
failure status.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from twisted.python import usage

from chat import logs

LOG_LEVEL_OPTION: list[Any] = [
    "log-level",
    None,
    "info",
    f"one of {', '.join(logs.LEVELS)} [$CHAT_LOG_LEVEL]",
]


class EnvironmentOptions(usage.Options):
    """
    Options that start from the environment variables named in
    L{environment}, option name to variable.
    """

    environment: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        super().__init__()
        for key, variable in self.environment.items():
            if variable in os.environ:
                self[key] = os.environ[variable]

    def set_log_level(self) -> None:
        """
        Apply C{--log-level}, or explain what it takes.
        """
        try:
            logs.set_level(self["log-level"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from e


def exit_failed_after_shutdown(reactor: Any) -> None:
    """
    Once the reactor has shut down, end the process with status 1.

    twistd exits 0 whenever the reactor stops; a service that could not
    start calls this before stopping the reactor, so that its supervisor
    sees the failure.
    """

    def exit_failed() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
