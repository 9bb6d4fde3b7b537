"""One public host name: what it renders (Ingress TLS, MLflow's allowed hosts, CORS and frame options, the ingress
controller's upload limits), which combinations the settings refuse, what deploy leaves out on clusters
without K3s's HelmChartConfig, and the logic of `invoke doctor --cluster`.

The doctor's and deploy's reads of the cluster run here against tests/unit/kube_fake.py (an in-memory stand-in
for the API server, for their decisions only); tests/cluster/test_platform.py runs them on a real cluster.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopskit import cluster_checks, public_host
from mlopskit.cluster_checks import HttpAnswer, run_cluster_checks
from mlopskit.errors import SettingsError
from mlopskit.kube.deploy import cluster_features, ingress_notes
from mlopskit.kube.render import ClusterFeatures, render_manifests
from mlopskit.kube.validate import check_objects
from mlopskit.services import ServiceHosts, mlflow_environment
from mlopskit.settings import Settings, load_settings
from tests.certificates import self_signed
from tests.unit.conftest import SAMPLE_SECRETS, Project
from tests.unit.kube_fake import FakeCluster

IMAGE = "registry.example.com/mlopskit/mlflow:3.17.2-abc1234"
K3S = ClusterFeatures(helm_chart_config=True)  # a cluster that serves K3s's HelmChartConfig
HOST = "mlflow.example.com"
TLS_MODES = ("none", "secret", "cert-manager")
CLASSES = ("traefik", "nginx", "haproxy")
HOSTS = (HOST, "*.apps.example.com")


def environ(tls: str = "none", class_name: str = "traefik", host: str = HOST, **extra: str) -> dict[str, str]:
    env = dict(SAMPLE_SECRETS) | {"INGRESS_ENABLED": "true", "INGRESS_HOST": host} | extra
    if tls == "secret":
        env["INGRESS_TLS_SECRET"] = "mlflow-tls"
    elif tls == "cert-manager":
        env["INGRESS_CERT_MANAGER_ISSUER"] = "letsencrypt-prod"
    return env


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Settings]:
    """Settings loaded the real way: platform.yaml for the ingress class and YAML-only keys, the rest as env."""

    def make(
        tls: str = "none", class_name: str = "traefik", host: str = HOST, platform: str = "", **extra: str
    ) -> Settings:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "platform.yaml").write_text(
            f"platform:\n  ingress:\n    class_name: {class_name}\n{platform}"
        )
        return load_settings(tmp_path, environ(tls, class_name, host, **extra))

    return make


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def mlflow_env(objects: list[dict[str, Any]]) -> dict[str, str | None]:
    deployment = next(o for o in by_kind(objects, "Deployment") if o["metadata"]["name"] == "mlflow")
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


# ---------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    "tls, class_name, host", list(itertools.product(TLS_MODES, CLASSES, HOSTS)), ids=lambda v: str(v).strip("*.")
)
def test_every_public_host_combination_renders_objects_valid_for_the_pinned_kubernetes(
    tls: str, class_name: str, host: str, load: Callable[..., Settings]
) -> None:
    objects = render_manifests(load(tls, class_name, host), IMAGE, K3S)

    report = check_objects(objects, "v1.34.1+k3s1")

    assert report.errors == []
    assert report.skipped == []  # HelmChartConfig too: against the helm-controller CRD's fields
    assert len(by_kind(objects, "Ingress")) == 1


@pytest.mark.parametrize(
    "tls, secret, issuer",
    [
        ("none", None, None),
        ("secret", "mlflow-tls", None),
        ("cert-manager", "mlflow-cert-manager-tls", "letsencrypt-prod"),
    ],
)
def test_the_ingress_serves_tls_from_the_chosen_source(
    tls: str, secret: str | None, issuer: str | None, load: Callable[..., Settings]
) -> None:
    ingress = by_kind(render_manifests(load(tls), IMAGE), "Ingress")[0]

    if secret is None:
        assert "tls" not in ingress["spec"]
    else:
        assert ingress["spec"]["tls"] == [{"hosts": [HOST], "secretName": secret}]
    annotations = ingress["metadata"]["annotations"]
    assert annotations.get("cert-manager.io/cluster-issuer") == issuer


@pytest.mark.parametrize(
    "tls, class_name, entry_points",
    [
        ("secret", "traefik", "websecure"),
        ("cert-manager", "traefik", "websecure"),
        ("none", "traefik", None),  # plain HTTP: the route must stay on `web`
        ("secret", "nginx", None),  # ingress-nginx redirects HTTP to HTTPS itself (ssl-redirect)
        ("secret", "haproxy", None),
    ],
)
def test_with_tls_traefik_serves_the_host_on_its_https_entry_point_only(
    tls: str, class_name: str, entry_points: str | None, load: Callable[..., Settings]
) -> None:
    """Traefik attaches an Ingress's router to every entry point by default: with TLS, plain HTTP would reach
    MLflow's login in clear text (seen through the real Traefik in tests/cluster/test_traefik_ingress.py)."""
    ingress = by_kind(render_manifests(load(tls, class_name), IMAGE), "Ingress")[0]

    annotations = ingress["metadata"]["annotations"]
    assert annotations.get("traefik.ingress.kubernetes.io/router.entrypoints") == entry_points


@pytest.mark.parametrize("tls, scheme", [("none", "http"), ("secret", "https"), ("cert-manager", "https")])
def test_mlflow_allows_the_host_and_its_origin_with_the_scheme_tls_gives(
    tls: str, scheme: str, load: Callable[..., Settings]
) -> None:
    env = mlflow_env(render_manifests(load(tls), IMAGE))

    assert {HOST, f"{HOST}:*"} <= set(str(env["MLFLOW_ALLOWED_HOSTS"]).split(","))
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == f"{scheme}://{HOST}"
    assert env["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "SAMEORIGIN"


def test_settings_add_origins_and_choose_the_frame_option(load: Callable[..., Settings]) -> None:
    settings = load(
        "secret",
        platform="  mlflow:\n    x_frame_options: DENY\n",
        MLFLOW_CORS_ALLOWED_ORIGINS="https://notebook.example.com, https://*.apps.example.com",
    )

    env = mlflow_env(render_manifests(settings, IMAGE))

    assert str(env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"]).split(",") == [
        f"https://{HOST}",
        "https://notebook.example.com",
        "https://*.apps.example.com",
    ]
    assert env["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "DENY"


def test_without_an_ingress_mlflow_keeps_its_default_origins(tmp_path: Path) -> None:
    env = mlflow_env(render_manifests(load_settings(tmp_path, dict(SAMPLE_SECRETS)), IMAGE))

    assert "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" not in env  # MLflow's default: localhost origins only
    assert env["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "SAMEORIGIN"
    assert public_host.public_origin(load_settings(tmp_path, dict(SAMPLE_SECRETS)).platform.ingress) is None


def test_the_local_stack_takes_the_same_frame_option_and_extra_origins(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "platform.yaml").write_text("platform:\n  mlflow:\n    x_frame_options: NONE\n")
    env = dict(SAMPLE_SECRETS) | {"MLFLOW_CORS_ALLOWED_ORIGINS": "https://notebook.example.com"}

    local = mlflow_environment(load_settings(tmp_path, env), ServiceHosts())

    assert local["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "NONE"
    assert local["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://notebook.example.com"


def test_traefik_gets_a_helmchartconfig_raising_both_entry_points_read_timeout(load: Callable[..., Settings]) -> None:
    objects = render_manifests(load(platform="    upload_timeout_seconds: 7200\n"), IMAGE, K3S)

    [config] = by_kind(objects, "HelmChartConfig")
    values = yaml.safe_load(config["spec"]["valuesContent"])

    assert (config["metadata"]["namespace"], config["metadata"]["name"]) == ("kube-system", "traefik")
    for entry_point in ("web", "websecure"):
        assert values["ports"][entry_point]["transport"]["respondingTimeouts"] == {"readTimeout": "7200s"}
    ingress = by_kind(objects, "Ingress")[0]
    assert not any(key.startswith("nginx.") for key in ingress["metadata"]["annotations"])


def test_nginx_gets_annotations_for_unlimited_bodies_streamed_uploads_and_the_timeout(
    load: Callable[..., Settings],
) -> None:
    objects = render_manifests(load(class_name="nginx"), IMAGE, K3S)

    annotations = by_kind(objects, "Ingress")[0]["metadata"]["annotations"]

    assert by_kind(objects, "HelmChartConfig") == []
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"


def test_another_ingress_class_gets_no_controller_settings(load: Callable[..., Settings]) -> None:
    objects = render_manifests(load(class_name="haproxy"), IMAGE, K3S)

    assert by_kind(objects, "HelmChartConfig") == []
    assert set(by_kind(objects, "Ingress")[0]["metadata"]["annotations"]) == {"mlopskit.io/template"}


@pytest.mark.parametrize(
    "class_name, namespace, name", [("traefik", "kube-system", "traefik"), ("nginx", "ingress-nginx", "ingress-nginx")]
)
def test_the_classes_controller_pods_may_reach_mlflow(
    class_name: str, namespace: str, name: str, load: Callable[..., Settings]
) -> None:
    objects = render_manifests(load(class_name=class_name), IMAGE)

    [policy] = [o for o in by_kind(objects, "NetworkPolicy") if o["metadata"]["name"] == "mlflow-from-ingress"]
    [source] = policy["spec"]["ingress"][0]["from"]

    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_for_an_unknown_class_deploy_says_to_open_the_way_and_set_the_limits(load: Callable[..., Settings]) -> None:
    settings = load(class_name="haproxy")
    names = {o["metadata"]["name"] for o in by_kind(render_manifests(settings, IMAGE), "NetworkPolicy")}

    [note] = ingress_notes(settings, K3S)
    assert "mlflow-from-ingress" not in names
    assert "NetworkPolicy" in note and "3600 s" in note and "haproxy" in note


def test_no_ingress_renders_no_controller_settings(tmp_path: Path) -> None:
    objects = render_manifests(load_settings(tmp_path, dict(SAMPLE_SECRETS)), IMAGE, K3S)

    assert by_kind(objects, "HelmChartConfig") == [] and by_kind(objects, "Ingress") == []


# --------------------------------------------------------------------------------------------- refusals


def refusal(tmp_path: Path, env_file: str, platform: str = "") -> str:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "platform.yaml").write_text(platform)
    (tmp_path / ".env").write_text(env_file)
    with pytest.raises(SettingsError) as exc_info:
        load_settings(tmp_path, {})
    return "\n".join(exc_info.value.problems)


def test_an_own_tls_secret_and_cert_manager_together_are_refused_naming_both_keys(tmp_path: Path) -> None:
    text = refusal(
        tmp_path,
        f"INGRESS_ENABLED=true\nINGRESS_HOST={HOST}\nINGRESS_TLS_SECRET=mlflow-tls\nINGRESS_CERT_MANAGER_ISSUER=le\n",
    )

    assert (
        "platform.ingress.cert_manager_issuer (INGRESS_CERT_MANAGER_ISSUER) [from .env:4]: cannot be combined with "
        "platform.ingress.tls_secret (INGRESS_TLS_SECRET)" in text
    )


@pytest.mark.parametrize(
    "key, env", [("tls_secret", "INGRESS_TLS_SECRET"), ("cert_manager_issuer", "INGRESS_CERT_MANAGER_ISSUER")]
)
def test_tls_settings_without_an_enabled_ingress_are_refused(key: str, env: str, tmp_path: Path) -> None:
    text = refusal(tmp_path, f"{env}=mlflow-tls\n")

    assert f"platform.ingress.{key} ({env}) [from .env:1]: has no effect while the ingress is off" in text


def test_a_cluster_issuer_name_must_be_an_object_name(tmp_path: Path) -> None:
    text = refusal(tmp_path, f"INGRESS_ENABLED=true\nINGRESS_HOST={HOST}\nINGRESS_CERT_MANAGER_ISSUER=Lets_Encrypt\n")

    assert "(INGRESS_CERT_MANAGER_ISSUER) [from .env:3]: must be a Kubernetes ClusterIssuer name" in text


@pytest.mark.parametrize(
    "origin, expected",
    [
        ("*", "would let every web site call MLflow"),
        ("https://app.example.com/", "must be a web origin"),
        ("app.example.com", "must be a web origin"),
        ("ftp://app.example.com", "must be a web origin"),
    ],
)
def test_a_cors_origin_that_is_not_an_origin_is_refused(origin: str, expected: str, tmp_path: Path) -> None:
    text = refusal(tmp_path, f"MLFLOW_CORS_ALLOWED_ORIGINS={origin}\n")

    assert "platform.mlflow.cors_allowed_origins (MLFLOW_CORS_ALLOWED_ORIGINS) [from .env:1]:" in text
    assert expected in text


def test_an_unknown_frame_option_and_a_zero_timeout_are_refused_with_their_lines(tmp_path: Path) -> None:
    text = refusal(
        tmp_path,
        "",
        "platform:\n  mlflow:\n    x_frame_options: ALLOW-FROM\n  ingress:\n    upload_timeout_seconds: 0\n",
    )

    assert "platform.mlflow.x_frame_options [from config/platform.yaml:3]: must be one of 'SAMEORIGIN'" in text
    assert "platform.ingress.upload_timeout_seconds [from config/platform.yaml:5]" in text


# ------------------------------------------------------------------------------- deploy: what the cluster takes


HELM_CHART_CONFIG = ("helm.cattle.io/v1", "HelmChartConfig")


def as_deploy_renders(settings: Settings, cluster: FakeCluster) -> tuple[list[dict[str, Any]], list[str]]:
    """What deploy renders for this cluster after asking it, and the notes it prints."""
    features = cluster_features(settings, cluster)  # type: ignore[arg-type]
    return render_manifests(settings, IMAGE, features), ingress_notes(settings, features)


def test_invoke_render_asks_no_cluster_and_renders_no_helmchartconfig(load: Callable[..., Settings]) -> None:
    assert by_kind(render_manifests(load(), IMAGE), "HelmChartConfig") == []


def test_without_the_helmchartconfig_crd_deploy_leaves_it_out_and_says_what_to_set(
    load: Callable[..., Settings],
) -> None:
    objects, notes = as_deploy_renders(load(), FakeCluster())

    assert by_kind(objects, "HelmChartConfig") == []
    assert len(notes) == 1
    assert "no helmchartconfigs.helm.cattle.io CRD" in notes[0]
    assert "ports.web.transport.respondingTimeouts.readTimeout=3600s" in notes[0]
    assert "ports.websecure.transport.respondingTimeouts.readTimeout=3600s" in notes[0]


def test_with_the_crd_deploy_renders_it_and_keeps_rendering_its_own(load: Callable[..., Settings]) -> None:
    settings = load()
    cluster = FakeCluster(discovered_custom={HELM_CHART_CONFIG: ("helmchartconfigs", True)})

    first, notes = as_deploy_renders(settings, cluster)
    [config] = by_kind(first, "HelmChartConfig")
    cluster.objects[(*HELM_CHART_CONFIG, "kube-system", "traefik")] = config  # as the first deploy left it
    second, _ = as_deploy_renders(settings, cluster)

    assert notes == [] and by_kind(second, "HelmChartConfig") == [config]


def test_an_administrators_own_traefik_helmchartconfig_is_never_taken_over(load: Callable[..., Settings]) -> None:
    cluster = FakeCluster(discovered_custom={HELM_CHART_CONFIG: ("helmchartconfigs", True)})
    theirs = {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChartConfig",
        "metadata": {"name": "traefik", "namespace": "kube-system"},
        "spec": {"valuesContent": "logs:\n  access:\n    enabled: true\n"},
    }
    cluster.objects[(*HELM_CHART_CONFIG, "kube-system", "traefik")] = theirs

    objects, notes = as_deploy_renders(load(), cluster)

    assert by_kind(objects, "HelmChartConfig") == []
    assert "exists and is not mlopskit's" in notes[0] and "respondingTimeouts" in notes[0]


def test_other_classes_get_no_traefik_config_even_on_k3s(load: Callable[..., Settings]) -> None:
    cluster = FakeCluster(discovered_custom={HELM_CHART_CONFIG: ("helmchartconfigs", True)})

    objects, notes = as_deploy_renders(load(class_name="nginx"), cluster)

    assert cluster_features(load(class_name="nginx"), cluster) == ClusterFeatures()  # type: ignore[arg-type]
    assert by_kind(objects, "HelmChartConfig") == [] and notes == []


# ------------------------------------------------------------------------------ doctor --cluster: the logic


def deployed(settings: Settings, *, cert_days: float | None = 90, cert_names: list[str] | None = None) -> FakeCluster:
    """A fake cluster holding what a deploy of these settings applies, and a TLS Secret of a given lifetime."""
    cluster = FakeCluster()
    for obj in render_manifests(settings, IMAGE):
        meta = obj["metadata"]
        cluster.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    secret = public_host.tls_secret(settings.platform.ingress)
    if secret and cert_days is not None:
        certificate, key = self_signed(cert_names or [HOST], cert_days)
        cluster.objects[("v1", "Secret", "mlops", secret)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": secret, "namespace": "mlops"},
            "data": {"tls.crt": base64.b64encode(certificate).decode(), "tls.key": base64.b64encode(key).decode()},
        }
    return cluster


def resolves(host: str, port: int) -> list[str]:
    return ["192.0.2.10"]  # TEST-NET-1: never contacted, the fetch below answers


LOGIN_NEEDED = HttpAnswer(401)


def answers(health: HttpAnswer, api: HttpAnswer = LOGIN_NEEDED) -> Callable[[str], HttpAnswer]:
    def fetch(url: str) -> HttpAnswer:
        return health if url.endswith("/health") else api

    return fetch


def rows(checks: list[Any]) -> dict[str, str]:
    return {ch.name: ch.status for ch in checks}


def test_a_platform_deployed_with_these_settings_passes_every_check(load: Callable[..., Settings]) -> None:
    settings = load("secret")

    checks = run_cluster_checks(settings, deployed(settings), resolves, answers(HttpAnswer(200, "OK")))

    assert [ch.status for ch in checks] == ["OK"] * 7, [(ch.name, ch.detail) for ch in checks]
    assert f"https://{HOST}/ reachable through the ingress" in rows(checks)


@pytest.mark.parametrize("days, status", [(10, "FAIL"), (29.5, "FAIL"), (31, "OK"), (90, "OK"), (-1, "FAIL")])
def test_a_certificate_fails_when_it_expires_within_30_days(
    days: float, status: str, load: Callable[..., Settings]
) -> None:
    settings = load("secret")

    checks = cluster_checks.check_tls_secret(settings, deployed(settings, cert_days=days))

    assert [ch.status for ch in checks] == ["OK", status]
    if status == "FAIL":
        assert "kubectl -n mlops create secret tls mlflow-tls" in checks[1].fix


def test_a_missing_tls_secret_fails_with_cert_managers_fix_when_it_issues_it(load: Callable[..., Settings]) -> None:
    settings = load("cert-manager")

    [row] = cluster_checks.check_tls_secret(settings, deployed(settings, cert_days=None))

    assert (row.status, row.detail) == ("FAIL", "not found")
    assert "describe certificate mlflow-cert-manager-tls" in row.fix and "letsencrypt-prod" in row.fix


@pytest.mark.parametrize(
    "names, status", [([HOST], "OK"), (["*.example.com"], "OK"), (["other.example.com"], "FAIL"), (["*.com"], "FAIL")]
)
def test_the_certificate_must_name_the_host(names: list[str], status: str, load: Callable[..., Settings]) -> None:
    settings = load("secret")

    checks = cluster_checks.check_tls_secret(settings, deployed(settings, cert_names=names))

    assert checks[0].status == status


def test_a_live_mlflow_deployed_for_another_host_fails_allowed_hosts_and_cors(
    load: Callable[..., Settings], tmp_path: Path
) -> None:
    old = load("secret", host="old.example.com")
    cluster = deployed(old)
    settings = load("secret")

    checks = rows(
        [*cluster_checks.check_mlflow_security(settings, cluster), cluster_checks.check_ingress(settings, cluster)]
    )

    assert checks == {
        f"MLflow allows Host {HOST}": "FAIL",
        "MLflow's CORS origins and X-Frame-Options": "FAIL",
        "Ingress mlops/mlflow": "FAIL",
    }


def test_plain_http_skips_the_certificate_and_reaches_the_http_url(load: Callable[..., Settings]) -> None:
    settings = load("none")
    urls: list[str] = []

    def fetch(url: str) -> HttpAnswer:
        urls.append(url)
        return HttpAnswer(200, "OK") if url.endswith("/health") else HttpAnswer(401)

    checks = run_cluster_checks(settings, deployed(settings), resolves, fetch)

    assert rows(checks)["TLS certificate"] == "SKIP"
    assert urls[0] == f"http://{HOST}/health"


@pytest.mark.parametrize(
    "health, api, failing, fix",
    [
        (HttpAnswer(None, error="Connection refused"), None, "reachable", "is the ingress controller running"),
        (HttpAnswer(None, error="TLS: certificate verify failed"), None, "reachable", "trust store"),
        (HttpAnswer(404, "404 page not found"), None, "reachable", "no route for"),
        (HttpAnswer(503), None, "reachable", "not ready"),
        (
            HttpAnswer(200, "OK"),
            HttpAnswer(403, "Invalid Host header - possible DNS rebinding"),
            "answers",
            "invoke deploy",
        ),
    ],
)
def test_what_fails_through_the_ingress_is_named_with_its_fix(
    health: HttpAnswer, api: HttpAnswer | None, failing: str, fix: str, load: Callable[..., Settings]
) -> None:
    checks = cluster_checks.check_reachable(load("secret"), resolves, answers(health, api or LOGIN_NEEDED))

    failed = [ch for ch in checks if ch.status == "FAIL"]
    assert len(failed) == 1 and failing in failed[0].name and fix in failed[0].fix


def test_a_host_that_does_not_resolve_asks_for_a_dns_record(load: Callable[..., Settings]) -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    [row] = cluster_checks.check_reachable(load("secret"), nowhere, answers(HttpAnswer(200)))

    assert row.status == "FAIL" and "does not resolve" in row.detail and "DNS record" in row.fix


def test_a_wildcard_host_skips_reachability(load: Callable[..., Settings]) -> None:
    [row] = cluster_checks.check_reachable(load(host="*.apps.example.com"), resolves, answers(HttpAnswer(200)))

    assert row.status == "SKIP"


def test_without_an_ingress_only_mlflows_own_settings_are_checked(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, dict(SAMPLE_SECRETS))

    checks = run_cluster_checks(settings, deployed(settings), resolves, answers(HttpAnswer(200)))

    assert rows(checks) == {"Ingress": "SKIP", "MLflow's CORS origins and X-Frame-Options": "OK"}


# ------------------------------------------------------------------------ the probe itself, on this machine


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 401
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"OK" if status == 200 else b"login")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_the_probe_resolves_with_the_system_resolver_and_gets_real_answers(local_server: int) -> None:
    assert "127.0.0.1" in cluster_checks.resolve_host("localhost", local_server)
    assert cluster_checks.http_get(f"http://localhost:{local_server}/health") == HttpAnswer(200, "OK")
    assert cluster_checks.http_get(f"http://localhost:{local_server}/api").status == 401


def test_the_probe_reports_a_closed_port_as_an_error_not_an_exception(local_server: int) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        answer = cluster_checks.http_get(f"http://127.0.0.1:{closed}/health")

    assert answer.status is None and answer.error == "Connection refused"


@pytest.fixture
def local_tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for localhost; its port and certificate file."""
    import ssl

    certificate, key = self_signed(["localhost"], 30)
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(certificate)
    key_file.write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert_file
    server.shutdown()


def test_the_probe_refuses_a_certificate_this_machine_does_not_trust_and_takes_one_it_does(
    local_tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert_file = local_tls_server
    url = f"https://localhost:{port}/health"

    untrusted = cluster_checks.http_get(url)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # as a private CA added to this machine's trust
    trusted = cluster_checks.http_get(url)

    assert untrusted.status is None and str(untrusted.error).startswith("TLS: certificate verify failed")
    assert trusted == HttpAnswer(200, "OK")


def test_doctor_refuses_cluster_with_for_without_a_traceback(project: Project) -> None:
    project.write_env(dict(SAMPLE_SECRETS))

    result = project.invoke("doctor", "--cluster", "--for", "deploy")

    assert result.returncode == 1
    assert "--cluster and --for" in result.stderr and "Traceback" not in result.stderr


def test_doctor_cluster_without_a_reachable_cluster_fails_on_the_kubeconfig_line(project: Project) -> None:
    project.write_env(dict(SAMPLE_SECRETS) | {"KUBECONFIG_PATH": str(project.root / "missing.yaml")})

    result = project.invoke("doctor", "--cluster")

    assert result.returncode == 1
    assert "Kubeconfig reachable" in result.stdout and "FAIL" in result.stdout
    assert "Traceback" not in result.stderr
