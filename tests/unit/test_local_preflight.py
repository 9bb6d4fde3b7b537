"""`invoke up` checks before it creates, recreates or removes anything (mlopskit/local.py preflight).

The Docker client is a stand-in (a few lists of labelled containers): these checks only read what Docker
lists; the ports are real sockets on 127.0.0.1. tests/integration/test_local_up.py runs them on real Docker.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlopskit import local
from mlopskit.errors import PlatformError
from mlopskit.services import ImageSet, local_services
from mlopskit.settings import Settings

PROJECT = "mlopskit"


@dataclass
class FakeContainer:
    name: str
    labels: dict[str, str]
    status: str = "running"
    ports: dict[str, Any] = field(default_factory=dict)
    exec_answer: tuple[int, bytes] = (0, b"1\n")
    executed: list[list[str]] = field(default_factory=list)

    @property
    def attrs(self) -> dict[str, Any]:
        return {"NetworkSettings": {"Ports": self.ports}}

    def exec_run(self, command: list[str], environment: dict[str, str]) -> tuple[int, bytes]:
        self.executed.append(command)
        return self.exec_answer


class FakeList:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def list(self, **_: Any) -> list[Any]:
        return list(self.items)

    def get(self, name: str) -> Any:
        from docker.errors import NotFound

        for item in self.items:
            if item.name == name:
                return item
        raise NotFound(name)


class FakeDocker:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = FakeList(containers)
        self.networks = FakeList([])
        self.volumes = FakeList([])


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sample_env: dict[str, str]) -> Settings:
    return make_settings(environ=sample_env)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield int(listener.getsockname()[1])


def ours(settings: Settings, service: str, root: str | None = None, **kw: Any) -> FakeContainer:
    labels = {local.PROJECT_LABEL: settings.local.project, local.SERVICE_LABEL: service}
    labels[local.ROOT_LABEL] = root if root is not None else str(settings.root)
    return FakeContainer(f"{settings.local.project}-{service}", labels, **kw)


def specs(settings: Settings) -> list[Any]:
    return local_services(settings, ImageSet("m", "p", "s"))


def test_a_port_held_by_another_program_is_refused_naming_port_and_key(
    make_settings: Callable[..., Settings], sample_env: dict[str, str], taken_port: int
) -> None:
    settings = make_settings(environ=sample_env | {"LOCAL_PORT": str(taken_port)})

    with pytest.raises(PlatformError) as raised:
        local.preflight(FakeDocker([]), settings)  # type: ignore[arg-type]

    message = str(raised.value)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in message
    assert "nothing was created" in message and "LOCAL_PORT" in message


def test_a_port_our_own_running_mlflow_publishes_is_not_a_conflict(
    make_settings: Callable[..., Settings], sample_env: dict[str, str], taken_port: int
) -> None:
    settings = make_settings(environ=sample_env | {"LOCAL_PORT": str(taken_port)})
    mlflow = ours(settings, "mlflow", ports={"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(taken_port)}]})

    local.preflight(FakeDocker([mlflow]), settings)  # type: ignore[arg-type]


def test_a_port_held_by_our_stopped_container_is_still_a_conflict(
    make_settings: Callable[..., Settings], sample_env: dict[str, str], taken_port: int
) -> None:
    """A stopped container holds no port: whatever listens there is someone else."""
    settings = make_settings(environ=sample_env | {"LOCAL_PORT": str(taken_port)})
    mlflow = ours(
        settings,
        "mlflow",
        status="exited",
        ports={"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(taken_port)}]},
    )

    with pytest.raises(PlatformError, match="already in use"):
        local.preflight(FakeDocker([mlflow]), settings)  # type: ignore[arg-type]


def test_a_free_port_passes(make_settings: Callable[..., Settings], sample_env: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    assert local.port_free("127.0.0.1", free)
    # A port known free now, not the default 5000, which a stack running on this machine may hold.
    settings = make_settings(environ={**sample_env, "LOCAL_PORT": str(free)})
    assert [spec.host_port for spec in specs(settings) if spec.host_port is not None] == [free]
    local.check_ports(FakeDocker([]), settings, specs(settings))  # type: ignore[arg-type]


def test_containers_from_another_folder_are_refused_naming_the_folder_and_the_fix(settings: Settings) -> None:
    stack = [ours(settings, s, root="/srv/first-checkout") for s in ("postgres", "s3", "mlflow")]

    with pytest.raises(PlatformError) as raised:
        local.preflight(FakeDocker(stack), settings)  # type: ignore[arg-type]

    message = str(raised.value)
    assert "was started from /srv/first-checkout" in message
    assert f"not from {settings.root}" in message
    assert "`invoke down` in /srv/first-checkout" in message and "local.project" in message
    assert "nothing was changed" in message


def test_down_refuses_another_folders_stack_too(settings: Settings) -> None:
    stack = [ours(settings, "mlflow", root="/srv/first-checkout")]

    with pytest.raises(PlatformError, match="/srv/first-checkout"):
        local.down(FakeDocker(stack), settings)  # type: ignore[arg-type]


def test_containers_from_this_folder_or_without_the_label_pass(settings: Settings) -> None:
    unlabelled = ours(settings, "s3")
    del unlabelled.labels[local.ROOT_LABEL]  # created before the label existed

    local.check_owner(FakeDocker([ours(settings, "mlflow"), unlabelled]), settings)  # type: ignore[arg-type]


def test_a_postgres_refusing_the_env_password_is_named_with_volume_key_and_fix(settings: Settings) -> None:
    refused = b'psql: error: connection to server at "127.0.0.1", port 5432 failed: '
    refused += b'FATAL:  password authentication failed for user "mlflow"\n'
    postgres = ours(settings, "postgres", exec_answer=(2, refused))

    with pytest.raises(PlatformError) as raised:
        local.check_postgres_password(FakeDocker([postgres]), settings)  # type: ignore[arg-type]

    message = str(raised.value)
    assert f"volume {settings.local.project}-postgres-data" in message
    assert "POSTGRES_PASSWORD" in message and "invoke down --volumes" in message
    assert "nothing was changed" in message
    assert postgres.executed and postgres.executed[0][0] == "psql"
    assert settings.secrets.postgres_password not in message


def test_a_postgres_accepting_the_password_passes(settings: Settings) -> None:
    local.check_postgres_password(FakeDocker([ours(settings, "postgres")]), settings)  # type: ignore[arg-type]
