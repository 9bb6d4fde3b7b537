"""Benchmarks of the local platform: image size, authenticated throughput, `invoke up` time, backup/restore MB/s.

Run with `nox -s bench` (or `python -m mlopskit.bench`). Results are printed as a table and written to
bench-results/bench.json. A benchmark, not a test: it reports numbers and whether each target is met.

It runs a throwaway stack (project "mlopskit-bench", fresh secrets, loopback only) from the same code
`invoke build-images` and `invoke up` use, and removes it, volumes included, at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

import docker
from mlopskit import console, credentials, local
from mlopskit.contract import MLFLOW_PORT
from mlopskit.errors import PlatformError
from mlopskit.images import BuildSpec, ImageBuilder, build_image, ensure_images, host_build_files, image_size
from mlopskit.services import S3, S3_PORT, ImageSet, container_name, network_name
from mlopskit.settings import Settings, load_settings

RESULTS = Path("bench-results/bench.json")
PROJECT = "mlopskit-bench"
NAIVE_IMAGE = "mlopskit/bench-naive-mlflow:3.17.2"
SIZE_TARGET = 0.45
THROUGHPUT_TARGET = 10.0
P95_TARGET_MS = 100.0
UP_TARGET_S = 40.0
TIMEOUT = 30

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
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    detail: str = ""


@dataclass
class BenchReport:
    started: str
    measurements: list[Measurement] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)


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
            "MLflow image size / naive image size",
            round(ratio, 3),
            "ratio",
            f"<= {SIZE_TARGET}",
            ratio <= SIZE_TARGET,
            f"{ours / 1e6:.0f} MB vs {theirs / 1e6:.0f} MB (base {python_base})",
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


def run_load(url: str, user: str, password: str, load: Load) -> LoadResult:
    """Clients alternate log_metric and get_run on their own run; bounded by count and by time."""
    admin = _session(user, password)
    experiment = admin.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": f"bench-{uuid.uuid4().hex[:8]}"}, timeout=TIMEOUT
    )
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]
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


# MLflow 3.17 ships no default admin password; the comparison server gets a fresh one.
DEFAULT_ADMIN = ("admin", secrets.token_urlsafe(18))


@contextmanager
def default_server(client: docker.DockerClient, settings: Settings, images: ImageSet) -> Iterator[str]:
    """`mlflow server --app-name basic-auth` with MLflow's defaults, on the stack's Postgres and S3."""
    store = settings.platform.object_store
    tracking, _ = credentials.database_uris(settings, "postgres")
    assert store.access_key is not None and store.secret_key is not None
    port = _free_port()
    # Listens on every interface inside the container; published on 127.0.0.1 only.
    listen = "0.0.0.0"  # noqa: S104
    command = [
        "mlflow", "server", "--app-name", "basic-auth", "--host", listen, "--port", str(MLFLOW_PORT),
        "--backend-store-uri", tracking, "--artifacts-destination", f"s3://{store.bucket}/",
    ]  # fmt: skip
    container = client.containers.run(
        images.mlflow,
        command,
        name=container_name(settings, "default-mlflow"),
        environment={
            "AWS_ACCESS_KEY_ID": store.access_key.get_secret_value(),
            "AWS_SECRET_ACCESS_KEY": store.secret_key.get_secret_value(),
            "AWS_DEFAULT_REGION": store.region,
            "MLFLOW_S3_ENDPOINT_URL": f"http://{S3}:{S3_PORT}",
            # Not tuning settings: MLflow 3.17 refuses to start basic-auth without a CSRF key and an admin password.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
            "MLFLOW_AUTH_ADMIN_USERNAME": DEFAULT_ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": DEFAULT_ADMIN[1],
        },
        network=network_name(settings),
        ports={f"{MLFLOW_PORT}/tcp": ("127.0.0.1", port)},
        labels={local.PROJECT_LABEL: settings.local.project},
        detach=True,
    )
    try:
        local.wait_healthy(container, "default-mlflow")
        yield f"http://127.0.0.1:{port}"
    finally:
        container.remove(force=True)


def _load_summary(result: LoadResult) -> dict[str, float]:
    return {
        "ok": result.ok,
        "errors": result.errors,
        "seconds": round(result.seconds, 2),
        "rps": round(result.rate, 1),
        "p95_ms": round(result.p95_ms, 1),
    }


def measure_throughput(
    client: docker.DockerClient, settings: Settings, images: ImageSet, load: Load, report: BenchReport
) -> None:
    password = settings.platform.mlflow.admin_password
    assert password is not None
    url = local.mlflow_url(settings)
    console.step(f"load on the platform's MLflow ({load.clients} clients x {load.requests_per_client} requests)")
    ours = run_load(url, settings.platform.mlflow.admin_user, password.get_secret_value(), load)
    report.raw["throughput"] = {"load": asdict(load), "platform": _load_summary(ours)}
    report.add(Measurement("platform requests/s", round(ours.rate, 1), "req/s", detail=f"{ours.errors} errors"))
    report.add(
        Measurement(
            "platform p95 latency", round(ours.p95_ms, 1), "ms", f"< {P95_TARGET_MS}", ours.p95_ms < P95_TARGET_MS
        )
    )
    console.step("load on `mlflow server --app-name basic-auth` with default settings")
    with default_server(client, settings, images) as default_url:
        theirs = run_load(default_url, *DEFAULT_ADMIN, load)
    report.raw["throughput"]["default"] = _load_summary(theirs)
    speedup = ours.rate / theirs.rate if theirs.rate else math.inf
    report.add(Measurement("default requests/s", round(theirs.rate, 1), "req/s", detail=f"{theirs.errors} errors"))
    report.add(Measurement("default p95 latency", round(theirs.p95_ms, 1), "ms"))
    report.add(
        Measurement(
            "throughput vs default", round(speedup, 2), "x", f">= {THROUGHPUT_TARGET}", speedup >= THROUGHPUT_TARGET
        )
    )


# ----------------------------------------------------------------------------------------- up time


def measure_up(client: docker.DockerClient, settings: Settings, images: ImageSet, report: BenchReport) -> None:
    """Stop every container of the stack, then time `up` (local.up, what `invoke up` runs) until healthy."""
    containers, _, _ = local.project_objects(client, settings)
    for container in containers:
        container.stop(timeout=20)
    started = time.perf_counter()
    result = local.up(client, settings, images)
    seconds = time.perf_counter() - started
    report.raw["up"] = {"seconds": round(seconds, 1), "actions": result.actions}
    report.add(
        Measurement("up from stopped containers", round(seconds, 1), "s", f"<= {UP_TARGET_S}", seconds <= UP_TARGET_S)
    )


# -------------------------------------------------------------------------------------------------- main


def _print(report: BenchReport) -> None:
    def verdict(m: Measurement) -> str:
        return "" if m.met is None else ("met" if m.met else "NOT met")

    console.table(
        "mlopskit benchmark",
        ["measurement", "value", "unit", "target", "result", "detail"],
        [(m.name, m.value, m.unit, m.target, verdict(m), m.detail) for m in report.measurements],
    )


def run(args: argparse.Namespace, report: BenchReport) -> None:
    repo = Path(args.root).resolve()
    client = docker.from_env(timeout=900)
    with tempfile.TemporaryDirectory(prefix="mlopskit-bench-") as tmp:
        workdir = Path(tmp)
        settings = bench_settings(repo, workdir / "project")
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
                measure_throughput(client, settings, images, load, report)
            if not args.skip_up:
                console.step("up from stopped containers")
                measure_up(client, settings, images, report)
            if not args.skip_backup:
                from mlopskit import bench_backup

                def add(name: str, value: float, unit: str, detail: str) -> None:
                    report.add(Measurement(name, value, unit, detail=detail))

                report.raw["backup"] = bench_backup.measure(settings, args.runs, args.objects, args.object_kb, add)
        finally:
            console.step(f"removing the bench stack ({PROJECT}), volumes included")
            local.down(client, settings, volumes=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlopskit.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the mlopskit repository (default: .)")
    parser.add_argument("--clients", type=int, default=8, help="parallel clients (default: 8)")
    parser.add_argument("--requests", type=int, default=150, help="requests per client (default: 150)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per load run (default: 60)")
    parser.add_argument("--skip-size", action="store_true", help="skip the image size comparison (default: run it)")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the throughput run (default: run it)")
    parser.add_argument("--skip-up", action="store_true", help="skip the up timing (default: run it)")
    parser.add_argument("--skip-backup", action="store_true", help="skip backup/restore throughput (default: run it)")
    parser.add_argument("--runs", type=int, default=2000, help="runs for the backup bench (default: 2000)")
    parser.add_argument("--objects", type=int, default=200, help="S3 objects for the backup bench (default: 200)")
    parser.add_argument("--object-kb", type=int, default=256, help="size of each object in KB (default: 256)")
    parser.add_argument("--output", default=str(RESULTS), help=f"JSON results file (default: {RESULTS})")
    return parser.parse_args(argv)


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
