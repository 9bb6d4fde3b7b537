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
    env: dict[str, str] = field(default_factory=dict)

    @property
    def attrs(self) -> dict[str, Any]:
        return {"NetworkSettings": {"Ports": self.ports}, "Config": {"Env": [f"{k}={v}" for k, v in self.env.items()]}}

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


@dataclass
class FakeVolume:
    name: str
    labels: dict[str, str] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Labels": self.labels}


class FakeVolumes(FakeList):
    def create(self, name: str, labels: dict[str, str]) -> FakeVolume:
        made = FakeVolume(name, labels)
        self.items.append(made)
        return made


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, name: str) -> Any:
        from docker.errors import ImageNotFound

        if name not in self.present:
            raise ImageNotFound(name)
        return object()


class FakeDocker:
    def __init__(
        self,
        containers: list[FakeContainer],
        volumes: list[FakeVolume] | None = None,
        images: frozenset[str] = frozenset(),
    ) -> None:
        self.containers = FakeList(containers)
        self.networks = FakeList([])
        self.volumes = FakeVolumes(volumes or [])
        self.images = FakeImages(set(images))


@pytest.fixture(autouse=True)
def project_folders(tmp_path: Any) -> None:
    """The folder the postgres container mounts, as a checkout has it (make_settings' root is tmp_path/proj)."""
    (tmp_path / "proj" / "docker" / "postgres-init").mkdir(parents=True)


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
    assert "nothing was created" in message
    # LOCAL_PORT came from the environment here: the fix names that, not .env.
    assert "change local.port (LOCAL_PORT) [from environment $LOCAL_PORT] to a free port" in message


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


REFUSED = b'psql: error: connection to server at "127.0.0.1", port 5432 failed: '
REFUSED += b'FATAL:  password authentication failed for user "mlflow"\n'
# What psql prints for `select datname from pg_database where not datistemplate` on the default stack.
DATABASES = b"postgres\nmlflow\nmlflow_auth\n"


def volume(settings: Settings, labels: dict[str, str] | None = None) -> FakeVolume:
    return FakeVolume(f"{settings.local.project}-postgres-data", labels)


def initialised_as(user: str = "mlflow", db: str = "mlflow", auth: str = "mlflow_auth") -> dict[str, str]:
    """A postgres container's environment: what its volume was initialised with, when `up` created both."""
    return {"POSTGRES_USER": user, "POSTGRES_DB": db, "MLFLOW_AUTH_DB": auth, "POSTGRES_PASSWORD": "x"}


def refused_over_the_volume(
    settings: Settings, postgres: FakeContainer, check: Callable[..., None] = local.check_postgres
) -> str:
    """The message with which `check` (check_postgres, or the whole preflight) refuses the stack when the
    postgres container is `postgres` over the stack's kept data volume."""
    with pytest.raises(PlatformError) as raised:
        check(FakeDocker([postgres], [volume(settings)]), settings)
    return str(raised.value)


def test_a_postgres_refusing_the_env_password_is_named_with_volume_key_and_fix(settings: Settings) -> None:
    postgres = ours(settings, "postgres", exec_answer=(2, REFUSED), env=initialised_as())

    message = refused_over_the_volume(settings, postgres)
    assert f"volume {settings.local.project}-postgres-data was initialised with another POSTGRES_PASSWORD" in message
    assert "invoke down --volumes" in message
    assert "nothing was changed" in message
    assert postgres.executed and postgres.executed[0][0] == "psql"
    assert settings.secrets.postgres_password not in message


def test_a_changed_user_with_the_right_password_is_named_as_a_user_change_not_a_password(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    """PostgreSQL answers a missing role as a wrong password; the container's environment tells the user."""
    settings = make_settings("platform:\n  postgres:\n    user: mlflow2\n", environ=sample_env)
    postgres = ours(settings, "postgres", exec_answer=(2, REFUSED), env=initialised_as())

    message = refused_over_the_volume(settings, postgres, local.preflight)
    assert "initialised with PostgreSQL user 'mlflow'" in message
    assert "platform.postgres.user [from config/platform.yaml:3] is now 'mlflow2'" in message
    assert "user: mlflow back in config/platform.yaml" in message and "invoke down --volumes" in message
    assert "POSTGRES_PASSWORD" not in message and "nothing was changed" in message


def test_a_changed_user_over_a_stopped_stack_is_read_from_the_volume_labels(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    settings = make_settings("platform:\n  postgres:\n    user: mlflow2\n", environ=sample_env)
    labels = {local.PG_USER_LABEL: "mlflow", local.PG_DATABASES_LABEL: "mlflow,mlflow_auth"}

    with pytest.raises(PlatformError) as raised:
        local.up(FakeDocker([], [volume(settings, labels)]), settings, ImageSet("m", "p", "s"), dry_run=True)  # type: ignore[arg-type]

    assert f"the labels of volume {settings.local.project}-postgres-data" in str(raised.value)
    assert "initialised with PostgreSQL user 'mlflow'" in str(raised.value)


def test_a_refused_password_on_a_volume_without_a_record_names_both_causes(settings: Settings) -> None:
    postgres = ours(settings, "postgres", exec_answer=(2, REFUSED))  # created before the record existed

    message = refused_over_the_volume(settings, postgres)
    assert "either with another POSTGRES_PASSWORD or with another user than platform.postgres.user" in message
    assert "invoke down --volumes" in message


def test_a_renamed_tracking_db_over_the_running_stack_is_refused_naming_what_the_volume_holds(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    settings = make_settings("platform:\n  postgres:\n    tracking_db: tracking\n", environ=sample_env)
    postgres = ours(settings, "postgres", exec_answer=(0, DATABASES), env=initialised_as())

    message = refused_over_the_volume(settings, postgres, local.preflight)
    assert "holds database(s) 'mlflow', 'mlflow_auth'" in message
    assert "platform.postgres.tracking_db [from config/platform.yaml:3] names 'tracking'" in message
    assert "auth_db" not in message.split("; nothing")[0]
    assert "invoke down --volumes" in message and "createdb -U mlflow -O mlflow tracking" in message
    assert "nothing was changed" in message


def test_a_renamed_auth_db_over_a_stopped_stack_is_refused_from_the_containers_environment(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    settings = make_settings("platform:\n  postgres:\n    auth_db: auth\n", environ=sample_env)
    postgres = ours(settings, "postgres", status="exited", env=initialised_as())

    message = refused_over_the_volume(settings, postgres)
    assert "platform.postgres.auth_db [from config/platform.yaml:3] names 'auth'" in message
    assert f"environment of container {postgres.name}" in message


def test_new_names_without_a_kept_volume_pass(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    """No data volume: PostgreSQL initialises a new one with the new names (the old container is replaced)."""
    settings = make_settings("platform:\n  postgres:\n    user: other\n", environ=sample_env)
    postgres = ours(settings, "postgres", status="exited", env=initialised_as())

    local.check_postgres(FakeDocker([postgres]), settings)  # type: ignore[arg-type]


def test_a_postgres_accepting_the_password_and_holding_both_databases_passes(settings: Settings) -> None:
    postgres = ours(settings, "postgres", exec_answer=(0, DATABASES), env=initialised_as())
    local.check_postgres(FakeDocker([postgres], [volume(settings)]), settings)  # type: ignore[arg-type]


def test_up_records_the_user_and_databases_on_the_new_postgres_volume(settings: Settings) -> None:
    docker = FakeDocker([])
    local._ensure_volumes(docker, settings, specs(settings), dry_run=False)  # type: ignore[arg-type]

    labels = {v.name: v.labels for v in docker.volumes.items}
    assert labels[f"{settings.local.project}-postgres-data"] == {
        local.PROJECT_LABEL: settings.local.project,
        local.PG_USER_LABEL: "mlflow",
        local.PG_DATABASES_LABEL: "mlflow,mlflow_auth",
    }
    assert labels[f"{settings.local.project}-s3-data"] == {local.PROJECT_LABEL: settings.local.project}


def test_a_bind_address_this_machine_lacks_is_refused_even_when_our_mlflow_holds_the_port(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    """192.0.2.77 (TEST-NET-1) is on no machine: the port check skips a port our MLflow holds, this does not."""
    settings = make_settings("local:\n  bind: 192.0.2.77\n", environ=sample_env)
    mlflow = ours(settings, "mlflow", ports={"5000/tcp": [{"HostIp": "192.0.2.77", "HostPort": "5000"}]})

    for attempt in (
        lambda: local.preflight(FakeDocker([mlflow]), settings),  # type: ignore[arg-type]
        lambda: local.up(FakeDocker([mlflow]), settings, ImageSet("m", "p", "s"), dry_run=True),  # type: ignore[arg-type]
    ):
        with pytest.raises(PlatformError) as raised:
            attempt()
        message = str(raised.value)
        assert "local.bind [from config/platform.yaml:2]: 192.0.2.77 is not an address of this machine" in message
        assert "nothing was created" in message and "127.0.0.1" in message


def test_addresses_this_machine_has_and_wildcards_bind() -> None:
    assert local.bind_problem("127.0.0.1") is None
    assert local.bind_problem("0.0.0.0") is None  # noqa: S104
    assert local.bind_problem("") is None
    assert local.bind_problem("192.0.2.77") is not None


def test_a_foreign_container_with_our_name_is_refused_not_removed(settings: Settings) -> None:
    stranger = FakeContainer(f"{settings.local.project}-mlflow", {})

    with pytest.raises(PlatformError) as raised:
        local.preflight(FakeDocker([stranger]), settings)  # type: ignore[arg-type]

    assert f"a container named {stranger.name} exists that this project did not create" in str(raised.value)
    assert "local.project" in str(raised.value)


def test_a_missing_mounted_project_folder_is_refused(settings: Settings) -> None:
    (settings.root / "docker" / "postgres-init").rmdir()

    with pytest.raises(PlatformError, match="postgres-init it mounts is missing"):
        local.preflight(FakeDocker([]), settings)  # type: ignore[arg-type]


def test_up_refuses_missing_images_before_touching_anything(settings: Settings) -> None:
    docker = FakeDocker([], images=frozenset({"m", "s"}))

    with pytest.raises(PlatformError) as raised:
        local.up(docker, settings, ImageSet("m", "p", "s"))  # type: ignore[arg-type]

    assert "image(s) p (postgres) do not exist" in str(raised.value) and "invoke build-images" in str(raised.value)
    assert docker.volumes.items == []  # nothing created


def test_a_failed_migration_leads_with_its_last_error_line() -> None:
    logs = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/opt/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py", line 156, in __init__',
            "    self._dbapi_connection = engine.raw_connection()",
            "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "
            '"postgres" (172.18.0.2), port 5432 failed: FATAL:  database "my db" does not exist',
            "",
            "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
        ]
    )
    assert local.last_error_line(logs) == 'FATAL:  database "my db" does not exist'
    assert local.last_error_line("x\nValueError: bad\n  done") == "ValueError: bad"
    assert local.last_error_line("") == "(no log)"


def test_after_postgres_was_recreated_the_migrations_read_the_user_from_the_volume_labels(
    make_settings: Callable[..., Settings], sample_env: dict[str, str]
) -> None:
    """The new container's environment has the new user; only the volume still knows the old one."""
    settings = make_settings("platform:\n  postgres:\n    user: mlflow2\n", environ=sample_env)
    recreated = ours(settings, "postgres", env=initialised_as(user="mlflow2"))
    labels = {local.PG_USER_LABEL: "mlflow", local.PG_DATABASES_LABEL: "mlflow,mlflow_auth"}
    docker = FakeDocker([recreated], [volume(settings, labels)])

    message = local.password_refused(docker, settings, container_env=False)  # type: ignore[arg-type]

    assert "initialised with PostgreSQL user 'mlflow'" in message and "POSTGRES_PASSWORD" not in message
