"""Cluster tests run against whatever KUBECONFIG reaches; every test skips, with the reason, when nothing does.

Apply, prune and diff tests need only an API server (their pods are never scheduled). Tests that run
pods (rollout waits, the whole platform) also need a Ready node and a way to put locally built images
into the node's containerd, since no registry is assumed: the command in MLOPSKIT_NODE_IMAGE_IMPORT
(default `k3s ctr images import -` when `k3s` is on PATH) reads a `docker save` stream on stdin, the same
stream `invoke build-images --to-nodes` sends to `k3s ctr images import -` over SSH. Such tests skip, with
the reason, when either is missing. Each test works in its own throwaway namespace and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

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


IMPORT_VARIABLE = "MLOPSKIT_NODE_IMAGE_IMPORT"


def image_import_command() -> list[str] | None:
    """The command that imports a `docker save` stream into the node's containerd, if one is known."""
    configured = os.environ.get(IMPORT_VARIABLE, "").strip()
    if configured:
        return shlex.split(configured)
    return ["k3s", "ctr", "images", "import", "-"] if shutil.which("k3s") else None


def _ready_node_reason(api: client.ApiClient) -> str | None:
    """None when a node is Ready, else why pods cannot run."""
    nodes = client.CoreV1Api(api).list_node().items
    for node in nodes:
        conditions = (node.status.conditions if node.status else None) or []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            return None
    return f"the API server has no Ready node ({len(nodes)} registered): pods cannot run"


@pytest.fixture(scope="session")
def node_images(api: client.ApiClient) -> Callable[[list[str]], None]:
    """Put locally built images into the node's containerd; skips without a Ready node or an import command."""
    reason = _ready_node_reason(api)
    if reason:
        pytest.skip(reason)
    command = image_import_command()
    if command is None:
        pytest.skip(
            f"set {IMPORT_VARIABLE} to a command that imports a `docker save` stream into the node's containerd"
        )
    imported: set[str] = set()

    def put(refs: list[str]) -> None:
        from mlopskit.images import save_images

        wanted = sorted(set(refs) - imported)
        if not wanted:
            return
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            for chunk in save_images(wanted):
                proc.stdin.write(chunk)
            proc.stdin.close()
            output = proc.stdout.read().decode(errors="replace")
        assert proc.returncode == 0, f"{shlex.join(command)} failed: {output}"
        imported.update(wanted)

    return put


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


@contextlib.contextmanager
def service_monitor_crd_installed(dyn: DynamicClient) -> Iterator[None]:
    """The ServiceMonitor kind served while the block runs: the cluster's own CRD when it has one, else the
    stand-in of tests/service_monitor_crd.py, installed here, Established, and removed afterwards (with it,
    any ServiceMonitor left; the cluster is shared, so only a CRD this installed is removed)."""
    from tests.service_monitor_crd import service_monitor_crd

    body = service_monitor_crd()
    name = body["metadata"]["name"]
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    try:
        crds.get(name=name)
        installed = False
    except NotFoundError:
        crds.create(body=body)
        installed = True
    deadline = time.monotonic() + 60
    while True:
        conditions = (crds.get(name=name).to_dict().get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            break
        assert time.monotonic() < deadline, f"CRD {name} not Established: {conditions}"
        time.sleep(0.5)
    dyn.resources.invalidate_cache()
    try:
        yield
    finally:
        if installed:
            crds.delete(name=name)
            dyn.resources.invalidate_cache()
