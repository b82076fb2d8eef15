"""
A local process's CPU time and resident memory, read from /proc.

Only Linux has these files; elsewhere, or for a process that has gone, the
readings are C{None} and the report leaves the figures out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# utime and stime are fields 14 and 15 of /proc/PID/stat; after the command
# name (field 2, in parentheses) the split starts at field 3.
_UTIME_AFTER_COMM = 14 - 3
_STIME_AFTER_COMM = 15 - 3


class BadProcFile(ValueError):
    """
    A /proc file did not have the expected layout.
    """


def parse_stat(text: str) -> tuple[int, int]:
    """
    The user and system CPU time, in clock ticks, from a /proc/PID/stat line.

    The command name may hold spaces and parentheses, so the fields are counted
    from the last closing parenthesis.
    """
    end = text.rfind(")")
    if end < 0:
        raise BadProcFile("no command name in the stat line")
    fields = text[end + 1 :].split()
    try:
        return int(fields[_UTIME_AFTER_COMM]), int(fields[_STIME_AFTER_COMM])
    except (IndexError, ValueError):
        raise BadProcFile("the stat line has no CPU times") from None


def parse_vmrss(text: str) -> int | None:
    """
    The resident set size in bytes from /proc/PID/status; C{None} when absent,
    as it is for a zombie.
    """
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) != 3 or parts[2] != "kB" or not parts[1].isdigit():
                raise BadProcFile(f"unexpected VmRSS line: {line!r}")
            return int(parts[1]) * 1024
    return None


@dataclass(frozen=True)
class Reading:
    """
    One look at a process: CPU seconds used so far and resident bytes.
    """

    cpu_seconds: float | None
    rss_bytes: int | None


class ProcessStats:
    """
    Readings of one process by PID.

    @param root: the proc file system; tests point it at a directory of their
        own files.
    """

    def __init__(
        self, pid: int, root: Path = PROC, ticks_per_second: int | None = None
    ) -> None:
        self.pid = pid
        self._dir = root / str(pid)
        self._ticks = ticks_per_second or os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float | None:
        try:
            text = (self._dir / "stat").read_text()
        except OSError:
            return None
        user, system = parse_stat(text)
        return (user + system) / self._ticks

    def rss_bytes(self) -> int | None:
        try:
            text = (self._dir / "status").read_text()
        except OSError:
            return None
        return parse_vmrss(text)

    def read(self) -> Reading:
        return Reading(self.cpu_seconds(), self.rss_bytes())


def cpu_used(before: Reading, after: Reading) -> float | None:
    """
    CPU seconds spent between two readings, if both have one.
    """
    if before.cpu_seconds is None or after.cpu_seconds is None:
        return None
    return after.cpu_seconds - before.cpu_seconds
