"""The public host's objects against a real API server: the Ingress with TLS from cert-manager or a Secret, with
ingress-nginx's annotations, and deploy's choice about K3s's HelmChartConfig by real discovery.

This cluster runs no ingress controller and no cert-manager, and it is not K3s (no helmchartconfigs.helm.cattle.io
CRD): these tests show the API server accepts what we render and what deploy decides here; that cert-manager
issues the certificate and that Traefik honours the timeout cannot be seen on this cluster. Where a test needs
K3s's CRD, it installs a stand-in with the helm-controller's group, names and spec fields (and removes it, with
every HelmChartConfig, afterwards); no helm-controller acts on the objects. The whole platform
behind its public host (allowed hosts, CORS, doctor --cluster) is tested in test_platform.py, and through the real
Traefik (started with the flags K3s's chart gives for our HelmChartConfig's values) in test_traefik_ingress.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from mlopskit.kube.apply import Engine
from mlopskit.kube.deploy import cluster_features, ingress_notes
from mlopskit.kube.render import ClusterFeatures, render_manifests
from mlopskit.settings import Settings, load_settings
from tests.unit.conftest import SAMPLE_SECRETS

IMAGE = "registry.invalid/mlopskit/mlflow:0"
HOST = "mlflow.mlopskit.test"


def settings(tmp_path: Path, class_name: str = "traefik", **env: str) -> Settings:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "platform.yaml").write_text(f"platform:\n  ingress:\n    class_name: {class_name}\n")
    return load_settings(tmp_path, dict(SAMPLE_SECRETS) | {"INGRESS_ENABLED": "true", "INGRESS_HOST": HOST} | env)


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def applied_ingress(engine: Callable[..., Engine], dyn: DynamicClient, namespace: str, chosen: Settings) -> Any:
    ingress = the(render_manifests(chosen, IMAGE), "Ingress")
    ingress["metadata"]["namespace"] = namespace
    result = engine().apply([ingress])
    assert len(result.created) == 1
    live = dyn.resources.get(api_version="networking.k8s.io/v1", kind="Ingress")
    return live.get(name="mlflow", namespace=namespace)


def test_an_ingress_with_cert_managers_annotation_applies_and_names_the_secret_it_will_write(
    engine: Callable[..., Engine], dyn: DynamicClient, namespace: str, tmp_path: Path
) -> None:
    live = applied_ingress(
        engine, dyn, namespace, settings(tmp_path, INGRESS_CERT_MANAGER_ISSUER="letsencrypt-staging")
    )

    assert live.metadata.annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-staging"
    assert [(t.hosts, t.secretName) for t in live.spec.tls] == [([HOST], "mlflow-cert-manager-tls")]
    assert live.spec.rules[0].host == HOST


def test_an_ingress_with_an_own_tls_secret_and_nginx_annotations_applies(
    engine: Callable[..., Engine], dyn: DynamicClient, namespace: str, tmp_path: Path
) -> None:
    live = applied_ingress(engine, dyn, namespace, settings(tmp_path, "nginx", INGRESS_TLS_SECRET="mlflow-tls"))

    assert live.spec.ingressClassName == "nginx"
    assert [t.secretName for t in live.spec.tls] == ["mlflow-tls"]
    assert live.metadata.annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert live.metadata.annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"


def as_deploy_renders(chosen: Settings, dyn: DynamicClient) -> tuple[list[dict[str, Any]], list[str]]:
    """What deploy renders for this cluster after asking it (real discovery), and the notes it prints."""
    features = cluster_features(chosen, dyn)
    return render_manifests(chosen, IMAGE, features), ingress_notes(chosen, features)


def test_on_a_cluster_without_k3s_helmchartconfig_crd_deploy_leaves_traefiks_config_out(
    dyn: DynamicClient, tmp_path: Path
) -> None:
    if any(r.kind == "HelmChartConfig" for r in dyn.resources.search(group="helm.cattle.io")):
        pytest.skip("this cluster has K3s's HelmChartConfig CRD: the case of a cluster without it cannot be seen")

    objects, notes = as_deploy_renders(settings(tmp_path), dyn)

    assert not [o for o in objects if o["kind"] == "HelmChartConfig"]
    assert len(notes) == 1 and "no helmchartconfigs.helm.cattle.io CRD" in notes[0]


CRD_NAME = "helmchartconfigs.helm.cattle.io"


@pytest.fixture
def helm_chart_config_crd(api: client.ApiClient, dyn: DynamicClient) -> Iterator[None]:
    """Stand-in for K3s's HelmChartConfig CRD, for one test; removed afterwards with its objects."""
    extensions: Any = client.ApiextensionsV1Api(api)  # takes a plain dict body; typed Any like the tests' V1 models
    if extensions.list_custom_resource_definition(field_selector=f"metadata.name={CRD_NAME}").items:
        pytest.skip(f"the cluster has {CRD_NAME} already (K3s?): its HelmChartConfigs are not ours to touch")
    spec = {
        "type": "object",
        "properties": {
            "valuesContent": {"type": "string"},
            "failurePolicy": {"type": "string", "enum": ["abort", "reinstall", "retry"]},
            "values": {"x-kubernetes-preserve-unknown-fields": True},
        },
    }
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "helm.cattle.io",
            "scope": "Namespaced",
            "names": {"kind": "HelmChartConfig", "plural": "helmchartconfigs", "singular": "helmchartconfig"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }
    extensions.create_custom_resource_definition(body)
    try:
        deadline = time.monotonic() + 60
        while not any(
            c.type == "Established" and c.status == "True"
            for c in (extensions.read_custom_resource_definition(CRD_NAME).status.conditions or [])
        ):
            assert time.monotonic() < deadline, f"{CRD_NAME} not Established"
            time.sleep(0.5)
        dyn.resources.invalidate_cache()
        yield
    finally:
        extensions.delete_custom_resource_definition(CRD_NAME)
        deadline = time.monotonic() + 120  # its objects go first: the next test must not find it terminating
        while extensions.list_custom_resource_definition(field_selector=f"metadata.name={CRD_NAME}").items:
            assert time.monotonic() < deadline, f"{CRD_NAME} still there 120 s after its deletion"
            time.sleep(0.5)
        dyn.resources.invalidate_cache()


def test_where_the_crd_exists_deploy_applies_traefiks_config_and_keeps_it_its_own(
    helm_chart_config_crd: None, engine: Callable[..., Engine], dyn: DynamicClient, tmp_path: Path
) -> None:
    chosen = settings(tmp_path)

    first, notes = as_deploy_renders(chosen, dyn)
    config = the(first, "HelmChartConfig")
    result = engine().apply([config])
    second, _ = as_deploy_renders(chosen, dyn)

    assert notes == [] and the(second, "HelmChartConfig") == config
    assert cluster_features(chosen, dyn) == ClusterFeatures(helm_chart_config=True)
    assert len(result.created) == 1
    live = dyn.resources.get(api_version="helm.cattle.io/v1", kind="HelmChartConfig").get(
        name="traefik", namespace="kube-system"
    )
    assert "readTimeout: 3600s" in live.spec.valuesContent


def test_an_administrators_traefik_config_is_left_alone_and_the_values_are_named(
    helm_chart_config_crd: None, dyn: DynamicClient, tmp_path: Path
) -> None:
    theirs: dict[str, Any] = {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChartConfig",
        "metadata": {"name": "traefik", "namespace": "kube-system"},
        "spec": {"valuesContent": "logs:\n  access:\n    enabled: true\n"},
    }
    resource = dyn.resources.get(api_version="helm.cattle.io/v1", kind="HelmChartConfig")
    resource.create(body=theirs, namespace="kube-system")

    objects, notes = as_deploy_renders(settings(tmp_path), dyn)

    assert not [o for o in objects if o["kind"] == "HelmChartConfig"]
    assert "exists and is not mlopskit's" in notes[0]
    assert "ports.websecure.transport.respondingTimeouts.readTimeout=3600s" in notes[0]
    live = resource.get(name="traefik", namespace="kube-system")
    assert live.spec.valuesContent == theirs["spec"]["valuesContent"]
