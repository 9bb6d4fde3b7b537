"""Cluster tests run against whatever KUBECONFIG reaches; every test skips, with the reason, when nothing does.

The API server may have no controllers and no nodes: apply, prune and diff tests never wait for pods.
Each test works in its own throwaway namespace and removes it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from mlopskit.kube.apply import Engine
from mlopskit.kube.retry import RetryPolicy

PROBE_TIMEOUT = 5


def _kubeconfig_label() -> str:
    value = os.environ.get("KUBECONFIG")
    return f"KUBECONFIG={value}" if value else "KUBECONFIG unset (~/.kube/config)"


def _probe() -> tuple[client.ApiClient | None, str]:
    """An ApiClient when an API server answers /version quickly, else the reason it does not."""
    try:
        api = config.new_client_from_config()
        version = client.VersionApi(api).get_code(_request_timeout=PROBE_TIMEOUT)
    except Exception as exc:  # any failure means "no server to test against": say which
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"no Kubernetes API server reachable through {_kubeconfig_label()}: {first_line}"
    return api, f"API server {api.configuration.host} (Kubernetes {version.git_version})"


_API, _REASON = _probe()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" not in str(item.path).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.cluster)
        if _API is None:
            item.add_marker(pytest.mark.skip(reason=_REASON))


def pytest_report_header() -> str:
    return f"cluster tests: {_REASON}"


@pytest.fixture(scope="session")
def api() -> client.ApiClient:
    assert _API is not None
    return _API


@pytest.fixture(scope="session")
def dyn(api: client.ApiClient) -> DynamicClient:
    return DynamicClient(api)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting: there may be no controller)."""
    core = client.CoreV1Api(api)
    name = f"mlopskit-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def engine(dyn: DynamicClient, namespace: str) -> Callable[..., Engine]:
    """Engine factory for the test namespace; retries stay short so a broken server fails fast."""

    def make(**kwargs: Any) -> Engine:
        return Engine(dyn, namespace, retry=RetryPolicy(attempts=3, base_delay=0.2), **kwargs)

    return make
