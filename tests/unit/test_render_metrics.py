"""Metrics (platform.metrics): what is rendered with them on and off, the ServiceMonitor with and without its
CRD on the cluster, the NetworkPolicy that opens the metrics ports, and the settings' errors.

The ServiceMonitor is validated against tests/service_monitor_crd.py, a stand-in for the Prometheus
Operator's CRD (which cannot be fetched here), in its strict form: an unknown field is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlopskit.contract import MLFLOW_METRICS_PORT, SEAWEEDFS_METRICS_PORT
from mlopskit.errors import PlatformError, SettingsError
from mlopskit.kube import deploy as flow
from mlopskit.kube.discovery import Discovery
from mlopskit.kube.render import METRICS_DIR, ClusterFeatures, render_manifests
from mlopskit.kube.validate import check_objects
from mlopskit.settings import Settings, load_settings
from tests.service_monitor_crd import service_monitor_crd
from tests.unit.conftest import SAMPLE_SECRETS
from tests.unit.kube_fake import FakeCluster
from tests.unit.test_render import COMBINATIONS, IMAGE, combo_id, environ_for

VERSION = "1.34.1"
WITH_CRD = ClusterFeatures(service_monitor=True)
Objects = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture
def settings_with(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a platform.yaml of the given text, plus environment options (the real loader)."""

    def make(platform_yaml: str = "", **environ: str) -> Settings:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "platform.yaml").write_text(platform_yaml)
        return load_settings(tmp_path, dict(SAMPLE_SECRETS) | environ)

    return make


def by_name(objects: list[dict[str, Any]]) -> Objects:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def valid(objects: list[dict[str, Any]]) -> None:
    report = check_objects(objects, VERSION, crds=[service_monitor_crd(strict=True)])
    assert report.errors == []
    assert report.skipped == []


METRICS_ON = "platform:\n  metrics: {enabled: true}\n"


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
@pytest.mark.parametrize("crd", [True, False], ids=["crd", "no_crd"])
def test_every_combination_with_metrics_and_gc_on_is_valid_for_the_pinned_kubernetes(
    tmp_path: Path, combo: tuple[str, str, bool, str], crd: bool
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "platform.yaml").write_text(
        "platform:\n  metrics: {enabled: true, labels: {release: kube-prometheus-stack}}\n"
        "  gc: {enabled: true, schedule: '30 2 * * 0', older_than: 7d}\n"
    )
    settings = load_settings(tmp_path, environ_for(*combo))
    objects = render_manifests(settings, IMAGE, ClusterFeatures(service_monitor=crd))
    valid(objects)
    assert (("ServiceMonitor", "mlopskit") in by_name(objects)) is crd


def test_metrics_off_renders_no_metrics_port_container_policy_or_service_monitor(
    settings_with: Callable[..., Settings],
) -> None:
    objects = render_manifests(settings_with("platform:\n  metrics: {enabled: false, service_monitor: true}\n"), IMAGE)
    names = by_name(objects)
    assert not [key for key in names if key[0] == "ServiceMonitor" or "metrics" in key[1]]
    for obj in objects:
        ports = (obj.get("spec") or {}).get("ports") or []
        assert "metrics" not in [p.get("name") for p in ports], obj["metadata"]["name"]
    for owner in names.values():
        pod = ((owner.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers", []):
            assert container["name"] != "metrics"
            assert "MLFLOW_EXPOSE_PROMETHEUS" not in [e["name"] for e in container.get("env", [])]
            assert "-metricsPort" not in " ".join(container.get("command", []))


def test_metrics_on_runs_a_metrics_container_beside_the_server_on_a_port_of_its_own(
    settings_with: Callable[..., Settings],
) -> None:
    objects = by_name(render_manifests(settings_with(METRICS_ON), IMAGE))
    valid(list(objects.values()))
    pod = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    server, sidecar = (
        containers(objects[("Deployment", "mlflow")])["mlflow"],
        containers(objects[("Deployment", "mlflow")])["metrics"],
    )
    assert pod["containers"][0]["name"] == "mlflow"
    assert {"name": "MLFLOW_EXPOSE_PROMETHEUS", "value": METRICS_DIR} in server["env"]
    assert sidecar["args"] == ["metrics", METRICS_DIR, str(MLFLOW_METRICS_PORT)]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": MLFLOW_METRICS_PORT, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    # One emptyDir: written by the server's workers, read (only) by the metrics container.
    assert {"name": "metrics", "emptyDir": {}} in pod["volumes"]
    assert {"name": "metrics", "mountPath": METRICS_DIR} in server["volumeMounts"]
    assert {"name": "metrics", "mountPath": METRICS_DIR, "readOnly": True} in sidecar["volumeMounts"]
    assert "metrics" not in {m["name"] for m in pod["initContainers"][0]["volumeMounts"]}


def test_the_mlflow_service_gets_a_port_named_metrics_and_the_ingress_still_targets_http(
    settings_with: Callable[..., Settings],
) -> None:
    objects = by_name(
        render_manifests(settings_with(METRICS_ON, INGRESS_ENABLED="true", INGRESS_HOST="m.example.com"), IMAGE)
    )
    ports = objects[("Service", "mlflow")]["spec"]["ports"]
    assert [p["name"] for p in ports] == ["http", "metrics"]  # deploy's port-forward takes the first
    assert ports[1] == {"name": "metrics", "port": MLFLOW_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    backend = objects[("Ingress", "mlflow")]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["port"] == {"name": "http"}


def test_periodic_tasks_pod_has_no_metrics_container_no_service_scrapes_it(
    settings_with: Callable[..., Settings],
) -> None:
    yaml = "platform:\n  metrics: {enabled: true}\n  mlflow: {replicas: 2, job_execution: true}\n"
    objects = by_name(render_manifests(settings_with(yaml), IMAGE))
    assert set(containers(objects[("Deployment", "mlflow-periodic")])) == {"mlflow"}
    assert set(containers(objects[("Deployment", "mlflow")])) == {"mlflow", "metrics"}


def test_seaweedfs_exposes_its_metrics_port_and_minio_and_postgres_expose_none(
    settings_with: Callable[..., Settings],
) -> None:
    seaweed = by_name(render_manifests(settings_with(METRICS_ON), IMAGE))
    pod = seaweed[("StatefulSet", "seaweedfs")]["spec"]["template"]["spec"]["containers"][0]
    assert f"-metricsPort={SEAWEEDFS_METRICS_PORT}" in pod["command"][-1]
    assert {"name": "metrics", "containerPort": SEAWEEDFS_METRICS_PORT, "protocol": "TCP"} in pod["ports"]
    assert {"name": "metrics", "port": SEAWEEDFS_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"} in seaweed[
        ("Service", "seaweedfs")
    ]["spec"]["ports"]
    postgres = seaweed[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in postgres["ports"]] == ["postgres"]

    minio = by_name(render_manifests(settings_with(METRICS_ON, OBJECT_STORE="minio"), IMAGE))
    assert [p["name"] for p in minio[("Service", "minio")]["spec"]["ports"]] == ["s3"]
    assert ("NetworkPolicy", "seaweedfs-metrics-from-monitoring") not in minio


def test_service_monitor_auto_follows_the_cluster_and_true_renders_it_anyway(
    settings_with: Callable[..., Settings],
) -> None:
    auto = settings_with(METRICS_ON)
    assert ("ServiceMonitor", "mlopskit") not in by_name(render_manifests(auto, IMAGE))
    assert ("ServiceMonitor", "mlopskit") in by_name(render_manifests(auto, IMAGE, WITH_CRD))
    forced = settings_with("platform:\n  metrics: {enabled: true, service_monitor: true}\n")
    assert ("ServiceMonitor", "mlopskit") in by_name(render_manifests(forced, IMAGE))
    never = settings_with("platform:\n  metrics: {enabled: true, service_monitor: false}\n")
    assert ("ServiceMonitor", "mlopskit") not in by_name(render_manifests(never, IMAGE, WITH_CRD))


def test_service_monitor_selects_exactly_the_services_with_a_metrics_port(
    settings_with: Callable[..., Settings],
) -> None:
    settings = settings_with(
        "platform:\n  metrics: {enabled: true, labels: {release: kps, app.kubernetes.io/name: x}}\n"
    )
    objects = by_name(render_manifests(settings, IMAGE, WITH_CRD))
    monitor = objects[("ServiceMonitor", "mlopskit")]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/name"] == "mlopskit"  # ours win over a user's
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics"}]
    selected = {
        name
        for (kind, name), obj in objects.items()
        if kind == "Service" and obj["metadata"]["namespace"] == "mlops" and selects(monitor["spec"]["selector"], obj)
    }
    with_metrics_port = {
        name
        for (kind, name), obj in objects.items()
        if kind == "Service" and any(p["name"] == "metrics" for p in obj["spec"]["ports"])
    }
    assert selected == with_metrics_port == {"mlflow", "seaweedfs"}


def selects(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    """A LabelSelector evaluated against an object's labels (matchLabels and In/NotIn/Exists expressions)."""
    labels = obj["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def test_only_the_monitoring_namespace_may_reach_only_the_metrics_ports(settings_with: Callable[..., Settings]) -> None:
    objects = by_name(
        render_manifests(settings_with("platform:\n  metrics: {enabled: true, namespace: observability}\n"), IMAGE)
    )
    for policy_name, workload in (
        ("mlflow-metrics-from-monitoring", ("Deployment", "mlflow")),
        ("seaweedfs-metrics-from-monitoring", ("StatefulSet", "seaweedfs")),
    ):
        spec = objects[("NetworkPolicy", policy_name)]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [
            {
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}],
                "ports": [{"protocol": "TCP", "port": "metrics"}],
            }
        ]
        pod_labels = {"metadata": {"labels": objects[workload]["spec"]["template"]["metadata"]["labels"]}}
        assert selects(spec["podSelector"], pod_labels)
        others = [
            o
            for o in objects.values()
            if o["kind"] in ("Deployment", "StatefulSet") and (o["kind"], o["metadata"]["name"]) != workload
        ]
        assert not any(selects(spec["podSelector"], {"metadata": o["spec"]["template"]["metadata"]}) for o in others)


def test_metrics_settings_errors_name_the_key(settings_with: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as error:
        settings_with(
            "platform:\n  metrics:\n    service_monitor: maybe\n    namespace: Not_A_Label\n"
            "    labels: {'bad key!': x}\n"
        )
    message = str(error.value)
    assert "platform.metrics.service_monitor [from config/platform.yaml:3]: must be auto, true or false" in message
    assert "platform.metrics.namespace [from config/platform.yaml:4]: must be a DNS label" in message
    assert "platform.metrics.labels [from config/platform.yaml:5]: label bad key!='x'" in message


@pytest.mark.parametrize("written,expected", [("true", True), ("false", False), ("auto", "auto"), ("TRUE", True)])
def test_service_monitor_reads_yaml_booleans_and_auto(
    settings_with: Callable[..., Settings], written: str, expected: object
) -> None:
    settings = settings_with(f"platform:\n  metrics:\n    service_monitor: {written}\n")
    assert settings.platform.metrics.service_monitor == expected


# ------------------------------------------------------------------------- deploy asks the cluster first


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The in-memory DynamicClient stand-in of tests/unit/kube_fake.py (no API server runs in the unit tier)."""
    fake = FakeCluster()
    monkeypatch.setattr(flow, "connect", lambda settings: (None, fake))
    return fake


def install_crd(cluster: FakeCluster) -> None:
    crds = cluster.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    body = service_monitor_crd(strict=True)
    cluster.server_side_apply(crds, body=body, name=body["metadata"]["name"], namespace=None, field_manager="mlopskit")
    cluster.invalidate_cache()


def test_deploy_renders_the_service_monitor_where_the_cluster_serves_its_crd_and_validates_it_with_that_crd(
    cluster: FakeCluster, settings_with: Callable[..., Settings]
) -> None:
    settings = settings_with(METRICS_ON)
    assert ("ServiceMonitor", "mlopskit") not in by_name(flow.rendered_objects(settings, IMAGE, cluster))  # type: ignore[arg-type]
    install_crd(cluster)
    assert ("ServiceMonitor", "mlopskit") in by_name(flow.rendered_objects(settings, IMAGE, cluster))  # type: ignore[arg-type]


def test_a_service_monitor_breaking_the_live_crd_is_refused_before_anything_is_applied(
    cluster: FakeCluster, settings_with: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_crd(cluster)
    from mlopskit.kube import render

    original = render.render_manifests

    def broken(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        objects = original(*args, **kwargs)
        for obj in objects:
            if obj["kind"] == "ServiceMonitor":
                obj["spec"]["endpoints"][0]["interval"] = "every minute"
        return objects

    monkeypatch.setattr(render, "render_manifests", broken)
    with pytest.raises(PlatformError, match=r"ServiceMonitor/mlopskit .*spec\.endpoints\[0\]\.interval"):
        flow.rendered_objects(settings_with(METRICS_ON), IMAGE, cluster)  # type: ignore[arg-type]


def test_service_monitor_true_without_the_crd_stops_deploy_naming_the_setting(
    cluster: FakeCluster, settings_with: Callable[..., Settings]
) -> None:
    settings = settings_with("platform:\n  metrics:\n    enabled: true\n    service_monitor: true\n")
    with pytest.raises(PlatformError) as error:
        flow.deploy(settings, dry_run=True, verify=False, mlflow_image=IMAGE)
    message = str(error.value)
    assert "platform.metrics.service_monitor [from config/platform.yaml:4]: is true" in message
    assert "monitoring.coreos.com/v1 ServiceMonitor" in message
    assert cluster.objects == {}  # nothing applied


def test_without_metrics_deploy_does_not_ask_the_cluster_about_monitoring(
    cluster: FakeCluster, settings_with: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_crd(cluster)

    def asked(*args: object) -> bool:
        raise AssertionError("discovery was asked about ServiceMonitor")

    monkeypatch.setattr(Discovery, "serves", asked)
    for yaml in ("platform:\n  metrics: {enabled: false}\n", METRICS_ON.replace("}", ", service_monitor: false}")):
        objects = flow.rendered_objects(settings_with(yaml), IMAGE, cluster)  # type: ignore[arg-type]
        assert not any(o["kind"] == "ServiceMonitor" for o in objects)
