"""The local platform's containers as plain data: image, environment, command, ports, healthcheck, volumes.

`invoke up` (mlopskit/local.py) and the testcontainers integration tests both build their containers from
`local_services()`, so the two cannot drift apart.

API kept stable for tests/integration (other helpers rely on it):
    ImageSet(mlflow, postgres, s3)             image names to run (mlopskit.images.ensure_images returns one)
    ServiceHosts(postgres, s3)                 how MLflow reaches the other two (network aliases by default)
    ServiceSpec(name, image, environment, command, container_port, volumes, healthcheck, network_aliases,
                bind_mounts, host_port, publish)
    local_services(settings, images, network_hosts=None) -> [postgres, s3, mlflow]
    MIGRATE_COMMAND: the MLflow image's command that upgrades both schemas (run once before `serve`)
Additions since the first version: `bind_mounts` (host path -> container path, read-only: the Postgres
init script), `host_port`/`publish` (what `up` publishes on settings.local.bind).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlopskit import credentials
from mlopskit.contract import (
    MLFLOW_PORT,
    MLFLOW_SERVICE,
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    SEAWEEDFS_S3_PORT,
    allowed_hosts,
)
from mlopskit.settings import Settings

POSTGRES = POSTGRES_SERVICE
S3 = "s3"  # the local stack's S3 service; in the cluster it is named after the object store's kind
MLFLOW = MLFLOW_SERVICE
S3_PORT = SEAWEEDFS_S3_PORT

# Docker healthchecks count in nanoseconds.
_SECOND = 1_000_000_000

# The init script that creates the auth database next to the tracking one. Official postgres images
# and the offline stand-in both run /docker-entrypoint-initdb.d/*.sh once, on an empty data directory.
POSTGRES_INIT_DIR = Path("docker/postgres-init")
POSTGRES_INIT_MOUNT = "/docker-entrypoint-initdb.d"

# Where each image keeps its data; the same paths in the official images and the offline stand-ins.
POSTGRES_DATA = "/var/lib/postgresql/data"
S3_DATA = "/data"


@dataclass(frozen=True)
class ImageSet:
    """The images the local platform runs."""

    mlflow: str
    postgres: str
    s3: str


@dataclass(frozen=True)
class ServiceHosts:
    """How the MLflow container reaches PostgreSQL and S3: names on the shared Docker network."""

    postgres: str = POSTGRES
    postgres_port: int = POSTGRES_PORT
    s3: str = S3
    s3_port: int = S3_PORT


@dataclass(frozen=True)
class ServiceSpec:
    """One container of the local platform."""

    name: str  # "postgres" | "s3" | "mlflow"
    image: str
    environment: dict[str, str]  # secrets included: in memory only, never written to disk
    command: list[str] | None
    container_port: int  # 5432 / 8333 / 5000
    volumes: dict[str, str]  # volume name -> mount path
    healthcheck: dict[str, Any]  # Docker SDK healthcheck (test, interval, timeout, retries, start_period in ns)
    network_aliases: list[str]
    bind_mounts: dict[str, str] = field(default_factory=dict)  # host path -> container path, read-only
    host_port: int | None = None  # None with publish=True: Docker picks a free port on the bind address
    publish: bool = False

    def spec_hash(self) -> str:
        """A digest of everything that defines the container; `up` recreates it when this changes."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def container_name(settings: Settings, service: str) -> str:
    return f"{settings.local.project}-{service}"


def volume_name(settings: Settings, purpose: str) -> str:
    return f"{settings.local.project}-{purpose}"


def network_name(settings: Settings) -> str:
    return settings.local.project


def default_workers() -> int:
    """Server workers for this machine: one per core, at least 2 and at most 4 (memory bound)."""
    return max(2, min(4, os.cpu_count() or 2))


def local_allowed_hosts(settings: Settings) -> list[str]:
    """Host headers MLflow accepts locally: loopback, the service and container names and a non-loopback bind
    address on any port (the published port is chosen at start), and the user's own."""
    names = [MLFLOW, container_name(settings, MLFLOW)]
    bind = settings.local.bind
    if bind not in {"127.0.0.1", "0.0.0.0", "localhost"}:  # noqa: S104 - compared, not bound
        names.append(bind)
    return allowed_hosts(names, "*", settings.platform.mlflow.allowed_hosts)


def _healthcheck(test: list[str], start_period: int, interval: int = 5) -> dict[str, Any]:
    return {
        "test": test,
        "interval": interval * _SECOND,
        "timeout": 5 * _SECOND,
        "retries": 5,
        "start_period": start_period * _SECOND,
    }


def postgres_spec(settings: Settings, images: ImageSet) -> ServiceSpec:
    pg = settings.platform.postgres
    return ServiceSpec(
        name=POSTGRES,
        image=images.postgres,
        environment={
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": settings.secrets.postgres_password,
            "POSTGRES_DB": pg.tracking_db,
            # Read by docker/postgres-init/10-mlflow-auth-db.sh.
            "MLFLOW_AUTH_DB": pg.auth_db,
            "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --auth-local=scram-sha-256",
        },
        command=None,
        container_port=POSTGRES_PORT,
        volumes={volume_name(settings, "postgres-data"): POSTGRES_DATA},
        # Over TCP, so the check fails during the init phase, when the server listens on a socket only.
        healthcheck=_healthcheck(
            ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", pg.user, "-d", pg.tracking_db], start_period=30
        ),
        network_aliases=[POSTGRES],
        bind_mounts={str(settings.root / POSTGRES_INIT_DIR): POSTGRES_INIT_MOUNT},
    )


def s3_spec(settings: Settings, images: ImageSet) -> ServiceSpec:
    store = settings.platform.object_store
    return ServiceSpec(
        name=S3,
        image=images.s3,
        environment={
            # docker/offline/seaweedfs/entrypoint.sh turns these into the S3 gateway's only identity.
            "AWS_ACCESS_KEY_ID": settings.secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": settings.secrets.s3_secret_key,
            "S3_BUCKET": store.bucket,
        },
        command=None,
        container_port=S3_PORT,
        volumes={volume_name(settings, "s3-data"): S3_DATA},
        healthcheck=_healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{S3_PORT}/healthz"], start_period=30
        ),
        network_aliases=[S3],
        # Published on the loopback address only, so `up` can create the bucket with boto3.
        publish=True,
    )


def mlflow_environment(settings: Settings, hosts: ServiceHosts) -> dict[str, str]:
    """The MLflow container's environment contract (docker/mlflow/entrypoint.sh documents it)."""
    mlflow = settings.platform.mlflow
    store = settings.platform.object_store
    tracking, auth = credentials.database_uris(settings, hosts.postgres, hosts.postgres_port)
    endpoint = store.endpoint if store.kind == "external" else f"http://{hosts.s3}:{hosts.s3_port}"
    environment = {
        credentials.ENV_BACKEND_STORE_URI: tracking,
        credentials.ENV_AUTH_DATABASE_URI: auth,
        credentials.ENV_ADMIN_USER: mlflow.admin_user,
        credentials.ENV_ADMIN_PASSWORD: settings.secrets.admin_password,
        credentials.ENV_FLASK_SECRET: settings.secrets.flask_secret_key,
        credentials.ENV_AWS_ACCESS_KEY: settings.secrets.s3_access_key,
        credentials.ENV_AWS_SECRET_KEY: settings.secrets.s3_secret_key,
        "AWS_DEFAULT_REGION": store.region,
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{store.bucket}/",
        "MLFLOW_AUTH_DEFAULT_PERMISSION": mlflow.default_permission,
        "MLFLOW_AUTH_CACHE_TTL_SECONDS": str(mlflow.auth_cache_ttl_seconds),
        "MLFLOW_ALLOWED_HOSTS": ",".join(local_allowed_hosts(settings)),
        # As in the cluster, less the ingress host's origin (the local stack has none): MLflow's own env names.
        "MLFLOW_SERVER_X_FRAME_OPTIONS": mlflow.x_frame_options,
        "MLFLOW_WORKERS": str(mlflow.workers or default_workers()),
        "MLFLOW_PORT": str(MLFLOW_PORT),
        # platform.mlflow.job_execution, as in the cluster: MLflow 3's job runner starts dozens of processes
        # (about 1.1 GiB more at idle) for GenAI jobs that tracking and the registry never use.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(mlflow.job_execution).lower(),
    }
    if endpoint:
        environment["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    if mlflow.cors_allowed_origins:
        environment["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(mlflow.cors_allowed_origins)
    return environment


def mlflow_spec(settings: Settings, images: ImageSet, hosts: ServiceHosts) -> ServiceSpec:
    return ServiceSpec(
        name=MLFLOW,
        image=images.mlflow,
        environment=mlflow_environment(settings, hosts),
        command=["serve"],
        container_port=MLFLOW_PORT,
        volumes={},
        healthcheck=_healthcheck(
            [
                "CMD",
                "python3",
                "-c",
                f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{MLFLOW_PORT}/health', timeout=4)",
            ],
            # A busy machine needs minutes: probes during start_period do not count. `up` does not
            # stop on `unhealthy` while the server still makes progress (mlopskit/startup.py).
            start_period=300,
        ),
        network_aliases=[MLFLOW],
        host_port=settings.local.port,
        publish=True,
    )


# The MLflow image's sub-command that upgrades the tracking and auth schemas, then exits.
MIGRATE_COMMAND = ["migrate"]


def local_services(
    settings: Settings, images: ImageSet, network_hosts: ServiceHosts | None = None
) -> list[ServiceSpec]:
    """PostgreSQL, S3 and MLflow, in start order; internal Postgres and SeaweedFS unless settings say otherwise."""
    hosts = network_hosts or ServiceHosts()
    specs = []
    if settings.platform.postgres.mode == "internal":
        specs.append(postgres_spec(settings, images))
    if settings.platform.object_store.kind != "external":
        specs.append(s3_spec(settings, images))
    specs.append(mlflow_spec(settings, images, hosts))
    return specs
