"""A namespace still being deleted (deploy right after destroy --purge-data): deploy waits for it, and the API
server's 403 for it is not reported as a missing permission."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from mlopskit.errors import PlatformError
from mlopskit.kube import wait
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.applyset import ObjectRef
from mlopskit.kube.retry import RetryPolicy


class Namespaces:
    """The dynamic client's Namespace resource over a namespace deleted after `terminating_reads` reads."""

    def __init__(self, terminating_reads: int) -> None:
        self.left = terminating_reads
        self.reads = 0
        self.resources = SimpleNamespace(get=lambda **_: self)

    def get(self, name: str) -> Any:
        self.reads += 1
        if self.left <= 0:
            raise NotFoundError(ApiException(status=404, reason="Not Found"))
        self.left -= 1
        live = {"metadata": {"name": name, "deletionTimestamp": "2026-11-30T14:00:00Z"}}
        return SimpleNamespace(to_dict=lambda: live)


def waiting(monkeypatch: pytest.MonkeyPatch, namespaces: Namespaces, timeout: float) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    wait.wait_for_namespace_deletion(namespaces, "mlops", timeout, poll=0, clock=clock)  # type: ignore[arg-type]


def test_deploy_waits_until_a_terminating_namespace_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    namespaces = Namespaces(terminating_reads=3)
    waiting(monkeypatch, namespaces, timeout=60)
    assert namespaces.reads == 4


def test_a_namespace_still_terminating_after_the_timeout_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PlatformError, match=r"namespace 'mlops' is being deleted .*nothing was applied"):
        waiting(monkeypatch, Namespaces(terminating_reads=1000), timeout=5)


def test_the_api_servers_403_for_a_terminating_namespace_is_not_called_a_permission_problem() -> None:
    body = {
        "message": 'secrets "applyset-mlopskit" is forbidden: unable to create new content in namespace mlops '
        "because it is being terminated"
    }
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(body)
    error = str(api_error(exc, "apply", ObjectRef("", "Secret", "mlops", "applyset-mlopskit")))
    assert "is being deleted" in error and "permission" not in error


class Refusing(Namespaces):
    """Namespaces whose reads fail with `statuses` in turn, then find the namespace live (not terminating)."""

    def __init__(self, *statuses: int) -> None:
        super().__init__(terminating_reads=0)
        self.statuses = list(statuses)

    def get(self, name: str) -> Any:
        self.reads += 1
        if self.statuses:
            exc = ApiException(status=self.statuses.pop(0), reason="refused")
            exc.body = json.dumps({"message": f'namespaces "{name}" is forbidden: User "ci" cannot get'})
            raise exc
        return SimpleNamespace(to_dict=lambda: {"metadata": {"name": name}})


def test_reading_the_namespace_retries_transient_failures() -> None:
    namespaces = Refusing(503, 429)
    wait.wait_for_namespace_deletion(namespaces, "mlops", 60, poll=0, retry=RetryPolicy(sleep=lambda _: None))  # type: ignore[arg-type]
    assert namespaces.reads == 3


def test_a_refused_namespace_read_is_explained_not_raised_raw() -> None:
    with pytest.raises(
        PlatformError, match=r"(?s)permission denied: .* may not get namespaces .*Namespace mlops.*verb 'get'"
    ):
        wait.wait_for_namespace_deletion(Refusing(403), "mlops", 60, poll=0)  # type: ignore[arg-type]
