"""The local platform's service specs, built from Settings: the MLflow env contract, ports and hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlopskit import credentials
from mlopskit.errors import SettingsError
from mlopskit.services import (
    MLFLOW,
    POSTGRES,
    POSTGRES_INIT_DIR,
    S3,
    ImageSet,
    ServiceHosts,
    ServiceSpec,
    default_workers,
    local_services,
    mlflow_environment,
)
from mlopskit.settings import Settings, load_settings

SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "Adm1n-Test-Passw0rd-x1",
    "MLFLOW_FLASK_SECRET_KEY": "flask-test-secret-0123456789",
    "POSTGRES_PASSWORD": "pg/pass@word",
    "S3_ACCESS_KEY": "testaccess1234",
    "S3_SECRET_KEY": "test-secret-key-5678",
}
REPO = Path(__file__).resolve().parents[2]
IMAGES = ImageSet(mlflow="mlopskit/mlflow:t", postgres="postgres:t", s3="seaweedfs:t")


def settings_with(tmp_path: Path, **env: str) -> Settings:
    return load_settings(tmp_path, {**SECRETS, **env})


def by_name(specs: list[ServiceSpec]) -> dict[str, ServiceSpec]:
    return {spec.name: spec for spec in specs}


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, ServiceSpec]:
    return by_name(local_services(settings_with(tmp_path), IMAGES))


def test_services_start_in_dependency_order(specs: dict[str, ServiceSpec]) -> None:
    assert list(specs) == [POSTGRES, S3, MLFLOW]


def test_mlflow_environment_has_every_secret_of_the_contract(specs: dict[str, ServiceSpec]) -> None:
    env = specs[MLFLOW].environment
    assert env[credentials.ENV_ADMIN_PASSWORD] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env[credentials.ENV_FLASK_SECRET] == SECRETS["MLFLOW_FLASK_SECRET_KEY"]
    assert env[credentials.ENV_AWS_ACCESS_KEY] == SECRETS["S3_ACCESS_KEY"]
    assert env[credentials.ENV_AWS_SECRET_KEY] == SECRETS["S3_SECRET_KEY"]
    assert env[credentials.ENV_ADMIN_USER] == "admin"


def test_database_uris_use_psycopg3_and_separate_databases(specs: dict[str, ServiceSpec]) -> None:
    env = specs[MLFLOW].environment
    tracking, auth = env[credentials.ENV_BACKEND_STORE_URI], env[credentials.ENV_AUTH_DATABASE_URI]
    assert tracking == "postgresql+psycopg://mlflow:pg%2Fpass%40word@postgres:5432/mlflow"
    assert auth == "postgresql+psycopg://mlflow:pg%2Fpass%40word@postgres:5432/mlflow_auth"


def test_postgres_creates_the_auth_database_through_its_init_script(tmp_path: Path) -> None:
    pg = by_name(local_services(settings_with(tmp_path), IMAGES))[POSTGRES]
    assert pg.environment["POSTGRES_DB"] == "mlflow"
    assert pg.environment["MLFLOW_AUTH_DB"] == "mlflow_auth"
    assert pg.bind_mounts == {str(tmp_path / POSTGRES_INIT_DIR): "/docker-entrypoint-initdb.d"}
    script = REPO / POSTGRES_INIT_DIR / "10-mlflow-auth-db.sh"
    assert script.stat().st_mode & 0o111, "the official image sources non-executable scripts instead of running them"
    assert "MLFLOW_AUTH_DB" in script.read_text()


def test_artifacts_are_proxied_to_the_bucket_through_the_s3_service(specs: dict[str, ServiceSpec]) -> None:
    env = specs[MLFLOW].environment
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"


def test_network_hosts_override_where_mlflow_finds_its_dependencies(tmp_path: Path) -> None:
    hosts = ServiceHosts(postgres="db.test", postgres_port=6543, s3="store.test", s3_port=9000)
    env = by_name(local_services(settings_with(tmp_path), IMAGES, hosts))[MLFLOW].environment
    assert "@db.test:6543/mlflow" in env[credentials.ENV_BACKEND_STORE_URI]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://store.test:9000"


def test_auth_settings_reach_the_container(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, MLFLOW_DEFAULT_PERMISSION="READ")
    env = by_name(local_services(settings, IMAGES))[MLFLOW].environment
    assert env["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "READ"
    assert env["MLFLOW_AUTH_CACHE_TTL_SECONDS"] == str(settings.platform.mlflow.auth_cache_ttl_seconds)


def test_allowed_hosts_cover_loopback_service_names_and_user_additions(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, MLFLOW_ALLOWED_HOSTS="mlflow.example.com")
    allowed = by_name(local_services(settings, IMAGES))[MLFLOW].environment["MLFLOW_ALLOWED_HOSTS"].split(",")
    for host in ("localhost:*", "127.0.0.1:*", "mlflow", "mlflow:*", "mlopskit-mlflow:*", "mlflow.example.com"):
        assert host in allowed


def test_only_mlflow_and_s3_are_published_and_mlflow_on_the_configured_port(tmp_path: Path) -> None:
    specs = by_name(local_services(settings_with(tmp_path, LOCAL_PORT="15555"), IMAGES))
    assert specs[MLFLOW].publish and specs[MLFLOW].host_port == 15555
    assert specs[S3].publish and specs[S3].host_port is None
    assert not specs[POSTGRES].publish


def test_workers_follow_the_setting_or_the_machine(tmp_path: Path) -> None:
    assert (
        by_name(local_services(settings_with(tmp_path, MLFLOW_WORKERS="3"), IMAGES))[MLFLOW].environment[
            "MLFLOW_WORKERS"
        ]
        == "3"
    )
    assert 2 <= default_workers() <= 4


def test_volumes_and_containers_are_named_after_the_project(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "platform.yaml").write_text("local:\n  project: demo\n")
    specs = by_name(local_services(settings_with(tmp_path), IMAGES))
    assert specs[POSTGRES].volumes == {"demo-postgres-data": "/var/lib/postgresql/data"}
    assert specs[S3].volumes == {"demo-s3-data": "/data"}


def test_every_healthcheck_is_a_docker_command_with_nanosecond_timings(specs: dict[str, ServiceSpec]) -> None:
    for spec in specs.values():
        assert spec.healthcheck["test"][0] == "CMD"
        assert spec.healthcheck["interval"] >= 1_000_000_000


def test_an_external_object_store_replaces_the_s3_service(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, OBJECT_STORE="external", S3_ENDPOINT="https://s3.example.com")
    specs = by_name(local_services(settings, IMAGES))
    assert S3 not in specs
    assert specs[MLFLOW].environment["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.com"


def test_a_missing_secret_names_its_env_key(tmp_path: Path) -> None:
    environ = {k: v for k, v in SECRETS.items() if k != "S3_SECRET_KEY"}
    with pytest.raises(SettingsError, match="S3_SECRET_KEY"):
        local_services(load_settings(tmp_path, environ), IMAGES)


def test_spec_hash_changes_with_the_environment_only(tmp_path: Path) -> None:
    first = by_name(local_services(settings_with(tmp_path), IMAGES))[MLFLOW]
    again = by_name(local_services(settings_with(tmp_path), IMAGES))[MLFLOW]
    changed = by_name(local_services(settings_with(tmp_path, MLFLOW_WORKERS="4"), IMAGES))[MLFLOW]
    assert first.spec_hash() == again.spec_hash()
    assert first.spec_hash() != changed.spec_hash()


def test_the_local_mlflow_runs_the_job_runner_only_when_asked(tmp_path: Path) -> None:
    """The same setting as in the cluster: platform.mlflow.job_execution, off by default."""
    default = load_settings(tmp_path, dict(SECRETS))
    assert mlflow_environment(default, ServiceHosts())["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "platform.yaml").write_text("platform:\n  mlflow:\n    job_execution: true\n")
    asked = load_settings(tmp_path, dict(SECRETS))
    assert mlflow_environment(asked, ServiceHosts())["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
