"""When is a starting container ready, still starting, or failed: decided from what Docker reports.

A slow machine is not a failure. Docker marks a container `unhealthy` after a few failed probes, yet
keeps probing, and a server that is still importing or migrating passes a few seconds later. So the
wait follows progress: a container that runs is waited for while it keeps writing log lines, up to an
overall limit (`local.start_timeout`); it fails at once only when it exits, or when Docker restarted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# How long an unhealthy container may stay silent (no new log line) before the wait gives up early.
STALL_SECONDS = 300.0

Verdict = Literal["ready", "waiting", "failed"]


@dataclass(frozen=True)
class Observation:
    """One look at a container: its state, health, restarts and when it last wrote a log line."""

    status: str  # created | running | restarting | paused | exited | dead
    health: str  # starting | healthy | unhealthy | none (no health check)
    exit_code: int | None
    restarts: int  # how often Docker restarted it since the wait began
    last_log_at: float | None  # epoch seconds of the newest log line
    probe: str = ""  # last line of the last health check's output


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str  # what it waits for, or why it failed


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def decide(
    obs: Observation,
    started: float,
    now: float,
    limit: float,
    one_off: bool = False,
    stall: float = STALL_SECONDS,
) -> Decision:
    """Ready, waiting or failed; one_off containers (migrations) are ready when they exit with 0."""
    if obs.status in {"exited", "dead"}:
        if one_off and obs.exit_code == 0:
            return Decision("ready", "finished")
        return Decision("failed", f"exited with code {obs.exit_code}")
    if obs.restarts > 0 or obs.status == "restarting":
        return Decision("failed", f"exited and was restarted by Docker ({obs.restarts} restarts)")
    if not one_off and (obs.health == "healthy" or (obs.health == "none" and obs.status == "running")):
        return Decision("ready", obs.health)
    elapsed = now - started
    silent = now - (obs.last_log_at if obs.last_log_at is not None else started)
    silent = min(silent, elapsed)  # log lines from before this wait are no news
    if elapsed > limit:
        return Decision(
            "failed", f"not ready after {_duration(elapsed)} (the limit is local.start_timeout: {limit:.0f}s)"
        )
    if obs.health == "unhealthy" and silent > stall:
        return Decision(
            "failed", f"unhealthy, and no new log line for {_duration(silent)} ({obs.probe or 'no probe output'})"
        )
    if one_off:
        waiting_for = "it to finish"
    else:
        check = "health check failing" if obs.health == "unhealthy" else "health check not passed yet"
        waiting_for = f"its health check ({check}{': ' + obs.probe if obs.probe else ''})"
    return Decision(
        "waiting",
        f"waiting for {waiting_for}; last log line {_duration(silent)} ago; {_duration(elapsed)} of {limit:.0f}s",
    )


def docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, Z) as epoch seconds; None when absent or unreadable."""
    if not text or text.startswith("0001-"):
        return None
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head + "+00:00")
    except ValueError:
        return None
    digits = "".join(ch for ch in fraction if ch.isdigit())[:6]
    return moment.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def observe(attrs: dict[str, Any], last_log_line: bytes, restarts_before: int) -> Observation:
    """An Observation from a container's inspect data and its newest log line (fetched with timestamps)."""
    state = attrs.get("State", {})
    health = state.get("Health") or {}
    probes = health.get("Log") or []
    output = str(probes[-1].get("Output", "")).strip().splitlines() if probes else []
    stamp = last_log_line.decode(errors="replace").split(" ", 1)[0] if last_log_line.strip() else None
    return Observation(
        status=str(state.get("Status", "?")),
        health=str(health.get("Status", "none")),
        exit_code=state.get("ExitCode"),
        restarts=int(attrs.get("RestartCount", 0)) - restarts_before,
        last_log_at=docker_time(stamp),
        probe=output[-1][:120] if output else "",
    )
