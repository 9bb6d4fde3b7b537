"""Benchmarks of the local platform: image size, authenticated latency and throughput, memory, `invoke up`
time, backup/restore MB/s.

Run with `nox -s bench` (or `python -m mlopskit.bench`). Results are printed as a table and written to
bench-results/bench.json. A benchmark, not a test: it reports numbers and whether each target is met, with
both sides of every comparison measured in the same run, the spread of repeated runs, and the machine's
load while it ran (a shared or busy machine shows in the load average: read the figures with it).

It runs a throwaway stack (project "mlopskit-bench", fresh secrets, loopback only) from the same code
`invoke build-images` and `invoke up` use, and removes it, volumes included, at the end.

Targets (issue 13, item 5; the throughput against MLflow's defaults is issue 3's):
- MLflow image size at most 0.35x a naive single-stage image on the same base;
- authenticated p95 latency at 8 clients at most 100 ms, and authenticated throughput at least 0.9x the same
  server (same image, workers and stores) without authentication; the clients are a user who is not an admin,
  with EDIT on the experiment (an admin skips basic-auth's permission checks); at least 10x `mlflow server --app-name
  basic-auth` with MLflow's default settings;
- the MLflow container's memory at idle and at its peak under the load at most 0.6 GiB (2 workers);
- `invoke up` from stopped containers, images present, to healthy in at most 25 s (median of the runs).

Without a target, to show where the time goes: the CPU each side's MLflow container and the shared PostgreSQL
use per request (ms, from their cgroups), and backup/restore MB/s against pg_dump/pg_restore and boto3 by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

import docker
from mlopskit import console, credentials, local
from mlopskit.contract import MLFLOW_PORT
from mlopskit.errors import PlatformError
from mlopskit.images import BuildSpec, ImageBuilder, build_image, ensure_images, host_build_files, image_size
from mlopskit.services import (
    MLFLOW,
    POSTGRES,
    S3,
    S3_PORT,
    ImageSet,
    ServiceSpec,
    container_name,
    local_services,
    network_name,
)
from mlopskit.settings import Settings, load_settings

RESULTS = Path("bench-results/bench.json")
PROJECT = "mlopskit-bench"
NAIVE_IMAGE = "mlopskit/bench-naive-mlflow:3.17.2"
SIZE_TARGET = 0.35
P95_TARGET_MS = 100.0
AUTH_COST_TARGET = 0.9  # authenticated throughput / the same server's without authentication
DEFAULT_SPEEDUP_TARGET = 10.0  # throughput / `mlflow server --app-name basic-auth` with default settings
MEMORY_TARGET_BYTES = int(0.6 * 2**30)
UP_TARGET_S = 25.0
TIMEOUT = 30
MIB = 2**20

# The comparison image: what most guides do, one stage, one `pip install`, pip's defaults kept.
# The offline Python base has no system pip (as Debian's), so the venv is where pip lives.
NAIVE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG MLFLOW_VERSION
COPY build/ /tmp/build/
RUN set -eu; \\
    if [ -s /tmp/build/ca.crt ]; then export PIP_CERT=/tmp/build/ca.crt; fi; \\
    export PIP_CONFIG_FILE=/tmp/build/pip.conf; \\
    python3 -m venv /opt/venv; \\
    /opt/venv/bin/pip install "mlflow[auth]==${MLFLOW_VERSION}" psycopg boto3
ENV PATH=/opt/venv/bin:$PATH
"""


@dataclass
class Measurement:
    """One figure; with a target, `met` says whether it is met, and `ours`/`theirs` give both sides."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    detail: str = ""
    ours: str = ""  # this platform's side of a comparison
    theirs: str = ""  # the other side, measured in the same run


@dataclass
class BenchReport:
    started: str
    measurements: list[Measurement] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    load: list[dict[str, Any]] = field(default_factory=list)  # the machine's load average per phase

    def add(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)

    def note_load(self, phase: str) -> None:
        """Record the machine's 1-minute load average (runnable processes; the CPU count is the full load)."""
        self.load.append({"phase": phase, "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()})


def spread(values: list[float], unit: str, digits: int = 1) -> str:
    """'median M (min-max over N runs)' for repeated runs."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f} {unit} (1 run)"
    return (
        f"median {statistics.median(values):.{digits}f} {unit} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f} over {len(values)} runs)"
    )


# ------------------------------------------------------------------------------------------ settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_settings(repo: Path, workdir: Path) -> Settings:
    """Settings of a throwaway project: the repository's docker/, fresh secrets, a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "docker").symlink_to(repo / "docker")
    (workdir / "config").mkdir()
    (workdir / "config/platform.yaml").write_text(
        f"local:\n  project: {PROJECT}\n  bind: 127.0.0.1\n  port: {_free_port()}\n"
    )
    environ = {
        "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "S3_ACCESS_KEY": "bench" + secrets.token_hex(6),
        "S3_SECRET_KEY": secrets.token_urlsafe(24),
        # The image the repository builds, whatever the temporary directory's (absent) git says.
        "IMAGE_TAG": "bench",
    }
    return load_settings(workdir, environ)


# -------------------------------------------------------------------------------------------- image size


def naive_image(client: docker.DockerClient, settings: Settings, python_base: str, workdir: Path) -> str:
    """Build (or reuse, by input hash) the naive single-stage image on the same base."""
    context = workdir / "naive"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(NAIVE_DOCKERFILE)
    spec = BuildSpec(
        "naive-mlflow",
        context,
        [NAIVE_IMAGE],
        {"BASE_IMAGE": python_base, "MLFLOW_VERSION": settings.images.mlflow_version},
        [python_base],
        needs_build_files=True,
    )
    return build_image(client, spec, host_build_files(), _build_reporter()).ref


def _build_reporter() -> Callable[[str, int, int, str], None]:
    def report(image: str, step: int, total: int, text: str) -> None:
        if text:
            console.info(f"    {image} [{step}/{total}] {text[:100]}")

    return report


def measure_size(
    client: docker.DockerClient, settings: Settings, images: ImageSet, workdir: Path, report: BenchReport
) -> None:
    python_base = ImageBuilder(settings, client).resolve(settings.images.python_base, "python")
    naive = naive_image(client, settings, python_base, workdir)
    ours, theirs = image_size(client, images.mlflow), image_size(client, naive)
    ratio = ours / theirs
    report.raw["image"] = {"mlflow": images.mlflow, "mlflow_bytes": ours, "naive": naive, "naive_bytes": theirs}
    report.add(
        Measurement(
            "MLflow image size / naive single-stage image",
            round(ratio, 3),
            "x",
            f"<= {SIZE_TARGET}",
            ratio <= SIZE_TARGET,
            f"both on {python_base}",
            ours=f"{ours / 1e6:.0f} MB",
            theirs=f"{theirs / 1e6:.0f} MB",
        )
    )


# -------------------------------------------------------------------------------------------- throughput


@dataclass
class Load:
    clients: int
    requests_per_client: int
    max_seconds: float


@dataclass
class LoadResult:
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    # CPU ms per successful request, per container ("mlflow", "postgres"), measured around the run.
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p95_ms(self) -> float:
        if not self.latencies_ms:
            return math.inf
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _session(user: str, password: str) -> requests.Session:
    session = requests.Session()
    session.auth = (user, password)
    return session


def member_of(url: str, admin: requests.Session, experiment_id: str) -> tuple[str, str]:
    """A new user who is not an admin, with EDIT on the experiment, as a team's users are: (name, password).

    Clients run as this user, so every run-scoped call goes through basic-auth's permission checks (an
    admin skips them)."""
    user, password = f"bench-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    created = admin.post(
        f"{url}/api/2.0/mlflow/users/create", json={"username": user, "password": password}, timeout=TIMEOUT
    )
    created.raise_for_status()
    granted = admin.post(
        f"{url}/api/3.0/mlflow/users/permissions/grant",
        json={"username": user, "resource_type": "experiment", "resource_id": experiment_id, "permission": "EDIT"},
        timeout=TIMEOUT,
    )
    granted.raise_for_status()
    return user, password


def run_load(url: str, user: str, password: str, load: Load, *, authenticated: bool = True) -> LoadResult:
    """Clients alternate log_metric and get_run on their own run; bounded by count and by time.

    With `authenticated`, the admin (user, password) creates the experiment and the clients run as a member
    of it who is not an admin (member_of); without, the server has no users and the credentials are ignored."""
    admin = _session(user, password)
    experiment = admin.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": f"bench-{uuid.uuid4().hex[:8]}"}, timeout=TIMEOUT
    )
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]
    if authenticated:
        user, password = member_of(url, admin, experiment_id)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + load.max_seconds

    def client() -> None:
        session = _session(user, password)
        run = session.post(f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}, timeout=TIMEOUT)
        run.raise_for_status()
        run_id = run.json()["run"]["info"]["run_id"]
        mine: list[float] = []
        failed = 0
        for step in range(load.requests_per_client):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            if step % 2 == 0:
                body = {"run_id": run_id, "key": "m", "value": step, "timestamp": int(time.time() * 1000), "step": step}
                response = session.post(f"{url}/api/2.0/mlflow/runs/log-metric", json=body, timeout=TIMEOUT)
            else:
                response = session.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=TIMEOUT)
            elapsed = (time.perf_counter() - started) * 1000
            if response.ok:
                mine.append(elapsed)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(load.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(len(latencies), errors[0], time.perf_counter() - started, latencies)


# ------------------------------------------------------------------------------------------- memory


def container_memory(container: Any) -> int:
    """Bytes the container uses as `docker stats` counts them: cgroup usage minus inactive page cache."""
    memory = container.stats(stream=False, one_shot=True).get("memory_stats", {})
    stats = memory.get("stats", {})
    inactive = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return int(memory.get("usage", 0)) - int(inactive)


def container_cpu_seconds(container: Any) -> float:
    """CPU seconds the container has used since it started (its cgroup's usage, all cores), as `docker stats`
    reads it."""
    usage = container.stats(stream=False, one_shot=True).get("cpu_stats", {}).get("cpu_usage", {})
    return int(usage.get("total_usage", 0)) / 1e9


def process_count(container: Any) -> int:
    return len(container.top().get("Processes") or [])


class MemorySampler:
    """Samples a container's memory every `interval` seconds in a thread; `peak` is the highest seen."""

    def __init__(self, container: Any, interval: float = 0.5) -> None:
        self.container = container
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(docker.errors.APIError, requests.RequestException):
                self.peak = max(self.peak, container_memory(self.container))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_starts(container: Any) -> int:
    """How often a server worker started in the container (uvicorn logs each): more than the workers means
    uvicorn replaced a worker, e.g. one that did not answer its health ping on a starved machine."""
    return bytes(container.logs()).count(b"Started server process")


def idle_memory(container: Any, settle: float = 5.0, samples: int = 3) -> int:
    """The median of a few samples after `settle` seconds without requests."""
    time.sleep(settle)
    values = []
    for _ in range(samples):
        values.append(container_memory(container))
        time.sleep(1.0)
    return int(statistics.median(values))


# ------------------------------------------------------------------------------------------- servers


# MLflow 3.17 ships no default admin password; the comparison server gets a fresh one.
DEFAULT_ADMIN = ("admin", secrets.token_urlsafe(18))


@dataclass
class Side:
    """A server the load runs against: its URL, its admin's credentials, its container, and whether it
    authenticates (the load then runs as a member who is not an admin, see run_load)."""

    label: str
    url: str
    user: str
    password: str
    container: Any
    authenticated: bool = True


def _mlflow_spec(settings: Settings, images: ImageSet) -> ServiceSpec:
    return next(spec for spec in local_services(settings, images) if spec.name == MLFLOW)


@contextmanager
def comparison_server(
    client: docker.DockerClient,
    settings: Settings,
    images: ImageSet,
    name: str,
    command: list[str],
    environment: dict[str, str],
) -> Iterator[tuple[str, Any]]:
    """An extra MLflow container from the platform's image on the stack's network and stores; (url, container)."""
    port = _free_port()
    container = client.containers.run(
        images.mlflow,
        command,
        name=container_name(settings, name),
        environment=environment,
        network=network_name(settings),
        ports={f"{MLFLOW_PORT}/tcp": ("127.0.0.1", port)},
        labels={local.PROJECT_LABEL: settings.local.project},
        detach=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        local.wait_ready(container, name, probe=local.http_probe(f"{url}/health"))
        yield url, container
    finally:
        container.remove(force=True)


def open_server_command(settings: Settings, images: ImageSet) -> list[str]:
    """The platform's server without authentication: the image's same `serve` path (one process, uvicorn's
    TCP_NODELAY kept, same workers, stores, artifact proxy and hosts), only without `--app-name`."""
    environment = _mlflow_spec(settings, images).environment
    # Listens on every interface inside the container; published on 127.0.0.1 only.
    listen = "0.0.0.0"  # noqa: S104
    return [
        "python3", "-m", "mlopskit_mlflow_app", "serve", "--host", listen, "--port", str(MLFLOW_PORT),
        "--workers", environment["MLFLOW_WORKERS"],
        "--backend-store-uri", environment[credentials.ENV_BACKEND_STORE_URI],
        "--artifacts-destination", environment["MLFLOW_ARTIFACTS_DESTINATION"], "--serve-artifacts",
        "--allowed-hosts", environment["MLFLOW_ALLOWED_HOSTS"],
    ]  # fmt: skip


def default_server_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """`mlflow server --app-name basic-auth` with MLflow's defaults (issue 3's comparison) and its environment."""
    store = settings.platform.object_store
    tracking, _ = credentials.database_uris(settings, "postgres")
    listen = "0.0.0.0"  # noqa: S104
    command = [
        "mlflow", "server", "--app-name", "basic-auth", "--host", listen, "--port", str(MLFLOW_PORT),
        "--backend-store-uri", tracking, "--artifacts-destination", f"s3://{store.bucket}/",
    ]  # fmt: skip
    assert store.access_key is not None and store.secret_key is not None
    environment = {
        "AWS_ACCESS_KEY_ID": store.access_key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": store.secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": store.region,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{S3}:{S3_PORT}",
        # Not tuning settings: MLflow 3.17 refuses to start basic-auth without a CSRF key and an admin password.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
        "MLFLOW_AUTH_ADMIN_USERNAME": DEFAULT_ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": DEFAULT_ADMIN[1],
    }
    return command, environment


def _load_summary(result: LoadResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "errors": result.errors,
        "seconds": round(result.seconds, 2),
        "rps": round(result.rate, 1),
        "p95_ms": round(result.p95_ms, 1),
        "cpu_ms_per_request": result.cpu_ms_per_request,
    }


def _pooled(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        sum(r.ok for r in results),
        sum(r.errors for r in results),
        sum(r.seconds for r in results),
        [latency for r in results for latency in r.latencies_ms],
    )


WARM_UP_REQUESTS = 50  # per client: a fresh server is slower for its first few hundred requests (measured)


def warm_up(sides: list[Side], load: Load) -> None:
    """The same load, shorter, on each side first: every worker has its database connections, compiled
    queries and lazily imported modules before anything is measured."""
    for side in sides:
        run_load(
            side.url,
            side.user,
            side.password,
            Load(load.clients, WARM_UP_REQUESTS, load.max_seconds),
            authenticated=side.authenticated,
        )


def run_rounds(
    sides: list[Side], load: Load, rounds: int, report: BenchReport, database: Any
) -> dict[str, list[LoadResult]]:
    """`rounds` rounds of the same load on each side, the order rotated each round; each result carries the
    CPU its MLflow container and the shared PostgreSQL container (`database`) used per request."""
    results: dict[str, list[LoadResult]] = {side.label: [] for side in sides}
    for round_no in range(rounds):
        order = sides[round_no % len(sides) :] + sides[: round_no % len(sides)]
        for side in order:
            report.note_load(f"load round {round_no + 1}: {side.label}")
            console.step(f"round {round_no + 1}/{rounds}: {side.label} ({load.clients} clients)")
            before = (container_cpu_seconds(side.container), container_cpu_seconds(database))
            result = run_load(side.url, side.user, side.password, load, authenticated=side.authenticated)
            after = (container_cpu_seconds(side.container), container_cpu_seconds(database))
            if result.ok:
                result.cpu_ms_per_request = {
                    name: round((end - start) * 1000 / result.ok, 2)
                    for name, start, end in zip(("mlflow", "postgres"), before, after, strict=True)
                }
            console.info(
                f"    {result.rate:.1f} req/s, p95 {result.p95_ms:.0f} ms, {result.errors} errors; CPU per request: "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in result.cpu_ms_per_request.items())
            )
            results[side.label].append(result)
    return results


def measure_load(
    client: docker.DockerClient, settings: Settings, images: ImageSet, load: Load, rounds: int, report: BenchReport
) -> None:
    """Latency, throughput and memory of the platform's MLflow, against the same server without authentication
    and against MLflow's default basic-auth, all on the bench stack's Postgres and S3, in alternating rounds."""
    password = settings.platform.mlflow.admin_password
    assert password is not None
    platform = client.containers.get(container_name(settings, MLFLOW))
    ours = Side(
        "platform",
        local.mlflow_url(settings),
        settings.platform.mlflow.admin_user,
        password.get_secret_value(),
        platform,
    )
    workers = _mlflow_spec(settings, images).environment["MLFLOW_WORKERS"]
    default_command, default_env = default_server_command(settings)
    console.step("the same server without authentication, and `mlflow server --app-name basic-auth` with defaults")
    open_env = _mlflow_spec(settings, images).environment
    with (
        comparison_server(client, settings, images, "open-mlflow", open_server_command(settings, images), open_env) as (
            open_url,
            open_c,
        ),
        comparison_server(client, settings, images, "default-mlflow", default_command, default_env) as (
            default_url,
            default_c,
        ),
    ):
        sides = [
            ours,
            Side("without authentication", open_url, ours.user, ours.password, open_c, authenticated=False),
            Side("MLflow defaults (basic-auth)", default_url, *DEFAULT_ADMIN, default_c),
        ]
        warm_up(sides, load)
        report.note_load("memory at rest")
        idle = {"platform": idle_memory(platform), "open": idle_memory(open_c, settle=0.0)}
        processes = process_count(platform)
        starts_before = worker_starts(platform)
        with MemorySampler(platform) as sampled, MemorySampler(open_c) as sampled_open:
            results = run_rounds(sides, load, rounds, report, client.containers.get(container_name(settings, POSTGRES)))
        replaced = worker_starts(platform) - starts_before
    report.raw["load"] = {
        "load": asdict(load),
        "rounds": rounds,
        "workers": workers,
        "sides": {label: [_load_summary(r) for r in rs] for label, rs in results.items()},
        "memory_bytes": {"idle": idle, "peak": {"platform": sampled.peak, "open": sampled_open.peak}},
        "processes": processes,
        "workers_replaced_during_load": replaced,
    }
    auth, open_, default = (results[side.label] for side in sides)
    pooled = {label: _pooled(rs) for label, rs in results.items()}
    p95s = [r.p95_ms for r in auth]
    report.add(
        Measurement(
            f"authenticated p95 latency, {load.clients} clients",
            round(pooled["platform"].p95_ms, 1),
            "ms",
            f"<= {P95_TARGET_MS:.0f}",
            pooled["platform"].p95_ms <= P95_TARGET_MS,
            f"a member, not an admin; p95 of all {len(pooled['platform'].latencies_ms)} requests; "
            f"per round: {spread(p95s, 'ms', 0)}",
            ours=f"{pooled['platform'].p95_ms:.0f} ms",
            theirs=f"{pooled['without authentication'].p95_ms:.0f} ms without authentication",
        )
    )
    ratios = [a.rate / o.rate if o.rate else math.inf for a, o in zip(auth, open_, strict=True)]
    ratio = statistics.median(ratios)
    report.add(
        Measurement(
            "authenticated / unauthenticated throughput",
            round(ratio, 2),
            "x",
            f">= {AUTH_COST_TARGET}",
            ratio >= AUTH_COST_TARGET,
            f"same image, {workers} workers and stores; paired rounds: {spread(ratios, 'x', 2)}",
            ours=f"{pooled['platform'].rate:.1f} req/s",
            theirs=f"{pooled['without authentication'].rate:.1f} req/s",
        )
    )

    def cpu(results: list[LoadResult], name: str) -> float:
        return statistics.median(r.cpu_ms_per_request.get(name, math.nan) for r in results)

    report.add(
        Measurement(
            "CPU per request: MLflow container + PostgreSQL",
            round(cpu(auth, "mlflow") + cpu(auth, "postgres"), 1),
            "ms",
            detail="median of the rounds; where authentication's cost goes (no target)",
            ours=f"MLflow {cpu(auth, 'mlflow'):.1f} ms + PostgreSQL {cpu(auth, 'postgres'):.1f} ms",
            theirs=f"MLflow {cpu(open_, 'mlflow'):.1f} ms + PostgreSQL {cpu(open_, 'postgres'):.1f} ms "
            "without authentication",
        )
    )
    speedups = [a.rate / d.rate if d.rate else math.inf for a, d in zip(auth, default, strict=True)]
    speedup = statistics.median(speedups)
    defaults = pooled["MLflow defaults (basic-auth)"]
    report.add(
        Measurement(
            "throughput / MLflow's default basic-auth",
            round(speedup, 1),
            "x",
            f">= {DEFAULT_SPEEDUP_TARGET:.0f}",
            speedup >= DEFAULT_SPEEDUP_TARGET,
            f"paired rounds: {spread(speedups, 'x', 1)}; defaults p95 {defaults.p95_ms:.0f} ms",
            ours=f"{pooled['platform'].rate:.1f} req/s",
            theirs=f"{defaults.rate:.1f} req/s",
        )
    )
    errors = sum(r.errors for rs in results.values() for r in rs)
    if errors:
        report.add(Measurement("failed requests during the load", errors, "requests", "0", False, "see bench.json"))
    for label, value, other in (
        ("MLflow container memory at rest (after a warm-up)", idle["platform"], idle["open"]),
        ("MLflow container memory, peak under the load", sampled.peak, sampled_open.peak),
    ):
        report.add(
            Measurement(
                label,
                round(value / MIB),
                "MiB",
                f"<= {MEMORY_TARGET_BYTES / MIB:.0f}",
                value <= MEMORY_TARGET_BYTES,
                f"{workers} workers, {processes} processes, job runner off; `docker stats` memory"
                + (f"; uvicorn replaced {replaced} worker(s) during the load" if replaced else ""),
                ours=f"{value / MIB:.0f} MiB",
                theirs=f"{other / MIB:.0f} MiB without authentication",
            )
        )


# ----------------------------------------------------------------------------------------- up time


def measure_up(
    client: docker.DockerClient, settings: Settings, images: ImageSet, runs: int, report: BenchReport
) -> None:
    """`runs` times: stop every container of the stack, then time `up` (local.up, what `invoke up` runs) until
    healthy. The target applies to the median."""
    seconds = []
    for run_no in range(runs):
        containers, _, _ = local.project_objects(client, settings)
        for container in containers:
            container.stop(timeout=20)
        report.note_load(f"up run {run_no + 1}")
        started = time.perf_counter()
        result = local.up(client, settings, images)
        seconds.append(time.perf_counter() - started)
        console.info(f"    up run {run_no + 1}/{runs}: {seconds[-1]:.1f} s")
        report.raw.setdefault("up", {"runs": [], "actions": result.actions})["runs"].append(round(seconds[-1], 1))
    median = statistics.median(seconds)
    report.add(
        Measurement(
            "invoke up from stopped containers to healthy",
            round(median, 1),
            "s",
            f"<= {UP_TARGET_S:.0f}",
            median <= UP_TARGET_S,
            spread(seconds, "s"),
            ours=f"{median:.1f} s",
        )
    )


# -------------------------------------------------------------------------------------------------- main


def _print(report: BenchReport) -> None:
    def verdict(m: Measurement) -> str:
        return "" if m.met is None else ("met" if m.met else "NOT met")

    console.table(
        "mlopskit benchmark",
        ["measurement", "value", "target", "result", "this platform", "compared with (same run)", "detail"],
        [
            (m.name, f"{m.value} {m.unit}", m.target, verdict(m), m.ours, m.theirs, m.detail)
            for m in report.measurements
        ],
    )
    if report.load:
        loads = [entry["loadavg_1m"] for entry in report.load]
        console.info(
            f"machine: {report.load[0]['cpus']} CPUs; 1-minute load average during the phases "
            f"{min(loads):.1f}-{max(loads):.1f} (per phase in the JSON file); above the CPU count, other work "
            "competed for the CPUs and the figures are pessimistic"
        )


def run(args: argparse.Namespace, report: BenchReport) -> None:
    repo = Path(args.root).resolve()
    client = docker.from_env(timeout=900)
    with tempfile.TemporaryDirectory(prefix="mlopskit-bench-") as tmp:
        workdir = Path(tmp)
        settings = bench_settings(repo, workdir / "project")
        report.note_load("start")
        console.step("images (built or reused by input hash)")
        images = ensure_images(settings, _build_reporter(), client)
        try:
            if not args.skip_size:
                console.step("naive comparison image")
                measure_size(client, settings, images, workdir, report)
            if not (args.skip_throughput and args.skip_up and args.skip_backup):
                console.step(f"starting the bench stack ({PROJECT})")
                first = time.perf_counter()
                local.up(client, settings, images)
                report.raw["first_up_seconds"] = round(time.perf_counter() - first, 1)
            if not args.skip_throughput:
                load = Load(args.clients, args.requests, args.max_seconds)
                measure_load(client, settings, images, load, args.rounds, report)
            if not args.skip_up:
                console.step("up from stopped containers")
                measure_up(client, settings, images, args.up_runs, report)
            if not args.skip_backup:
                from mlopskit import bench_backup

                def add(name: str, value: float, unit: str, detail: str) -> None:
                    report.add(Measurement(name, value, unit, detail=detail))

                report.raw["backup"] = bench_backup.measure(settings, args.runs, args.objects, args.object_kb, add)
        finally:
            report.note_load("end")
            console.step(f"removing the bench stack ({PROJECT}), volumes included")
            local.down(client, settings, volumes=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlopskit.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the mlopskit repository (default: .)")
    parser.add_argument("--clients", type=int, default=8, help="parallel clients (default: 8)")
    parser.add_argument("--requests", type=int, default=150, help="requests per client and round (default: 150)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per load run (default: 60)")
    parser.add_argument("--rounds", type=int, default=3, help="load rounds per server, alternating (default: 3)")
    parser.add_argument("--up-runs", type=int, default=3, help="timed `up` runs from stopped (default: 3)")
    parser.add_argument("--skip-size", action="store_true", help="skip the image size comparison (default: run it)")
    parser.add_argument(
        "--skip-throughput", action="store_true", help="skip latency, throughput and memory (default: run them)"
    )
    parser.add_argument("--skip-up", action="store_true", help="skip the up timing (default: run it)")
    parser.add_argument("--skip-backup", action="store_true", help="skip backup/restore throughput (default: run it)")
    parser.add_argument("--runs", type=int, default=2000, help="runs for the backup bench (default: 2000)")
    parser.add_argument("--objects", type=int, default=200, help="S3 objects for the backup bench (default: 200)")
    parser.add_argument("--object-kb", type=int, default=256, help="size of each object in KB (default: 256)")
    parser.add_argument("--output", default=str(RESULTS), help=f"JSON results file (default: {RESULTS})")
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "rounds", "up_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = BenchReport(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    failure = None
    try:
        run(args, report)
    except PlatformError as exc:
        failure = str(exc)
        report.raw["error"] = failure
    _print(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(report), indent=2) + "\n")
    console.ok(f"results written to {output}")
    if failure is not None:
        console.err_console.print(f"[red]error:[/] {failure}\n(the measurements above were taken before it)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
