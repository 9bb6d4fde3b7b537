"""Rollout waiting against a real API server, with readiness set through the status subresource.

No controller or node is needed: the test writes the Deployment status a controller would write.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.kube.apply import Engine
from mlopskit.kube.wait import wait_for_rollout
from tests.cluster.platform_objects import objects


def test_rollout_wait_times_out_until_the_status_says_ready_then_returns(
    engine: Callable[..., Engine], dyn: DynamicClient, namespace: str
) -> None:
    deployment = next(o for o in objects() if o["kind"] == "Deployment")
    applied = engine().apply([deployment]).applied
    live_obj = next(iter(applied.values()))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    time.sleep(2)
    if deployments.get(name="mlflow", namespace=namespace).status.observedGeneration is not None:
        pytest.skip("a Deployment controller runs on this API server and would overwrite the status we set")

    with pytest.raises(PlatformError, match="not ready after"):
        wait_for_rollout(dyn, [live_obj], timeout=1, poll=0.5)

    generation = deployments.get(name="mlflow", namespace=namespace).metadata.generation
    status = {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    deployments.status.patch(
        body={"status": status}, name="mlflow", namespace=namespace, content_type="application/merge-patch+json"
    )
    wait_for_rollout(dyn, [live_obj], timeout=10, poll=0.5)
