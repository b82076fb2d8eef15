"""
The log level of the chat's own messages.

Every module logs through a L{twisted.logger.Logger} whose observer is
L{observer}: a filter in front of the global publisher, so that C{--log-level}
governs the chat's messages without touching how twistd writes its log.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

LEVELS = ("debug", "info", "warn", "error", "critical")

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def set_level(name: str) -> None:
    """
    Show the chat's messages at C{name} and above.

    @raise ValueError: for a name not in L{LEVELS}.
    """
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    _predicate.setLogLevelForNamespace("", LogLevel.levelWithName(name))
