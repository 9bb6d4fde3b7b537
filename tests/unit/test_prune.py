"""Which objects a deploy prunes: those carrying our label that are no longer rendered, and only those."""

from __future__ import annotations

from mlopskit.kube.applyset import ObjectRef, prune_set

MLFLOW = ObjectRef("apps", "Deployment", "mlops", "mlflow")
POSTGRES = ObjectRef("apps", "StatefulSet", "mlops", "postgres")
POSTGRES_SVC = ObjectRef("", "Service", "mlops", "postgres")
INGRESS = ObjectRef("networking.k8s.io", "Ingress", "mlops", "mlflow")


def test_nothing_is_pruned_when_everything_is_still_rendered() -> None:
    assert prune_set([MLFLOW, POSTGRES], [MLFLOW, POSTGRES, INGRESS]) == []


def test_objects_no_longer_rendered_are_pruned() -> None:
    assert set(prune_set([MLFLOW, POSTGRES, POSTGRES_SVC], [MLFLOW])) == {POSTGRES, POSTGRES_SVC}


def test_same_name_in_another_kind_is_not_the_same_object() -> None:
    assert prune_set([POSTGRES_SVC], [POSTGRES]) == [POSTGRES_SVC]


def test_same_name_in_another_namespace_is_not_the_same_object() -> None:
    elsewhere = ObjectRef("apps", "Deployment", "other", "mlflow")
    assert prune_set([elsewhere], [MLFLOW]) == [elsewhere]
