"""Restarts lose nothing: MLflow keeps no state of its own, and it rides out a PostgreSQL restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

RECOVERY_TIMEOUT = 90
WRITES_AFTER_RESTART = 5


def test_runs_and_artifacts_survive_an_mlflow_restart(
    client: Any, experiment_id: str, mlflow_env: Stack, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(bytes(range(256)) * 64)
    run_ids = []
    for value in (1.0, 2.0, 3.0):
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "value", value)
        client.log_artifact(run_id, str(source))
        run_ids.append(run_id)

    mlflow_env.restart_mlflow()

    after = MlflowClient(tracking_uri=mlflow_env.tracking_uri)
    assert [after.get_run(r).data.metrics["value"] for r in run_ids] == [1.0, 2.0, 3.0]
    for run_id in run_ids:
        downloaded = Path(after.download_artifacts(run_id, "weights.bin", str(tmp_path / run_id)))
        assert downloaded.read_bytes() == source.read_bytes()


class Writer(threading.Thread):
    """Logs metric steps one after another; remembers which steps the server acknowledged."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.acknowledged: list[int] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            try:
                self.client.log_metric(self.run_id, "heartbeat", float(step), step=step)
                self.acknowledged.append(step)
            except MlflowException:
                self.failures += 1
                # Pace retries while the database is down instead of spinning on refused requests.
                self.stop.wait(0.2)
            step += 1

    def acknowledged_since(self, count_before: int) -> int:
        return len(self.acknowledged) - count_before


def test_mlflow_serves_again_after_a_postgres_restart_without_losing_acknowledged_writes(
    client: Any, experiment_id: str, mlflow_env: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fail fast while the database is away, so the writer notices when it is back.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    run_id = client.create_run(experiment_id).info.run_id
    mlflow_started = _started_at(mlflow_env)
    writer = Writer(mlflow_env.tracking_uri, run_id)
    writer.start()
    try:
        _wait_for(lambda: len(writer.acknowledged) >= WRITES_AFTER_RESTART, "writes before the restart")
        mlflow_env.restart_postgres()
        before = len(writer.acknowledged)
        _wait_for(lambda: writer.acknowledged_since(before) >= WRITES_AFTER_RESTART, "writes after the restart")
    finally:
        writer.stop.set()
        writer.join(timeout=30)

    history = {
        int(m.step) for m in MlflowClient(tracking_uri=mlflow_env.tracking_uri).get_metric_history(run_id, "heartbeat")
    }
    assert set(writer.acknowledged) <= history
    assert _started_at(mlflow_env) == mlflow_started, "MLflow was restarted; it should have recovered on its own"


def _started_at(stack: Stack) -> str:
    container = stack.mlflow.get_wrapped_container()
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {RECOVERY_TIMEOUT}s")
        time.sleep(0.1)
