"""The platform contract: service names, ports and the host names MLflow answers to, defined once for the
cluster manifests (kube/render.py), the local stack (services.py), deploy's verification (kube/deploy.py)
and sealing (kube/sealing.py)."""

from __future__ import annotations

from collections.abc import Iterable

POSTGRES_SERVICE = "postgres"
POSTGRES_PORT = 5432
MLFLOW_SERVICE = "mlflow"
MLFLOW_PORT = 5000
SEAWEEDFS_S3_PORT = 8333
MINIO_PORT = 9000
# Prometheus metrics (platform.metrics): the MLflow pod's `metrics` container, and SeaweedFS's -metricsPort
# (the port SeaweedFS's own Helm chart uses). Both are named `metrics` on their pods and Services.
METRICS_PORT_NAME = "metrics"
MLFLOW_METRICS_PORT = 9102
SEAWEEDFS_METRICS_PORT = 9327

# The Sealed Secrets controller, where kubeseal looks for it by default.
CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_SERVICE = "sealed-secrets-controller"

LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")


def allowed_hosts(names: Iterable[str], port: int | str, extra: Iterable[str] = ()) -> list[str]:
    """MLflow's --allowed-hosts: loopback on any port, each name bare and on `port` ("*" for any), then the
    extra entries (an ingress host, the user's own), each once, in that order."""
    hosts = list(LOOPBACK_HOSTS)
    for name in names:
        hosts += [name, f"{name}:{port}"]
    hosts += list(extra)
    return list(dict.fromkeys(hosts))
