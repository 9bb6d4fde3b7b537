"""Schema validation: broken objects are named with their field and template; every problem is reported."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mlopskit.errors import PlatformError
from mlopskit.kube.render import render_manifests
from mlopskit.kube.validate import check_objects, minor_version, schema_version, shipped_versions, validate_objects
from mlopskit.settings import load_settings
from tests.unit.conftest import SAMPLE_SECRETS

VERSION = "v1.34.1+k3s1"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    settings = load_settings(tmp_path_factory.mktemp("proj"), dict(SAMPLE_SECRETS))
    return render_manifests(settings, "mlopskit/mlflow:test")


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if (o["kind"], o["metadata"]["name"]) == (kind, name))


@pytest.fixture
def broken(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the rendered objects to break."""
    return copy.deepcopy(objects)


CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                                "required": ["size"],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(size: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": size}}


def test_the_rendered_platform_is_valid(objects: list[dict[str, Any]]) -> None:
    validate_objects(objects, VERSION)


def test_a_wrong_type_names_the_object_the_field_and_the_template(broken: list[dict[str, Any]]) -> None:
    find(broken, "Deployment", "mlflow")["spec"]["replicas"] = "two"

    with pytest.raises(PlatformError) as error:
        validate_objects(broken, VERSION)

    message = str(error.value)
    assert "Deployment/mlflow (k8s/mlflow/deployment.yaml.j2): spec.replicas: 'two' is not of type 'integer'" in message


def test_an_unknown_field_is_an_error_naming_the_field(broken: list[dict[str, Any]]) -> None:
    container = find(broken, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = "Always"

    report = check_objects(broken, VERSION)

    assert len(report.errors) == 1
    assert "StatefulSet/postgres" in report.errors[0]
    assert "spec.template.spec.containers[0]" in report.errors[0] and "imagePullPolicyy" in report.errors[0]


def test_every_invalid_object_is_reported_not_only_the_first(broken: list[dict[str, Any]]) -> None:
    find(broken, "Service", "mlflow")["spec"]["ports"][0]["port"] = "http"
    find(broken, "ConfigMap", "mlflow-config")["data"] = ["not", "a", "mapping"]

    report = check_objects(broken, VERSION)

    assert any(e.startswith("Service/mlflow ") and "spec.ports[0].port" in e for e in report.errors)
    assert any(e.startswith("ConfigMap/mlflow-config ") and ": data:" in e for e in report.errors)


def test_a_custom_resource_is_checked_against_its_crd_in_the_same_set() -> None:
    assert check_objects([CRD, widget(3)], VERSION).errors == []

    report = check_objects([CRD, widget("big")], VERSION)

    assert report.errors == ["Widget/w: spec.size: 'big' is not of type 'integer'"]


def test_a_custom_resource_without_its_crd_is_reported_as_skipped() -> None:
    report = check_objects([widget("big")], VERSION)

    assert report.errors == []
    assert report.validated == 0
    assert report.skipped == ["Widget/w: no schema for example.com/v1 Widget in Kubernetes 1.34"]


@pytest.mark.parametrize("given", ["v1.34.1+k3s1", "1.34.1", "1.34", "v1.34"])
def test_the_schema_follows_the_minor_of_the_k3s_release(given: str) -> None:
    assert minor_version(given) == "1.34"
    assert schema_version(given) == "1.34"


def test_a_release_newer_than_the_shipped_schemas_is_refused_with_the_fix() -> None:
    newest = shipped_versions()[-1]
    major, minor = newest.split(".")

    with pytest.raises(
        PlatformError, match=rf"ships {shipped_versions()[0]} to {newest}.*pip install -U kubernetes-validate"
    ):
        schema_version(f"v{major}.{int(minor) + 1}.0+k3s1")


def test_a_version_that_is_not_a_version_names_the_setting() -> None:
    with pytest.raises(PlatformError, match=r"cluster\.k3s_version"):
        minor_version("latest")


def test_the_deploy_flow_version_string_is_understood(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    from mlopskit.kube.deploy import kubernetes_version

    settings = load_settings(tmp_path, dict(SAMPLE_SECRETS))

    assert schema_version(kubernetes_version(settings)) == "1.34"
