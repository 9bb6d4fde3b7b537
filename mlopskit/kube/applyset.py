"""ApplySet bookkeeping (KEP-3659), compatible with `kubectl apply --prune --applyset`.

The parent is a Secret in the platform namespace. Its id label is derived from the parent's identity;
every applied object carries the part-of label with that id, and the parent's annotations record which
group-kinds and namespaces to look in when pruning.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlopskit import __version__
from mlopskit.errors import PlatformError

ID_LABEL = "applyset.kubernetes.io/id"
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
TOOLING_ANNOTATION = "applyset.kubernetes.io/tooling"
GROUP_KINDS_ANNOTATION = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES_ANNOTATION = "applyset.kubernetes.io/additional-namespaces"
DEFAULT_PARENT_NAME = "applyset-mlopskit"
TOOLING = f"mlopskit/{__version__}"


def applyset_id(name: str, namespace: str, kind: str = "Secret", group: str = "") -> str:
    """The parent's id: applyset-<base64url(sha256(name.namespace.kind.group)), unpadded>-v1."""
    digest = hashlib.sha256(f"{name}.{namespace}.{kind}.{group}".encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}-v1"


def api_group(api_version: str) -> str:
    """'apps/v1' -> 'apps'; 'v1' -> '' (the core group)."""
    return api_version.split("/")[0] if "/" in api_version else ""


def group_kind(obj: Mapping[str, Any]) -> str:
    """'Deployment.apps' for apps/v1 Deployments, 'Secret' for core objects: the annotation's format."""
    group = api_group(str(obj.get("apiVersion", "")))
    kind = str(obj.get("kind", ""))
    return f"{kind}.{group}" if group else kind


def split_group_kind(value: str) -> tuple[str, str]:
    """'Deployment.apps' -> ('apps', 'Deployment'); 'Secret' -> ('', 'Secret')."""
    kind, _, group = value.partition(".")
    return group, kind


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The identity of one object: enough to find it again and to name it in messages."""

    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            api_group(str(obj.get("apiVersion", ""))),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
        )

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{kind} {where}{self.name}"


@dataclass(frozen=True)
class ApplySetParent:
    """The parent Secret and what it records."""

    name: str
    namespace: str

    @property
    def id(self) -> str:
        return applyset_id(self.name, self.namespace)

    def manifest(self, group_kinds: Iterable[str], namespaces: Iterable[str]) -> dict[str, Any]:
        """The parent Secret, recording the group-kinds and the namespaces other than its own."""
        others = sorted({ns for ns in namespaces if ns and ns != self.namespace})
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {ID_LABEL: self.id},
                "annotations": {
                    TOOLING_ANNOTATION: TOOLING,
                    GROUP_KINDS_ANNOTATION: ",".join(sorted(set(group_kinds))),
                    NAMESPACES_ANNOTATION: ",".join(others),
                },
            },
        }


def recorded(parent: Mapping[str, Any] | None) -> tuple[set[str], set[str]]:
    """(group-kinds, additional namespaces) recorded on a live parent; empty sets when there is none."""
    if not parent:
        return set(), set()
    annotations = (parent.get("metadata") or {}).get("annotations") or {}
    kinds = {k for k in str(annotations.get(GROUP_KINDS_ANNOTATION, "")).split(",") if k}
    namespaces = {n for n in str(annotations.get(NAMESPACES_ANNOTATION, "")).split(",") if n}
    return kinds, namespaces


def label_child(obj: Mapping[str, Any], set_id: str) -> dict[str, Any]:
    """A copy of obj carrying the part-of label; the rendered object is left as it was."""
    labelled = copy.deepcopy(dict(obj))
    metadata = labelled.setdefault("metadata", {})
    metadata.setdefault("labels", {})
    metadata["labels"] = {**(metadata["labels"] or {}), PART_OF_LABEL: set_id}
    return labelled


def check_unique(objects: Iterable[dict[str, Any]], source: Callable[[dict[str, Any]], str]) -> None:
    """PlatformError naming both sources when two objects share an identity (group, kind, namespace, name)."""
    seen: dict[ObjectRef, str] = {}
    for obj in objects:
        ref = ObjectRef.of(obj)
        if ref in seen:
            raise PlatformError(f"{ref} is rendered by both {seen[ref]} and {source(obj)}; each object may appear once")
        seen[ref] = source(obj)


def prune_set(live: Iterable[ObjectRef], desired: Iterable[ObjectRef]) -> list[ObjectRef]:
    """Objects that carry our label but are no longer rendered: these, and only these, are pruned."""
    wanted = set(desired)
    return sorted({ref for ref in live if ref not in wanted})
