"""Where the admin's previous password comes from: the running container's environment, or the live Secret."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from mlopskit import local
from mlopskit.kube import deploy
from mlopskit.settings import Settings, load_settings

ADMIN_PASSWORD = "Adm1n-Sample-Passw0rd-7f3a"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / ".env").write_text(f"MLFLOW_ADMIN_PASSWORD={ADMIN_PASSWORD}\n")
    return load_settings(tmp_path, {})


class FakeContainer:
    def __init__(self, env: list[str]) -> None:
        self.name = "mlopskit-mlflow"
        self.attrs = {"Config": {"Env": env}}


class FakeContainers:
    def __init__(self, container: FakeContainer | None) -> None:
        self.container = container

    def get(self, name: str) -> FakeContainer:
        from docker.errors import NotFound

        if self.container is None:
            raise NotFound("no such container")
        return self.container


class FakeDocker:
    def __init__(self, container: FakeContainer | None) -> None:
        self.containers = FakeContainers(container)


def previous_local(settings: Settings, container: FakeContainer | None) -> list[tuple[str, str]]:
    found = local.previous_admin_password(FakeDocker(container), settings)  # type: ignore[arg-type]
    return [(p.password, p.source) for p in found]


def test_a_container_started_with_another_password_is_the_previous_one(settings: Settings) -> None:
    container = FakeContainer(["PATH=/usr/bin", "MLFLOW_ADMIN_PASSWORD=the-old-admin-password"])
    assert previous_local(settings, container) == [
        ("the-old-admin-password", "the environment of container mlopskit-mlflow")
    ]


def test_a_container_with_the_same_password_gives_nothing_to_rotate(settings: Settings) -> None:
    assert previous_local(settings, FakeContainer([f"MLFLOW_ADMIN_PASSWORD={ADMIN_PASSWORD}"])) == []


def test_no_container_means_no_known_previous_password(settings: Settings) -> None:
    assert previous_local(settings, None) == []


class FakeCore:
    def __init__(self, secret: Any) -> None:
        self.secret = secret

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        if isinstance(self.secret, ApiException):
            raise self.secret
        return self.secret


class FakeSecret:
    def __init__(self, password: str) -> None:
        self.data = {"MLFLOW_ADMIN_PASSWORD": base64.b64encode(password.encode()).decode()}


def previous_cluster(settings: Settings, secret: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda api: FakeCore(secret))
    return [(p.password, p.source) for p in deploy.live_admin_password(settings, object())]  # type: ignore[arg-type]


def test_the_live_secret_holds_the_previous_password(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert previous_cluster(settings, FakeSecret("the-old-admin-password"), monkeypatch) == [
        ("the-old-admin-password", "the live Secret mlops/mlflow-credentials")
    ]


def test_a_live_secret_with_the_same_password_gives_nothing_to_rotate(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert previous_cluster(settings, FakeSecret(ADMIN_PASSWORD), monkeypatch) == []


def test_a_first_deploy_has_no_previous_password(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert previous_cluster(settings, ApiException(status=404), monkeypatch) == []
