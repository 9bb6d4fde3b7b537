"""The engine's decisions: order of writes, ApplySet parent, what is pruned and kept, dry runs.

These tests use an in-memory stand-in for the DynamicClient (tests/unit/kube_fake.py) so the decisions
can be checked in milliseconds and without a cluster. It models only what those decisions depend on:
discovery, server-side apply answering 201/200, a managedFields entry for our manager, label-selector
lists, deletes, dry runs, and CRD kinds appearing after a discovery refresh. Whether an apply changes a
live object that controllers also write to is only tested against a real API server, in tests/cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlopskit.errors import PlatformError
from mlopskit.kube.apply import Engine
from mlopskit.kube.applyset import GROUP_KINDS_ANNOTATION, PART_OF_LABEL, ObjectRef
from mlopskit.kube.retry import RetryPolicy
from tests.unit.kube_fake import FakeCluster

NS = "mlops"


def obj(kind: str, name: str, api_version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **extra}


def platform(*, with_store: bool = True, workers: str = "2") -> list[dict[str, Any]]:
    rendered = [
        obj("Deployment", "mlflow", "apps/v1", spec={"replicas": 1}),
        obj("ConfigMap", "mlflow", data={"workers": workers}),
        obj("Namespace", NS),
        obj("Service", "mlflow", spec={"ports": [{"port": 5000}]}),
    ]
    if with_store:
        rendered += [obj("PersistentVolumeClaim", "store-data", spec={}), obj("Service", "store", spec={})]
    return rendered


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def engine(cluster: FakeCluster, **kwargs: Any) -> Engine:
    return Engine(cluster, NS, retry=RetryPolicy(attempts=1), **kwargs)  # type: ignore[arg-type]


def applied_order(cluster: FakeCluster) -> list[str]:
    return [f"{kind}/{name}" for verb, kind, name in cluster.calls if verb == "apply"]


def test_namespace_then_parent_then_children_in_dependency_order(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform(with_store=False))
    assert applied_order(cluster) == [
        f"Namespace/{NS}",
        "Secret/applyset-mlopskit",
        "ConfigMap/mlflow",
        "Service/mlflow",
        "Deployment/mlflow",
    ]


def test_the_parent_is_written_only_when_what_it_records_changes(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    cluster.calls.clear()
    engine(cluster).apply(platform())
    assert "Secret/applyset-mlopskit" not in applied_order(cluster)
    engine(cluster).apply(platform(with_store=False), purge_data=True)
    assert applied_order(cluster)[-1] == "Secret/applyset-mlopskit"
    kinds = cluster.objects[("v1", "Secret", NS, "applyset-mlopskit")]["metadata"]["annotations"]
    assert "PersistentVolumeClaim" not in kinds[GROUP_KINDS_ANNOTATION]


def test_every_child_carries_the_part_of_label_and_the_parent_lists_their_kinds(cluster: FakeCluster) -> None:
    e = engine(cluster)
    e.apply(platform())
    parent = cluster.objects[("v1", "Secret", NS, "applyset-mlopskit")]
    assert parent["metadata"]["annotations"][GROUP_KINDS_ANNOTATION] == (
        "ConfigMap,Deployment.apps,Namespace,PersistentVolumeClaim,Service"
    )
    children = [o for k, o in cluster.objects.items() if k[3] != "applyset-mlopskit"]
    assert len(children) == 6
    assert all(o["metadata"]["labels"][PART_OF_LABEL] == e.parent.id for o in children)


def test_first_apply_creates_and_second_is_unchanged(cluster: FakeCluster) -> None:
    first = engine(cluster).apply(platform())
    second = engine(cluster).apply(platform())
    assert len(first.created) == 6 and first.configured == []
    assert second.created == [] and second.configured == [] and second.pruned == []
    assert len(second.unchanged) == 6


def test_a_changed_value_configures_only_its_object(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    result = engine(cluster).apply(platform(workers="4"))
    assert result.configured == [ObjectRef("", "ConfigMap", NS, "mlflow")]


def test_dropped_component_is_pruned_and_its_claim_kept(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    result = engine(cluster).apply(platform(with_store=False))
    assert result.pruned == [ObjectRef("", "Service", NS, "store")]
    assert result.kept == [ObjectRef("", "PersistentVolumeClaim", NS, "store-data")]
    assert ("v1", "PersistentVolumeClaim", NS, "store-data") in cluster.objects
    parent = cluster.objects[("v1", "Secret", NS, "applyset-mlopskit")]
    assert "PersistentVolumeClaim" in parent["metadata"]["annotations"][GROUP_KINDS_ANNOTATION]


def test_objects_without_our_label_are_never_pruned(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    cluster.objects[("v1", "Service", NS, "someone-elses")] = obj("Service", "someone-elses")
    result = engine(cluster).apply(platform(with_store=False), purge_data=True)
    assert set(result.pruned) == {
        ObjectRef("", "Service", NS, "store"),
        ObjectRef("", "PersistentVolumeClaim", NS, "store-data"),
    }
    assert ("v1", "Service", NS, "someone-elses") in cluster.objects


def test_dry_run_changes_nothing_and_writes_no_parent(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    before = copy.deepcopy(cluster.objects)
    result = engine(cluster, dry_run=True).apply(platform(with_store=False, workers="9"))
    assert result.configured == [ObjectRef("", "ConfigMap", NS, "mlflow")]
    assert result.pruned == [ObjectRef("", "Service", NS, "store")]
    assert cluster.objects == before


def test_dry_run_on_an_empty_cluster_reports_objects_in_a_new_namespace_as_created(cluster: FakeCluster) -> None:
    result = engine(cluster, dry_run=True).apply(platform(with_store=False))
    assert len(result.created) == 4
    assert cluster.objects == {}


def test_crd_kinds_become_usable_in_the_same_apply(cluster: FakeCluster) -> None:
    crd = obj(
        "CustomResourceDefinition",
        "widgets.example.com",
        "apiextensions.k8s.io/v1",
        spec={
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1"}],
        },
    )
    widget = obj("Widget", "w", "example.com/v1")
    result = engine(cluster).apply([widget, obj("Namespace", NS), crd])
    assert ObjectRef("example.com", "Widget", NS, "w") in result.created
    assert applied_order(cluster)[0] == "CustomResourceDefinition/widgets.example.com"


def test_unknown_kind_without_a_crd_names_the_kind(cluster: FakeCluster) -> None:
    with pytest.raises(PlatformError, match=r"no resource for kind 'Gadget' in apiVersion 'example\.com/v1'"):
        engine(cluster).apply([obj("Gadget", "g", "example.com/v1")])


def test_missing_namespace_is_explained(cluster: FakeCluster) -> None:
    with pytest.raises(PlatformError, match="namespace 'mlops' does not exist"):
        engine(cluster).apply([obj("ConfigMap", "c")])


def test_destroy_deletes_in_reverse_order_and_keeps_claims_and_their_namespace(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    cluster.calls.clear()
    result = engine(cluster).destroy()
    deleted = [f"{kind}/{name}" for verb, kind, name in cluster.calls if verb == "delete"]
    assert deleted == ["Deployment/mlflow", "Service/mlflow", "Service/store", "ConfigMap/mlflow"]
    assert set(result.kept) == {
        ObjectRef("", "PersistentVolumeClaim", NS, "store-data"),
        ObjectRef("", "Namespace", "", NS),
    }


def statefulset_with_claim(cluster: FakeCluster) -> list[dict[str, Any]]:
    """A StatefulSet with a claim template, and the claim its controller made (it carries no label of ours)."""
    template = {"metadata": {"name": "data"}, "spec": {}}
    rendered = [
        obj("Namespace", NS),
        obj("StatefulSet", "postgres", "apps/v1", spec={"volumeClaimTemplates": [template]}),
    ]
    engine(cluster).apply(rendered)
    claim = obj("PersistentVolumeClaim", "data-postgres-0", spec={})
    claim["metadata"]["namespace"] = NS
    cluster.objects[("v1", "PersistentVolumeClaim", NS, "data-postgres-0")] = claim
    return rendered


def test_destroy_keeps_the_namespace_that_holds_a_statefulsets_claims(cluster: FakeCluster) -> None:
    statefulset_with_claim(cluster)
    result = engine(cluster).destroy()
    assert set(result.kept) == {
        ObjectRef("", "PersistentVolumeClaim", NS, "data-postgres-0"),
        ObjectRef("", "Namespace", "", NS),
    }
    assert ("v1", "PersistentVolumeClaim", NS, "data-postgres-0") in cluster.objects
    assert ("v1", "Namespace", "", NS) in cluster.objects
    assert result.pruned == [ObjectRef("apps", "StatefulSet", NS, "postgres")]


def test_destroy_with_purge_data_deletes_the_statefulsets_claims(cluster: FakeCluster) -> None:
    statefulset_with_claim(cluster)
    result = engine(cluster).destroy(purge_data=True)
    assert ObjectRef("", "PersistentVolumeClaim", NS, "data-postgres-0") in result.pruned
    assert cluster.objects == {}


def test_destroy_with_purge_data_deletes_everything_and_the_parent(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    engine(cluster).destroy(purge_data=True)
    assert cluster.objects == {}


def test_a_parent_owned_by_another_tool_is_left_alone(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    parent = cluster.objects[("v1", "Secret", NS, "applyset-mlopskit")]
    parent["metadata"]["annotations"]["applyset.kubernetes.io/tooling"] = "kubectl/v1.34"
    with pytest.raises(PlatformError, match="ApplySet parent of another tool"):
        engine(cluster).apply(platform())


def test_diff_is_empty_after_apply(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    assert engine(cluster).diff(platform()) == []


def test_diff_after_a_change_shows_that_object_and_the_pruned_one(cluster: FakeCluster) -> None:
    engine(cluster).apply(platform())
    diffs = dict(engine(cluster).diff(platform(workers="3", with_store=False)))
    assert set(diffs) == {ObjectRef("", "ConfigMap", NS, "mlflow"), ObjectRef("", "Service", NS, "store")}
    assert "+  workers: '3'" in diffs[ObjectRef("", "ConfigMap", NS, "mlflow")]
    assert "+++ /dev/null" in diffs[ObjectRef("", "Service", NS, "store")]
