"""
The dashboard's JSON answers, made from a snapshot and the history.

docs/dashboard.md describes each shape.  Figures that could not be read are
C{null}, never a guess.
"""

from __future__ import annotations

from typing import Any

from chat.admin import CheckResult
from chat.overview import Replica, Snapshot
from chat.presence import Presence
from chat.timeline import Sample, series

# The most people the status lists by name; the count is always whole.
ONLINE_LISTED = 500
DECISIONS_LISTED = 20
# Rates are measured over at least this many seconds.
RATE_MIN_SECONDS = 1.0


def _up(result: CheckResult) -> str:
    return "up" if result.ok else "down"


def replica_json(replica: Replica, now: float) -> dict[str, Any]:
    return {
        "id": replica.id,
        "status": replica.status,
        "ready": replica.ready,
        "connections": replica.connections,
        "users": replica.users,
        "messages_in": replica.messages_in,
        "messages_out": replica.messages_out,
        "started_at": replica.started_at,
        "uptime_seconds": round(max(0.0, now - replica.started_at), 1),
        "draining": replica.draining,
        "updated_at": replica.updated_at,
        "age_seconds": round(replica.age_seconds, 1),
    }


def _person(presence: Presence) -> dict[str, Any]:
    return {
        "name": presence.name,
        "server": presence.server_id,
        "since": presence.since,
    }


def autoscaler_status(snapshot: Snapshot) -> str:
    """
    C{running} while its heartbeat lasts, C{absent} without one, and
    C{unknown} when Redis could not be read.
    """
    if snapshot.scaler is None:
        return "unknown"
    return "running" if snapshot.scaler.running else "absent"


def message_rate(snapshot: Snapshot, samples: list[Sample]) -> float | None:
    """
    Messages per second from the newest sample old enough to the snapshot.
    """
    if snapshot.total_messages is None:
        return None
    for sample in reversed(samples):
        elapsed = snapshot.time - sample.time
        if sample.messages is not None and elapsed >= RATE_MIN_SECONDS:
            gained = max(0, snapshot.total_messages - sample.messages)
            return round(gained / elapsed, 3)
    return None


def status_json(snapshot: Snapshot, samples: list[Sample]) -> dict[str, Any]:
    """
    The answer of C{/api/status}.
    """
    now = snapshot.time
    online = snapshot.online
    listed = sorted(online or [], key=lambda p: p.name.lower())[:ONLINE_LISTED]
    replicas = snapshot.replicas
    scaler = snapshot.scaler
    return {
        "generated_at": now,
        "online_users": None if online is None else len(online),
        "online": None if online is None else [_person(p) for p in listed],
        "online_truncated": online is not None and len(online) > len(listed),
        "total_users": snapshot.total_users,
        "total_messages": snapshot.total_messages,
        "messages_per_second": message_rate(snapshot, samples),
        "replicas": None if replicas is None else len(replicas),
        "ready_replicas": snapshot.ready_replicas,
        "desired_replicas": snapshot.desired_replicas,
        "pods": None if replicas is None else [replica_json(r, now) for r in replicas],
        "database_status": _up(snapshot.database),
        "redis_status": _up(snapshot.redis),
        "autoscaler_status": autoscaler_status(snapshot),
        "autoscaler": {
            "heartbeat": None if scaler is None else scaler.heartbeat,
            "decisions": None
            if scaler is None
            else scaler.decisions[:DECISIONS_LISTED],
        },
        "errors": snapshot.errors,
    }


def _check_json(result: CheckResult, required: bool) -> dict[str, Any]:
    return {
        "status": _up(result),
        "required": required,
        "latency_ms": round(result.latency_ms, 3),
        "error": result.error,
    }


def health_json(snapshot: Snapshot) -> dict[str, Any]:
    """
    The answer of C{/api/health}: C{unhealthy} when the database or Redis
    is down or no replica is ready, C{degraded} when only the autoscaler or
    some replicas are, C{healthy} otherwise.
    """
    components: dict[str, dict[str, Any]] = {
        "database": {
            **_check_json(snapshot.database, True),
            "engine": snapshot.engine,
        },
        "redis": _check_json(snapshot.redis, True),
    }
    scaler_state = autoscaler_status(snapshot)
    components["autoscaler"] = {
        "status": "up" if scaler_state == "running" else "down",
        "required": False,
        "state": scaler_state,
    }
    ready = snapshot.ready_replicas
    components["replicas"] = {
        "status": "up" if ready else "down",
        "required": True,
        "ready": ready,
        "total": None if snapshot.replicas is None else len(snapshot.replicas),
    }
    for replica in snapshot.replicas or []:
        components[f"replica:{replica.id}"] = {
            "status": "up" if replica.ready else replica.status,
            "required": False,
            "age_seconds": round(replica.age_seconds, 1),
            "draining": replica.draining,
        }
    down = [name for name, c in components.items() if c["status"] != "up"]
    if any(components[name]["required"] for name in down):
        status = "unhealthy"
    elif down:
        status = "degraded"
    else:
        status = "healthy"
    return {"status": status, "checked_at": snapshot.time, "components": components}


def _decision_time(decision: dict[str, Any]) -> float | None:
    value = decision.get("time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def metrics_json(
    samples: list[Sample],
    decisions: list[dict[str, Any]] | None,
    interval: float,
    horizon: float,
    now: float,
) -> dict[str, Any]:
    """
    The answer of C{/api/metrics}: the charts' series, oldest first, and the
    autoscaler's decisions within the horizon, oldest first.
    """
    shown = [
        d
        for d in reversed(decisions or [])
        if (_decision_time(d) or 0.0) >= now - horizon
    ]
    return {
        "generated_at": now,
        "interval_seconds": interval,
        "horizon_seconds": horizon,
        **series(samples),
        "decisions": shown,
    }


def sample_of(snapshot: Snapshot) -> Sample:
    """
    The figures of C{snapshot} that the charts follow.
    """
    return Sample(
        time=snapshot.time,
        users=None if snapshot.online is None else len(snapshot.online),
        replicas=None if snapshot.replicas is None else len(snapshot.replicas),
        ready=snapshot.ready_replicas,
        desired=snapshot.desired_replicas,
        messages=snapshot.total_messages,
    )
