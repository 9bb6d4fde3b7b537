"""The real rendered platform (controller phase excluded) applied twice: everything created, then nothing.

With metrics and gc on, the API server also accepts what they add (the CronJob, the metrics NetworkPolicies,
the ServiceMonitor against its CRD). That CRD is tests/service_monitor_crd.py, a stand-in for the Prometheus
Operator's (which cannot be fetched here); it is installed for the test when the cluster has none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kubernetes.dynamic import DynamicClient

from mlopskit.kube import deploy as flow
from mlopskit.kube.apply import Engine
from mlopskit.kube.applyset import ObjectRef
from mlopskit.settings import load_settings
from tests.cluster.conftest import service_monitor_crd_installed

IMAGE = "mlopskit/mlflow:3.17.2-test"
SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "cluster-test-admin-passw0rd",
    "MLFLOW_FLASK_SECRET_KEY": "cluster-test-flask-secret-key",
    "POSTGRES_PASSWORD": "cluster-test-postgres",
    "S3_ACCESS_KEY": "clustertestaccess",
    "S3_SECRET_KEY": "cluster-test-s3-secret",
}


def test_rendered_platform_applies_then_reapplies_unchanged(
    engine: Callable[..., Engine], namespace: str, tmp_path: Path
) -> None:
    settings = load_settings(tmp_path, {**SECRETS, "PLATFORM_NAMESPACE": namespace})
    platform = [o for o in flow.rendered_objects(settings, IMAGE) if not flow.is_controller_object(o)]
    first = engine().apply(platform)
    assert {ObjectRef.of(o) for o in platform} <= set(first.created) | set(first.configured)
    second = engine().apply(platform)
    assert second.created == [] and second.configured == [] and second.pruned == [], second.summary()


def test_rendered_platform_with_metrics_and_gc_applies_then_reapplies_unchanged(
    engine: Callable[..., Engine], namespace: str, tmp_path: Path, dyn: DynamicClient
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "platform.yaml").write_text(
        "platform:\n  metrics: {enabled: true, labels: {release: e2e}}\n  gc: {enabled: true}\n"
    )
    settings = load_settings(tmp_path, {**SECRETS, "PLATFORM_NAMESPACE": namespace})
    with service_monitor_crd_installed(dyn):
        platform = [o for o in flow.rendered_objects(settings, IMAGE, dyn) if not flow.is_controller_object(o)]
        kinds = {o["kind"] for o in platform}
        assert {"ServiceMonitor", "CronJob"} <= kinds
        first = engine().apply(platform)
        assert {ObjectRef.of(o) for o in platform} <= set(first.created) | set(first.configured)
        second = engine().apply(platform)
        assert second.created == [] and second.configured == [] and second.pruned == [], second.summary()
