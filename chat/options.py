"""
What the command-line options of every chat service share: each option may
come from an environment variable (a command-line option wins), and every
service takes C{--log-level}.
"""

from __future__ import annotations

import os
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
