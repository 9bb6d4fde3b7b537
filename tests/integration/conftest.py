"""The local platform as throwaway containers: PostgreSQL, SeaweedFS and MLflow from the real images.

Every container is built from `mlopskit.services.local_services`, the same definitions `invoke up` runs,
on a Docker network of its own, and removed at the end of the session (Ryuk cannot be pulled here).
"""

from __future__ import annotations

import os

# Before testcontainers is imported: it reads these at import time.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
# The MLflow client stays offline: no telemetry, no update checks.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import contextlib
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.errors import DockerException
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

import docker
from mlopskit import local
from mlopskit.images import ensure_images
from mlopskit.services import MLFLOW, POSTGRES, S3, ImageSet, ServiceSpec, local_services
from mlopskit.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 180


def _docker_unreachable_reason() -> str | None:
    try:
        client = docker.from_env()
        client.ping()
        client.close()
    except DockerException as exc:
        return f"no Docker engine reachable ({exc}); start one with scripts/ensure-docker.sh"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tier without Docker; in CI (CI=true) a missing engine is a failure, never a skip."""
    here = Path(__file__).resolve().parent
    ours = [item for item in items if here in item.path.resolve().parents]
    reason = _docker_unreachable_reason() if ours else None
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(f"CI=true but {reason}: the integration tier must run in CI")
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now; fixed host ports keep the URI stable across container restarts."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceReady(WaitStrategy):
    """Ready when Docker reports the container healthy or `probe` passes; fails at once if it exits."""

    def __init__(self, probe: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.probe = probe
        self.with_startup_timeout(STARTUP_TIMEOUT).with_poll_interval(0.5)

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        wrapped = container.get_wrapped_container()
        deadline = time.monotonic() + float(self._startup_timeout)
        while time.monotonic() < deadline:
            wrapped.reload()
            state = wrapped.attrs.get("State", {})
            if state.get("Status") in {"exited", "dead"}:
                logs = wrapped.logs().decode(errors="replace")[-4000:]
                raise RuntimeError(f"container {wrapped.name} exited with {state.get('ExitCode')}; its logs:\n{logs}")
            if (state.get("Health") or {}).get("Status") == "healthy" or (self.probe is not None and self._probe()):
                return
            time.sleep(float(self._poll_interval))
        logs = wrapped.logs().decode(errors="replace")[-4000:]
        raise TimeoutError(f"container {wrapped.name} not ready after {self._startup_timeout}s; its logs:\n{logs}")

    def _probe(self) -> bool:
        assert self.probe is not None
        try:
            return self.probe()
        except (requests.RequestException, OSError):
            return False


class ServiceContainer(DockerContainer):
    """A container configured from a ServiceSpec, on the test network, published on 127.0.0.1 only."""

    def __init__(self, spec: ServiceSpec, network: Network, name: str, probe: Callable[[], bool] | None = None):
        super().__init__(spec.image)
        self.spec = spec
        self.host_port = free_loopback_port()
        self.with_name(name)
        self.with_envs(**spec.environment)
        if spec.command is not None:
            self.with_command(spec.command)
        self.with_network(network)
        self.with_network_aliases(*spec.network_aliases)
        for host_path, container_path in spec.bind_mounts.items():
            self.with_volume_mapping(host_path, container_path, mode="ro")
        self.with_kwargs(
            healthcheck=spec.healthcheck,
            mounts=[
                docker.types.Mount(target=path, source=volume, type="volume") for volume, path in spec.volumes.items()
            ],
        )
        # Docker's (address, port) form: never published beyond loopback.
        self.ports[f"{spec.container_port}/tcp"] = (LOOPBACK, self.host_port)  # type: ignore[assignment]
        self.waiting_for(ServiceReady(probe))

    def restart(self) -> None:
        """Restart the container in place (same volumes, same port) and wait until it is ready again."""
        wrapped = self.get_wrapped_container()
        wrapped.restart(timeout=20)
        assert self._wait_strategy is not None
        self._wait_strategy.wait_until_ready(self)


class SeaweedFSContainer(ServiceContainer):
    """SeaweedFS with its S3 gateway; ready when the gateway answers /healthz."""

    def __init__(self, spec: ServiceSpec, network: Network, name: str) -> None:
        super().__init__(spec, network, name, probe=self._healthz)

    def _healthz(self) -> bool:
        return requests.get(f"http://{LOOPBACK}:{self.host_port}/healthz", timeout=2).status_code == 200

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.host_port}"


class MlflowContainer(ServiceContainer):
    """The MLflow tracking server with basic-auth; ready when /health answers OK."""

    def __init__(self, spec: ServiceSpec, network: Network, name: str) -> None:
        super().__init__(spec, network, name, probe=self._health)

    def _health(self) -> bool:
        return requests.get(f"{self.url}/health", timeout=2).status_code == 200

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.host_port}"


@dataclass
class Stack:
    """The running platform as the tests see it."""

    settings: Settings
    postgres: ServiceContainer  # PostgreSQL with the tracking and auth databases
    s3: SeaweedFSContainer
    mlflow: MlflowContainer
    admin_user: str
    admin_password: str

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.url

    def restart_mlflow(self) -> None:
        self.mlflow.restart()

    def restart_postgres(self) -> None:
        self.postgres.restart()


def generated_environ() -> dict[str, str]:
    """Fresh secrets for one test session, as `invoke init` would generate them."""
    return {
        "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "S3_ACCESS_KEY": "itest" + secrets.token_hex(6),
        "S3_SECRET_KEY": secrets.token_urlsafe(24),
    }


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings from a fresh project directory (not the developer's .env): the repo's docker/, generated secrets."""
    root = tmp_path_factory.mktemp("project")
    (root / "docker").symlink_to(REPO / "docker")
    (root / "config").mkdir()
    project = f"itest-{uuid.uuid4().hex[:6]}"
    (root / "config/platform.yaml").write_text(f"local:\n  project: {project}\n")
    # The MLflow image is tagged from the repository, not the temporary project (which has no git).
    environ = generated_environ() | {"IMAGE_TAG": "integration-test"}
    return load_settings(root, environ)


@pytest.fixture(scope="session")
def images(stack_settings: Settings, docker_client: docker.DockerClient) -> ImageSet:
    """The platform images, built (or reused by their input hash) the way `invoke build-images` does."""
    return ensure_images(stack_settings, client=docker_client)


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def _specs(settings: Settings, images: ImageSet) -> dict[str, ServiceSpec]:
    return {spec.name: spec for spec in local_services(settings, images)}


@pytest.fixture(scope="session")
def stack(
    stack_settings: Settings, images: ImageSet, network: Network, docker_client: docker.DockerClient
) -> Iterator[Stack]:
    """PostgreSQL, SeaweedFS and MLflow running and healthy; everything removed afterwards, volumes included."""
    specs = _specs(stack_settings, images)
    project = stack_settings.local.project
    started: list[ServiceContainer] = []
    try:
        postgres = ServiceContainer(specs[POSTGRES], network, f"{project}-{POSTGRES}")
        s3 = SeaweedFSContainer(specs[S3], network, f"{project}-{S3}")
        for service in (postgres, s3):
            started.append(service)
            service.start()
        local.ensure_bucket(stack_settings, s3.endpoint)
        local.run_migrations(docker_client, stack_settings, specs[MLFLOW], network=network.name)
        mlflow = MlflowContainer(specs[MLFLOW], network, f"{project}-{MLFLOW}")
        started.append(mlflow)
        mlflow.start()
        password = stack_settings.platform.mlflow.admin_password
        assert password is not None
        yield Stack(
            stack_settings, postgres, s3, mlflow, stack_settings.platform.mlflow.admin_user, password.get_secret_value()
        )
    finally:
        for container in reversed(started):
            container.stop(force=True, delete_volume=True)
        for spec in specs.values():
            for volume in spec.volumes:
                with contextlib.suppress(DockerException):
                    docker_client.volumes.get(volume).remove(force=True)


@pytest.fixture
def mlflow_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The MLflow client pointed at the stack as the admin, through MLflow's own environment variables."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", stack.admin_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.admin_password)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    return stack


@pytest.fixture
def client(mlflow_env: Stack) -> Any:
    """An MlflowClient authenticated as the admin."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_env.tracking_uri)


@pytest.fixture
def experiment_id(client: Any) -> str:
    """A fresh experiment of this test."""
    return str(client.create_experiment(f"itest-{uuid.uuid4().hex[:10]}"))
