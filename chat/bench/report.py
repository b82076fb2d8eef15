"""
What a run found: one result per phase, their medians over repeated runs, a
table for people and a JSON document for programs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from chat.bench.stats import Latency, median

MEGABYTE = 1024 * 1024


@dataclass
class PhaseResult:
    """
    The figures of one measured phase.

    C{seconds} is how long messages were sent.  C{send_rate} counts the
    messages stored (acknowledged) from the start until the last
    acknowledgement, or the end of sending if that came later;
    C{delivery_rate} counts first deliveries from the start until the last
    one arrived.  CPU figures are the
    server's, from the start of sending until every delivery arrived (or the
    drain gave up); C{None} when the server is not a local process we know.
    C{client_cpu_seconds} is this tool's own, and C{load_average} the
    machine's one-minute load at the end: both tell whether the figures were
    limited by the machine rather than by the server.
    """

    scenario: str
    mode: str
    run: int
    connections: int
    senders: int
    seconds: float = 0.0
    sent: int = 0
    acked: int = 0
    skipped: int = 0
    send_rate: float = 0.0
    deliveries: int = 0
    expected: int = 0
    delivery_rate: float = 0.0
    latency: Latency = field(default_factory=Latency)
    server_cpu_seconds: float | None = None
    cpu_per_1k_messages: float | None = None
    cpu_per_1k_deliveries: float | None = None
    rss_before: int | None = None
    rss_after: int | None = None
    client_cpu_seconds: float | None = None
    load_average: float | None = None
    refused: dict[str, int] = field(default_factory=dict)
    unacked: int = 0
    duplicates: int = 0
    lost: int = 0
    misdirected: int = 0
    late: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        other = int(self.extra.get("errors", 0))
        return sum(self.refused.values()) + self.unacked + other

    @property
    def correct(self) -> bool:
        """
        Every message delivered exactly once to each intended recipient, and
        nothing failed.
        """
        return (
            self.errors == 0
            and self.lost == 0
            and self.duplicates == 0
            and self.misdirected == 0
        )

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["errors"] = self.errors
        result["correct"] = self.correct
        return result


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MEGABYTE:.0f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS: list[tuple[str, int, Callable[[PhaseResult], str]]] = [
    ("scenario", 9, lambda r: r.scenario),
    ("mode", 15, lambda r: r.mode),
    ("run", 3, lambda r: str(r.run)),
    ("conns", 5, lambda r: str(r.connections)),
    ("sndrs", 5, lambda r: str(r.senders)),
    ("secs", 5, lambda r: _num(r.seconds, 1)),
    ("sent", 7, lambda r: str(r.acked)),
    ("sent/s", 7, lambda r: _num(r.send_rate)),
    ("deliv", 8, lambda r: str(r.deliveries)),
    ("deliv/s", 7, lambda r: _num(r.delivery_rate)),
    ("p50ms", 7, lambda r: _num(r.latency.p50, 1)),
    ("p95ms", 7, lambda r: _num(r.latency.p95, 1)),
    ("p99ms", 7, lambda r: _num(r.latency.p99, 1)),
    ("cpu/1kmsg", 9, lambda r: _num(r.cpu_per_1k_messages, 3)),
    ("cpu/1kdlv", 9, lambda r: _num(r.cpu_per_1k_deliveries, 3)),
    ("rssMB", 9, lambda r: f"{_mb(r.rss_before)}>{_mb(r.rss_after)}"),
    ("err", 4, lambda r: str(r.errors)),
    ("dup", 4, lambda r: str(r.duplicates)),
    ("lost", 5, lambda r: str(r.lost)),
    ("ok", 3, lambda r: "yes" if r.correct else "NO"),
]


def table(results: Sequence[PhaseResult]) -> str:
    header = " ".join(name.rjust(width) for name, width, _ in COLUMNS)
    lines = [header]
    for result in results:
        lines.append(" ".join(show(result).rjust(w) for _, w, show in COLUMNS))
    return "\n".join(lines)


def _median_of(
    results: Sequence[PhaseResult], pick: Callable[[PhaseResult], Any]
) -> Any:
    values = [pick(r) for r in results if pick(r) is not None]
    return median(values) if values else None


def medians(results: Sequence[PhaseResult]) -> list[PhaseResult]:
    """
    One result per scenario, mode and size: the median of each figure over
    the repeated runs, with the counts of errors, duplicates and losses added
    up.  Its C{run} is the number of runs.
    """
    groups: dict[tuple[str, str, int, int], list[PhaseResult]] = {}
    for result in results:
        key = (result.scenario, result.mode, result.connections, result.senders)
        groups.setdefault(key, []).append(result)
    summary = []
    for (scenario, mode, connections, senders), runs in groups.items():
        middle = PhaseResult(scenario, mode, len(runs), connections, senders)
        for name in (
            "seconds", "sent", "acked", "send_rate", "deliveries", "expected",
            "delivery_rate", "server_cpu_seconds", "cpu_per_1k_messages",
            "cpu_per_1k_deliveries", "rss_before", "rss_after", "client_cpu_seconds",
            "load_average",
        ):  # fmt: skip
            setattr(middle, name, _median_of(runs, attrgetter(name)))
        latency = {
            name: _median_of(runs, attrgetter(f"latency.{name}"))
            for name in ("count", "p50", "p95", "p99", "max", "mean")
        }
        middle.latency = Latency(**latency)
        for name in ("unacked", "duplicates", "lost", "misdirected", "late", "skipped"):
            setattr(middle, name, sum(getattr(r, name) for r in runs))
        refused: dict[str, int] = {}
        for run in runs:
            for code, count in run.refused.items():
                refused[code] = refused.get(code, 0) + count
        middle.refused = refused
        middle.extra = {"errors": sum(r.extra.get("errors", 0) for r in runs)}
        summary.append(middle)
    return summary


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def progress_line(
    label: str, elapsed: float, duration: float, sent: int, delivered: int, p99: float
) -> str:
    return (
        f"[{label}] {elapsed:4.1f}/{duration:g} s  sent {sent}"
        f"  delivered {delivered}  p99 {p99:.1f} ms (last second)"
    )
