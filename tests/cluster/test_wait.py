"""Rollout waits on real rollouts: a Deployment that becomes ready, one stuck on its image, one that crashes,
and a Job that fails. Needs a Ready node; the pods run the offline Python image, imported into the node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.image_names import OFFLINE_PYTHON
from mlopskit.images import ImageBuilder, docker_client
from mlopskit.kube.apply import Engine
from mlopskit.kube.wait import wait_for_rollout
from mlopskit.settings import load_settings
from tests.cluster.pod_security import RESTRICTED

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def python_image(node_images: Callable[[list[str]], None]) -> str:
    """The offline Python image, built here if needed and imported into the node."""
    builder = ImageBuilder(load_settings(REPO, {}), docker_client())
    ref = builder.resolve(OFFLINE_PYTHON, "python")
    node_images([ref])
    return ref


def pod_spec(image: str, command: list[str], *, restart: str = "Always") -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "securityContext": RESTRICTED,
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
            }
        ],
    }


def deployment(name: str, image: str, command: list[str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(image, command)},
        },
    }


def job(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec(image, command, restart="Never")}},
    }


def test_a_deployment_whose_pod_becomes_ready_is_waited_for(
    engine: Callable[..., Engine], dyn: DynamicClient, python_image: str
) -> None:
    applied = engine().apply([deployment("ready", python_image, ["sleep", "3600"])]).applied
    wait_for_rollout(dyn, list(applied.values()), timeout=300, poll=1)
    live = dyn.resources.get(api_version="apps/v1", kind="Deployment").get(
        name="ready", namespace=next(iter(applied)).namespace
    )
    assert live.status.readyReplicas == 1


def test_a_deployment_stuck_on_a_missing_image_times_out_with_the_pods_waiting_reason(
    engine: Callable[..., Engine], dyn: DynamicClient, python_image: str
) -> None:
    missing = "mlopskit/no-such-image:0"
    applied = engine().apply([deployment("stuck", missing, ["sleep", "3600"])]).applied
    with pytest.raises(PlatformError) as caught:
        wait_for_rollout(dyn, list(applied.values()), timeout=45, poll=1)
    message = str(caught.value)
    assert message.startswith("not ready after 45s")
    assert "ErrImagePull" in message or "ImagePullBackOff" in message
    assert "event Warning" in message


def test_a_container_that_exits_at_start_shows_its_last_log_lines(
    engine: Callable[..., Engine], dyn: DynamicClient, python_image: str
) -> None:
    command = ["sh", "-c", "echo starting; echo fatal: cannot open config >&2; exit 3"]
    applied = engine().apply([deployment("crashing", python_image, command)]).applied
    with pytest.raises(PlatformError) as caught:
        wait_for_rollout(dyn, list(applied.values()), timeout=45, poll=1)
    message = str(caught.value)
    assert "log main | fatal: cannot open config" in message
    assert "exited with code 3" in message


def test_a_failed_job_stops_the_wait_at_once_with_its_reason_and_log(
    engine: Callable[..., Engine], dyn: DynamicClient, python_image: str
) -> None:
    applied = engine().apply([job("failing", python_image, ["sh", "-c", "echo migration broke; exit 1"])]).applied
    with pytest.raises(PlatformError) as caught:
        wait_for_rollout(dyn, list(applied.values()), timeout=300, poll=1)
    message = str(caught.value)
    assert "failed: BackoffLimitExceeded" in message
    assert "log main | migration broke" in message


def test_a_job_that_succeeds_is_complete(engine: Callable[..., Engine], dyn: DynamicClient, python_image: str) -> None:
    applied = engine().apply([job("succeeding", python_image, ["sh", "-c", "echo done"])]).applied
    wait_for_rollout(dyn, list(applied.values()), timeout=300, poll=1)
