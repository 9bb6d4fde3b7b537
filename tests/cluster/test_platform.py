"""The whole platform on a real node, through the commands a user runs.

The images are built here (`invoke build-images`'s builder, IMAGE_SOURCE=offline: no registry is assumed),
put into the node's containerd with the same `docker save` stream `invoke build-images --to-nodes` sends
(see MLOPSKIT_NODE_IMAGE_IMPORT in conftest.py), then `invoke deploy` runs with STORAGE_KIND=local-path
into a fresh namespace that enforces Pod Security `restricted`.

Stand-in: the Sealed Secrets controller is the offline image from docker/offline/sealed-secrets-controller
(the upstream image cannot be pulled here); it does what the controller does with our sealed files. The
API server, the node, PostgreSQL, SeaweedFS, MLflow and their Jobs are the real thing.

The tests of this module share one deployment and run in file order: each step starts from the state the
previous one left, as a user's session would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mlopskit.hosts.images import images_to_deliver
from mlopskit.images import ImageBuilder, docker_client, image_present, mlflow_image_ref
from mlopskit.kube.portforward import forward_service
from mlopskit.mlflow_admin import MlflowClient, wait_healthy
from mlopskit.settings import Settings, load_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "cluster-e2e-admin-Passw0rd",
    "MLFLOW_FLASK_SECRET_KEY": "cluster-e2e-flask-secret-key-4411",
    "POSTGRES_PASSWORD": "cluster-e2e-postgres-password",
    "S3_ACCESS_KEY": "clustere2eaccess",
    "S3_SECRET_KEY": "cluster-e2e-s3-secret-key-9a1b",
}
COMMAND_TIMEOUT = 1800  # seconds: a whole deploy on a busy two-core machine; waits inside follow progress


@dataclass
class Platform:
    """A project checkout deployed into its own namespace."""

    root: Path
    namespace: str
    api: client.ApiClient

    def settings(self) -> Settings:
        return load_settings(self.root, {})

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real invoke CLI in the project, as a user runs it; output is echoed for the test log."""
        invoke = Path(sys.executable).with_name("invoke")
        env = {**os.environ, "COLUMNS": "250"}
        done = subprocess.run(
            [str(invoke), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env=env,
            check=False,
        )
        print(f"$ invoke {' '.join(args)}  (exit {done.returncode})\n{done.stdout}{done.stderr}")
        return done

    @contextlib.contextmanager
    def mlflow(self) -> Iterator[MlflowClient]:
        """An admin client of the deployed MLflow through a real port-forward."""
        with forward_service(self.api, self.namespace, "mlflow", 5000) as port:
            admin = MlflowClient(f"http://127.0.0.1:{port}", "admin", SECRETS["MLFLOW_ADMIN_PASSWORD"])
            wait_healthy(admin)
            yield admin

    def pods(self) -> list[Any]:
        """The namespace's pods (V1Pod models, typed Any: the tests read fields the server always sets)."""
        return list(client.CoreV1Api(self.api).list_namespaced_pod(self.namespace).items)

    def claims(self) -> list[str]:
        listed = client.CoreV1Api(self.api).list_namespaced_persistent_volume_claim(self.namespace)
        items: list[Any] = listed.items
        return sorted(str(c.metadata.name) for c in items)


def _kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


@pytest.fixture(scope="module")
def platform(
    api: client.ApiClient, node_images: Callable[[list[str]], None], tmp_path_factory: Any
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / "docker").symlink_to(REPO / "docker")
    (root / "config").mkdir()
    namespace = f"mlopskit-e2e-{uuid.uuid4().hex[:6]}"
    env = {
        **SECRETS,
        "PLATFORM_NAMESPACE": namespace,
        "STORAGE_KIND": "local-path",
        "IMAGE_SOURCE": "offline",
        "IMAGE_TAG": "3.17.2-cluster-e2e",
        "K3S_VERSION": "v1.32.0+k3s1",
        "KUBECONFIG_PATH": _kubeconfig(),
    }
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    deployed = Platform(root, namespace, api)
    settings = deployed.settings()
    docker = docker_client()
    builder = ImageBuilder(settings, docker)
    builder.image_set()
    builder.sealed_secrets_controller()
    node_images(images_to_deliver(settings, mlflow_image_ref(settings), lambda name: image_present(docker, name)))
    yield deployed
    deployed.invoke("destroy", "--yes", "--purge-data")
    with contextlib.suppress(client.exceptions.ApiException):  # gone already when the purge test ran
        client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")


@pytest.fixture(scope="module")
def first_deploy(platform: Platform) -> subprocess.CompletedProcess[str]:
    return platform.invoke("deploy", "--timeout", "1200")


def test_deploy_succeeds_and_its_own_verification_passes(first_deploy: subprocess.CompletedProcess[str]) -> None:
    assert first_deploy.returncode == 0, first_deploy.stdout + first_deploy.stderr
    out = first_deploy.stdout
    for step in (
        "/health",
        "anonymous request refused (401)",
        "logged in as admin",
        "artifact uploaded and downloaded",
    ):
        assert step in out


def test_every_pod_runs_under_pod_security_restricted(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    namespace: Any = client.CoreV1Api(platform.api).read_namespace(platform.namespace)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = {
        str(p.metadata.labels.get("app.kubernetes.io/name")) + "/" + str(p.metadata.name): p for p in platform.pods()
    }
    running = [p for p in pods.values() if p.status.phase == "Running"]
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in running} >= {"postgres", "seaweedfs", "mlflow"}
    for pod in running:
        assert all(c.ready for c in pod.status.container_statuses), pod.metadata.name
    jobs = [p for p in pods.values() if (p.metadata.labels or {}).get("job-name")]
    assert len(jobs) >= 2 and all(p.status.phase == "Succeeded" for p in jobs)
    postgres = next(p for p in running if p.metadata.labels["app.kubernetes.io/name"] == "postgres")
    assert postgres.spec.security_context.run_as_user == 999
    mlflow = next(p for p in running if p.metadata.labels["app.kubernetes.io/name"] == "mlflow")
    assert mlflow.spec.containers[0].security_context.read_only_root_filesystem is True


def test_the_pods_run_the_images_the_registry_less_path_delivered(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    settings = platform.settings()
    delivered = set(images_to_deliver(settings, mlflow_image_ref(settings), lambda name: True))
    running: set[str] = {c.image for p in platform.pods() for c in p.spec.containers + (p.spec.init_containers or [])}
    assert running <= delivered
    assert any(name.startswith("mlopskit/postgres") for name in running)


def test_a_second_deploy_changes_nothing_and_diff_agrees(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    second = platform.invoke("deploy", "--timeout", "600")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 created, 0 configured" in second.stdout
    assert ", 0 pruned" in second.stdout
    diff = platform.invoke("diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_a_missing_mlflow_image_stops_deploy_with_the_pods_waiting_reason(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    env_file = platform.root / ".env"
    original = env_file.read_text()
    env_file.write_text(original.replace("IMAGE_TAG=3.17.2-cluster-e2e", "IMAGE_TAG=does-not-exist"))
    try:
        failed = platform.invoke("deploy", "--timeout", "60", "--no-verify")
    finally:
        env_file.write_text(original)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1
    assert "not ready after 60s" in output
    assert "ErrImagePull" in output or "ImagePullBackOff" in output
    assert "Traceback" not in output
    restored = platform.invoke("deploy", "--timeout", "900")
    assert restored.returncode == 0, restored.stdout + restored.stderr


def test_destroy_keeps_the_data_and_a_new_deploy_finds_the_runs_and_artifacts(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    payload = f"kept across destroy {uuid.uuid4()}".encode()
    with platform.mlflow() as mlflow:
        experiment = str(mlflow.api("POST", "experiments/create", json={"name": "survives-destroy"})["experiment_id"])
        run = mlflow.api("POST", "runs/create", json={"experiment_id": experiment})["run"]["info"]
        artifact = str(run["artifact_uri"]).removeprefix("mlflow-artifacts:").lstrip("/") + "/kept.txt"
        mlflow.upload_artifact(artifact, payload)
    claims = platform.claims()
    assert claims, "the platform made no volume claims"

    destroyed = platform.invoke("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert platform.claims() == claims
    core = client.CoreV1Api(platform.api)
    namespace: Any = core.read_namespace(platform.namespace)
    assert namespace.status.phase == "Active"
    workloads = client.AppsV1Api(platform.api)
    assert workloads.list_namespaced_deployment(platform.namespace).items == []
    assert workloads.list_namespaced_stateful_set(platform.namespace).items == []

    again = platform.invoke("deploy", "--timeout", "900")
    assert again.returncode == 0, again.stdout + again.stderr
    with platform.mlflow() as mlflow:
        found = mlflow.api("GET", "experiments/get-by-name", params={"experiment_name": "survives-destroy"})
        assert found["experiment"]["experiment_id"] == experiment
        assert mlflow.download_artifact(artifact) == payload


def test_destroy_with_purge_data_removes_the_claims_too(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    purged = platform.invoke("destroy", "--yes", "--purge-data")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    # Claims go once their pods are gone (pvc-protection): wait while the number still falls.
    remaining, last_change = platform.claims(), time.monotonic()
    while remaining and time.monotonic() - last_change < 120:
        time.sleep(2)
        now = platform.claims()
        if now != remaining:
            remaining, last_change = now, time.monotonic()
    assert remaining == []
