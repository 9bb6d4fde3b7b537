"""The apply order: dependencies before the things that use them."""

from __future__ import annotations

from typing import Any

from mlopskit.kube.applyset import ObjectRef
from mlopskit.kube.order import deletion_sorted, phase_of, sort_objects, unknown_kinds


def obj(kind: str, name: str = "x", api_version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objects]


def test_full_set_is_applied_crds_namespaces_rbac_config_storage_services_workloads_jobs_ingress() -> None:
    rendered = [
        obj("NetworkPolicy"),
        obj("Ingress"),
        obj("Job"),
        obj("Deployment"),
        obj("StatefulSet"),
        obj("Service"),
        obj("PersistentVolumeClaim"),
        obj("StorageClass"),
        obj("SealedSecret"),
        obj("ConfigMap"),
        obj("ClusterRoleBinding"),
        obj("ServiceAccount"),
        obj("Namespace"),
        obj("CustomResourceDefinition"),
    ]
    assert kinds(sort_objects(rendered)) == [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRoleBinding",
        "ConfigMap",
        "SealedSecret",
        "StorageClass",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "Ingress",
        "NetworkPolicy",
    ]


def test_objects_of_one_kind_keep_their_rendered_order() -> None:
    rendered = [obj("Secret", "b"), obj("ConfigMap", "c"), obj("Secret", "a")]
    assert [(o["kind"], o["metadata"]["name"]) for o in sort_objects(rendered)] == [
        ("ConfigMap", "c"),
        ("Secret", "b"),
        ("Secret", "a"),
    ]


def test_storage_class_comes_before_the_claims_that_use_it() -> None:
    assert kinds(sort_objects([obj("PersistentVolumeClaim"), obj("StorageClass")])) == [
        "StorageClass",
        "PersistentVolumeClaim",
    ]


def test_unknown_kind_goes_after_config_and_before_workloads() -> None:
    rendered = [obj("Deployment"), obj("Middleware", api_version="traefik.io/v1alpha1"), obj("Secret")]
    assert kinds(sort_objects(rendered)) == ["Secret", "Middleware", "Deployment"]
    assert phase_of("Middleware") == "other"


def test_unknown_kinds_are_reported_by_name() -> None:
    assert unknown_kinds([obj("Middleware"), obj("Secret"), obj("Widget"), obj("Middleware")]) == [
        "Middleware",
        "Widget",
    ]


def test_deletion_runs_in_reverse_apply_order() -> None:
    rendered = [obj("Namespace"), obj("Deployment"), obj("Secret"), obj("CustomResourceDefinition")]
    ordered = deletion_sorted(ObjectRef.of(o) for o in rendered)
    assert [ref.kind for ref in ordered] == ["Deployment", "Secret", "Namespace", "CustomResourceDefinition"]
