"""ApplySet ids, labels and annotations, as KEP-3659 and `kubectl apply --applyset` define them."""

from __future__ import annotations

import re
from typing import Any

from mlopskit.kube.applyset import (
    GROUP_KINDS_ANNOTATION,
    ID_LABEL,
    NAMESPACES_ANNOTATION,
    PART_OF_LABEL,
    TOOLING_ANNOTATION,
    ApplySetParent,
    ObjectRef,
    applyset_id,
    group_kind,
    label_child,
    recorded,
)


def test_id_matches_kubectls_published_example() -> None:
    # kubectl's apply_test.go: a Secret parent "my-set" in namespace "test" has this id.
    assert applyset_id("my-set", "test", "Secret", "") == "applyset-0eFHV8ySqp7XoShsGvyWFQD3s96yqwHmzc4e0HR1dsY-v1"


def test_id_is_a_valid_label_value() -> None:
    value = applyset_id("applyset-mlopskit", "mlops")
    assert len(value) <= 63
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value)


def test_id_depends_on_the_parents_namespace() -> None:
    assert applyset_id("applyset-mlopskit", "a") != applyset_id("applyset-mlopskit", "b")


def test_group_kind_uses_kind_dot_group_and_bare_kind_for_core() -> None:
    assert group_kind({"apiVersion": "apps/v1", "kind": "Deployment"}) == "Deployment.apps"
    assert group_kind({"apiVersion": "v1", "kind": "Secret"}) == "Secret"
    assert group_kind({"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret"}) == "SealedSecret.bitnami.com"


def test_parent_records_sorted_group_kinds_and_other_namespaces_with_our_tooling() -> None:
    parent = ApplySetParent("applyset-mlopskit", "mlops")
    manifest = parent.manifest({"Service", "Deployment.apps", "Secret"}, {"mlops", "kube-system", ""})
    meta = manifest["metadata"]
    assert manifest["kind"] == "Secret"
    assert meta["namespace"] == "mlops"
    assert meta["labels"] == {ID_LABEL: parent.id}
    assert meta["annotations"][GROUP_KINDS_ANNOTATION] == "Deployment.apps,Secret,Service"
    assert meta["annotations"][NAMESPACES_ANNOTATION] == "kube-system"
    assert meta["annotations"][TOOLING_ANNOTATION].startswith("mlopskit/")


def test_recorded_reads_back_what_the_parent_manifest_wrote() -> None:
    parent = ApplySetParent("applyset-mlopskit", "mlops")
    manifest = parent.manifest({"Service", "Namespace"}, {"mlops", "kube-system"})
    assert recorded(manifest) == ({"Namespace", "Service"}, {"kube-system"})


def test_recorded_is_empty_without_a_parent() -> None:
    assert recorded(None) == (set(), set())


def test_child_gets_the_part_of_label_and_keeps_its_own_labels() -> None:
    rendered: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mlflow", "labels": {"app": "mlflow"}},
    }
    labelled = label_child(rendered, "applyset-abc-v1")
    assert labelled["metadata"]["labels"] == {"app": "mlflow", PART_OF_LABEL: "applyset-abc-v1"}
    assert rendered["metadata"]["labels"] == {"app": "mlflow"}, "the rendered object must not be modified"


def test_object_ref_reads_group_kind_namespace_and_name() -> None:
    ref = ObjectRef.of({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m", "namespace": "n"}})
    assert ref == ObjectRef("apps", "Deployment", "n", "m")
    assert str(ref) == "Deployment.apps n/m"
