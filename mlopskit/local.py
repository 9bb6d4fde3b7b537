"""The local platform on Docker: one network, named volumes, and the containers of mlopskit/services.py.

Every object carries the label io.mlopskit.project=<settings.local.project>; each container also carries
a hash of its spec and image, so `up` leaves an unchanged container alone and recreates a changed one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

import docker
from mlopskit import access, startup
from mlopskit.access import PreviousPassword
from mlopskit.credentials import ENV_ADMIN_PASSWORD
from mlopskit.errors import PlatformError
from mlopskit.formats import url
from mlopskit.mlflow_admin import MlflowClient
from mlopskit.object_store import s3_client
from mlopskit.services import (
    MIGRATE_COMMAND,
    MLFLOW,
    POSTGRES,
    S3,
    S3_PORT,
    ImageSet,
    ServiceSpec,
    container_name,
    local_services,
    network_name,
    volume_name,
)
from mlopskit.settings import ACCESS_FILE, ENV_FILE, PLATFORM_FILE, Settings

PROJECT_LABEL = "io.mlopskit.project"
SERVICE_LABEL = "io.mlopskit.service"
SPEC_LABEL = "io.mlopskit.spec"
# The project root (the folder with tasks.py) `up` ran from: a second checkout must not take the stack over.
ROOT_LABEL = "io.mlopskit.root"
# On the PostgreSQL data volume, set when `up` creates it: the user and databases (tracking,auth) its server
# was initialised with. Never the password. Volumes made before these labels existed have none.
PG_USER_LABEL = "io.mlopskit.postgres.user"
PG_DATABASES_LABEL = "io.mlopskit.postgres.databases"
# Seconds one container may take to start when no settings say otherwise (local.start_timeout).
DEFAULT_START_TIMEOUT = 900.0
# How often `up` looks at starting containers. Docker runs a health check only every few seconds (and
# the first one only after that interval: Docker 20.10 has no start_interval), so where a service is
# published `up` also asks it directly (its /health or /healthz), which ends the wait within this.
POLL_SECONDS = 0.25

# (service, state) -> None; the task turns these into progress lines.
Report = Callable[[str, str], None]


def _silent(service: str, state: str) -> None:
    return None


@dataclass
class UpResult:
    url: str
    actions: dict[str, str] = field(default_factory=dict)  # object -> created/recreated/started/unchanged

    @property
    def changed(self) -> bool:
        return any(action != "unchanged" for action in self.actions.values())


def reachable_host(settings: Settings) -> str:
    """Where this machine reaches what is published on local.bind: a wildcard through loopback of its family."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.local.bind, settings.local.bind)  # noqa: S104


def mlflow_url(settings: Settings) -> str:
    return url("http", reachable_host(settings), settings.local.port)


def desired_hash(spec: ServiceSpec, image_id: str) -> str:
    """The spec plus the image's id: a rebuilt image under the same tag also counts as a change."""
    return hashlib.sha256(f"{spec.spec_hash()}:{image_id}".encode()).hexdigest()[:16]


def _labels(settings: Settings, **extra: str) -> dict[str, str]:
    return {PROJECT_LABEL: settings.local.project, **extra}


def _container(client: docker.DockerClient, name: str) -> Container | None:
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def _ensure_network(client: docker.DockerClient, settings: Settings, dry_run: bool) -> str:
    name = network_name(settings)
    if client.networks.list(names=[name]):
        return "unchanged"
    if not dry_run:
        client.networks.create(name, driver="bridge", labels=_labels(settings))
    return "created"


def _ensure_volumes(
    client: docker.DockerClient, settings: Settings, specs: list[ServiceSpec], dry_run: bool
) -> dict[str, str]:
    actions = {}
    for spec in specs:
        for volume in spec.volumes:
            try:
                client.volumes.get(volume)
                actions[f"volume {volume}"] = "unchanged"
            except NotFound:
                if not dry_run:
                    client.volumes.create(volume, labels=_labels(settings) | _volume_labels(settings, volume))
                actions[f"volume {volume}"] = "created"
    return actions


def _volume_labels(settings: Settings, volume: str) -> dict[str, str]:
    """What the PostgreSQL data volume is initialised with (read back by postgres_init); nothing for others."""
    if volume != volume_name(settings, "postgres-data"):
        return {}
    pg = settings.platform.postgres
    return {PG_USER_LABEL: pg.user, PG_DATABASES_LABEL: f"{pg.tracking_db},{pg.auth_db}"}


def _run_kwargs(settings: Settings, spec: ServiceSpec, digest: str) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    if spec.publish:
        ports[f"{spec.container_port}/tcp"] = (settings.local.bind, spec.host_port)
    mounts = {volume: {"bind": path, "mode": "rw"} for volume, path in spec.volumes.items()}
    mounts |= {host: {"bind": path, "mode": "ro"} for host, path in spec.bind_mounts.items()}
    return {
        "name": container_name(settings, spec.name),
        "environment": spec.environment,
        "command": spec.command,
        "ports": ports,
        "volumes": mounts,
        "healthcheck": spec.healthcheck,
        "labels": _labels(settings, **{SERVICE_LABEL: spec.name, SPEC_LABEL: digest, ROOT_LABEL: str(settings.root)}),
        "restart_policy": {"Name": "unless-stopped"},
        "network": network_name(settings),
        "detach": True,
    }


def _create(client: docker.DockerClient, settings: Settings, spec: ServiceSpec, digest: str) -> Container:
    kwargs = _run_kwargs(settings, spec, digest)
    network = kwargs.pop("network")
    kwargs.pop("detach")
    container = client.containers.create(spec.image, **kwargs)
    # Aliases need the endpoint config, which create() only accepts through connect().
    client.networks.get(network).connect(container, aliases=spec.network_aliases)
    with contextlib.suppress(APIError, NotFound):
        client.networks.get("bridge").disconnect(container)
    _start(container, spec, settings)
    return container


def _start(container: Container, spec: ServiceSpec, settings: Settings) -> None:
    try:
        container.start()
    except APIError as exc:
        message = str(exc.explanation or exc)
        if "port is already allocated" in message or "address already in use" in message:
            raise PlatformError(
                f"{spec.name}: port {spec.host_port or spec.container_port} on {settings.local.bind} is already "
                f"in use; stop what uses it, or change {settings.describe('local.port')} to another port"
            ) from None
        raise PlatformError(f"{spec.name}: starting container {container.name} failed: {message}") from None


def ensure_container(
    client: docker.DockerClient, settings: Settings, spec: ServiceSpec, dry_run: bool
) -> tuple[str, Container | None]:
    """Create, recreate, start or leave the container; returns (action, container)."""
    try:
        image_id = str(client.images.get(spec.image).id)
    except ImageNotFound:
        if not dry_run:
            raise PlatformError(f"{spec.name}: image {spec.image} does not exist; run `invoke build-images`") from None
        image_id = "to be built"
    digest = desired_hash(spec, image_id)
    existing = _container(client, container_name(settings, spec.name))
    if existing is not None and existing.labels.get(SPEC_LABEL) == digest:
        if existing.status == "running":
            return "unchanged", existing
        if not dry_run:
            _start(existing, spec, settings)
        return "started", existing
    action = "created" if existing is None else "recreated"
    if dry_run:
        return action, existing
    if existing is not None:
        existing.remove(force=True)
    return action, _create(client, settings, spec, digest)


def last_logs(container: Container, lines: int = 20) -> str:
    try:
        return bytes(container.logs(tail=lines)).decode(errors="replace").rstrip()
    except APIError:
        return "(no logs)"


def _newest_log_line(container: Container) -> bytes:
    try:
        return bytes(container.logs(tail=1, timestamps=True))
    except APIError:
        return b""


@dataclass
class Starting:
    """A container `up` waits for, and optionally a direct probe that it answers (True = ready)."""

    container: Container
    service: str
    one_off: bool = False
    probe: Callable[[], bool] | None = None
    restarts_before: int = 0
    ready: bool = False


def http_probe(address: str) -> Callable[[], bool]:
    """A probe that passes when GET address answers 200 within a second."""

    def probe() -> bool:
        try:
            return requests.get(address, timeout=1.0).status_code == 200
        except requests.RequestException:
            return False

    return probe


def exec_probe(container: Container, command: Sequence[str]) -> Callable[[], bool]:
    """A probe that passes when `command` (a container's own health check) exits 0 inside the container."""

    def probe() -> bool:
        try:
            return container.exec_run(list(command)).exit_code == 0
        except (APIError, NotFound):
            return False

    return probe


def wait_all_ready(
    waits: Sequence[Starting],
    report: Report = _silent,
    limit: float = DEFAULT_START_TIMEOUT,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
) -> None:
    """Wait for several containers at once, each while it makes progress (mlopskit/startup.py decides);
    the first failure stops the wait with that container's last logs. A container whose probe passes
    while it runs is ready without waiting for Docker's next health check."""
    for wait in waits:
        wait.container.reload()
        wait.restarts_before = int(wait.container.attrs.get("RestartCount", 0))
    started = clock()
    said: dict[str, float] = {}
    while True:
        for wait in waits:
            if wait.ready:
                continue
            container = wait.container
            container.reload()
            observation = startup.observe(container.attrs, _newest_log_line(container), wait.restarts_before)
            decision = startup.decide(observation, started, clock(), limit, one_off=wait.one_off)
            if decision.verdict == "failed":
                raise PlatformError(
                    f"{wait.service}: container {container.name} {decision.reason}; its last log lines:\n"
                    f"{last_logs(container)}\n(full log: docker logs {container.name})"
                )
            running = observation.status == "running" and observation.restarts == 0
            if decision.verdict == "ready" or (running and wait.probe is not None and wait.probe()):
                wait.ready = True
            elif clock() - said.get(wait.service, -1.0) >= 1.0:
                said[wait.service] = clock()
                report(wait.service, decision.reason)
        if all(wait.ready for wait in waits):
            return
        sleep(poll)


def wait_ready(
    container: Container,
    service: str,
    report: Report = _silent,
    limit: float = DEFAULT_START_TIMEOUT,
    one_off: bool = False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    probe: Callable[[], bool] | None = None,
) -> None:
    """Wait while the container makes progress (mlopskit/startup.py decides); fail with its last logs."""
    wait_all_ready([Starting(container, service, one_off, probe)], report, limit, clock, sleep)


def wait_healthy(
    container: Container, service: str, report: Report = _silent, timeout: float = DEFAULT_START_TIMEOUT
) -> None:
    """Wait until the Docker health check passes (see wait_ready)."""
    wait_ready(container, service, report, timeout)


def published_port(container: Container, container_port: int) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{container_port}/tcp") or []
    if not bindings:
        raise PlatformError(f"container {container.name} publishes no port for {container_port}")
    return int(bindings[0]["HostPort"])


def ensure_bucket(settings: Settings, endpoint: str) -> str:
    """Create the artifact bucket if missing (idempotent); returns created/unchanged."""
    store = settings.platform.object_store
    s3 = s3_client(settings, endpoint)
    try:
        s3.head_bucket(Bucket=store.bucket)
        return "unchanged"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise PlatformError(
                f"S3 at {endpoint}: checking bucket {store.bucket} failed ({exc}); "
                "check S3_ACCESS_KEY / S3_SECRET_KEY in .env"
            ) from None
    try:
        s3.create_bucket(Bucket=store.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise PlatformError(f"S3 at {endpoint}: creating bucket {store.bucket} failed: {exc}") from None
    return "created"


def run_migrations(
    client: docker.DockerClient,
    settings: Settings,
    spec: ServiceSpec,
    report: Report = _silent,
    network: str | None = None,
) -> None:
    """Upgrade the tracking and auth schemas once with a one-off MLflow container on the platform's network
    (or `network`), waiting on its progress up to local.start_timeout; PlatformError with its log if it fails
    (a plain one when the database refused the password)."""
    container = client.containers.create(
        spec.image,
        command=MIGRATE_COMMAND,
        environment=spec.environment,
        labels=_labels(settings, **{SERVICE_LABEL: "migrate"}),
        name=container_name(settings, "migrate"),
    )
    try:
        client.networks.get(network or network_name(settings)).connect(container)
        container.start()
        try:
            wait_ready(container, "migrate", report, float(settings.local.start_timeout), one_off=True)
        except PlatformError as exc:
            logs = last_logs(container, 200)
            if PASSWORD_REFUSED in logs:
                # The postgres container may just have been recreated with the new settings: only the volume's
                # labels still tell what it was initialised with.
                explained = password_refused(client, settings, container_env=False)
                raise PlatformError(f"database migrations failed: {explained}") from None
            raise PlatformError(f"database migrations failed: {last_error_line(logs)}\n{exc}") from None
    finally:
        container.remove(force=True)


def last_error_line(logs: str) -> str:
    """The line of a log that says what went wrong: PostgreSQL's FATAL message, else the last `...Error: ...` or
    `...Exception: ...` line (a Python traceback's last word), else the last line."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    for line in reversed(lines):
        if "FATAL:" in line:
            return line[line.index("FATAL:") :]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b[^:]*:", line):
            return line
    return lines[-1] if lines else "(no log)"


def _probe(settings: Settings, spec: ServiceSpec, container: Container) -> Callable[[], bool] | None:
    """A direct readiness probe: MLflow's /health and the S3 gateway's /healthz where they are published, else
    the container's own health check command run now (PostgreSQL's pg_isready)."""
    if spec.name == MLFLOW:
        return http_probe(f"{mlflow_url(settings)}/health")
    if spec.name == S3:
        return http_probe(
            f"{url('http', reachable_host(settings), published_port(container, spec.container_port))}/healthz"
        )
    return None


def up(
    client: docker.DockerClient,
    settings: Settings,
    images: ImageSet,
    report: Report = _silent,
    dry_run: bool = False,
) -> UpResult:
    """Start (or keep) the local platform; a second call with the same settings changes nothing.

    Every container starts at once and `up` waits for all of them together: MLflow does not need S3 to
    start, and it waits for PostgreSQL itself (MLflow retries its database connection). Only a new MLflow
    container waits for PostgreSQL first, to run the migrations before it starts.

    Refuses (PlatformError) before creating, removing or starting anything when one of preflight's checks
    fails, or (unless dry_run) an image is missing (check_images)."""
    specs = local_services(settings, images)
    result = UpResult(url=mlflow_url(settings))
    preflight(client, settings, specs)
    if not dry_run:
        check_images(client, specs)
    # Read before the container is recreated: the password MLflow may still have for the admin.
    previous = previous_admin_password(client, settings)
    stale = _container(client, container_name(settings, "migrate"))
    if stale is not None and not dry_run:
        stale.remove(force=True)
    result.actions[f"network {network_name(settings)}"] = _ensure_network(client, settings, dry_run)
    result.actions |= _ensure_volumes(client, settings, specs, dry_run)
    starting: list[Starting] = []
    for spec in specs:
        if spec.name == MLFLOW and not dry_run:
            action_preview, _ = ensure_container(client, settings, spec, dry_run=True)
            if action_preview in {"created", "recreated"}:
                before = [wait for wait in starting if wait.service != S3]
                wait_all_ready(before, report, float(settings.local.start_timeout))
                report(MLFLOW, "migrating the databases")
                run_migrations(client, settings, spec, lambda _service, state: report(MLFLOW, f"migrations: {state}"))
        action, container = ensure_container(client, settings, spec, dry_run)
        result.actions[f"container {container_name(settings, spec.name)}"] = action
        if not dry_run and container is not None:
            starting.append(Starting(container, spec.name, probe=_probe(settings, spec, container)))
    if dry_run:
        return result
    wait_all_ready(starting, report, float(settings.local.start_timeout))
    for wait in starting:
        if wait.service != MLFLOW:  # MLflow is healthy once its admin and access are set, below
            report(wait.service, "healthy")
    s3 = next((wait for wait in starting if wait.service == S3), None)
    if s3 is not None:
        endpoint = url("http", reachable_host(settings), published_port(s3.container, S3_PORT))
        result.actions[f"bucket {settings.platform.object_store.bucket}"] = ensure_bucket(settings, endpoint)
    report(MLFLOW, "running; setting the admin password and access")
    result.actions |= reconcile_mlflow(settings, result.url, previous)
    report(MLFLOW, "healthy")
    return result


def preflight(client: docker.DockerClient, settings: Settings, specs: list[ServiceSpec] | None = None) -> None:
    """Every check `up` (and `up --dry-run`) makes before it creates, recreates, removes or starts anything:
    whatever Docker or the kept data would refuse only after a container was replaced. check_owner,
    check_names, check_bind, check_ports, check_bind_mounts and check_postgres; PlatformError from the first
    that fails. Needs the secrets (.env). The images are checked by `up` itself, after they are built."""
    specs = specs if specs is not None else local_services(settings, ImageSet("", "", ""))
    check_owner(client, settings)
    check_names(client, settings, specs)
    check_bind(settings)
    check_ports(client, settings, specs)
    check_bind_mounts(settings, specs)
    check_postgres(client, settings)


def check_names(client: docker.DockerClient, settings: Settings, specs: list[ServiceSpec]) -> None:
    """PlatformError when a container with a name `up` uses exists but is not this project's (no
    io.mlopskit.project label with local.project): `up` would remove it to make room."""
    for name in [container_name(settings, spec.name) for spec in specs] + [container_name(settings, "migrate")]:
        found = _container(client, name)
        if found is not None and found.labels.get(PROJECT_LABEL) != settings.local.project:
            raise PlatformError(
                f"a container named {name} exists that this project did not create (it has no label "
                f"{PROJECT_LABEL}={settings.local.project}); nothing was changed. Rename or remove it yourself "
                f"(`docker rm -f {name}` if it is no longer needed), or set local.project in {PLATFORM_FILE} "
                "to another name"
            )


# local.bind values that mean every address of a family: always bindable.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104


def bind_problem(bind: str) -> str | None:
    """Why a socket cannot be bound to (bind, any port) on this machine, e.g. 'Cannot assign requested address'
    for an address it does not have; None when it can (as Docker's port proxy will)."""
    if bind in WILDCARD_BINDS:
        return None
    try:
        refused = _listen_error(bind, 0, numeric=True)
    except socket.gaierror as exc:
        return str(exc.strerror or exc)
    return None if refused is None else str(refused.strerror or refused)


def _listen_error(bind: str | None, port: int, *, numeric: bool = False) -> OSError | None:
    """The error opening a listening socket on (bind, port) now, as Docker's port proxy opens it, gives; None
    when it opens. socket.gaierror when bind is no address (numeric: only an IP address is taken)."""
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if numeric else 0)
    family, kind, proto, _, address = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=flags)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as exc:
            return exc
    return None


def check_bind(settings: Settings) -> None:
    """PlatformError naming local.bind (with its source) when it is not an address of this machine: Docker
    would fail to publish the ports only after `up` replaced the container."""
    bind = settings.local.bind
    problem = bind_problem(bind)
    if problem is not None:
        raise PlatformError(
            f"{settings.describe('local.bind')}: {bind} is not an address of this machine ({problem}); nothing was "
            "created or started. Set it to an address this machine has (`ip -brief address` lists them), e.g. "
            "127.0.0.1 for this machine only or 0.0.0.0 for every address"
        )


def check_bind_mounts(settings: Settings, specs: list[ServiceSpec]) -> None:
    """PlatformError when a folder of the project a container mounts (docker/postgres-init) is missing: Docker
    would mount an empty folder in its place, and a new PostgreSQL would lack the auth database."""
    for spec in specs:
        for host in spec.bind_mounts:
            if not Path(host).is_dir():
                raise PlatformError(
                    f"{spec.name}: the folder {host} it mounts is missing from the project; nothing was changed. "
                    "Restore it (`git checkout -- docker/`)"
                )


def check_images(client: docker.DockerClient, specs: list[ServiceSpec]) -> None:
    """PlatformError naming every image a container needs that Docker does not have."""
    missing = []
    for spec in specs:
        try:
            client.images.get(spec.image)
        except ImageNotFound:
            missing.append(f"{spec.image} ({spec.name})")
    if missing:
        raise PlatformError(
            f"image(s) {', '.join(missing)} do not exist; nothing was changed. Run `invoke build-images`"
        )


# What PostgreSQL answers a wrong password with (libpq and psql print it alike).
PASSWORD_REFUSED = "password authentication failed"


@dataclass(frozen=True)
class PostgresInit:
    """What the kept PostgreSQL data was initialised with, and where `up` read it."""

    user: str
    databases: tuple[str, ...]  # tracking, auth (empty when unknown)
    source: str


def _environment(container: Container) -> dict[str, str]:
    items = container.attrs.get("Config", {}).get("Env") or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def postgres_init(client: docker.DockerClient, settings: Settings, container_env: bool = True) -> PostgresInit | None:
    """The user and databases of the kept PostgreSQL data volume: from the existing postgres container's
    environment (POSTGRES_USER, POSTGRES_DB, MLFLOW_AUTH_DB; skipped when not container_env, e.g. once `up` has
    recreated it with the new settings), else from the labels `up` puts on the volume when it creates it; None
    when there is no volume or neither source tells."""
    volume_label = volume_name(settings, "postgres-data")
    try:
        volume = client.volumes.get(volume_label)
    except NotFound:
        return None
    container = _container(client, container_name(settings, POSTGRES)) if container_env else None
    if container is not None:
        env = _environment(container)
        if env.get("POSTGRES_USER"):
            databases = (env.get("POSTGRES_DB") or env["POSTGRES_USER"], env.get("MLFLOW_AUTH_DB", ""))
            return PostgresInit(
                env["POSTGRES_USER"], tuple(d for d in databases if d), f"the environment of container {container.name}"
            )
    labels = (volume.attrs or {}).get("Labels") or {}
    if labels.get(PG_USER_LABEL):
        databases = tuple(d for d in labels.get(PG_DATABASES_LABEL, "").split(",") if d)
        return PostgresInit(labels[PG_USER_LABEL], databases, f"the labels of volume {volume_label}")
    return None


def _ways_out(what: str) -> str:
    return (
        f"Put {what} back in {PLATFORM_FILE}, or start with empty data: `invoke down --volumes` then `invoke up` "
        "(this deletes every run and artifact; `invoke backup` first to keep them)"
    )


def user_changed(settings: Settings, init: PostgresInit) -> str:
    """The kept volume was initialised with another user than platform.postgres.user: what it holds, the fix."""
    pg = settings.platform.postgres
    return (
        f"the kept volume {volume_name(settings, 'postgres-data')} was initialised with PostgreSQL user "
        f"{init.user!r} (read from {init.source}), but {settings.describe('platform.postgres.user')} is now "
        f"{pg.user!r}; nothing was changed. "
        + _ways_out(f"user: {init.user}")
        + f", or create the role {pg.user!r} yourself while the old stack runs"
    )


def databases_missing(settings: Settings, held: Sequence[str], source: str) -> str | None:
    """The settings name a tracking or auth database the kept volume does not hold: what it holds, the fixes;
    None when it holds both."""
    pg = settings.platform.postgres
    wanted = {"platform.postgres.tracking_db": pg.tracking_db, "platform.postgres.auth_db": pg.auth_db}
    missing = {path: name for path, name in wanted.items() if name not in held}
    if not missing:
        return None
    said = " and ".join(f"{settings.describe(path)} names {name!r}" for path, name in missing.items())
    container = container_name(settings, POSTGRES)
    creates = "; ".join(f"createdb -U {pg.user} -O {pg.user} {name}" for name in missing.values())
    return (
        f"the kept volume {volume_name(settings, 'postgres-data')} holds database(s) "
        f"{', '.join(repr(d) for d in held) or 'none'} (read from {source}), but {said}; nothing was changed. "
        + _ways_out("the old name(s)")
        + f", or create the database yourself while the old stack runs (`docker exec {container} {creates}`)"
    )


def password_refused(client: docker.DockerClient, settings: Settings, container_env: bool = True) -> str:
    """The plain explanation of PASSWORD_REFUSED for this stack. PostgreSQL does not tell a client whether the
    user exists, so the cause comes from what `up` knows of the kept volume (postgres_init, container_env as
    there): another user, another password, or, for a volume without that record, either."""
    pg = settings.platform.postgres
    if pg.mode != "internal":
        return (
            f"the PostgreSQL server refused user {pg.user!r} with POSTGRES_PASSWORD (or POSTGRES_DSN) from .env; "
            "set the password the server expects"
        )
    volume = volume_name(settings, "postgres-data")
    init = postgres_init(client, settings, container_env)
    if init is not None and init.user != pg.user:
        return user_changed(settings, init)
    put_back = (
        f"put back the POSTGRES_PASSWORD the data was created with (e.g. from the {ENV_FILE} of the checkout that "
        "first ran `invoke up`), or delete the data with `invoke down --volumes` (or `invoke restore ARCHIVE` "
        "afterwards) and run `invoke up` again"
    )
    if init is not None:
        return (
            f"the kept volume {volume} was initialised with another POSTGRES_PASSWORD than the one in "
            f"{settings.root / ENV_FILE} (PostgreSQL refused user {pg.user!r}, the user it was initialised with); "
            + put_back
        )
    return (
        f"PostgreSQL on the kept volume {volume} refused user {pg.user!r} with the POSTGRES_PASSWORD in "
        f"{settings.root / ENV_FILE}: the volume was initialised either with another POSTGRES_PASSWORD or with "
        f"another user than {settings.describe('platform.postgres.user')} (it predates the labels that record "
        f"the user). Put back the user and password the data was created with, or {put_back.partition(', or ')[2]}"
    )


def check_postgres(client: docker.DockerClient, settings: Settings) -> None:
    """PlatformError when the kept PostgreSQL data does not fit the settings, before anything is recreated:
    a running postgres container is asked with psql over TCP (scram-sha-256, as MLflow connects) whether
    .env's POSTGRES_PASSWORD is accepted and which databases exist; otherwise postgres_init tells the user and
    databases the volume was initialised with."""
    pg = settings.platform.postgres
    if pg.mode != "internal":
        return
    container = _container(client, container_name(settings, POSTGRES))
    if container is not None and container.status == "running":
        query = "select datname from pg_database where not datistemplate"
        command = ["psql", "-h", "127.0.0.1", "-U", pg.user, "-d", "postgres", "-w", "-tAc", query]
        try:
            code, output = container.exec_run(command, environment={"PGPASSWORD": settings.secrets.postgres_password})
        except APIError:
            return  # a container that cannot run psql now: the migrations report what goes wrong
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        if code != 0 and PASSWORD_REFUSED in text:
            raise PlatformError(f"{password_refused(client, settings)}; nothing was changed")
        if code == 0:
            held = [line.strip() for line in text.splitlines() if line.strip() and line.strip() != "postgres"]
            problem = databases_missing(settings, held, f"the running container {container.name}")
            if problem is not None:
                raise PlatformError(problem)
        return
    init = postgres_init(client, settings)
    if init is None:
        return
    if init.user != pg.user:
        raise PlatformError(user_changed(settings, init))
    if init.databases:
        problem = databases_missing(settings, init.databases, init.source)
        if problem is not None:
            raise PlatformError(problem)


def check_owner(client: docker.DockerClient, settings: Settings) -> None:
    """PlatformError when containers of this project (local.project) were created from another project root:
    `up` or `down` here would replace or remove a stack another checkout runs, with other secrets."""
    containers, _, _ = project_objects(client, settings)
    here = str(settings.root)
    others = sorted({c.labels[ROOT_LABEL] for c in containers if c.labels.get(ROOT_LABEL, here) != here})
    if others:
        names = ", ".join(sorted(str(c.name) for c in containers))
        raise PlatformError(
            f"the local stack of project {settings.local.project!r} ({names}) was started from "
            f"{' and '.join(others)}, not from {here}; nothing was changed. Run `invoke down` in {others[0]} first "
            f"(its data volumes are kept), or set local.project in {here}/config/platform.yaml to another name "
            "to run a second stack next to it"
        )


def _held_ports(client: docker.DockerClient, settings: Settings) -> set[int]:
    """Host ports published by this project's running containers (`up` frees them when it recreates one)."""
    containers, _, _ = project_objects(client, settings)
    held = set()
    for container in containers:
        if container.status != "running":
            continue
        for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            held |= {int(b["HostPort"]) for b in bindings or [] if str(b.get("HostPort", "")).isdigit()}
    return held


def port_free(bind: str, port: int) -> bool:
    """Whether a listening socket on (bind, port) could be opened now, as Docker's port proxy opens it."""
    try:
        refused = _listen_error(bind or None, port)
    except socket.gaierror:
        return True  # Docker reports an address it cannot bind when it starts the container
    if refused is None:
        return True
    if refused.errno in {errno.EADDRINUSE, errno.EACCES}:
        return False
    raise refused


def check_ports(client: docker.DockerClient, settings: Settings, specs: list[ServiceSpec]) -> None:
    """PlatformError naming every fixed host port `up` would publish that something else holds, before
    anything is created; ports this project's own running containers hold are fine (they are kept or freed)."""
    held = _held_ports(client, settings)
    bind = settings.local.bind or "0.0.0.0"  # noqa: S104 - named in a message
    for spec in specs:
        port = spec.host_port
        if not spec.publish or port is None or port in held or port_free(settings.local.bind, port):
            continue
        raise PlatformError(
            f"{spec.name}: port {port} on {bind} is already in use; nothing was created or started. Stop what "
            f"uses it (`ss -ltnp 'sport = :{port}'` shows it), or change "
            f"{settings.describe('local.port')} to a free port"
        )


def previous_admin_password(client: docker.DockerClient, settings: Settings) -> list[PreviousPassword]:
    """The admin password in the running MLflow container's environment, when it differs from .env."""
    container = _container(client, container_name(settings, MLFLOW))
    if container is None:
        return []
    prefix = f"{ENV_ADMIN_PASSWORD}="
    environment = container.attrs.get("Config", {}).get("Env") or []
    old = next((item.removeprefix(prefix) for item in environment if item.startswith(prefix)), None)
    wanted = settings.platform.mlflow.admin_password
    if not old or (wanted is not None and old == wanted.get_secret_value()):
        return []
    return [PreviousPassword(old, f"the environment of container {container.name}")]


def reconcile_mlflow(settings: Settings, url: str, previous: list[PreviousPassword]) -> dict[str, str]:
    """The admin password from .env (rotated when it changed), then config/access.yaml applied without prune."""
    actions = {"mlflow admin password": access.ensure_admin_password(settings, url, previous)}
    if settings.access.declared:
        mlflow = settings.platform.mlflow
        assert mlflow.admin_password is not None  # settings.require("up")
        admin = MlflowClient(url, mlflow.admin_user, mlflow.admin_password.get_secret_value())
        done = access.apply_plan(settings, admin, access.make_plan(settings, admin))
        actions[f"mlflow access ({ACCESS_FILE})"] = f"{len(done)} change(s) applied" if done else "unchanged"
    return actions


def project_objects(client: docker.DockerClient, settings: Settings) -> tuple[list[Container], list[Any], list[Any]]:
    label = f"{PROJECT_LABEL}={settings.local.project}"
    # ignore_removed: a container removed between the listing and its inspection is not an error.
    containers = client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
    networks = client.networks.list(filters={"label": label})
    volumes = client.volumes.list(filters={"label": label})
    return containers, networks, volumes


def down(client: docker.DockerClient, settings: Settings, volumes: bool = False, dry_run: bool = False) -> list[str]:
    """Stop and remove the containers and network; with volumes, the data too. Returns what was removed.
    PlatformError (check_owner) when another checkout's `up` created them."""
    check_owner(client, settings)
    containers, networks, project_volumes = project_objects(client, settings)
    removed = [f"container {c.name}" for c in containers] + [f"network {n.name}" for n in networks]
    if volumes:
        removed += [f"volume {v.name}" for v in project_volumes]
    if dry_run:
        return removed
    for container in containers:
        container.remove(force=True)
    for network in networks:
        network.remove()
    if volumes:
        for volume in project_volumes:
            volume.remove(force=True)
    return removed


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str
    state: str
    health: str
    address: str
    image: str


def status(client: docker.DockerClient, settings: Settings) -> list[ServiceStatus]:
    """One row per service of the local platform, present or not."""
    rows = []
    for service in ("postgres", "s3", "mlflow"):
        name = container_name(settings, service)
        container = _container(client, name)
        if container is None:
            rows.append(ServiceStatus(service, name, "absent", "-", "-", "-"))
            continue
        state = container.attrs.get("State", {})
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        addresses = [f"{b['HostIp']}:{b['HostPort']}" for bindings in ports.values() if bindings for b in bindings]
        image = container.attrs.get("Config", {}).get("Image", "?")
        rows.append(
            ServiceStatus(
                service,
                name,
                str(state.get("Status", "?")),
                str(state.get("Health", {}).get("Status", "-")),
                ", ".join(addresses) or "-",
                str(image),
            )
        )
    return rows
