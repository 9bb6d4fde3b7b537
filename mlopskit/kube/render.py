"""Render the k8s/ templates from Settings into plain Kubernetes objects, in a stable order.

Templates are Jinja2 files (``k8s/<component>/<kind>.yaml.j2``); each decides from the context
whether it renders anything, so a component that is off renders no objects. Templates never see a
secret value: credentials reach pods only through secretKeyRef/secretRef to the Secrets named in
mlopskit/credentials.py.

Ordering contract with the apply engine (mlopskit/kube/order.py applies workloads before jobs): the
MLflow Deployment does not depend on that order. Its pods start with an initContainer that waits
until both databases are at the schema head of the image, which only the migration Job
(``mlflow-migrate-<hash>``) brings them to; the Job's name carries a hash of the image and the
database settings, so a change renders a new Job (Jobs are immutable) and the old one is pruned.
The bucket Job is named the same way and retries until the object store answers.

What the cluster serves can change what is rendered: a ServiceMonitor only where its CRD exists
(platform.metrics.service_monitor: auto), Traefik's HelmChartConfig only on K3s (mlopskit/public_host.py).
The caller asks the cluster first (ClusterFeatures, filled by kube/deploy.py) and passes the answer in;
rendering itself never talks to a cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml

from mlopskit import credentials, formats, public_host
from mlopskit.contract import (
    METRICS_PORT_NAME,
    MINIO_PORT,
    MLFLOW_METRICS_PORT,
    MLFLOW_PORT,
    MLFLOW_SERVICE,
    POSTGRES_PORT,
    POSTGRES_SERVICE,
    SEAWEEDFS_METRICS_PORT,
    SEAWEEDFS_S3_PORT,
    allowed_hosts,
)
from mlopskit.errors import PlatformError, SettingsError
from mlopskit.image_names import cluster_image
from mlopskit.kube.applyset import check_unique
from mlopskit.settings import Settings, missing_backup_recipient

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PACKAGE_ROOT / "k8s"
POSTGRES_INIT_DIR = PACKAGE_ROOT / "docker" / "postgres-init"
# Components in render order; files inside a component are rendered in name order.
COMPONENTS = (
    "namespace",
    "storage",
    "postgres",
    "objectstore",
    "mlflow",
    "backup",
    "ingress",
    "monitoring",
    "policies",
    "sealed-secrets",
)
TEMPLATE_ANNOTATION = "mlopskit.io/template"
PART_OF = "mlopskit"

AUTH_TEMPLATE_PATH = "/etc/mlflow/basic_auth.ini.template"
# The CronJob of platform.backup (k8s/backup/); `invoke backup --list` reads what it wrote.
SCHEDULED_BACKUP = "mlflow-backup"
NFS_NAMESPACE = "kube-system"
NFS_PROVISIONER = "mlopskit.io/nfs-subdir"
# The emptyDir the MLflow server's workers write their metrics to, and its `metrics` container reads.
METRICS_DIR = "/run/mlflow-metrics"
SERVICE_MONITOR_API = ("monitoring.coreos.com/v1", "ServiceMonitor")
GC_CRONJOB = "mlflow-gc"


@dataclass(frozen=True)
class ClusterFeatures:
    """Optional APIs the target cluster serves, asked before rendering; the default is a cluster with none
    (what `invoke render` assumes, since it asks no cluster)."""

    service_monitor: bool = False  # monitoring.coreos.com/v1 ServiceMonitor (the Prometheus Operator's CRD)
    helm_chart_config: bool = False  # helm.cattle.io/v1 HelmChartConfig (K3s's helm-controller)
    traefik_config_taken: bool = False  # a HelmChartConfig kube-system/traefik exists that mlopskit did not make


def renders_service_monitor(settings: Settings, features: ClusterFeatures) -> bool:
    """Whether the ServiceMonitor is rendered: metrics on, and service_monitor true, or auto with the CRD served."""
    metrics = settings.platform.metrics
    if not metrics.enabled or metrics.service_monitor is False:
        return False
    return metrics.service_monitor is True or features.service_monitor


def renders_traefik_config(settings: Settings, features: ClusterFeatures) -> bool:
    """Whether Traefik's HelmChartConfig is rendered: ingress class traefik, on a cluster that serves K3s's CRD
    where no one else's HelmChartConfig kube-system/traefik exists (ours would replace their values)."""
    wanted = public_host.traefik_values(settings.platform.ingress) is not None
    return wanted and features.helm_chart_config and not features.traefik_config_taken


@dataclass(frozen=True)
class RenderedObject:
    """One object and the template it came from (relative to the repository, for error messages)."""

    obj: dict[str, Any]
    template: str


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def postgres_host(settings: Settings) -> str:
    """The in-cluster name of the internal Postgres, for the database URIs in postgres-credentials."""
    return f"{POSTGRES_SERVICE}.{settings.platform.namespace}.svc.cluster.local"


def s3_endpoint(settings: Settings) -> str:
    """The S3 endpoint MLflow and the bucket Job use."""
    store = settings.platform.object_store
    ns = settings.platform.namespace
    if store.kind == "seaweedfs":
        return f"http://seaweedfs.{ns}.svc.cluster.local:{SEAWEEDFS_S3_PORT}"
    if store.kind == "minio":
        return f"http://minio.{ns}.svc.cluster.local:{MINIO_PORT}"
    assert store.endpoint is not None  # checked by ObjectStoreSettings
    return store.endpoint


def _external_port(url: str, default: int) -> int:
    """The port of a URL; only the port leaves this function, never credentials in the URL."""
    try:
        port = urlsplit(url).port
    except ValueError:
        port = None
    if port:
        return port
    return 443 if url.startswith("https://") else default


def labels(name: str, component: str, instance: str, version: str | None = None) -> dict[str, str]:
    """The recommended app.kubernetes.io labels every object carries."""
    result = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": PART_OF,
    }
    # Derived from image tags, which allow more than a label value does: cut to a valid label.
    label = formats.label_value(version) if version else None
    if label:
        result["app.kubernetes.io/version"] = label
    return result


def selector(name: str, component: str, instance: str) -> dict[str, str]:
    """Labels that select a workload's pods; never the version, because selectors are immutable."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
    }


def pod_security(uid: int) -> dict[str, Any]:
    """A pod securityContext that satisfies Pod Security "restricted", running as uid."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    """A container securityContext for "restricted": no privilege escalation, every capability dropped."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _image_version(image: str) -> str | None:
    tail = image.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1].split("@", 1)[0] if ":" in tail else None


def template_context(
    settings: Settings, mlflow_image: str, features: ClusterFeatures = ClusterFeatures()
) -> dict[str, Any]:
    """What templates see: plain non-secret values derived from settings (never a secret)."""
    p = settings.platform
    image = mlflow_image
    ns = p.namespace
    store = p.object_store
    pg = p.postgres
    endpoint = s3_endpoint(settings)
    ingress_hosts = public_host.ingress_hosts(p.ingress)
    service_names = [f"{MLFLOW_SERVICE}{suffix}" for suffix in ("", f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local")]
    mlflow_hosts = allowed_hosts(service_names, MLFLOW_PORT, [*ingress_hosts, *p.mlflow.allowed_hosts])
    if pg.mode == "external":
        assert pg.dsn is not None  # checked by PostgresSettings
        postgres_port = _external_port(pg.dsn.get_secret_value(), POSTGRES_PORT)
    else:
        postgres_port = POSTGRES_PORT
    storage = p.storage
    nfs_server = storage.nfs_server or (settings.cluster.nfs_host.address if settings.cluster.nfs_host else None)
    # StorageSettings refuses kind 'nfs' without a server (its own or the inventory's nfs host).
    assert storage.kind != "nfs" or nfs_server
    return {
        "namespace": ns,
        "instance": ns,
        # Components shared by every platform of a cluster (in kube-system) are one instance per cluster:
        # labels and selectors that named the platform's namespace would change with the second platform.
        "cluster_instance": settings.cluster.name,
        "images": {
            "mlflow": image,
            "postgres": cluster_image(settings, "postgres"),
            "seaweedfs": cluster_image(settings, "seaweedfs"),
            "minio": cluster_image(settings, "minio"),
            "nfs_provisioner": cluster_image(settings, "nfs_provisioner"),
            "sealed_secrets_controller": cluster_image(settings, "sealed_secrets_controller"),
        },
        "versions": {
            "mlflow": settings.images.mlflow_version,
            "postgres": _image_version(cluster_image(settings, "postgres")),
            "seaweedfs": _image_version(cluster_image(settings, "seaweedfs")),
            "minio": _image_version(cluster_image(settings, "minio")),
            "nfs_provisioner": _image_version(cluster_image(settings, "nfs_provisioner")),
            "sealed_secrets_controller": _image_version(cluster_image(settings, "sealed_secrets_controller")),
        },
        "secrets": {
            "postgres": credentials.POSTGRES_SECRET,
            "s3": credentials.S3_SECRET,
            "mlflow": credentials.MLFLOW_SECRET,
        },
        "env": {
            "backend_store_uri": credentials.ENV_BACKEND_STORE_URI,
            "auth_database_uri": credentials.ENV_AUTH_DATABASE_URI,
            "admin_user": credentials.ENV_ADMIN_USER,
            "admin_password": credentials.ENV_ADMIN_PASSWORD,
            "flask_secret": credentials.ENV_FLASK_SECRET,
            "aws_access_key": credentials.ENV_AWS_ACCESS_KEY,
            "aws_secret_key": credentials.ENV_AWS_SECRET_KEY,
        },
        "storage": {
            "kind": storage.kind,
            "class_name": storage.storage_class if storage.kind == "nfs" else "local-path",
            "nfs_server": nfs_server,
            "nfs_path": storage.nfs_path,
            "nfs_namespace": NFS_NAMESPACE,
            "provisioner": NFS_PROVISIONER,
            "postgres_size": storage.postgres_size,
            "objectstore_size": storage.objectstore_size,
        },
        "postgres": {
            "internal": pg.mode == "internal",
            "service": POSTGRES_SERVICE,
            "port": postgres_port,
            "tracking_db": pg.tracking_db,
            "auth_db": pg.auth_db,
            "init_scripts": _postgres_init_scripts(),
        },
        "object_store": {
            "kind": store.kind,
            "endpoint": endpoint,
            "port": {"seaweedfs": SEAWEEDFS_S3_PORT, "minio": MINIO_PORT}.get(store.kind)
            or _external_port(endpoint, 80),
            "bucket": store.bucket,
            "region": store.region,
        },
        "mlflow": {
            "service": MLFLOW_SERVICE,
            "port": MLFLOW_PORT,
            "replicas": p.mlflow.replicas,
            "scaled": p.mlflow.scaled,
            "autoscaling": p.mlflow.autoscaling.model_dump() if p.mlflow.autoscaling else None,
            "job_execution": p.mlflow.job_execution,
            "workers": p.mlflow.workers or 2,
            "default_permission": p.mlflow.default_permission,
            "auth_cache_ttl_seconds": p.mlflow.auth_cache_ttl_seconds,
            "allowed_hosts": ",".join(mlflow_hosts),
            "cors_allowed_origins": ",".join(public_host.cors_allowed_origins(settings)),
            "x_frame_options": p.mlflow.x_frame_options,
            "auth_template_path": AUTH_TEMPLATE_PATH,
            "auth_template": (PACKAGE_ROOT / "docker" / "mlflow" / "basic_auth.ini.template").read_text(),
            "migrate_job": f"mlflow-migrate-{_short_hash(image, pg.mode, pg.tracking_db, pg.auth_db)}",
            "bucket_job": f"mlflow-bucket-{_short_hash(image, endpoint, store.bucket, store.region)}",
        },
        "backup": scheduled_backup_context(settings),
        "metrics": {
            "enabled": p.metrics.enabled,
            "service_monitor": renders_service_monitor(settings, features),
            # The user's labels, then the recommended ones (which a user's label never replaces).
            "service_monitor_labels": {**p.metrics.labels, **labels("mlopskit", "metrics", ns)},
            "namespace": p.metrics.namespace,
            "port_name": METRICS_PORT_NAME,
            "mlflow_port": MLFLOW_METRICS_PORT,
            "seaweedfs_port": SEAWEEDFS_METRICS_PORT,
            "dir": METRICS_DIR,
            # Components whose Services carry a `metrics` port (Postgres's image has no exporter; MinIO's
            # metrics share its S3 port and need a bearer token: neither is scraped).
            "components": ["mlflow", *(["seaweedfs"] if store.kind == "seaweedfs" else [])],
        },
        "gc": {
            "enabled": p.gc.enabled,
            "name": GC_CRONJOB,
            "schedule": p.gc.schedule,
            "older_than": p.gc.older_than,
        },
        "ingress": {
            "enabled": p.ingress.enabled,
            "host": p.ingress.host,
            "tls_secret": public_host.tls_secret(p.ingress),
            "class_name": p.ingress.class_name,
            "annotations": public_host.ingress_annotations(p.ingress),
            "controller": public_host.ingress_controller(p.ingress),
            "traefik_values": public_host.traefik_values_content(p.ingress)
            if renders_traefik_config(settings, features)
            else None,
            "traefik_chart": public_host.TRAEFIK_CHART,
            "traefik_namespace": public_host.TRAEFIK_NAMESPACE,
        },
        "resources": {
            name: {
                "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
                "limits": {"memory": spec.memory_limit} | ({"cpu": spec.cpu_limit} if spec.cpu_limit else {}),
            }
            for name, spec in (
                ("mlflow", p.resources.mlflow),
                ("postgres", p.resources.postgres),
                ("objectstore", p.resources.objectstore),
            )
        },
        "seaweedfs_memory": seaweedfs_memory(p.resources.objectstore.memory_limit),
    }


# Go's collector lets the heap grow to twice what is live before collecting (GOGC=100), and SeaweedFS buffers
# every upload in flight without bound by default: a 1 GiB upload through MLflow (boto3 sends 10 parts at
# once) got SeaweedFS OOM-killed under its 1Gi limit in the cluster test through a real Traefik.
GO_MEMORY_SHARE = Decimal("0.8")  # GOMEMLIMIT: collect harder from this share of the container's limit
UPLOAD_SHARE = 8  # each of SeaweedFS's S3, filer and volume servers buffers at most limit/8 of uploads in flight
MIN_UPLOAD_MB = 16


def seaweedfs_memory(memory_limit: str) -> dict[str, int]:
    """What keeps SeaweedFS (`weed server`, one Go process) under its container's memory limit.

    gomemlimit: bytes for GOMEMLIMIT, the Go runtime's soft limit (https://pkg.go.dev/runtime, "GOMEMLIMIT"):
    0.8 x the limit; upload_mb: MiB for each of `-s3.concurrentUploadLimitMB`, `-filer.concurrentUploadLimitMB`
    and `-volume.concurrentUploadLimitMB` (SeaweedFS's bound on upload bytes in flight; 0, its default, is
    unbounded): limit/8, at least 16. An upload over the bound waits, it is not refused."""
    limit = formats.parse_quantity(memory_limit)
    return {
        "gomemlimit": int(limit * GO_MEMORY_SHARE),
        "upload_mb": max(MIN_UPLOAD_MB, int(limit / UPLOAD_SHARE / 2**20)),
    }


def in_cluster_service(url: str) -> tuple[str, str] | None:
    """(service, namespace) when a URL names a Service by its cluster DNS name (`svc.ns.svc[.cluster.local]`)."""
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if len(parts) in (3, 5) and parts[2] == "svc" and (len(parts) == 3 or parts[3:] == ["cluster", "local"]):
        return parts[0], parts[1]
    return None


def scheduled_backup_prefix(settings: Settings) -> str:
    """Where at the destination the scheduled backups of this platform go: <prefix><cluster>/<namespace>/."""
    prefix = settings.platform.backup.destination.prefix
    return f"{prefix}{settings.cluster.name}/{settings.platform.namespace}/"


def scheduled_backup_context(settings: Settings) -> dict[str, Any]:
    """What k8s/backup/ needs: the schedule, the destination (never its keys) and how pods reach it."""
    backup = settings.platform.backup
    destination = backup.destination
    endpoint = destination.endpoint or ""
    service = in_cluster_service(endpoint) if endpoint else None
    missing = missing_backup_recipient(settings)
    if missing:
        raise SettingsError([missing])
    return {
        "enabled": backup.enabled,
        # An age public key: the CronJob encrypts to it; the identity that decrypts never enters the cluster.
        "recipient": settings.backup.recipient or "",
        "project": settings.local.project,
        "name": SCHEDULED_BACKUP,
        "schedule": backup.schedule,
        "retention": backup.retention,
        "secret": credentials.BACKUP_S3_SECRET,
        "endpoint": endpoint,
        "region": destination.region,
        "bucket": destination.bucket or "",
        "prefix": scheduled_backup_prefix(settings),
        "port": _external_port(endpoint, 80) if endpoint else 443,
        # A destination Service in the cluster is reached by namespace; anything else as an outside address.
        "service_namespace": service[1] if service else None,
        "work_size": settings.platform.storage.postgres_size,
    }


def _postgres_init_scripts() -> dict[str, str]:
    """The same init scripts the local stack mounts (docker/postgres-init/), so both create the auth DB alike."""
    return {path.name: path.read_text() for path in sorted(POSTGRES_INIT_DIR.glob("*.sh"))}


def environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 -- the output is YAML, not HTML; values go through tojson
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["labels"] = labels
    env.globals["selector"] = selector
    env.globals["pod_security"] = pod_security
    env.globals["container_security"] = container_security
    env.filters["tojson"] = _tojson
    return env


def _tojson(value: Any) -> str:
    """Flow-style YAML (valid JSON) for labels and values, safe at any indentation."""
    import json

    return json.dumps(value, sort_keys=False)


def template_files(templates_dir: Path = TEMPLATES_DIR) -> Iterator[Path]:
    for component in COMPONENTS:
        folder = templates_dir / component
        if folder.is_dir():
            yield from sorted(folder.glob("*.yaml.j2"))


def render_sources(
    settings: Settings,
    mlflow_image: str,
    templates_dir: Path = TEMPLATES_DIR,
    features: ClusterFeatures = ClusterFeatures(),
) -> list[RenderedObject]:
    """Every object with the template it came from."""
    env = environment(templates_dir)
    context = template_context(settings, mlflow_image, features)
    rendered: list[RenderedObject] = []
    for path in template_files(templates_dir):
        name = path.relative_to(templates_dir).as_posix()
        label = f"k8s/{name}"
        try:
            text = env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f"{label}:{line}" if line else label
            raise PlatformError(f"{where}: template error: {exc}; fix the template") from None
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{label} (rendered line {mark.line + 1})" if mark else label
            raise PlatformError(f"{where}: rendered text is not valid YAML ({exc}); fix the template") from None
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
                raise PlatformError(f"{label}: renders a document that is not a Kubernetes object (no kind/apiVersion)")
            metadata = document.setdefault("metadata", {})
            annotations = metadata.get("annotations") or {}
            metadata["annotations"] = {**annotations, TEMPLATE_ANNOTATION: label}
            rendered.append(RenderedObject(document, label))
    check_unique((item.obj for item in rendered), lambda obj: obj["metadata"]["annotations"][TEMPLATE_ANNOTATION])
    return rendered


def render_manifests(
    settings: Settings, mlflow_image: str, features: ClusterFeatures = ClusterFeatures()
) -> list[dict[str, Any]]:
    """Every object of the platform as plain dicts, in a stable order (components, then files, then documents)."""
    return [item.obj for item in render_sources(settings, mlflow_image, features=features)]


def manifest_images(objects: list[dict[str, Any]]) -> list[str]:
    """Every image that a container or init container of the objects names, sorted and without repeats."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and container.get("image"):
                        found.add(str(container["image"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(objects)
    return sorted(found)


# ------------------------------------------------------------------------------------ writing to a folder

MARKER_FILE = ".mlopskit-render"


class _ManifestDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, ini templates) as literal blocks, so the files read like the templates."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=120)


def manifest_files(objects: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> YAML text, numbered in apply order so `kubectl apply -f DIR` applies dependencies first."""
    from mlopskit.kube.order import sort_objects

    files: dict[str, str] = {}
    for index, obj in enumerate(sort_objects(objects), start=1):
        name = str(obj["metadata"]["name"]).replace(":", "-")
        files[f"{index:02d}-{str(obj['kind']).lower()}-{name}.yaml"] = to_yaml(obj)
    return files


@dataclass
class WriteResult:
    """What writing the manifests changed, file by file."""

    created: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def write_manifests(files: dict[str, str], out: Path, *, force: bool = False, dry_run: bool = False) -> WriteResult:
    """Write one file per object into out; remove files of an earlier render that are no longer rendered.

    Refuses a non-empty folder that an earlier render did not write (no marker file) unless force,
    so a mistyped --out never mixes manifests into unrelated files.
    """
    marker = out / MARKER_FILE
    previous: set[str] = set()
    if out.exists() and not out.is_dir():
        raise PlatformError(f"{out} is a file; --out needs a folder")
    if out.is_dir():
        if marker.is_file():
            previous = {line.strip() for line in marker.read_text().splitlines() if line.strip()}
        elif any(out.iterdir()) and not force:
            raise PlatformError(
                f"{out} is not empty and was not written by `invoke render` (no {MARKER_FILE}); "
                "choose an empty or new folder, or pass --force to write into it anyway"
            )
    result = WriteResult([], [], [], [])
    for name, text in files.items():
        path = out / name
        if not path.is_file():
            result.created.append(name)
        elif path.read_text() != text:
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    result.removed = sorted(name for name in previous - set(files) if (out / name).is_file())
    if dry_run or (not result.changed and marker.is_file()):
        return result
    out.mkdir(parents=True, exist_ok=True)
    for name in result.created + result.updated:
        (out / name).write_text(files[name])
    for name in result.removed:
        (out / name).unlink()
    marker.write_text("".join(f"{name}\n" for name in files))
    return result
