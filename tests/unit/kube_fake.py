"""An in-memory stand-in for the kubernetes DynamicClient, for the engine's decision logic only.

No API server can run on this machine. FakeCluster models only what the engine's decisions depend on:
discovery, server-side apply answering 201/200 and bumping resourceVersion only on a real change,
a managedFields entry for the applying manager, label-selector lists, deletes, dry runs, and CRD kinds
appearing after a discovery refresh. Its apply replaces the whole object (a real one merges field by
field and keeps what other managers own), so what an apply changes on a live object is tested in
tests/cluster against a real API server; here only the engine's decisions are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from mlopskit.kube.diff import normalize
from mlopskit.kube.managed import owned_fields

BUILTIN = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    # Same kind name in another group: the engine must not mistake it for the core Service.
    ("serving.knative.dev/v1", "Service"): ("services", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("customresourcedefinitions", False),
}


def fields_of(body: dict[str, Any]) -> dict[str, Any]:
    """A fieldsV1 tree for everything an applied body sets (lists atomic), as the server records it."""

    def tree(value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and value:
            return {f"f:{key}": tree(sub) for key, sub in value.items()}
        return {}

    content = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
    return tree({**content, "metadata": metadata})


def _error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason=message)
    exc.body = json.dumps({"message": message})
    return exc


@dataclass
class FakeResource:
    cluster: FakeCluster
    group_version: str
    kind: str
    name: str
    namespaced: bool
    preferred: bool = True

    @property
    def group(self) -> str:
        return self.group_version.split("/")[0] if "/" in self.group_version else ""

    def _key(self, name: str, namespace: str | None) -> tuple[str, str, str, str]:
        return (self.group_version, self.kind, (namespace or "") if self.namespaced else "", name)

    def get(self, name: str | None = None, namespace: str | None = None, label_selector: str | None = None) -> Any:
        self.cluster.calls.append(("get", self.kind, name or "*"))
        if name is not None:
            stored = self.cluster.objects.get(self._key(name, namespace))
            if stored is None:
                raise _error(404, f'{self.name} "{name}" not found')
            return SimpleNamespace(to_dict=lambda: copy.deepcopy(stored))
        key, _, value = (label_selector or "").partition("=")
        items = [
            copy.deepcopy(obj)
            for (gv, kind, ns, _), obj in self.cluster.objects.items()
            if gv == self.group_version
            and kind == self.kind
            and (namespace is None or ns == namespace)
            and (not key or obj["metadata"].get("labels", {}).get(key) == value)
        ]
        return SimpleNamespace(to_dict=lambda: {"items": items})

    def delete(self, name: str, namespace: str | None = None, dry_run: str | None = None, **_: Any) -> None:
        self.cluster.calls.append(("delete", self.kind, name))
        key = self._key(name, namespace)
        if key not in self.cluster.objects:
            raise _error(404, "not found")
        if dry_run is None:
            del self.cluster.objects[key]


@dataclass
class FakeCluster:
    """The DynamicClient surface the engine uses, over a dict of stored objects."""

    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    custom: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    discovered_custom: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    version: int = 100

    @property
    def resources(self) -> FakeCluster:
        return self

    def _table(self) -> dict[tuple[str, str], tuple[str, bool]]:
        return {**BUILTIN, **self.discovered_custom}

    def get(self, api_version: str, kind: str) -> FakeResource:
        found = self._table().get((api_version, kind))
        if found is None:
            raise ResourceNotFoundError(f"{api_version} {kind}")
        return FakeResource(self, api_version, kind, found[0], found[1])

    def search(self, group: str, kind: str, prefix: str | None = None) -> list[FakeResource]:
        def matches(gv: str) -> bool:
            found_group = gv.split("/")[0] if "/" in gv else ""
            if group:
                return found_group == group
            # Like the real discoverer: an empty group is a wildcard unless the prefix names the core API.
            return prefix != "api" or found_group == ""

        return [
            FakeResource(self, gv, k, plural, namespaced)
            for (gv, k), (plural, namespaced) in self._table().items()
            if k == kind and matches(gv)
        ]

    def invalidate_cache(self) -> None:
        self.discovered_custom = dict(self.custom)

    def server_side_apply(
        self,
        resource: FakeResource,
        body: dict[str, Any],
        name: str,
        namespace: str | None,
        field_manager: str,
        force_conflicts: bool | None = None,
        dry_run: str | None = None,
        serialize: bool = True,
    ) -> Any:
        assert field_manager == "mlopskit"
        self.calls.append(("apply", resource.kind, name))
        if resource.namespaced and ("v1", "Namespace", "", namespace) not in self.objects:
            raise _error(404, f'namespaces "{namespace}" not found')
        key = resource._key(name, namespace)
        old = self.objects.get(key)
        new = copy.deepcopy(body)
        entry = {"manager": field_manager, "operation": "Apply", "fieldsV1": fields_of(body)}
        new["metadata"]["managedFields"] = [entry]
        if old is not None and normalize(old) == normalize(new) and owned_fields(old) == owned_fields(new):
            new = old
        else:
            self.version += 1
            new["metadata"]["resourceVersion"] = str(self.version)
            if body["kind"] == "CustomResourceDefinition":
                new["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
                spec = body["spec"]
                version = spec["versions"][0]["name"]
                self.custom[(f"{spec['group']}/{version}", spec["names"]["kind"])] = (
                    spec["names"]["plural"],
                    spec["scope"] == "Namespaced",
                )
        if dry_run is None:
            self.objects[key] = new
        status = 201 if old is None else 200
        return SimpleNamespace(status=status, data=json.dumps(new).encode(), to_dict=lambda: copy.deepcopy(new))
