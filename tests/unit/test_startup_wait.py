"""`invoke up` waits on progress: a running container that is still starting is not a failure."""

from __future__ import annotations

from typing import Any

import pytest

from mlopskit import local
from mlopskit.errors import PlatformError
from mlopskit.startup import STALL_SECONDS, Observation, decide, docker_time, observe

LIMIT = 900.0
T0 = 1_000_000.0


def seen(status: str = "running", health: str = "starting", **kw: Any) -> Observation:
    values: dict[str, Any] = {"exit_code": 0, "restarts": 0, "last_log_at": T0, "probe": ""} | kw
    return Observation(status=status, health=health, **values)


def test_a_healthy_container_is_ready() -> None:
    assert decide(seen(health="healthy"), T0, T0 + 5, LIMIT).verdict == "ready"


def test_a_running_container_without_a_health_check_is_ready() -> None:
    assert decide(seen(health="none"), T0, T0 + 5, LIMIT).verdict == "ready"


def test_unhealthy_while_still_writing_log_lines_is_waited_for() -> None:
    now = T0 + 280  # Docker's first `unhealthy` on a busy machine, with a log line 3s ago
    decision = decide(seen(health="unhealthy", last_log_at=now - 3, probe="Connection refused"), T0, now, LIMIT)

    assert decision.verdict == "waiting"
    assert "health check failing: Connection refused" in decision.reason
    assert "last log line 3s ago" in decision.reason


def test_a_silent_running_container_that_is_not_yet_unhealthy_is_waited_for() -> None:
    now = T0 + STALL_SECONDS + 60
    assert decide(seen(health="starting", last_log_at=T0), T0, now, LIMIT).verdict == "waiting"


def test_unhealthy_and_silent_for_the_stall_window_fails() -> None:
    now = T0 + STALL_SECONDS + 1
    decision = decide(seen(health="unhealthy", last_log_at=T0), T0, now, LIMIT)

    assert decision.verdict == "failed"
    assert "no new log line for 5m01s" in decision.reason


def test_log_lines_from_before_the_wait_do_not_count_as_silence() -> None:
    decision = decide(seen(health="unhealthy", last_log_at=T0 - 3600), T0, T0 + 10, LIMIT)

    assert decision.verdict == "waiting"


def test_an_exited_container_fails_at_once_with_its_exit_code() -> None:
    decision = decide(seen(status="exited", exit_code=3), T0, T0 + 1, LIMIT)

    assert (decision.verdict, decision.reason) == ("failed", "exited with code 3")


def test_a_container_docker_restarted_fails_even_while_running() -> None:
    assert decide(seen(restarts=1), T0, T0 + 1, LIMIT).verdict == "failed"


def test_the_overall_limit_names_its_setting() -> None:
    decision = decide(seen(health="starting", last_log_at=T0 + LIMIT), T0, T0 + LIMIT + 1, LIMIT)

    assert decision.verdict == "failed"
    assert "local.start_timeout: 900s" in decision.reason


@pytest.mark.parametrize(("exit_code", "verdict"), [(0, "ready"), (1, "failed")])
def test_a_one_off_container_is_done_when_it_exits(exit_code: int, verdict: str) -> None:
    assert decide(seen(status="exited", exit_code=exit_code), T0, T0 + 1, LIMIT, one_off=True).verdict == verdict


def test_a_running_one_off_container_is_waited_for_without_a_health_check() -> None:
    decision = decide(seen(health="none"), T0, T0 + 30, LIMIT, one_off=True)

    assert decision.verdict == "waiting" and "waiting for it to finish" in decision.reason


def test_docker_timestamps_are_read_to_the_microsecond() -> None:
    assert docker_time("1970-01-01T00:00:10.123456789Z") == pytest.approx(10.123456)
    assert docker_time("0001-01-01T00:00:00Z") is None


def test_an_observation_takes_health_probe_and_newest_log_line_from_docker() -> None:
    attrs = {
        "RestartCount": 2,
        "State": {
            "Status": "running",
            "ExitCode": 0,
            "Health": {"Status": "unhealthy", "Log": [{"Output": "Traceback\nURLError: refused\n"}]},
        },
    }
    obs = observe(attrs, b"1970-01-01T00:01:00.5Z mlflow-entrypoint: starting\n", restarts_before=2)

    assert (obs.status, obs.health, obs.restarts, obs.probe) == ("running", "unhealthy", 0, "URLError: refused")
    assert obs.last_log_at == pytest.approx(60.5)


class FakeContainer:
    """A container whose inspect data follows a script, one state per poll."""

    name = "p-mlflow"

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.attrs: dict[str, Any] = {}
        self.polls = 0

    def reload(self) -> None:
        self.attrs = {"RestartCount": 0, "State": self.states[min(self.polls, len(self.states) - 1)]}
        self.polls += 1

    def logs(self, **_: Any) -> bytes:
        return b"1970-01-01T00:00:00Z a line\n"


def test_up_keeps_waiting_through_unhealthy_until_healthy() -> None:
    unhealthy = {"Status": "running", "Health": {"Status": "unhealthy"}}
    container = FakeContainer([unhealthy, unhealthy, unhealthy, {"Status": "running", "Health": {"Status": "healthy"}}])
    reports: list[str] = []
    now = iter(range(0, 100))

    local.wait_ready(
        container,  # type: ignore[arg-type]
        "mlflow",
        lambda _s, state: reports.append(state),
        limit=LIMIT,
        clock=lambda: float(next(now)),
        sleep=lambda _: None,
    )

    assert len(reports) == 2 and all(r.startswith("waiting for its health check") for r in reports)


def test_up_stops_with_the_reason_when_the_container_exits() -> None:
    container = FakeContainer([{"Status": "running"}, {"Status": "exited", "ExitCode": 1}])

    with pytest.raises(PlatformError, match="mlflow: container p-mlflow exited with code 1; its last log lines"):
        local.wait_ready(container, "mlflow", limit=LIMIT, clock=lambda: 0.0, sleep=lambda _: None)  # type: ignore[arg-type]


def test_a_running_container_whose_probe_answers_is_ready_before_its_health_check() -> None:
    starting = {"Status": "running", "Health": {"Status": "starting"}}
    container = FakeContainer([starting] * 10)
    answers = iter([False, False, True])

    local.wait_ready(
        container,  # type: ignore[arg-type]
        "mlflow",
        limit=LIMIT,
        clock=lambda: 0.0,
        sleep=lambda _: None,
        probe=lambda: next(answers),
    )

    assert container.polls == 4  # the first look, then three polls: the third probe answered


def test_waiting_for_several_stops_at_the_first_that_exits() -> None:
    running = {"Status": "running", "Health": {"Status": "starting"}}
    postgres = FakeContainer([running, running, {"Status": "exited", "ExitCode": 3}])
    postgres.name = "p-postgres"
    mlflow = FakeContainer([running] * 10)

    with pytest.raises(PlatformError, match="postgres: container p-postgres exited with code 3"):
        local.wait_all_ready(
            [local.Starting(postgres, "postgres"), local.Starting(mlflow, "mlflow")],  # type: ignore[arg-type]
            limit=LIMIT,
            clock=lambda: 0.0,
            sleep=lambda _: None,
        )


def test_waiting_for_several_ends_when_every_one_is_ready() -> None:
    healthy = {"Status": "running", "Health": {"Status": "healthy"}}
    starting = {"Status": "running", "Health": {"Status": "starting"}}
    postgres = FakeContainer([healthy])
    mlflow = FakeContainer([starting, starting, starting, healthy])
    reports: list[tuple[str, str]] = []
    now = iter(range(100))

    local.wait_all_ready(
        [local.Starting(postgres, "postgres"), local.Starting(mlflow, "mlflow")],  # type: ignore[arg-type]
        lambda service, state: reports.append((service, state)),
        limit=LIMIT,
        clock=lambda: float(next(now)),
        sleep=lambda _: None,
    )

    assert {service for service, _ in reports} == {"mlflow"} and postgres.polls == 2
