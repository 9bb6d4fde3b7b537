"""The platform in Kubernetes as a backup target: exec in the Postgres pod, S3 and MLflow through port-forwards,
the Sealed Secrets keys through the API, the K3s datastore and token over SSH when the hosts are reachable."""

from __future__ import annotations

import base64
import contextlib
import shlex
import time
from collections.abc import Iterator
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlopskit import console, contract
from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup.archive import K3S_DATASTORE, K3S_TOKEN, SEALING_KEYS, ArchiveReader, ArchiveWriter
from mlopskit.backup.postgres import PodShell, run
from mlopskit.contract import (
    MINIO_PORT,
    MLFLOW_PORT,
    MLFLOW_SERVICE,
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    SEAWEEDFS_S3_PORT,
)
from mlopskit.errors import PlatformError
from mlopskit.kube import sealing
from mlopskit.kube.client import api_client
from mlopskit.kube.portforward import forward_service, ready_pod
from mlopskit.mlflow_admin import RERUN_CLUSTER, MlflowClient, wait_healthy
from mlopskit.settings import Settings

FIELD_MANAGER = "mlopskit-restore"
CONTROLLER_DEPLOYMENT = "sealed-secrets-controller"
ETCD_SNAPSHOTS = "/var/lib/rancher/k3s/server/db/snapshots"
SQLITE_DB = "/var/lib/rancher/k3s/server/db/state.db"
SERVER_TOKEN = "/var/lib/rancher/k3s/server/token"
POD_TIMEOUT = 300.0
START_TIMEOUT = 900.0  # MLflow's startupProbe: 15 minutes on a slow node
MLFLOW_CONTAINER = "mlflow"
MLFLOW_RELEASE = "import importlib.metadata as m; print(m.version('mlflow'))"


def _api_error(action: str, exc: ApiException) -> PlatformError:
    return PlatformError(f"{action}: HTTP {exc.status} {exc.reason}; check the kubeconfig's permissions")


class ClusterTarget:
    kind = "cluster"

    def __init__(self, settings: Settings, api: client.ApiClient, stack: contextlib.ExitStack) -> None:
        if settings.platform.postgres.mode != "internal":
            raise PlatformError(
                "the cluster backup covers the platform's own PostgreSQL; with POSTGRES_MODE=external back the "
                "databases up with the provider's tools"
            )
        self.settings = settings
        self.api = api
        self.stack = stack
        self.namespace = settings.platform.namespace
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        try:
            pod, _ = ready_pod(self.core, self.namespace, POSTGRES_SERVICE, POSTGRES_PORT)
        except ApiException as exc:
            if exc.status == 404:
                raise PlatformError(
                    f"no Service {self.namespace}/{POSTGRES_SERVICE}: the platform is not deployed; run "
                    "`invoke deploy` first (on a fresh cluster: restore the keys, deploy, then restore the data)"
                ) from None
            raise _api_error(f"reading Service {self.namespace}/{POSTGRES_SERVICE}", exc) from None
        self.shell = PodShell(self.core, self.namespace, pod, "postgres")
        store = settings.platform.object_store
        if store.kind == "external":
            assert store.endpoint is not None
            endpoint = store.endpoint
        else:
            port = {"seaweedfs": SEAWEEDFS_S3_PORT, "minio": MINIO_PORT}[store.kind]
            local_port = stack.enter_context(forward_service(api, self.namespace, store.kind, port))
            endpoint = f"http://127.0.0.1:{local_port}"
        self.bucket = bucket_parts.connect(settings, endpoint)
        self.replicas: dict[str, int] = {}

    # ------------------------------------------------------------------------------------ backup

    def versions(self) -> dict[str, str | None]:
        """The kubelet's version, the MLflow image, and the MLflow release inside it (asked in a ready MLflow
        pod, since `--image` may deploy another release than images.mlflow_version; None without one)."""
        nodes = self.core.list_node().items
        info = nodes[0].status.node_info if nodes and nodes[0].status else None
        kubelet = info.kubelet_version if info else None
        deployment = self._mlflow_deployment()
        image = deployment.spec.template.spec.containers[0].image if deployment.spec else None
        return {"k3s": kubelet, "mlflow_image": image, "mlflow": self._mlflow_release()}

    def _mlflow_release(self) -> str | None:
        try:
            pod, _ = ready_pod(self.core, self.namespace, MLFLOW_SERVICE, MLFLOW_PORT)
            shell = PodShell(self.core, self.namespace, pod, MLFLOW_CONTAINER)
            return run(shell, ["python3", "-c", MLFLOW_RELEASE]).strip() or None
        except (ApiException, PlatformError):
            return None  # no ready MLflow pod to ask: the settings' release is the best guess

    def back_up_extras(self, writer: ArchiveWriter) -> list[str]:
        holds = []
        keys = sealing.fetch_sealing_keys(self.settings, self.api)
        if keys:
            writer.add_bytes(SEALING_KEYS, sealing.key_backup_document(keys).encode())
            holds.append(f"{len(keys)} Sealed Secrets sealing key(s) of {contract.CONTROLLER_NAMESPACE} (private keys)")
        else:
            holds.append("no Sealed Secrets keys (none found in kube-system)")
        holds += k3s_parts(self.settings, writer)
        return holds

    # ----------------------------------------------------------------------------------- restore

    def restore_extras(self, reader: ArchiveReader) -> list[str]:
        if reader.manifest.part(SEALING_KEYS) is None:
            return ["no sealing keys in the archive"]
        return [restore_keys(self.core, self.apps, reader.read(SEALING_KEYS))]

    def _mlflow_deployment(self) -> Any:
        try:
            return self.apps.read_namespaced_deployment(MLFLOW_SERVICE, self.namespace)
        except ApiException as exc:
            raise _api_error(f"reading Deployment {self.namespace}/{MLFLOW_SERVICE}", exc) from None

    def _mlflow_deployments(self) -> list[Any]:
        """The MLflow server Deployment and, with platform.mlflow.job_execution, mlflow-periodic: both write."""
        selector = f"app.kubernetes.io/name=mlflow,app.kubernetes.io/instance={self.namespace}"
        try:
            return list(self.apps.list_namespaced_deployment(self.namespace, label_selector=selector).items)
        except ApiException as exc:
            raise _api_error(f"listing the MLflow Deployments of {self.namespace}", exc) from None

    def _scale(self, name: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self.apps.patch_namespaced_deployment_scale(name, self.namespace, body, field_manager=FIELD_MANAGER)

    def _pods_of(self, deployment: Any) -> list[Any]:
        selector = deployment.spec.selector.match_labels or {}
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=labels).items)

    def stop_mlflow(self) -> None:
        """Scale every MLflow Deployment to zero, so nothing writes while the databases are replaced; each goes
        back to its own count in start_mlflow."""
        deployments = self._mlflow_deployments()
        self.replicas = {d.metadata.name: int(d.spec.replicas or 1) for d in deployments}
        for name in self.replicas:
            self._scale(name, 0)
        _until(lambda: not any(self._pods_of(d) for d in deployments), f"the MLflow pods in {self.namespace} to stop")

    def migrate(self) -> None:
        """The image's `migrate` command in a one-off pod made from the MLflow Deployment's own pod template,
        labelled as the migration Job's pods are (the NetworkPolicies let those, and only those, reach
        PostgreSQL)."""
        template = self.api.sanitize_for_serialization(self._mlflow_deployment().spec.template)
        spec = template["spec"]
        spec.pop("initContainers", None)  # they wait for the schema this pod brings up to date
        spec["restartPolicy"] = "Never"
        # Only the server's container: a sidecar (the `metrics` container) never exits, so the pod would never end.
        container = next((c for c in spec["containers"] if c.get("name") == "mlflow"), spec["containers"][0])
        spec["containers"] = [container]
        container["args"] = ["migrate"]
        container.pop("command", None)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            container.pop(probe, None)
        container.pop("ports", None)
        name = f"mlflow-restore-migrate-{int(time.time())}"
        labels = {
            "app.kubernetes.io/name": "mlflow",
            "app.kubernetes.io/instance": self.namespace,
            "app.kubernetes.io/component": "migration",
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
        }
        pod: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }
        self.core.create_namespaced_pod(self.namespace, pod)
        try:
            phase = _until(
                lambda: _phase(self.core, self.namespace, name),
                f"pod {name} to finish",
                done={"Succeeded", "Failed"},
                timeout=START_TIMEOUT,
            )
            if phase != "Succeeded":
                logs = self.core.read_namespaced_pod_log(name, self.namespace, tail_lines=30)
                raise PlatformError(f"migrations failed in pod {self.namespace}/{name}; its last log lines:\n{logs}")
        finally:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(name, self.namespace)

    def start_mlflow(self) -> MlflowClient:
        for name, replicas in self.replicas.items():
            self._scale(name, replicas)

        def ready() -> bool:
            for deployment in self._mlflow_deployments():
                wanted = self.replicas.get(deployment.metadata.name, 1)
                if ((deployment.status and deployment.status.ready_replicas) or 0) < wanted:
                    return False
            return True

        # MLflow's startupProbe allows 15 minutes on a slow node; wait as long.
        _until(ready, f"the MLflow Deployments of {self.namespace} to be ready", timeout=START_TIMEOUT)
        local_port = self.stack.enter_context(forward_service(self.api, self.namespace, MLFLOW_SERVICE, MLFLOW_PORT))
        mlflow = self.settings.platform.mlflow
        if mlflow.admin_password is None:
            raise PlatformError("MLFLOW_ADMIN_PASSWORD is not set in .env; the restore's smoke check logs in with it")
        client_ = MlflowClient(
            f"http://127.0.0.1:{local_port}",
            mlflow.admin_user,
            mlflow.admin_password.get_secret_value(),
            rerun=RERUN_CLUSTER,
        )
        wait_healthy(client_)
        return client_


def _phase(core: client.CoreV1Api, namespace: str, name: str) -> str:
    pod = core.read_namespaced_pod(name, namespace)
    return str(pod.status.phase if pod.status else "Pending")


def _until(check: Any, what: str, done: set[str] | None = None, timeout: float = POD_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if (done is None and value) or (done is not None and value in done):
            return value
        if time.monotonic() > deadline:
            raise PlatformError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1.0)


def restore_keys(core: client.CoreV1Api, apps: client.AppsV1Api, document: bytes) -> str:
    """Create or replace the sealing key Secrets, then restart the controller (if deployed) so it loads them."""
    items = (yaml.safe_load(document) or {}).get("items") or []
    changed = 0
    for item in items:
        name = item["metadata"]["name"]
        namespace = item["metadata"].get("namespace", contract.CONTROLLER_NAMESPACE)
        try:
            live = core.read_namespaced_secret(name, namespace)
            if (live.data or {}) == item.get("data"):
                continue
            core.replace_namespaced_secret(name, namespace, item)
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(f"reading Secret {namespace}/{name}", exc) from None
            core.create_namespaced_secret(namespace, item)
        changed += 1
    if not changed:
        return f"sealing keys unchanged ({len(items)} already in {contract.CONTROLLER_NAMESPACE})"
    try:
        deployment = apps.read_namespaced_deployment(CONTROLLER_DEPLOYMENT, contract.CONTROLLER_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return f"{changed} sealing key(s) restored; the controller will load them when `invoke deploy` starts it"
        raise _api_error("reading the Sealed Secrets controller", exc) from None
    selector = ",".join(f"{k}={v}" for k, v in sorted((deployment.spec.selector.match_labels or {}).items()))
    core.delete_collection_namespaced_pod(contract.CONTROLLER_NAMESPACE, label_selector=selector)
    return f"{changed} sealing key(s) restored; the controller restarted to load them"


def k3s_parts(settings: Settings, writer: ArchiveWriter) -> list[str]:
    """The K3s datastore and the server token from the first server, over SSH.

    Anything that keeps them out of reach (no server in the inventory, a host that does not answer, a
    refused key or sudo, no K3s or no sqlite3 on the host) is a warning and a line in `holds` saying why:
    the databases, the bucket and the sealing keys are the backup; the datastore is for rebuilding the
    same control plane.
    """
    from mlopskit.hosts.k3s import first_server
    from mlopskit.hosts.remote import connect

    if not settings.cluster.servers:
        why = "no K3s server in config/inventory.yaml (a cluster mlopskit did not provision)"
        console.warn(f"K3s datastore and token not included: {why}")
        return [f"no K3s datastore or token: {why}"]
    server = first_server(settings)
    try:
        remote = connect(settings, server)
        try:
            data, kind = _k3s_datastore(remote)
            token = remote.sudo(f"cat {SERVER_TOKEN}").stdout.strip().encode()
        finally:
            remote.close()
    except PlatformError as exc:
        console.warn(f"K3s datastore and token not included: {exc}")
        return [f"no K3s datastore or token: {server.name} did not provide them ({exc})"]
    writer.add_bytes(K3S_DATASTORE, data)
    writer.add_bytes(K3S_TOKEN, token)
    return [f"K3s {kind} of {server.name} ({len(data)} bytes) and the server token"]


def _k3s_datastore(remote: Any) -> tuple[bytes, str]:
    """An etcd snapshot (embedded etcd) or an online copy of the SQLite datastore, and what it is."""
    if remote.probe("test -d /var/lib/rancher/k3s/server/db/etcd"):
        name = f"mlopskit-backup-{int(time.time())}"
        remote.sudo(f"k3s etcd-snapshot save --name {name}")
        listed = remote.sudo(f"ls -1t {ETCD_SNAPSHOTS} | grep -F {shlex.quote(name)} | head -n 1").stdout.strip()
        if not listed:
            raise PlatformError(f"{remote.name}: k3s etcd-snapshot save wrote no file named {name} in {ETCD_SNAPSHOTS}")
        path = f"{ETCD_SNAPSHOTS}/{listed}"
        return base64.b64decode(remote.sudo(f"base64 -w0 {shlex.quote(path)}").stdout), "etcd snapshot"
    if not remote.probe(f"test -f {SQLITE_DB}"):
        raise PlatformError(f"{remote.name}: neither embedded etcd nor {SQLITE_DB}: is K3s installed there?")
    if not remote.probe("command -v sqlite3"):
        raise PlatformError(f"{remote.name}: sqlite3 is not installed (apt-get install sqlite3) to copy {SQLITE_DB}")
    copy = f"/tmp/mlopskit-state-{int(time.time())}.db"  # noqa: S108 - on the host, removed below
    try:
        remote.sudo(f"umask 077; sqlite3 {SQLITE_DB} {shlex.quote('.backup ' + copy)}")
        data = base64.b64decode(remote.sudo(f"base64 -w0 {shlex.quote(copy)}").stdout)
    finally:
        remote.sudo(f"rm -f {shlex.quote(copy)}", warn=True)
    return data, "SQLite datastore (online backup)"


@contextlib.contextmanager
def cluster_target(settings: Settings) -> Iterator[ClusterTarget]:
    with contextlib.ExitStack() as stack:
        yield ClusterTarget(settings, api_client(settings), stack)


def restore_keys_without_platform(settings: Settings, reader: ArchiveReader) -> str | None:
    """On a cluster without the platform: put the sealing keys in place (step 1 of a fresh-cluster restore).

    Returns what was done, or None when the platform is deployed (the full restore runs instead).
    """
    api = api_client(settings)
    core = client.CoreV1Api(api)
    namespace = settings.platform.namespace
    try:
        core.read_namespaced_service(POSTGRES_SERVICE, namespace)
        return None
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(f"reading Service {namespace}/{POSTGRES_SERVICE}", exc) from None
    if reader.manifest.part(SEALING_KEYS) is None:
        raise PlatformError(
            f"the platform is not deployed in {namespace} and {reader.source} holds no sealing keys; "
            "run `invoke deploy` first, then rerun the restore"
        )
    return restore_keys(core, client.AppsV1Api(api), reader.read(SEALING_KEYS))
