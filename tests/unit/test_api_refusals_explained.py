"""Every door by which a Kubernetes API refusal can reach a task ends in a message, not a traceback: the reads
that tolerate only 404 (controller image check, CRD lookup, doctor's live objects) explain any other status
through api_error, and a task's last resort turns whatever ApiException is left into a clean exit."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from invoke.exceptions import Exit
from kubernetes.client.exceptions import ApiException

from mlopskit import cluster_checks
from mlopskit.errors import PlatformError
from mlopskit.kube import deploy
from mlopskit.kube.api_errors import guess_plural
from mlopskit.kube.discovery import Discovery
from mlopskit.kube.retry import RetryPolicy
from mlopskit.tasks.common import expected_errors


def refusal(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="refused")
    exc.body = json.dumps({"message": message})
    return exc


class Refusing:
    """A dynamic client whose every resource's get raises `exc`; `name` and `kind` as the client's."""

    def __init__(self, exc: ApiException) -> None:
        self.exc = exc
        self.resources = SimpleNamespace(get=self.resource)

    def resource(self, **_: Any) -> Any:
        return SimpleNamespace(get=self.get, name="servicemonitors")

    def get(self, **_: Any) -> Any:
        raise self.exc


FORBIDDEN = refusal(403, 'deployments.apps "sealed-secrets-controller" is forbidden: User "dev" cannot get')


def test_the_controller_image_check_explains_a_refused_read() -> None:
    controller = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "sealed-secrets-controller", "namespace": "kube-system"},
        }
    ]
    with pytest.raises(PlatformError, match=r"(?s)may not get deployments.apps in namespace 'kube-system'"):
        deploy.shared_image_changes(Refusing(FORBIDDEN), controller)  # type: ignore[arg-type]


def test_doctors_live_reads_explain_a_refused_read() -> None:
    with pytest.raises(PlatformError, match=r"(?s)may not get ingresses.networking.k8s.io in namespace 'mlops'"):
        cluster_checks.read_object(Refusing(FORBIDDEN), "networking.k8s.io/v1", "Ingress", "mlflow", "mlops")


def test_the_crd_lookup_explains_a_refused_read() -> None:
    discovery = Discovery.__new__(Discovery)
    discovery.dyn = Refusing(FORBIDDEN)  # type: ignore[assignment]
    discovery.retry = RetryPolicy(sleep=lambda _: None)
    discovery.resolve = lambda *_: SimpleNamespace(resource=SimpleNamespace(get=Refusing(FORBIDDEN).get))  # type: ignore[method-assign,assignment]
    with pytest.raises(PlatformError, match=r"may not get customresourcedefinitions.apiextensions.k8s.io"):
        discovery.crd_of("monitoring.coreos.com/v1", "ServiceMonitor")


@pytest.mark.parametrize(
    ("status", "hint"),
    [(403, "admin kubeconfig"), (401, "refresh the kubeconfig"), (500, r"kubectl get --raw /readyz")],
)
def test_a_task_turns_any_leftover_api_refusal_into_a_clean_exit(status: int, hint: str) -> None:
    @expected_errors
    def task() -> None:
        raise refusal(status, "the server said no")

    with pytest.raises(Exit) as exited:
        task()
    assert exited.value.code == 1
    assert f"HTTP {status}: the server said no" in str(exited.value.message)
    assert hint in str(exited.value.message), exited.value.message


@pytest.mark.parametrize(
    ("kind", "plural"),
    [("Ingress", "ingresses"), ("NetworkPolicy", "networkpolicies"), ("Deployment", "deployments"), ("", "")],
)
def test_messages_name_resources_as_kubernetes_guesses_them(kind: str, plural: str) -> None:
    assert guess_plural(kind) == plural


def test_a_task_lets_other_bugs_surface() -> None:
    @expected_errors
    def task() -> None:
        raise KeyError("a bug, not a refusal")

    with pytest.raises(KeyError):
        task()
