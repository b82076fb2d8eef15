"""
The login storm: many people log in at once while a few others chat.

The accounts exist already (the run signed them up).  All but a handful of
connections log out; then, while the handful exchange private messages at a
small paced rate, the others connect and log in all at the same moment.  The
figures are the login rate, the time each login took, and the delivery
latency of the background messages during the storm.  Logging in is slow on
purpose (argon2id), so this is where that cost shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults

from chat.bench.load import Load, Mode
from chat.bench.report import PhaseResult
from chat.bench.scenarios import Private
from chat.bench.stats import rate, summarize

if TYPE_CHECKING:
    from chat.bench.runner import Run

# How many connections stay logged in and chat during the storm, by default;
# at most half of them do.
BACKGROUND_CONNECTIONS = 10
# Messages per second among them, by default.
BACKGROUND_RATE = 20.0


async def login_storm(run: Run, number: int) -> PhaseResult:
    """
    Log out all but the background connections, then log them all in at
    once; return the phase with the storm's figures in C{extra}.
    """
    count = len(run.clients)
    chatting = run.plan.senders_for("login") or BACKGROUND_CONNECTIONS
    chatting = min(chatting, count // 2)
    chatting -= chatting % 2
    stormers = list(range(chatting, count))
    await _log_out(run, stormers)
    topology = Private(run.names, range(chatting))
    mode = Mode("paced", rate=run.plan.rates.get("login", BACKGROUND_RATE))

    async def storm(load: Load) -> dict[str, Any]:
        figures = await _log_in(run, stormers)
        load.finish()
        return figures

    return await run.measure(
        "login",
        mode,
        number,
        topology,
        topology.senders(),
        duration=run.plan.setup_timeout,
        during=storm,
    )


async def _log_out(run: Run, slots: list[int]) -> None:
    leaving = []
    for slot in slots:
        client = run.clients[slot]
        if client is not None:
            run.clients[slot] = None
            leaving.append(Deferred.fromCoroutine(client.quit()))
    await run.bounded(gatherResults(leaving, consumeErrors=True), "logging out")


async def _log_in(run: Run, slots: list[int]) -> dict[str, Any]:
    started = run.now()
    took: list[float] = []
    failures: dict[str, int] = {}

    async def one(slot: int) -> None:
        began = run.now()
        try:
            client = await run.open(slot, run.plan.targets[0])
            await client.login(run.names[slot], run.plan.password)
        except Exception as e:
            reason = getattr(e, "code", type(e).__name__)
            failures[reason] = failures.get(reason, 0) + 1
            return
        took.append(run.now() - began)
        run.clients[slot] = client

    storming = gatherResults([Deferred.fromCoroutine(one(s)) for s in slots])
    await run.bounded(storming, "the login storm")
    seconds = run.now() - started
    login = summarize(took)
    return {
        "logins": len(took),
        "login_failures": failures,
        "errors": sum(failures.values()),
        "storm_seconds": seconds,
        "login_rate": rate(len(took), seconds),
        "login_p50_ms": login.p50,
        "login_p99_ms": login.p99,
        "login_max_ms": login.max,
    }
