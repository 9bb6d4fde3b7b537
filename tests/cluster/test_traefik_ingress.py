"""The platform's public host through the real Traefik, run as K3s runs its packaged ingress controller.

The platform is deployed with the real `invoke deploy` (platform.ingress on: INGRESS_HOST a name /etc/hosts gives
127.0.0.1, TLS from the Secret mlflow-tls holding a self-signed certificate this test trusts as a private CA).
Traefik is upstream's binary, started with the flags K3s's chart gives for the values of OUR rendered
HelmChartConfig (tests/cluster/traefik_ingress.py: the stand-in for K3s's helm-controller and for its ServiceLB
on 127.0.0.1:80/443 is there, named). A second Traefik with the chart's defaults (no HelmChartConfig applied)
answers on 127.0.0.1:9443, to show what the values change.

Every request goes where a user's would: https://<host>/ resolved by the system resolver, TLS verified, through
Traefik to MLflow's Service, MLflow's basic-auth app, and SeaweedFS behind it. The 1 GB artifacts go as MLflow's
own client sends them (MLflow 3.17.2's client PUTs a file to the proxied artifacts API in one streaming request:
its multipart upload is off by default and would go to presigned S3 URLs, which the platform's server refuses to
hand out) and as one streaming PUT of the file (curl -T). The tests share one deployment and run in file order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from mlopskit.cluster_checks import container_env, rendered
from mlopskit.public_host import TRAEFIK_ENTRY_POINTS_ANNOTATION
from tests.cluster.project import Platform, make_project
from tests.cluster.test_platform import PUBLIC_HOST, TLS_SECRET, doctor_rows, put_tls_secret
from tests.cluster.traefik_ingress import (
    CHART_DEFAULT_ARGS,
    WEB_PORT,
    WEBSECURE_PORT,
    Traefik,
    build_traefik_image,
    chart_args,
    helm_chart_config_values,
    ingress_class,
    only_namespace,
    relay,
    traefik,
    wait_for_route,
)
from tests.plain_client import random_file

pytestmark = pytest.mark.slow

DEFAULTS_PORT = 9443  # 127.0.0.1 port of the Traefik with the chart's defaults
GIB = 1 << 30
SEARCH = "api/2.0/mlflow/experiments/search?max_results=1"
BIG_TIMEOUT = 1800  # seconds per 1 GB test on a busy two-core machine


def go_seconds(duration: Any) -> float:
    """A Go duration ("1h0m0s", "3600s", "90s") or a plain number of seconds, in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(duration))
    assert parts and str(duration), f"not a Go duration: {duration!r}"
    hours, minutes, seconds = (float(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


@pytest.fixture(scope="module")
def platform(
    api: client.ApiClient, node_images: Callable[[list[str]], None], tmp_path_factory: Any
) -> Iterator[Platform]:
    if PUBLIC_HOST.endswith(".test"):
        pytest.skip("no name in /etc/hosts resolves to 127.0.0.1: the public host cannot be reached from here")
    deployed = make_project(
        tmp_path_factory.mktemp("project"),
        api,
        node_images,
        "mlopskit-traefik",
        INGRESS_ENABLED="true",
        INGRESS_HOST=PUBLIC_HOST,
        INGRESS_TLS_SECRET=TLS_SECRET,
    )
    try:
        done = deployed.invoke("deploy", "--timeout", "1200")
        assert done.returncode == 0, done.stdout + done.stderr
        yield deployed
    finally:
        deployed.destroy()


@pytest.fixture(scope="module")
def certificate(platform: Platform, tmp_path_factory: Any) -> Path:
    """The host's certificate, put into the TLS Secret the settings name; trusted by the clients here."""
    cert_file, _ = put_tls_secret(platform, 90, tmp_path_factory.mktemp("tls"))
    return cert_file


@pytest.fixture(scope="module")
def traefik_image(node_images: Callable[[list[str]], None]) -> str:
    ref = build_traefik_image()
    node_images([ref])
    return ref


@pytest.fixture(scope="module")
def values(platform: Platform) -> dict[str, Any]:
    """The chart values of the HelmChartConfig deploy applies on K3s with the platform's settings."""
    found = helm_chart_config_values(platform.settings())
    assert found, "no HelmChartConfig rendered for ingress class traefik"
    return found


@pytest.fixture(scope="module")
def configured(
    api: client.ApiClient,
    dyn: DynamicClient,
    platform: Platform,
    certificate: Path,
    traefik_image: str,
    values: dict[str, Any],
) -> Iterator[Traefik]:
    """Traefik with our HelmChartConfig's values, behind 127.0.0.1:443 (websecure) and :80 (web)."""
    args = CHART_DEFAULT_ARGS + only_namespace(platform.namespace) + chart_args(values)
    with contextlib.ExitStack() as stack:
        stack.enter_context(ingress_class(dyn))
        running = stack.enter_context(traefik(api, dyn, traefik_image, args))
        stack.enter_context(relay(running.pod_ip, WEBSECURE_PORT, 443))
        stack.enter_context(relay(running.pod_ip, WEB_PORT, 80))
        status = wait_for_route(health_status(certificate, f"https://{PUBLIC_HOST}/health"))
        assert status == 200, f"GET /health through Traefik: {status}\n{running.describe()}"
        yield running


@pytest.fixture(scope="module")
def with_defaults(
    api: client.ApiClient,
    dyn: DynamicClient,
    platform: Platform,
    configured: Traefik,
    certificate: Path,
    traefik_image: str,
) -> Iterator[Traefik]:
    """Traefik with the chart's defaults (no HelmChartConfig), behind 127.0.0.1:9443 (websecure)."""
    with (
        traefik(api, dyn, traefik_image, CHART_DEFAULT_ARGS + only_namespace(platform.namespace)) as running,
        relay(running.pod_ip, WEBSECURE_PORT, DEFAULTS_PORT),
    ):
        assert wait_for_route(health_status(certificate, f"https://{PUBLIC_HOST}:{DEFAULTS_PORT}/health")) == 200
        yield running


def health_status(certificate: Path, url: str) -> Callable[[], int]:
    """GET url's status; 404 while Traefik has not loaded the Ingress yet (it then serves its own default
    certificate, which fails verification)."""

    def probe() -> int:
        try:
            return https(certificate).get(url, timeout=30).status_code
        except requests.exceptions.SSLError as exc:
            at = urlsplit(url)
            served = x509.load_pem_x509_certificate(
                ssl.get_server_certificate((at.hostname or "", at.port or 443)).encode()
            )
            print(f"{url}: {exc}; served: {served.subject.rfc4514_string()}")
            return 404

    return probe


def https(certificate: Path) -> requests.Session:
    """A client that trusts the host's certificate (as a private CA on a user's machine) and nothing else."""
    session = requests.Session()
    session.verify = str(certificate)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides session.verify
    return session


def admin(platform: Platform) -> tuple[str, str]:
    return "admin", platform.settings().secrets.admin_password


def mlflow_logs(platform: Platform, lines: int = 400) -> str:
    """The end of the MLflow containers' logs without the access log lines, for failure messages."""
    core = client.CoreV1Api(platform.api)
    pods: list[Any] = core.list_namespaced_pod(
        platform.namespace, label_selector="app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"
    ).items
    text = "".join(
        str(core.read_namespaced_pod_log(p.metadata.name, platform.namespace, container="mlflow", tail_lines=lines))
        for p in pods
    )
    every_pod: list[Any] = core.list_namespaced_pod(platform.namespace).items
    restarts = [
        (p.metadata.name, s.restart_count, s.last_state.terminated.reason if s.last_state.terminated else None)
        for p in every_pod
        for s in p.status.container_statuses or []
    ]
    kept = "\n".join(line for line in text.splitlines() if '" 200 OK' not in line)
    return f"{kept[-3000:]}\nrestarts: {restarts}"


def rendered_env(platform: Platform) -> dict[str, str | None]:
    return container_env(rendered(platform.settings(), "Deployment", "mlflow"))


# ----------------------------------------------------------------------------------------------- the controller


def test_traefik_runs_with_the_read_timeout_our_helmchartconfig_gives_and_the_default_is_60s(
    configured: Traefik, with_defaults: Traefik, values: dict[str, Any]
) -> None:
    for name, port in values["ports"].items():
        wanted = go_seconds(port["transport"]["respondingTimeouts"]["readTimeout"])
        live = configured.api(f"/api/entrypoints/{name}")["transport"]["respondingTimeouts"]
        default = with_defaults.api(f"/api/entrypoints/{name}")["transport"]["respondingTimeouts"]
        assert (name, go_seconds(live["readTimeout"])) == (name, wanted)
        assert (name, go_seconds(default["readTimeout"])) == (name, 60.0)
        assert wanted > 60


# ------------------------------------------------------------------------------------------ the public host


def test_https_with_the_public_host_reaches_mlflow_behind_its_login(
    platform: Platform, configured: Traefik, certificate: Path
) -> None:
    session = https(certificate)
    anonymous = session.get(f"https://{PUBLIC_HOST}/{SEARCH}", timeout=30)
    logged_in = session.get(f"https://{PUBLIC_HOST}/{SEARCH}", auth=admin(platform), timeout=30)
    wrong = session.get(f"https://{PUBLIC_HOST}/{SEARCH}", auth=("admin", "not-the-password"), timeout=30)
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert logged_in.status_code == 200, logged_in.text
    assert "experiments" in logged_in.json()
    assert logged_in.headers["X-Frame-Options"] == rendered_env(platform)["MLFLOW_SERVER_X_FRAME_OPTIONS"]


def test_a_host_the_ingress_does_not_name_is_refused(
    platform: Platform, configured: Traefik, certificate: Path
) -> None:
    foreign = https(certificate).get(
        f"https://{PUBLIC_HOST}/{SEARCH}", headers={"Host": "attacker.example"}, auth=admin(platform), timeout=30
    )
    assert (foreign.status_code, foreign.text.strip()) == (404, "404 page not found")  # Traefik's: no route


def test_plain_http_does_not_serve_mlflow_when_tls_is_on_and_would_without_the_entry_point_annotation(
    platform: Platform, configured: Traefik, dyn: DynamicClient
) -> None:
    """With TLS on, a login must never cross the network in clear text. Traefik attaches an Ingress's router to
    every entry point unless told otherwise: the rendered annotation pins it to websecure, so plain HTTP to the
    host gets Traefik's 404. The same request with the annotation removed from the live Ingress (as it was
    rendered before) reaches MLflow's login over plain HTTP; the annotation is put back afterwards."""
    url = f"http://{PUBLIC_HOST}/{SEARCH}"
    rendered_annotations = rendered(platform.settings(), "Ingress", "mlflow")["metadata"]["annotations"]
    assert rendered_annotations[TRAEFIK_ENTRY_POINTS_ANNOTATION] == "websecure"
    plain = requests.Session()
    plain.trust_env = False
    pinned = plain.get(url, auth=admin(platform), allow_redirects=False, timeout=30)
    ingresses = dyn.resources.get(api_version="networking.k8s.io/v1", kind="Ingress")

    def annotate(value: str | None) -> None:
        patch = {"metadata": {"annotations": {TRAEFIK_ENTRY_POINTS_ANNOTATION: value}}}
        ingresses.patch(
            name="mlflow", namespace=platform.namespace, body=patch, content_type="application/merge-patch+json"
        )

    annotate(None)
    try:
        status = wait_for_route(lambda: plain.get(url, allow_redirects=False, timeout=30).status_code)
    finally:
        annotate("websecure")
    assert (pinned.status_code, pinned.text.strip()) == (404, "404 page not found")
    assert status == 401  # MLflow's login, asked for over plain HTTP


def test_cors_through_the_ingress_answers_only_the_rendered_origins(
    platform: Platform, configured: Traefik, certificate: Path
) -> None:
    origins = (rendered_env(platform)["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] or "").split(",")
    assert f"https://{PUBLIC_HOST}" in origins
    url = f"https://{PUBLIC_HOST}/api/2.0/mlflow/experiments/create"

    def preflight(origin: str) -> requests.Response:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        return https(certificate).options(url, headers=headers, timeout=30)

    def post(origin: str) -> requests.Response:
        body = {"name": f"cors-{uuid.uuid4().hex[:6]}"}
        return https(certificate).post(url, json=body, headers={"Origin": origin}, auth=admin(platform), timeout=30)

    assert preflight(origins[0]).headers.get("Access-Control-Allow-Origin") == origins[0]
    assert "Access-Control-Allow-Origin" not in preflight("https://attacker.example").headers
    assert post(origins[0]).status_code == 200
    refused = post("https://attacker.example")
    assert (refused.status_code, refused.text) == (403, "Cross-origin request blocked")


def test_doctor_cluster_reaches_the_host_through_traefik(
    platform: Platform, configured: Traefik, certificate: Path
) -> None:
    done = platform.invoke("doctor", "--cluster", SSL_CERT_FILE=str(certificate))
    rows = doctor_rows(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows[f"https://{PUBLIC_HOST}/ reachable through the ingress"] == "OK"
    assert rows[f"MLflow answers for Host {PUBLIC_HOST} through the ingress"] == "OK"
    assert set(rows.values()) == {"OK"}


# ------------------------------------------------------------------------------------------ large uploads

MLFLOW_CLIENT = """
import hashlib, sys, time, mlflow
path, out = sys.argv[1], sys.argv[2]
started = time.monotonic()
with mlflow.start_run() as run:
    mlflow.log_artifact(path)
uploaded = time.monotonic()
back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin", dst_path=out)
digest = hashlib.sha256()
with open(back, "rb") as f:
    while chunk := f.read(1 << 20):
        digest.update(chunk)
print(f"upload {uploaded - started:.1f} s, download {time.monotonic() - uploaded:.1f} s")
print(digest.hexdigest())
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: Any) -> Iterator[tuple[Path, str]]:
    path = random_file(tmp_path_factory.mktemp("big") / "big.bin", GIB, "traefik-1g")
    yield path, sha256_of(path)
    path.unlink()


@pytest.mark.timeout(BIG_TIMEOUT)
def test_a_1_gb_artifact_logged_by_mlflows_client_through_traefik_arrives_complete(
    platform: Platform, configured: Traefik, certificate: Path, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    source, sent = big_file
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"https://{PUBLIC_HOST}",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": platform.settings().secrets.admin_password,
        "REQUESTS_CA_BUNDLE": str(certificate),
    }
    (tmp_path / "out").mkdir()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", MLFLOW_CLIENT, str(source), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=BIG_TIMEOUT - 60,
        check=False,
    )
    shutil.rmtree(tmp_path / "out")  # 1 GiB: pytest keeps its last temporary folders
    print(f"MLflow client, 1 GiB through Traefik: {done.stdout.strip()} ({time.monotonic() - started:.1f} s in all)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == sent


def artifact_url(port: int | None = None) -> Callable[[str], str]:
    at = f"{PUBLIC_HOST}:{port}" if port else PUBLIC_HOST
    return lambda path: f"https://{at}/api/2.0/mlflow-artifacts/artifacts/{path}"


def download_sha256(session: requests.Session, url: str, auth: tuple[str, str]) -> str:
    digest = hashlib.sha256()
    with session.get(url, auth=auth, stream=True, timeout=300) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_content(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.timeout(BIG_TIMEOUT)
@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
def test_a_1_gb_artifact_in_one_streaming_put_through_traefik_arrives_complete(
    platform: Platform, configured: Traefik, certificate: Path, big_file: tuple[Path, str], content_type: str | None
) -> None:
    """As curl -T sends it (no Content-Type) and with the Content-Type MLflow's client sends."""
    source, sent = big_file
    url = artifact_url()(f"traefik-test/{uuid.uuid4().hex[:8]}/big.bin")
    session = https(certificate)
    started = time.monotonic()
    with source.open("rb") as body:  # a file: requests streams it with its Content-Length, as curl -T does
        headers = {"Content-Type": content_type} if content_type else {}
        put = session.put(url, data=body, headers=headers, auth=admin(platform), timeout=(30, BIG_TIMEOUT))
    uploaded = time.monotonic()
    assert put.status_code == 200, f"{put.text[:500]}\n{mlflow_logs(platform)}"
    received = download_sha256(session, url, admin(platform))
    downloaded = time.monotonic()
    print(
        f"one PUT of 1 GiB through Traefik: upload {uploaded - started:.1f} s, download {downloaded - uploaded:.1f} s"
    )
    assert received == sent


class SlowBody:
    """A request body of `size` bytes that the client sends at about `rate` bytes per second (file-like, with a
    length: requests sends it with a Content-Length, in blocks, as a slow link would)."""

    def __init__(self, size: int, rate: float) -> None:
        self.size, self.rate, self.sent = size, rate, 0
        self.started = time.monotonic()
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return self.size - self.sent

    def read(self, amount: int = -1) -> bytes:
        amount = min(self.size - self.sent, 65536 if amount is None or amount < 0 else amount)
        ahead = (self.sent + amount) / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)
        chunk = hashlib.shake_256(self.sent.to_bytes(8, "big")).digest(amount) if amount > 0 else b""
        self.sent += len(chunk)
        self.digest.update(chunk)
        return chunk


def slow_put(session: requests.Session, url: str, auth: tuple[str, str], body: SlowBody) -> tuple[str, float]:
    """PUT `body`; (what came back: "HTTP <status>" or the error, seconds it took)."""
    started = time.monotonic()
    try:
        answer = session.put(url, data=body, auth=auth, timeout=(30, 600))
        outcome = f"HTTP {answer.status_code}"
    except requests.RequestException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return outcome, time.monotonic() - started


def test_a_slow_upload_is_cut_off_by_traefiks_default_read_timeout_and_passes_with_our_values(
    platform: Platform, configured: Traefik, with_defaults: Traefik, certificate: Path
) -> None:
    """The same slow PUT (a client on a slow link, or a 1 GB file at under 17 MB/s) through both controllers at
    once: the one with the chart's defaults cuts it off when its readTimeout (60 s) ends; the one with our
    HelmChartConfig's values lets it finish, and the artifact arrives whole."""
    default_timeout = go_seconds(
        with_defaults.api("/api/entrypoints/websecure")["transport"]["respondingTimeouts"]["readTimeout"]
    )
    seconds, size = default_timeout * 1.4, 12 << 20  # 12 MiB over 84 s: about 150 kB/s
    path = f"traefik-test/{uuid.uuid4().hex[:8]}/slow.bin"
    bodies = {"ours": SlowBody(size, size / seconds), "defaults": SlowBody(size, size / seconds)}
    urls = {"ours": artifact_url()(path), "defaults": artifact_url(DEFAULTS_PORT)(path + ".defaults")}
    results: dict[str, tuple[str, float]] = {}

    def run(which: str) -> None:
        results[which] = slow_put(https(certificate), urls[which], admin(platform), bodies[which])

    threads = [threading.Thread(target=run, args=(which,)) for which in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    print(f"slow PUT of {size} bytes planned over {seconds:.0f} s: {results}")
    ours, defaults = results["ours"], results["defaults"]
    assert ours[0] == "HTTP 200", ours
    assert download_sha256(https(certificate), urls["ours"], admin(platform)) == bodies["ours"].digest.hexdigest()
    assert defaults[0] != "HTTP 200", defaults
    assert default_timeout - 5 <= defaults[1] < seconds, defaults  # cut off when the read timeout ended
    missing = https(certificate).get(urls["defaults"], auth=admin(platform), timeout=30)
    # Nothing half-written was stored: MLflow 3.17.2 answers a missing artifact with 500 and S3's 404 inside.
    assert missing.status_code != 200 and "(404) when calling the HeadObject operation" in missing.text, missing.text
