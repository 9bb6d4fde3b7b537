"""A project checkout deployed into a throwaway namespace of the real cluster, as the platform tests use it.

`make_project` writes the project (tasks.py, the repository's docker/ folder, a .env whose every secret
holds every printable punctuation character), builds the images offline (`invoke build-images`'s builder,
IMAGE_SOURCE=offline: no registry is assumed) and puts the ones the manifests name into the node's
containerd with the `docker save` stream `invoke build-images --to-nodes` sends. `Platform.invoke` runs
the real invoke CLI in it. Shared by tests/cluster/test_platform.py and test_backup_restore.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import string
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from mlopskit.envfile import env_line
from mlopskit.hosts.images import images_to_deliver
from mlopskit.image_names import mlflow_image_ref
from mlopskit.images import ImageBuilder, docker_client, image_present
from mlopskit.kube.portforward import forward_service
from mlopskit.mlflow_admin import MlflowClient, wait_healthy
from mlopskit.settings import ENV_KEYS, S3_ACCESS_KEY_RESERVED, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
# Every printable ASCII punctuation character in every secret: each must survive .env, the Secret, the
# DSN, the auth ini, SeaweedFS's identities and the shell in the cluster too (S3 access keys cannot hold
# '/', ',' or '=': S3 signatures split at them, and they are refused when settings load).
PUNCTUATION = string.punctuation
SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "Cl1" + PUNCTUATION,
    "MLFLOW_FLASK_SECRET_KEY": "Fl1" + PUNCTUATION,
    "POSTGRES_PASSWORD": "Pg1" + PUNCTUATION,
    "S3_ACCESS_KEY": "S31" + "".join(ch for ch in PUNCTUATION if ch not in S3_ACCESS_KEY_RESERVED),
    "S3_SECRET_KEY": "Sk1" + PUNCTUATION,
}
IMAGE_TAG = "3.17.2-cluster-e2e"
COMMAND_TIMEOUT = 1800  # seconds: a whole deploy on a busy two-core machine; waits inside follow progress


@dataclass
class Platform:
    """A project checkout deployed into its own namespace."""

    root: Path
    namespace: str
    api: client.ApiClient

    def settings(self) -> Settings:
        return load_settings(self.root, {})

    def invoke(self, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
        """The real invoke CLI in the project, as a user runs it; `environ` sets settings variables for this
        call only (the test's own environment never leaks settings in). Output is echoed for the test log."""
        invoke = Path(sys.executable).with_name("invoke")
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS} | {"COLUMNS": "250"} | environ
        done = subprocess.run(
            [str(invoke), *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
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
        """An admin client of the deployed MLflow through a real port-forward, with the password .env holds."""
        password = self.settings().secrets.admin_password
        with forward_service(self.api, self.namespace, "mlflow", 5000) as port:
            admin = MlflowClient(f"http://127.0.0.1:{port}", "admin", password)
            wait_healthy(admin)
            yield admin

    def pods(self) -> list[Any]:
        """The namespace's pods (V1Pod models, typed Any: the tests read fields the server always sets)."""
        return list(client.CoreV1Api(self.api).list_namespaced_pod(self.namespace).items)

    def claims(self) -> list[str]:
        listed = client.CoreV1Api(self.api).list_namespaced_persistent_volume_claim(self.namespace)
        items: list[Any] = listed.items
        return sorted(str(c.metadata.name) for c in items)

    def set_env(self, key: str, value: str) -> None:
        """Replace (or add) one key of the project's .env."""
        env_file = self.root / ".env"
        lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{key}=")]
        env_file.write_text("".join(line + "\n" for line in [*lines, env_line(key, value)]))

    def destroy(self) -> None:
        """Teardown: everything deploy made, the claims, and the namespace."""
        self.invoke("destroy", "--yes", "--purge-data")
        with contextlib.suppress(client.exceptions.ApiException):  # gone already when a test purged it
            client.CoreV1Api(self.api).delete_namespace(self.namespace, propagation_policy="Background")


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def make_project(
    root: Path, api: client.ApiClient, node_images: Callable[[list[str]], None], prefix: str, **env: str
) -> Platform:
    """A project in `root` for a fresh namespace `<prefix>-<random>`, its images built and on the node.

    `env` adds or overrides .env keys (the defaults: local-path storage, offline images, IMAGE_TAG above).
    """
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / "docker").symlink_to(REPO / "docker")
    (root / "config").mkdir()
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    values = {
        **SECRETS,
        "PLATFORM_NAMESPACE": namespace,
        "STORAGE_KIND": "local-path",
        "IMAGE_SOURCE": "offline",
        "IMAGE_TAG": IMAGE_TAG,
        "K3S_VERSION": "v1.32.0+k3s1",
        "KUBECONFIG_PATH": kubeconfig(),
    } | env
    (root / ".env").write_text("".join(env_line(k, v) + "\n" for k, v in values.items()))
    made = Platform(root, namespace, api)
    settings = made.settings()
    docker = docker_client()
    builder = ImageBuilder(settings, docker)
    builder.image_set()
    builder.sealed_secrets_controller()
    node_images(images_to_deliver(settings, mlflow_image_ref(settings), lambda name: image_present(docker, name)))
    return made
