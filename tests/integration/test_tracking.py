"""Tracking through the authenticated server: experiments, runs, params, metrics, tags, search, log_batch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from mlflow.entities import Metric, Param, RunTag

pytestmark = pytest.mark.docker


def test_experiment_created_is_found_by_name(client: Any, experiment_id: str) -> None:
    experiment = client.get_experiment(experiment_id)
    assert client.get_experiment_by_name(experiment.name).experiment_id == experiment_id


def test_run_keeps_params_metrics_and_tags(client: Any, experiment_id: str) -> None:
    run = client.create_run(experiment_id, tags={"team": "vision"})
    run_id = run.info.run_id
    client.log_param(run_id, "learning_rate", "0.01")
    for step, value in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(run_id, "loss", value, step=step)
    client.set_terminated(run_id)

    stored = client.get_run(run_id)
    assert stored.data.params == {"learning_rate": "0.01"}
    assert stored.data.metrics == {"loss": 0.25}
    assert stored.data.tags["team"] == "vision"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.9, 0.5, 0.25]
    assert stored.info.status == "FINISHED"


def test_search_filters_runs_by_metric_and_param(client: Any, experiment_id: str) -> None:
    ids = {}
    for name, accuracy in (("low", 0.6), ("high", 0.95)):
        run = client.create_run(experiment_id, run_name=name)
        client.log_param(run.info.run_id, "model", name)
        client.log_metric(run.info.run_id, "accuracy", accuracy)
        ids[name] = run.info.run_id

    found = client.search_runs([experiment_id], filter_string="metrics.accuracy > 0.9 and params.model = 'high'")
    assert [r.info.run_id for r in found] == [ids["high"]]


def test_log_batch_stores_every_metric_param_and_tag(client: Any, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("score", float(step), now, step) for step in range(50)]
    params = [Param(f"p{i}", str(i)) for i in range(10)]
    tags = [RunTag("stage", "batch")]

    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    stored = client.get_run(run_id)
    assert stored.data.params == {f"p{i}": str(i) for i in range(10)}
    assert stored.data.tags["stage"] == "batch"
    assert len(client.get_metric_history(run_id, "score")) == 50
