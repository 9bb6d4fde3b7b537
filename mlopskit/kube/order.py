"""The order in which kinds are applied: dependencies first, so every object finds what it refers to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlopskit.kube.applyset import ObjectRef

# Each phase: a name and its kinds, in the order they are applied within the phase. Kinds we do not
# know go in UNKNOWN_PHASE: after config and secrets (they may reference them), before storage and
# workloads (which may need them, e.g. a Traefik Middleware an Ingress refers to).
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("crds", ("CustomResourceDefinition",)),
    ("namespaces", ("Namespace",)),
    ("rbac", ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")),
    ("config", ("ConfigMap", "Secret", "SealedSecret")),
    ("other", ()),
    ("storage", ("StorageClass", "PersistentVolume", "PersistentVolumeClaim")),
    ("services", ("Service", "Endpoints", "EndpointSlice")),
    ("workloads", ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod")),
    ("jobs", ("Job", "CronJob")),
    (
        "ingress",
        (
            "IngressClass",
            "Ingress",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ResourceQuota",
            "LimitRange",
            "ServiceMonitor",
        ),
    ),
)
UNKNOWN_PHASE = "other"
_PHASE_INDEX = {name: index for index, (name, _) in enumerate(PHASES)}
_KIND_PHASE = {kind: name for name, kinds in PHASES for kind in kinds}
_KIND_INDEX = {kind: index for _, kinds in PHASES for index, kind in enumerate(kinds)}


def phase_of(kind: str) -> str:
    """The phase a kind is applied in; unknown kinds go after config and before storage and workloads."""
    return _KIND_PHASE.get(kind, UNKNOWN_PHASE)


def phase_index(kind: str) -> int:
    return _PHASE_INDEX[phase_of(kind)]


def sort_key(kind: str) -> tuple[int, int]:
    """(phase, position of the kind in its phase): StorageClass before PersistentVolumeClaim."""
    return phase_index(kind), _KIND_INDEX.get(kind, 0)


# Phases whose kinds never depend on each other at admission: their objects are applied in one concurrent
# batch. RBAC stays kind by kind (a RoleBinding's escalation check needs its Role), and so do storage (a
# claim names its StorageClass) and unknown kinds (custom resources may refer to each other).
CONCURRENT_PHASES = frozenset({"config", "services", "workloads", "jobs", "ingress"})


def batch_key(kind: str) -> tuple[int, int]:
    """Objects with the same key are applied together: a whole phase, or one kind of the other phases."""
    if phase_of(kind) in CONCURRENT_PHASES:
        return phase_index(kind), 0
    return sort_key(kind)


def sort_objects(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects in apply order; objects of one kind keep their rendered order (a stable sort)."""
    return sorted(objects, key=lambda obj: sort_key(str(obj.get("kind", ""))))


def unknown_kinds(objects: Iterable[dict[str, Any]]) -> list[str]:
    """Kinds without a known phase, so the caller can say where they went."""
    return sorted({str(obj.get("kind")) for obj in objects if str(obj.get("kind")) not in _KIND_PHASE})


def deletion_sorted(refs: Iterable[ObjectRef]) -> list[ObjectRef]:
    """The reverse of the apply order: users of a thing are deleted before the thing."""
    return sorted(refs, key=lambda ref: (tuple(-k for k in sort_key(ref.kind)), ref))
