"""Many clients at once: every run of every client is stored with its metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

CLIENTS = 8
RUNS_PER_CLIENT = 25


def _log_runs(tracking_uri: str, experiment_id: str, worker: int) -> list[str]:
    client = MlflowClient(tracking_uri=tracking_uri)
    run_ids = []
    for index in range(RUNS_PER_CLIENT):
        run_id = client.create_run(experiment_id, tags={"worker": str(worker)}).info.run_id
        client.log_metric(run_id, "index", float(worker * RUNS_PER_CLIENT + index))
        client.set_terminated(run_id)
        run_ids.append(run_id)
    return run_ids


def test_parallel_clients_store_every_run_with_its_metric(client: Any, experiment_id: str, mlflow_env: Stack) -> None:
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(_log_runs, mlflow_env.tracking_uri, experiment_id, w) for w in range(CLIENTS)]
        logged = {run_id for future in futures for run_id in future.result()}

    stored = client.search_runs([experiment_id], max_results=1000)

    assert len(logged) == CLIENTS * RUNS_PER_CLIENT
    assert {run.info.run_id for run in stored} == logged
    assert sorted(run.data.metrics["index"] for run in stored) == [float(i) for i in range(CLIENTS * RUNS_PER_CLIENT)]
    assert all(run.info.status == "FINISHED" for run in stored)
