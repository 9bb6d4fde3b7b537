"""Readiness of rollouts, read from the status a controller writes."""

from __future__ import annotations

from typing import Any

from mlopskit.kube.wait import readiness


def deployment(replicas: int = 2, generation: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "mlflow", "generation": generation},
        "spec": {"replicas": replicas},
        "status": status,
    }


def test_deployment_with_every_replica_updated_ready_and_available_is_ready() -> None:
    state = readiness(
        deployment(observedGeneration=3, replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2)
    )
    assert state.ready and not state.failed


def test_deployment_whose_controller_has_not_seen_the_new_generation_is_not_ready() -> None:
    state = readiness(
        deployment(observedGeneration=2, replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2)
    )
    assert not state.ready
    assert "generation 3" in state.detail


def test_deployment_with_old_replicas_still_running_is_not_ready() -> None:
    state = readiness(
        deployment(observedGeneration=3, replicas=3, updatedReplicas=2, readyReplicas=2, availableReplicas=2)
    )
    assert not state.ready


def test_deployment_without_ready_pods_reports_counts() -> None:
    state = readiness(deployment(observedGeneration=3, replicas=2, updatedReplicas=2, readyReplicas=0))
    assert not state.ready
    assert state.detail == "0/2 ready, 2/2 updated"


def test_statefulset_ready_when_all_replicas_ready_on_the_update_revision() -> None:
    sts = {
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "currentRevision": "r1",
            "updateRevision": "r1",
        },
    }
    assert readiness(sts).ready


def test_job_is_ready_when_complete_and_failed_when_failed() -> None:
    complete = {"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {
        "kind": "Job",
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}]
        },
    }
    running = {"kind": "Job", "status": {"active": 1}}
    assert readiness(complete).ready
    assert readiness(failed).failed and "BackoffLimitExceeded" in readiness(failed).detail
    assert not readiness(running).ready and not readiness(running).failed
