"""Which API resource serves a kind: discovery through the DynamicClient, aware of CRDs applied in this batch."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from mlopskit.errors import PlatformError
from mlopskit.kube.applyset import ObjectRef, api_group, split_group_kind
from mlopskit.kube.retry import RetryPolicy


@dataclass
class Resolved:
    """An API resource and its scope; `resource` is None for a kind whose CRD is not installed yet."""

    resource: Any  # kubernetes.dynamic.Resource
    namespaced: bool


class Discovery:
    """Resolves kinds to resources, remembering the scope of CRDs that an apply is about to install."""

    def __init__(self, dyn: DynamicClient, retry: RetryPolicy) -> None:
        self.dyn = dyn
        self.retry = retry
        self._crd_scopes: dict[tuple[str, str], bool] = {}

    def resolve(self, api_version: str, kind: str) -> Resolved:
        """The API resource for a kind; PlatformError when neither the server nor a pending CRD knows it."""
        try:
            resource = self.retry.call(self.dyn.resources.get, api_version=api_version, kind=kind)
            return Resolved(resource, bool(resource.namespaced))
        except ResourceNotFoundError:
            scope = self._crd_scopes.get((api_group(api_version), kind))
            if scope is None:
                raise PlatformError(
                    f"the API server has no resource for kind {kind!r} in apiVersion {api_version!r}: "
                    "install the CustomResourceDefinition that provides it, or fix the apiVersion"
                ) from None
            return Resolved(None, scope)

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves a kind now (a CRD installed and established), e.g. a ServiceMonitor."""
        try:
            self.retry.call(self.dyn.resources.get, api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return False
        return True

    def crd_of(self, api_version: str, kind: str) -> dict[str, Any] | None:
        """The live CustomResourceDefinition that serves a kind, or None when none does (or it is built in)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resource = self.retry.call(self.dyn.resources.get, api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None
        group = api_group(api_version)
        if not group:
            return None
        crds = self.resolve("apiextensions.k8s.io/v1", "CustomResourceDefinition").resource
        try:
            found: dict[str, Any] = self.retry.call(crds.get, name=f"{resource.name}.{group}").to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None  # served by an aggregated API server, not a CRD
            from mlopskit.kube.api_errors import api_error

            crd = ObjectRef("apiextensions.k8s.io", "CustomResourceDefinition", "", f"{resource.name}.{group}")
            raise api_error(exc, "get", crd) from exc
        return found

    def resolve_group_kind(self, value: str) -> Any:
        """The preferred resource for an ApplySet group-kind ('Deployment.apps'), or None when gone."""
        group, kind = split_group_kind(value)
        # The discoverer treats an empty group as "any group": name the core API's prefix instead.
        prefix = "apis" if group else "api"
        try:
            found = self.retry.call(self.dyn.resources.search, prefix=prefix, group=group, kind=kind)
        except ResourceNotFoundError:
            return None
        # Lists (DeploymentList) and subresources share the kind name; keep the resource itself.
        candidates = [
            r for r in found if getattr(r, "kind", None) == kind and (r.group or "") == group and "/" not in str(r.name)
        ]
        preferred = [r for r in candidates if getattr(r, "preferred", False)]
        return (preferred or candidates or [None])[0]

    def remember_crds(self, objects: Iterable[dict[str, Any]]) -> None:
        """Note the scope of every CRD in a batch, so its kinds resolve before the CRD is installed."""
        for obj in objects:
            if obj.get("kind") == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                kind = str((spec.get("names") or {}).get("kind", ""))
                self._crd_scopes[(str(spec.get("group", "")), kind)] = spec.get("scope") == "Namespaced"

    def with_namespace(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        """Namespaced objects without a namespace go into `namespace`; cluster-scoped ones lose theirs."""
        resolved = self.resolve(str(obj.get("apiVersion")), str(obj.get("kind")))
        metadata = dict(obj.get("metadata") or {})
        if resolved.namespaced:
            metadata.setdefault("namespace", namespace)
        else:
            metadata.pop("namespace", None)
        return {**obj, "metadata": metadata}

    def wait_established(self, crds: list[dict[str, Any]], timeout: float) -> None:
        """Poll until every CRD is Established (timeout in seconds), then refresh discovery."""
        if not crds:
            return
        resource = self.resolve("apiextensions.k8s.io/v1", "CustomResourceDefinition").resource
        deadline = time.monotonic() + timeout
        for crd in crds:
            name = str(crd["metadata"]["name"])
            while True:
                live = self.retry.call(resource.get, name=name).to_dict()
                conditions = (live.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise PlatformError(
                        f"CustomResourceDefinition {name} is not Established after {timeout:.0f}s "
                        f"(conditions: {conditions}); check the API server's log"
                    )
                time.sleep(0.5)
        # New kinds exist now; the cached discovery does not know them yet.
        self.dyn.resources.invalidate_cache()
