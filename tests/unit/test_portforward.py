"""Which pod a port-forward to a Service picks (the forwarding itself is exercised in tests/cluster)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlopskit.errors import PlatformError
from mlopskit.kube.portforward import ready_pod


def pod(name: str, *, ready: bool = True, terminating: bool = False) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, deletion_timestamp="2026-11-30T06:41:00Z" if terminating else None),
        status=SimpleNamespace(
            phase="Running", conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")]
        ),
        spec=SimpleNamespace(containers=[SimpleNamespace(ports=[SimpleNamespace(name="http", container_port=5000)])]),
    )


class Core:
    """The two CoreV1Api calls the pick makes."""

    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods

    def read_namespaced_service(self, name: str, namespace: str) -> Any:
        ports = [SimpleNamespace(port=5000, target_port="http")]
        return SimpleNamespace(spec=SimpleNamespace(selector={"app": "mlflow"}, ports=ports))

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=self.pods)


def test_a_terminating_pod_is_never_picked_although_it_still_reports_ready() -> None:
    core = Core([pod("old", terminating=True), pod("new")])
    assert ready_pod(core, "mlops", "mlflow", 5000) == ("new", 5000)  # type: ignore[arg-type]


def test_no_ready_pod_names_the_service_and_the_selector() -> None:
    core = Core([pod("old", terminating=True), pod("starting", ready=False)])
    with pytest.raises(PlatformError, match=r"no ready pod behind Service mlops/mlflow \(app=mlflow\)"):
        ready_pod(core, "mlops", "mlflow", 5000)  # type: ignore[arg-type]
