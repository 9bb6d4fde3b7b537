"""The whole platform on a real node, through the commands a user runs.

The images are built here (`invoke build-images`'s builder, IMAGE_SOURCE=offline: no registry is assumed),
put into the node's containerd with the same `docker save` stream `invoke build-images --to-nodes` sends
(see MLOPSKIT_NODE_IMAGE_IMPORT in conftest.py), then `invoke deploy` runs with STORAGE_KIND=local-path
into a fresh namespace that enforces Pod Security `restricted`.

Stand-in: the Sealed Secrets controller is the offline image from docker/offline/sealed-secrets-controller
(the upstream image cannot be pulled here); it does what the controller does with our sealed files. The
API server, the node, PostgreSQL, SeaweedFS, MLflow and their Jobs are the real thing.

The deployment has metrics (platform.metrics) and housekeeping (platform.gc) on. The ServiceMonitor CRD is
the stand-in of tests/service_monitor_crd.py (the Prometheus Operator's own cannot be fetched here), installed
before the first deploy when the cluster has none, so deploy's `auto` finds it; the "monitoring" namespace is a
throwaway one.

The platform is deployed behind a public host (INGRESS_HOST, with TLS from the Secret mlflow-tls) that
resolves to 127.0.0.1 on this machine (a name from /etc/hosts). This cluster runs no ingress controller:
where `invoke doctor --cluster` must reach MLflow through the ingress, a stand-in in this module terminates
TLS on 127.0.0.1:443 with the host's certificate and passes the bytes to MLflow's Service through a
port-forward, Host header untouched. Requests with a chosen Host or Origin header go through a port-forward.

The tests of this module share one deployment and run in file order: each step starts from the state the
previous one left, as a user's session would.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from mlopskit import formats
from mlopskit.contract import MLFLOW_METRICS_PORT, MLFLOW_PORT, SEAWEEDFS_METRICS_PORT, SEAWEEDFS_S3_PORT
from mlopskit.envfile import env_line
from mlopskit.hosts.images import images_to_deliver
from mlopskit.image_names import mlflow_image_ref
from mlopskit.kube.portforward import forward_service
from mlopskit.object_store import s3_client
from tests.certificates import self_signed
from tests.cluster import netpol
from tests.cluster.conftest import service_monitor_crd_installed
from tests.cluster.pod_security import RESTRICTED
from tests.cluster.project import IMAGE_TAG, PUNCTUATION, SECRETS, Platform, make_project
from tests.plain_client import plain_client_round_trip

pytestmark = pytest.mark.slow

ROTATED_ADMIN_PASSWORD = "Rotated-" + PUNCTUATION
TLS_SECRET = "mlflow-tls"


def loopback_host() -> str:
    """A name /etc/hosts gives 127.0.0.1 that can be an Ingress host (not localhost: MLflow allows that one
    anyway), so the public host resolves here as on a user's machine; a .test name when there is none."""
    hosts = Path("/etc/hosts")
    for line in hosts.read_text().splitlines() if hosts.is_file() else []:
        address, *names = line.split("#", 1)[0].split() or [""]
        for name in names if address == "127.0.0.1" else []:
            with contextlib.suppress(ValueError):
                if name != "localhost" and formats.check_ingress_host(name):
                    return name
    return "mlflow.mlopskit.test"


PUBLIC_HOST = loopback_host()


@pytest.fixture(scope="module")
def monitoring_namespace(api: client.ApiClient) -> Iterator[str]:
    """The namespace platform.metrics.namespace names: the only one the metrics NetworkPolicies let in."""
    core = client.CoreV1Api(api)
    name = f"mlopskit-mon-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def service_monitor_crd(dyn: DynamicClient) -> Iterator[None]:
    with service_monitor_crd_installed(dyn):
        yield


# What the platform's config/platform.yaml holds for this module (the replica test adds replicas to it).
def platform_yaml(monitoring_namespace: str) -> dict[str, Any]:
    return {
        "platform": {
            "metrics": {"enabled": True, "namespace": monitoring_namespace, "labels": {"release": "e2e"}},
            # A schedule that never comes during the test: the test starts its own Job from the CronJob.
            "gc": {"enabled": True, "schedule": "0 0 1 1 *", "older_than": "1s"},
        }
    }


@pytest.fixture(scope="module")
def platform(
    api: client.ApiClient,
    node_images: Callable[[list[str]], None],
    tmp_path_factory: Any,
    monitoring_namespace: str,
    service_monitor_crd: None,
) -> Iterator[Platform]:
    deployed = make_project(
        tmp_path_factory.mktemp("project"),
        api,
        node_images,
        "mlopskit-e2e",
        INGRESS_ENABLED="true",
        INGRESS_HOST=PUBLIC_HOST,
        INGRESS_TLS_SECRET=TLS_SECRET,
    )
    (deployed.root / "config" / "platform.yaml").write_text(yaml.safe_dump(platform_yaml(monitoring_namespace)))
    yield deployed
    deployed.destroy()


@pytest.fixture(scope="module")
def first_deploy(platform: Platform) -> subprocess.CompletedProcess[str]:
    return platform.invoke("deploy", "--timeout", "1200")


def test_deploy_succeeds_and_its_own_verification_passes(first_deploy: subprocess.CompletedProcess[str]) -> None:
    assert first_deploy.returncode == 0, first_deploy.stdout + first_deploy.stderr
    out = first_deploy.stdout
    for step in (
        "/health",
        "anonymous request refused (401)",
        "logged in as admin",
        "artifact uploaded and downloaded",
    ):
        assert step in out


def test_every_pod_runs_under_pod_security_restricted(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    namespace: Any = client.CoreV1Api(platform.api).read_namespace(platform.namespace)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = {
        str(p.metadata.labels.get("app.kubernetes.io/name")) + "/" + str(p.metadata.name): p for p in platform.pods()
    }
    running = [p for p in pods.values() if p.status.phase == "Running"]
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in running} >= {"postgres", "seaweedfs", "mlflow"}
    for pod in running:
        assert all(c.ready for c in pod.status.container_statuses), pod.metadata.name
    jobs = [p for p in pods.values() if (p.metadata.labels or {}).get("job-name")]
    assert len(jobs) >= 2 and all(p.status.phase == "Succeeded" for p in jobs)
    postgres = next(p for p in running if p.metadata.labels["app.kubernetes.io/name"] == "postgres")
    assert postgres.spec.security_context.run_as_user == 999
    mlflow = next(p for p in running if p.metadata.labels["app.kubernetes.io/name"] == "mlflow")
    assert mlflow.spec.containers[0].security_context.read_only_root_filesystem is True


def test_the_pods_run_the_images_the_registry_less_path_delivered(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    settings = platform.settings()
    delivered = set(images_to_deliver(settings, mlflow_image_ref(settings), lambda name: True))
    running: set[str] = {c.image for p in platform.pods() for c in p.spec.containers + (p.spec.init_containers or [])}
    assert running <= delivered
    assert any(name.startswith("mlopskit/postgres") for name in running)


def test_a_second_deploy_changes_nothing_and_diff_agrees(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    second = platform.invoke("deploy", "--timeout", "600")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 created, 0 configured" in second.stdout
    assert ", 0 pruned" in second.stdout
    diff = platform.invoke("diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_a_plain_mlflow_client_round_trips_25_mb_through_a_port_forward(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    """A user's own client outside the cluster, with only the tracking URI and credentials: the server must never
    send it to a presigned S3 URL that names the in-cluster object store."""
    password = platform.settings().secrets.admin_password
    with forward_service(platform.api, platform.namespace, "mlflow", 5000) as port:
        sent, received = plain_client_round_trip(f"http://127.0.0.1:{port}", "admin", password, tmp_path)
    assert received == sent


def test_deploy_leaves_out_traefiks_config_where_the_cluster_is_not_k3s_and_says_so(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    assert "HelmChartConfig kube-system/traefik not applied: the cluster has no" in first_deploy.stdout
    ingress: Any = client.NetworkingV1Api(platform.api).read_namespaced_ingress("mlflow", platform.namespace)
    assert ingress.spec.rules[0].host == PUBLIC_HOST
    assert [t.secret_name for t in ingress.spec.tls] == [TLS_SECRET]


@contextlib.contextmanager
def mlflow_port(platform: Platform) -> Iterator[int]:
    with forward_service(platform.api, platform.namespace, "mlflow", 5000) as port:
        yield port


def admin_auth(platform: Platform) -> tuple[str, str]:
    return "admin", platform.settings().secrets.admin_password


def test_mlflow_refuses_a_host_header_it_was_not_given_and_serves_the_public_host(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    with mlflow_port(platform) as port:
        foreign = requests.get(f"http://127.0.0.1:{port}{search}", headers={"Host": "attacker.example"}, timeout=30)
        public = requests.get(f"http://127.0.0.1:{port}{search}", headers={"Host": PUBLIC_HOST}, timeout=30)
        logged_in = requests.get(
            f"http://127.0.0.1:{port}{search}", headers={"Host": PUBLIC_HOST}, auth=admin_auth(platform), timeout=30
        )
    assert (foreign.status_code, "Invalid Host header" in foreign.text) == (403, True)
    assert public.status_code == 401  # the host is accepted; the login is what is missing
    assert logged_in.status_code == 200
    assert logged_in.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_cors_lets_only_the_public_hosts_origin_call_mlflow(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    """The UI at https://<host> sends its Origin on its own POSTs: MLflow 3.17 blocks those unless the origin is
    allowed. A preflight from that origin is answered for it; from another origin it is not, and that origin's
    POST is refused even with a valid login."""
    own, other = f"https://{PUBLIC_HOST}", "https://attacker.example"
    create = "/api/2.0/mlflow/experiments/create"
    with mlflow_port(platform) as port:
        url = f"http://127.0.0.1:{port}{create}"

        def preflight(origin: str) -> requests.Response:
            headers = {
                "Host": PUBLIC_HOST,
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            }
            return requests.options(url, headers=headers, timeout=30)

        def post(origin: str, name: str) -> requests.Response:
            headers = {"Host": PUBLIC_HOST, "Origin": origin}
            return requests.post(url, json={"name": name}, headers=headers, auth=admin_auth(platform), timeout=30)

        allowed, refused = preflight(own), preflight(other)
        own_post, other_post = post(own, f"cors-own-{uuid.uuid4().hex[:6]}"), post(other, "cors-other")
    assert allowed.headers.get("Access-Control-Allow-Origin") == own
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert own_post.status_code == 200, own_post.text
    assert (other_post.status_code, other_post.text) == (403, "Cross-origin request blocked")


@contextlib.contextmanager
def stand_in_ingress(certificate: Path, key: Path, backend_port: int) -> Iterator[None]:
    """Stand-in for the ingress controller this cluster lacks: on 127.0.0.1:443, TLS with the host's certificate,
    then each connection's bytes passed unchanged to backend_port (a port-forward to MLflow's Service)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    try:
        listener = socket.create_server(("127.0.0.1", 443))
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.1:443 for the stand-in ingress: {exc}")
    listener.settimeout(0.5)
    stop = threading.Event()

    def pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                target.sendall(chunk)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def serve(connection: socket.socket) -> None:
        try:
            tls = context.wrap_socket(connection, server_side=True)
        except OSError:
            connection.close()
            return
        with tls, socket.create_connection(("127.0.0.1", backend_port)) as backend:
            back = threading.Thread(target=pump, args=(backend, tls), daemon=True)
            back.start()
            pump(tls, backend)
            back.join(60)

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()


def put_tls_secret(platform: Platform, days: float, folder: Path) -> tuple[Path, Path]:
    """The TLS Secret the settings name, holding a fresh self-signed certificate for the host; its files."""
    certificate, key = self_signed([PUBLIC_HOST], days)
    cert_file, key_file = folder / f"tls-{days}.crt", folder / f"tls-{days}.key"
    cert_file.write_bytes(certificate)
    key_file.write_bytes(key)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=TLS_SECRET),
        type="kubernetes.io/tls",
        data={"tls.crt": base64.b64encode(certificate).decode(), "tls.key": base64.b64encode(key).decode()},
    )
    core = client.CoreV1Api(platform.api)
    try:
        core.replace_namespaced_secret(TLS_SECRET, platform.namespace, body)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_secret(platform.namespace, body)
    return cert_file, key_file


def doctor_rows(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> status, from the table `invoke doctor --cluster` prints."""
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) >= 2 and cells[1] in {"OK", "FAIL", "SKIP"}:
            rows[cells[0]] = cells[1]
    return rows


def needs_loopback_host() -> None:
    if PUBLIC_HOST.endswith(".test"):
        pytest.skip("no name in /etc/hosts resolves to 127.0.0.1: the public host cannot be reached from here")


def test_doctor_cluster_fails_a_certificate_expiring_in_10_days_and_passes_one_of_90(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    needs_loopback_host()
    runs = {}
    for days in (10, 90):
        cert_file, key_file = put_tls_secret(platform, days, tmp_path)
        with mlflow_port(platform) as port, stand_in_ingress(cert_file, key_file, port):
            # The certificate is self-signed: trusted here as a private CA would be on a user's machine.
            runs[days] = platform.invoke("doctor", "--cluster", SSL_CERT_FILE=str(cert_file))
    short, long = doctor_rows(runs[10]), doctor_rows(runs[90])
    expiry = "TLS certificate not expiring within 30 days"
    assert runs[10].returncode == 1 and short[expiry] == "FAIL"
    assert [name for name, status in short.items() if status != "OK"] == [expiry]
    assert runs[90].returncode == 0, runs[90].stdout + runs[90].stderr
    assert set(long.values()) == {"OK"} and len(long) == 8
    assert f"https://{PUBLIC_HOST}/ reachable through the ingress" in long
    assert f"MLflow answers for Host {PUBLIC_HOST} through the ingress" in long


def test_doctor_cluster_says_nothing_answers_for_the_host_without_an_ingress_controller(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    needs_loopback_host()
    done = platform.invoke("doctor", "--cluster")
    rows = doctor_rows(done)
    assert done.returncode == 1
    assert rows[f"https://{PUBLIC_HOST}/ reachable through the ingress"] == "FAIL"
    assert "Connection refused" in done.stdout and "is the ingress controller running" in done.stdout


def test_a_changed_admin_password_is_rotated_by_the_next_deploy(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    """MLflow reads the admin password only into an empty auth database: deploy rotates it through the auth
    API with the previous one from the live Secret, so its own verification logs in with the new one."""
    env_file = platform.root / ".env"
    old = env_line("MLFLOW_ADMIN_PASSWORD", SECRETS["MLFLOW_ADMIN_PASSWORD"])
    env_file.write_text(env_file.read_text().replace(old, env_line("MLFLOW_ADMIN_PASSWORD", ROTATED_ADMIN_PASSWORD)))
    rotated = platform.invoke("deploy", "--timeout", "900")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "logged in as admin" in rotated.stdout
    with platform.mlflow() as mlflow:
        assert mlflow.accepts("admin", ROTATED_ADMIN_PASSWORD)
        deadline = time.monotonic() + 120  # a worker may keep a cached login for auth_cache_ttl_seconds
        while mlflow.accepts("admin", SECRETS["MLFLOW_ADMIN_PASSWORD"]):
            assert time.monotonic() < deadline, "the old admin password still works"
            time.sleep(3)


def test_a_missing_mlflow_image_stops_deploy_with_the_pods_waiting_reason(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    env_file = platform.root / ".env"
    original = env_file.read_text()
    env_file.write_text(original.replace(f"IMAGE_TAG={IMAGE_TAG}", "IMAGE_TAG=does-not-exist"))
    try:
        failed = platform.invoke("deploy", "--timeout", "60", "--no-verify")
    finally:
        env_file.write_text(original)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1
    assert "not ready after 60s" in output
    assert "ErrImagePull" in output or "ImagePullBackOff" in output
    assert "Traceback" not in output
    restored = platform.invoke("deploy", "--timeout", "900")
    assert restored.returncode == 0, restored.stdout + restored.stderr


def label_selector(selector: Any) -> str:
    """A V1LabelSelector as the query string the API server evaluates (matchLabels and In expressions)."""
    terms = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or []:
        assert expression.operator == "In", expression
        terms.append(f"{expression.key} in ({','.join(expression.values)})")
    return ",".join(terms)


def metrics_total(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples over the label sets that contain `label` (e.g. 'status="200"')."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") and label in line
    )


def test_metrics_answer_without_a_login_on_their_own_port_and_count_the_requests_the_api_served(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    """One replica here, so the API's port-forward and the metrics port-forward reach the same pod."""
    core: Any = client.CoreV1Api(platform.api)
    selector = "app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"
    assert len(core.list_namespaced_pod(platform.namespace, label_selector=selector).items) == 1

    def scrape() -> requests.Response:
        with forward_service(platform.api, platform.namespace, "mlflow", MLFLOW_METRICS_PORT) as port:
            return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)  # no credentials

    before = scrape()
    assert before.status_code == 200
    assert before.headers["Content-Type"].startswith("text/plain")
    with platform.mlflow() as mlflow:
        anonymous = requests.get(
            f"{mlflow.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=30
        )
        assert anonymous.status_code == 401  # the API still needs a login
        assert requests.get(f"{mlflow.url}/metrics", timeout=30).status_code == 401  # and so does its own /metrics
        for _ in range(7):
            mlflow.api("GET", "experiments/search", params={"max_results": 1})
    after = scrape()
    assert after.status_code == 200
    name, ok = "mlflow_http_request_total", 'status="200"'
    assert metrics_total(after.text, name, ok) - metrics_total(before.text, name, ok) >= 7, after.text[:2000]
    assert metrics_total(after.text, name, 'status="401"') >= 2
    assert "mlflow_http_request_duration_seconds_bucket{" in after.text


def test_seaweedfs_metrics_answer_on_its_metrics_port(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    with forward_service(platform.api, platform.namespace, "seaweedfs", SEAWEEDFS_METRICS_PORT) as port:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200
    assert "SeaweedFS_master_is_leader" in response.text


def test_the_service_monitor_is_deployed_where_its_crd_exists_and_selects_the_services_with_a_metrics_port(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    monitor = (
        DynamicClient(platform.api)
        .resources.get(api_version="monitoring.coreos.com/v1", kind="ServiceMonitor")
        .get(name="mlopskit", namespace=platform.namespace)
        .to_dict()
    )
    assert monitor["metadata"]["labels"]["release"] == "e2e"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics"}]
    spec = monitor["spec"]["selector"]
    terms = [f"{k}={v}" for k, v in sorted(spec["matchLabels"].items())]
    terms += [f"{e['key']} in ({','.join(e['values'])})" for e in spec["matchExpressions"]]
    core: Any = client.CoreV1Api(platform.api)
    selected = core.list_namespaced_service(platform.namespace, label_selector=",".join(terms)).items
    assert {s.metadata.name for s in selected} == {"mlflow", "seaweedfs"}
    for service in selected:
        assert "metrics" in {p.name for p in service.spec.ports}, service.metadata.name


def test_the_metrics_policy_is_accepted_and_selects_exactly_the_mlflow_pods_metrics_port_and_monitoring(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str], monitoring_namespace: str
) -> None:
    """The policy as the API server holds it: accepted, and its selectors, evaluated by the API server against
    the live objects, pick exactly the MLflow Deployment's pods, on each exactly the metrics container's port
    (the one the Service's `metrics` port targets), and exactly the monitoring namespace. Whether the cluster
    then admits only that namespace is the next two tests' question (enforcement, where the network plugin
    implements NetworkPolicies)."""
    core: Any = client.CoreV1Api(platform.api)
    apps: Any = client.AppsV1Api(platform.api)
    policy: Any = client.NetworkingV1Api(platform.api).read_namespaced_network_policy(
        "mlflow-metrics-from-monitoring", platform.namespace
    )
    assert policy.spec.policy_types == ["Ingress"]
    (rule,) = policy.spec.ingress
    (peer,) = rule._from
    assert peer.pod_selector is None and peer.ip_block is None

    # Pods: the policy's selector against the pods the mlflow Deployment owns (through its ReplicaSets).
    deployment = apps.read_namespaced_deployment("mlflow", platform.namespace)
    replica_sets = {
        rs.metadata.uid
        for rs in apps.list_namespaced_replica_set(platform.namespace).items
        if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])
    }
    owned = {
        p.metadata.name
        for p in core.list_namespaced_pod(platform.namespace).items
        if any(o.uid in replica_sets for o in p.metadata.owner_references or [])
        and p.metadata.deletion_timestamp is None
    }
    selected_pods = core.list_namespaced_pod(
        platform.namespace, label_selector=label_selector(policy.spec.pod_selector)
    ).items
    assert owned and {p.metadata.name for p in selected_pods if p.metadata.deletion_timestamp is None} == owned

    # Port: a name, resolved on each selected pod to exactly the metrics container's port.
    assert [(p.protocol, p.port) for p in rule.ports] == [("TCP", "metrics")]
    service: Any = core.read_namespaced_service("mlflow", platform.namespace)
    assert {p.name: p.target_port for p in service.spec.ports}["metrics"] == "metrics"
    for pod in selected_pods:
        named = [(c.name, p.container_port) for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics"]
        assert named == [("metrics", MLFLOW_METRICS_PORT)], pod.metadata.name

    # Namespace: the policy's namespace selector against every namespace of the cluster.
    namespaces = core.list_namespace(label_selector=label_selector(peer.namespace_selector)).items
    assert [n.metadata.name for n in namespaces] == [monitoring_namespace]


@pytest.fixture(scope="module")
def metrics_url(platform: Platform, first_deploy: subprocess.CompletedProcess[str]) -> str:
    """The metrics port of the (one) MLflow server pod, by pod IP: what Prometheus scrapes."""
    core: Any = client.CoreV1Api(platform.api)
    selector = "app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"
    (pod,) = [
        p
        for p in core.list_namespaced_pod(platform.namespace, label_selector=selector).items
        if p.metadata.deletion_timestamp is None
    ]
    return f"http://{pod.status.pod_ip}:{MLFLOW_METRICS_PORT}/metrics"


@pytest.fixture(scope="module")
def monitoring_probe(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str], monitoring_namespace: str
) -> str:
    """A pod in the monitoring namespace (the one the metrics policy admits); its name."""
    netpol.start_pod(platform.api, monitoring_namespace, "scraper", mlflow_image_ref(platform.settings()))
    return "scraper"


@pytest.fixture(scope="module")
def policies_enforced(platform: Platform, first_deploy: subprocess.CompletedProcess[str]) -> None:
    """Skips, with the reason observed, on a cluster whose network plugin ignores NetworkPolicies."""
    reason = netpol.cached_enforcement_reason(platform.api, mlflow_image_ref(platform.settings()))
    if reason:
        pytest.skip(reason)


def test_a_pod_of_the_monitoring_namespace_gets_the_mlflow_pods_metrics_without_a_login(
    platform: Platform, monitoring_namespace: str, monitoring_probe: str, metrics_url: str
) -> None:
    """From inside the cluster, as Prometheus scrapes: pod to pod, no credentials. Holds with or without
    enforcement (on an enforcing cluster it is the policy's allow rule at work)."""
    assert netpol.fetch(platform.api, monitoring_namespace, monitoring_probe, metrics_url) == "200"


def test_where_policies_are_enforced_only_the_monitoring_namespace_reaches_the_metrics_port(
    platform: Platform,
    monitoring_namespace: str,
    monitoring_probe: str,
    metrics_url: str,
    policies_enforced: None,
) -> None:
    """On a cluster that enforces NetworkPolicies (probed first, see tests/cluster/netpol.py): a pod of another
    namespace gets no answer from the metrics port; neither does a pod of the platform's own namespace that the
    policy does not name (given an egress rule of its own, so only MLflow's ingress side can refuse it); and
    the monitoring pod is admitted to the metrics port only, not to MLflow's API port. The monitoring pod's
    200 is asked again in the same breath, so a refusal is the policy's, not a broken probe's."""
    image = mlflow_image_ref(platform.settings())
    core: Any = client.CoreV1Api(platform.api)
    networking: Any = client.NetworkingV1Api(platform.api)
    elsewhere = f"mlopskit-elsewhere-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=elsewhere)))
    insider_egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "test-insider-egress"},
        "spec": {
            "podSelector": {"matchLabels": {"mlopskit.test/role": "insider"}},
            "policyTypes": ["Egress"],
            "egress": [{}],
        },
    }
    networking.create_namespaced_network_policy(platform.namespace, insider_egress)
    try:
        netpol.start_pod(platform.api, elsewhere, "outsider", image)
        netpol.start_pod(platform.api, platform.namespace, "insider", image)
        api_url = metrics_url.replace(f":{MLFLOW_METRICS_PORT}/metrics", f":{MLFLOW_PORT}/health")
        answers = {
            "monitoring -> metrics": netpol.fetch(platform.api, monitoring_namespace, monitoring_probe, metrics_url),
            "other namespace -> metrics": netpol.fetch(platform.api, elsewhere, "outsider", metrics_url),
            "platform namespace -> metrics": netpol.fetch(platform.api, platform.namespace, "insider", metrics_url),
            "monitoring -> API port": netpol.fetch(platform.api, monitoring_namespace, monitoring_probe, api_url),
        }
        assert answers["monitoring -> metrics"] == "200", answers
        for source in ("other namespace -> metrics", "platform namespace -> metrics", "monitoring -> API port"):
            assert answers[source].startswith(("TimeoutError", "timeout", "ConnectionRefusedError")), answers
    finally:
        with contextlib.suppress(client.ApiException):  # absent when its creation failed
            core.delete_namespaced_pod("insider", platform.namespace, grace_period_seconds=0)
        networking.delete_namespaced_network_policy("test-insider-egress", platform.namespace)
        core.delete_namespace(elsewhere, propagation_policy="Background")


def gc_job_from_cronjob(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """A Job from the gc CronJob's template, as `kubectl create job --from=cronjob/mlflow-gc` makes it."""
    cronjob: Any = client.BatchV1Api(api).read_namespaced_cron_job("mlflow-gc", namespace)
    template = api.sanitize_for_serialization(cronjob.spec.job_template)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"mlflow-gc-manual-{uuid.uuid4().hex[:6]}",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": "mlflow-gc",
                    "uid": cronjob.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def test_a_job_from_the_gc_cronjob_deletes_a_deleted_run_with_its_artifacts_and_keeps_the_rest(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    payload = b"housekeeping " + uuid.uuid4().bytes
    with platform.mlflow() as mlflow:
        experiment = str(mlflow.api("POST", "experiments/create", json={"name": "housekeeping"})["experiment_id"])
        runs = {}
        for role in ("deleted", "kept"):
            info = mlflow.api("POST", "runs/create", json={"experiment_id": experiment})["run"]["info"]
            path = str(info["artifact_uri"]).removeprefix("mlflow-artifacts:").lstrip("/")
            mlflow.upload_artifact(f"{path}/model.bin", payload)
            runs[role] = (str(info["run_id"]), path)
        mlflow.api("POST", "runs/delete", json={"run_id": runs["deleted"][0]})
    time.sleep(2)  # older_than is 1s: the deletion must be older than that when gc looks

    batch: Any = client.BatchV1Api(platform.api)
    core: Any = client.CoreV1Api(platform.api)
    job = gc_job_from_cronjob(platform.api, platform.namespace)
    batch.create_namespaced_job(platform.namespace, job)
    name = job["metadata"]["name"]
    deadline = time.monotonic() + 600
    while True:
        status = batch.read_namespaced_job(name, platform.namespace).status
        if status.succeeded or status.failed:
            break
        assert time.monotonic() < deadline, f"Job {name} did not finish"
        time.sleep(2)
    (pod,) = core.list_namespaced_pod(platform.namespace, label_selector=f"job-name={name}").items
    log = str(core.read_namespaced_pod_log(pod.metadata.name, platform.namespace))
    print(log)
    assert status.succeeded == 1, log
    assert f"Run with ID {runs['deleted'][0]} has been permanently deleted." in log
    assert runs["kept"][0] not in log
    # What it ran with: no ServiceAccount token, under the namespace's Pod Security `restricted`.
    assert pod.spec.automount_service_account_token is False
    assert not [v for v in pod.spec.volumes or [] if v.projected is not None]

    with platform.mlflow() as mlflow:
        missing = requests.get(
            f"{mlflow.url}/api/2.0/mlflow/runs/get",
            params={"run_id": runs["deleted"][0]},
            auth=mlflow.session.auth,
            timeout=30,
        )
        assert missing.status_code == 404 and "RESOURCE_DOES_NOT_EXIST" in missing.text
        assert (
            mlflow.api("GET", "runs/get", params={"run_id": runs["kept"][0]})["run"]["info"]["lifecycle_stage"]
            == "active"
        )
        assert mlflow.download_artifact(f"{runs['kept'][1]}/model.bin") == payload
    settings = platform.settings()
    with forward_service(platform.api, platform.namespace, "seaweedfs", SEAWEEDFS_S3_PORT) as port:
        s3 = s3_client(settings, f"http://127.0.0.1:{port}")
        bucket = settings.platform.object_store.bucket

        def keys(prefix: str) -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]

        assert keys(runs["deleted"][1]) == []
        assert keys(runs["kept"][1]) == [f"{runs['kept'][1]}/model.bin"]


# Runs in a pod inside the namespace: logs runs through the mlflow Service (kube-proxy spreads connections
# over the replicas) and prints the id of every run whose creation was acknowledged with HTTP 200.
LOAD_CLIENT = r"""
import base64, json, os, sys, time, urllib.request
url = "http://mlflow:5000/api/2.0/mlflow/"
token = base64.b64encode(f"{os.environ['MLFLOW_ADMIN_USER']}:{os.environ['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
def call(endpoint, body):
    request = urllib.request.Request(url + endpoint, json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", "Basic " + token)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
experiment = os.environ["EXPERIMENT_ID"]
acknowledged, failed = 0, 0
deadline = time.monotonic() + float(os.environ["SECONDS"])
while time.monotonic() < deadline:
    try:
        run = call("runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
    except Exception as exc:
        failed += 1
        print("failed", type(exc).__name__, flush=True)
        time.sleep(0.2)
        continue
    acknowledged += 1
    print("ack", run, flush=True)
print("done", acknowledged, failed, flush=True)
"""


def load_client_job(namespace: str, image: str, experiment_id: str, seconds: int) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "mlflow-credentials", "key": key}}}
        for key in ("MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD")
    ] + [{"name": "EXPERIMENT_ID", "value": experiment_id}, {"name": "SECONDS", "value": str(seconds)}]
    security = RESTRICTED
    container = {
        "name": "client",
        "image": image,
        "command": ["python3", "-c", LOAD_CLIENT],
        "env": env,
        "securityContext": security,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "load-client", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"mlopskit.test/role": "load-client"}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }


def client_may_reach_mlflow(namespace: str) -> list[dict[str, Any]]:
    """The platform denies all traffic by default, both ways: MLflow's pods must admit the test client, and
    the client's own pod must be let out to them (an ingress rule alone leaves its egress denied)."""
    client_pod = {"mlopskit.test/role": "load-client"}
    mlflow_pods = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["mlflow"]}]}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "test-load-client", "namespace": namespace},
            "spec": {
                "podSelector": mlflow_pods,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": client_pod}}]}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "test-load-client-egress", "namespace": namespace},
            "spec": {
                "podSelector": {"matchLabels": client_pod},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": mlflow_pods}]}],
            },
        },
    ]


def test_three_replicas_lose_no_acknowledged_write_when_a_pod_is_deleted_under_load(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    config = platform.root / "config" / "platform.yaml"
    values = yaml.safe_load(config.read_text())
    values["platform"]["mlflow"] = {"replicas": 3}
    config.write_text(yaml.safe_dump(values))
    scaled = platform.invoke("deploy", "--timeout", "900")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    core: Any = client.CoreV1Api(platform.api)
    batch: Any = client.BatchV1Api(platform.api)
    networking: Any = client.NetworkingV1Api(platform.api)
    selector = "app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"
    assert len(core.list_namespaced_pod(platform.namespace, label_selector=selector).items) == 3
    with platform.mlflow() as mlflow:
        experiment = str(mlflow.api("POST", "experiments/create", json={"name": "under-load"})["experiment_id"])
    image = mlflow_image_ref(platform.settings())
    for policy in client_may_reach_mlflow(platform.namespace):
        networking.create_namespaced_network_policy(platform.namespace, policy)
    batch.create_namespaced_job(platform.namespace, load_client_job(platform.namespace, image, experiment, 60))

    def client_log() -> str:
        pods = core.list_namespaced_pod(platform.namespace, label_selector="job-name=load-client").items
        if not pods or pods[0].status.phase == "Pending":
            return ""
        return str(core.read_namespaced_pod_log(pods[0].metadata.name, platform.namespace) or "")

    deadline = time.monotonic() + 600  # the client's pod must start and acknowledge writes before we disrupt
    while client_log().count("ack ") < 20:
        assert time.monotonic() < deadline, f"the load client acknowledged too few writes:\n{client_log()}"
        time.sleep(1)
    victim = core.list_namespaced_pod(platform.namespace, label_selector=selector).items[0].metadata.name
    core.delete_namespaced_pod(victim, platform.namespace, grace_period_seconds=0)
    while not client_log().rstrip().splitlines()[-1:] or not client_log().rstrip().splitlines()[-1].startswith("done"):
        assert time.monotonic() < deadline + 300, f"the load client did not finish:\n{client_log()}"
        time.sleep(2)
    log = client_log()
    acknowledged = [line.split()[1] for line in log.splitlines() if line.startswith("ack ")]
    assert len(acknowledged) >= 40, log
    with platform.mlflow() as mlflow:
        found = set()
        token = None
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = mlflow.api("POST", "runs/search", json=body)
            found |= {run["info"]["run_id"] for run in page.get("runs", [])}
            token = page.get("next_page_token")
            if not token:
                break
    lost = [run for run in acknowledged if run not in found]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged runs are missing"
    replaced = core.list_namespaced_pod(platform.namespace, label_selector=selector).items
    assert victim not in {p.metadata.name for p in replaced}


def test_destroy_keeps_the_data_and_a_new_deploy_finds_the_runs_and_artifacts(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    payload = f"kept across destroy {uuid.uuid4()}".encode()
    with platform.mlflow() as mlflow:
        experiment = str(mlflow.api("POST", "experiments/create", json={"name": "survives-destroy"})["experiment_id"])
        run = mlflow.api("POST", "runs/create", json={"experiment_id": experiment})["run"]["info"]
        artifact = str(run["artifact_uri"]).removeprefix("mlflow-artifacts:").lstrip("/") + "/kept.txt"
        mlflow.upload_artifact(artifact, payload)
    claims = platform.claims()
    assert claims, "the platform made no volume claims"

    destroyed = platform.invoke("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert platform.claims() == claims
    core = client.CoreV1Api(platform.api)
    namespace: Any = core.read_namespace(platform.namespace)
    assert namespace.status.phase == "Active"
    workloads = client.AppsV1Api(platform.api)
    assert workloads.list_namespaced_deployment(platform.namespace).items == []
    assert workloads.list_namespaced_stateful_set(platform.namespace).items == []

    again = platform.invoke("deploy", "--timeout", "900")
    assert again.returncode == 0, again.stdout + again.stderr
    with platform.mlflow() as mlflow:
        found = mlflow.api("GET", "experiments/get-by-name", params={"experiment_name": "survives-destroy"})
        assert found["experiment"]["experiment_id"] == experiment
        assert mlflow.download_artifact(artifact) == payload


def test_destroy_with_purge_data_removes_the_claims_too(
    platform: Platform, first_deploy: subprocess.CompletedProcess[str]
) -> None:
    purged = platform.invoke("destroy", "--yes", "--purge-data")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    # Claims go once their pods are gone (pvc-protection): wait while the number still falls.
    remaining, last_change = platform.claims(), time.monotonic()
    while remaining and time.monotonic() - last_change < 120:
        time.sleep(2)
        now = platform.claims()
        if now != remaining:
            remaining, last_change = now, time.monotonic()
    assert remaining == []
