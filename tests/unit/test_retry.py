"""Retries: which failures are transient, how long to wait, and when to give up."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from mlopskit.errors import PlatformError
from mlopskit.kube.api_errors import api_error, conflict_error, permission_error
from mlopskit.kube.applyset import ObjectRef
from mlopskit.kube.retry import RetryPolicy, is_transient

SECRET = ObjectRef("", "Secret", "mlops", "s3-credentials")


def api_exception(
    status: int, body: Mapping[str, Any] | None = None, headers: dict[str, str] | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="reason")
    exc.body = json.dumps(body) if body is not None else None
    exc.headers = headers
    return exc


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_transient(status: int) -> None:
    assert is_transient(api_exception(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not is_transient(api_exception(status))


def test_connection_resets_are_transient() -> None:
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    assert is_transient(urllib3.exceptions.ProtocolError("Connection aborted."))


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retry_after_from_the_server_wins() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    assert policy.delay(1, api_exception(429, headers={"Retry-After": "7"})) == 7.0


def test_transient_failure_is_retried_until_it_succeeds() -> None:
    waits: list[float] = []
    outcomes: list[Exception | str] = [api_exception(503), ConnectionResetError(), "ok"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert RetryPolicy(base_delay=0.1, sleep=waits.append).call(flaky) == "ok"
    assert waits == [0.1, 0.2]


def test_permanent_failure_is_raised_at_once() -> None:
    waits: list[float] = []

    def forbidden() -> None:
        raise api_exception(403)

    with pytest.raises(ApiException):
        RetryPolicy(sleep=waits.append).call(forbidden)
    assert waits == []


def test_retries_give_up_after_the_last_attempt() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise api_exception(503)

    with pytest.raises(ApiException):
        RetryPolicy(attempts=3, sleep=lambda _: None).call(down)
    assert len(calls) == 3


def test_permission_error_names_verb_resource_namespace_and_account() -> None:
    message = (
        'secrets "s3-credentials" is forbidden: User "system:serviceaccount:t:deployer" cannot patch '
        'resource "secrets" in API group "" in the namespace "mlops"'
    )
    error = permission_error(api_exception(403, {"message": message}), "apply", SECRET, "secrets")
    text = str(error)
    assert "may not apply secrets in namespace 'mlops'" in text
    assert "system:serviceaccount:t:deployer" in text
    assert "grant the account" in text


def test_permission_error_for_cluster_scoped_objects_says_cluster_scope() -> None:
    ref = ObjectRef("rbac.authorization.k8s.io", "ClusterRole", "", "reader")
    text = str(permission_error(api_exception(403, {"message": "no"}), "apply", ref, "clusterroles"))
    assert "clusterroles.rbac.authorization.k8s.io at cluster scope" in text


def test_conflict_error_lists_fields_and_owners_and_suggests_force() -> None:
    body = {
        "message": "Apply failed with 1 conflict",
        "details": {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": 'conflict with "kubectl-edit" using apps/v1',
                    "field": ".spec.replicas",
                }
            ]
        },
    }
    ref = ObjectRef("apps", "Deployment", "mlops", "mlflow")
    text = str(conflict_error(api_exception(409, body), ref))
    assert '.spec.replicas: conflict with "kubectl-edit"' in text
    assert "--force" in text


def test_other_refusals_name_object_and_server_message() -> None:
    error = api_error(api_exception(422, {"message": "spec.ports: Required value"}), "apply", SECRET)
    assert isinstance(error, PlatformError)
    assert str(error) == "could not apply Secret mlops/s3-credentials: HTTP 422: spec.ports: Required value"


def test_immutable_field_error_says_how_to_recreate_the_object() -> None:
    ref = ObjectRef("batch", "Job", "mlops", "mlflow-migrate")
    message = 'Job.batch "mlflow-migrate" is invalid: spec.template: Invalid value: ...: field is immutable'
    text = str(api_error(api_exception(422, {"message": message}), "apply", ref))
    assert "kubectl -n mlops delete job mlflow-migrate" in text
