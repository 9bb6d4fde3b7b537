"""Where the admin's previous password comes from: the running container's environment, or the live Secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mlopskit import local
from mlopskit.kube import deploy
from mlopskit.settings import Settings, load_settings
from tests.unit.kube_fake import FakeCluster

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


def previous_cluster(settings: Settings, cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(p.password, p.source) for p in deploy.live_admin_password(settings, cluster)]  # type: ignore[arg-type]


def cluster_with_secret(password: str) -> FakeCluster:
    cluster = FakeCluster()
    data = {"MLFLOW_ADMIN_PASSWORD": base64.b64encode(password.encode()).decode()}
    cluster.objects[("v1", "Secret", "mlops", "mlflow-credentials")] = {"metadata": {"name": "x"}, "data": data}
    return cluster


def test_the_live_secret_holds_the_previous_password(settings: Settings) -> None:
    assert previous_cluster(settings, cluster_with_secret("the-old-admin-password")) == [
        ("the-old-admin-password", "the live Secret mlops/mlflow-credentials")
    ]


def test_a_live_secret_with_the_same_password_gives_nothing_to_rotate(settings: Settings) -> None:
    assert previous_cluster(settings, cluster_with_secret(ADMIN_PASSWORD)) == []


def test_a_first_deploy_has_no_previous_password(settings: Settings) -> None:
    assert previous_cluster(settings, FakeCluster()) == []
