"""The apply engine: server-side apply in dependency order, ApplySet bookkeeping, prune and destroy.

One field manager ("mlopskit") owns every field we set; conflicts with other managers are taken over
only when the user says --force. No kubectl: everything goes through the kubernetes DynamicClient.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from mlopskit.errors import PlatformError
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.applyset import (
    DEFAULT_PARENT_NAME,
    PART_OF_LABEL,
    TOOLING_ANNOTATION,
    ApplySetParent,
    ObjectRef,
    api_group,
    group_kind,
    label_child,
    prune_set,
    recorded,
    split_group_kind,
)
from mlopskit.kube.diff import mask_secret_pair, normalize, unified_diff
from mlopskit.kube.order import phase_of, sort_key, sort_objects
from mlopskit.kube.retry import RetryPolicy

FIELD_MANAGER = "mlopskit"
DATA_KINDS = frozenset({"PersistentVolumeClaim"})
EARLY_PHASES = frozenset({"crds", "namespaces"})

Progress = Callable[[ObjectRef, str], None]


@dataclass
class ApplyResult:
    """What an apply did (or, in a dry run, would do), object by object."""

    dry_run: bool = False
    created: list[ObjectRef] = field(default_factory=list)
    configured: list[ObjectRef] = field(default_factory=list)
    unchanged: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    kept: list[ObjectRef] = field(default_factory=list)
    applied: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)
    previous: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.configured or self.pruned)

    def summary(self) -> str:
        verb = "would be " if self.dry_run else ""
        text = (
            f"{len(self.created)} {verb}created, {len(self.configured)} {verb}configured, "
            f"{len(self.unchanged)} unchanged, {len(self.pruned)} {verb}pruned"
        )
        if self.kept:
            text += f", {len(self.kept)} kept (data; --purge-data deletes them)"
        return text


@dataclass
class _Resolved:
    resource: Any  # kubernetes.dynamic.Resource, or None when its CRD is not installed yet
    namespaced: bool


class Engine:
    """Applies, prunes, diffs and deletes the objects of one ApplySet."""

    def __init__(
        self,
        dyn: DynamicClient,
        namespace: str,
        *,
        parent_name: str = DEFAULT_PARENT_NAME,
        force: bool = False,
        dry_run: bool = False,
        retry: RetryPolicy | None = None,
        progress: Progress | None = None,
        crd_timeout: float = 60.0,
        parallelism: int = 8,
    ) -> None:
        self.dyn = dyn
        self.namespace = namespace
        self.parent = ApplySetParent(parent_name, namespace)
        self.force = force
        self.dry_run = dry_run
        self.retry = retry or RetryPolicy()
        self.progress = progress or (lambda ref, action: None)
        self.crd_timeout = crd_timeout
        self.parallelism = max(1, parallelism)
        self._crd_scopes: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------------------------- discovery

    def resolve(self, api_version: str, kind: str) -> _Resolved:
        """The API resource for a kind; a kind whose CRD is in this batch but not installed yet resolves
        to no resource, with the scope the CRD declares."""
        try:
            resource = self.retry.call(self.dyn.resources.get, api_version=api_version, kind=kind)
            return _Resolved(resource, bool(resource.namespaced))
        except ResourceNotFoundError:
            scope = self._crd_scopes.get((api_group(api_version), kind))
            if scope is None:
                raise PlatformError(
                    f"the API server has no resource for kind {kind!r} in apiVersion {api_version!r}: "
                    "install the CustomResourceDefinition that provides it, or fix the apiVersion"
                ) from None
            return _Resolved(None, scope)

    def _resolve_group_kind(self, value: str) -> Any:
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

    def _remember_crds(self, objects: Iterable[dict[str, Any]]) -> None:
        for obj in objects:
            if obj.get("kind") == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                kind = str((spec.get("names") or {}).get("kind", ""))
                self._crd_scopes[(str(spec.get("group", "")), kind)] = spec.get("scope") == "Namespaced"

    def with_namespace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Namespaced objects without a namespace go into the platform namespace; cluster-scoped lose it."""
        resolved = self.resolve(str(obj.get("apiVersion")), str(obj.get("kind")))
        metadata = dict(obj.get("metadata") or {})
        if resolved.namespaced:
            metadata.setdefault("namespace", self.namespace)
        else:
            metadata.pop("namespace", None)
        return {**obj, "metadata": metadata}

    # ---------------------------------------------------------------------------------- reading

    def live_parent(self) -> dict[str, Any] | None:
        secrets = self.resolve("v1", "Secret").resource
        try:
            found = self.retry.call(secrets.get, name=self.parent.name, namespace=self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, "get", ObjectRef("", "Secret", self.namespace, self.parent.name)) from None
        parent: dict[str, Any] = found.to_dict()
        tooling = ((parent.get("metadata") or {}).get("annotations") or {}).get(TOOLING_ANNOTATION, "")
        if tooling and not str(tooling).startswith("mlopskit/"):
            raise PlatformError(
                f"Secret {self.namespace}/{self.parent.name} is the ApplySet parent of another tool "
                f"({TOOLING_ANNOTATION}={tooling}); mlopskit will not change its objects. "
                "Use another namespace or remove that ApplySet."
            )
        return parent

    def live_children(self, group_kinds: Iterable[str], namespaces: Iterable[str]) -> dict[ObjectRef, dict[str, Any]]:
        """Every object carrying our part-of label, listed per recorded group-kind and namespace."""
        selector = f"{PART_OF_LABEL}={self.parent.id}"
        found: dict[ObjectRef, dict[str, Any]] = {}
        for value in sorted(set(group_kinds)):
            resource = self._resolve_group_kind(value)
            if resource is None:
                continue  # the kind is gone from the server (e.g. its CRD was removed): nothing to list
            scopes = sorted(set(namespaces)) if resource.namespaced else [None]
            for ns in scopes:
                try:
                    listed = self.retry.call(resource.get, namespace=ns, label_selector=selector)
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    ref = ObjectRef(api_group(resource.group_version), resource.kind, ns or "", "*")
                    raise api_error(exc, "list", ref, resource.name) from None
                for item in listed.to_dict().get("items") or []:
                    item.setdefault("apiVersion", resource.group_version)
                    item.setdefault("kind", resource.kind)
                    found[ObjectRef.of(item)] = item
        return found

    # --------------------------------------------------------------------------------- applying

    def apply(self, objects: Iterable[dict[str, Any]], *, prune: bool = True, purge_data: bool = False) -> ApplyResult:
        """Apply objects in dependency order, record them in the ApplySet, prune what is no longer rendered."""
        rendered = list(objects)
        self._remember_crds(rendered)
        ordered = [self.with_namespace(obj) for obj in sort_objects(rendered)]
        desired = {ObjectRef.of(obj) for obj in ordered}
        _check_unique(ordered)

        parent = self.live_parent()
        old_kinds, old_namespaces = recorded(parent)
        new_kinds = {group_kind(obj) for obj in ordered}
        new_namespaces = {ref.namespace for ref in desired if ref.namespace} | {self.namespace}
        live = self.live_children(old_kinds | new_kinds, old_namespaces | new_namespaces | {self.namespace})

        result = ApplyResult(dry_run=self.dry_run, previous=live)
        new_namespace_names = {
            ref.name for ref in desired if ref.kind == "Namespace" and ref not in live and not self._exists(ref)
        }
        early = [obj for obj in ordered if phase_of(str(obj["kind"])) in EARLY_PHASES]
        rest = [obj for obj in ordered if phase_of(str(obj["kind"])) not in EARLY_PHASES]
        for obj in early:
            self._apply_one(obj, live, result, new_namespace_names)
        self._wait_for_crds([obj for obj in early if obj["kind"] == "CustomResourceDefinition"])

        # The parent lists old and new kinds until pruning is done, so an interrupted run can still prune.
        self._write_parent(old_kinds | new_kinds, old_namespaces | new_namespaces, new_namespace_names)
        # Objects of one kind do not depend on each other: apply them concurrently, kind after kind (a
        # RoleBinding still waits for its Role, which the API server's escalation check needs).
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            for _, phase in groupby(rest, key=lambda obj: sort_key(str(obj["kind"]))):
                batch = list(phase)
                list(pool.map(lambda obj: self._apply_one(obj, live, result, new_namespace_names), batch))

        kept_kinds: set[str] = set()
        if prune:
            for ref in _deletion_sorted(prune_set(live, desired)):
                if ref.kind in DATA_KINDS and not purge_data:
                    result.kept.append(ref)
                    kept_kinds.add(group_kind(live[ref]))
                    self.progress(ref, "kept")
                    continue
                self._delete(ref, live[ref])
                result.pruned.append(ref)
                self.progress(ref, "pruned")
            kept_namespaces = {ref.namespace for ref in result.kept if ref.namespace}
            self._write_parent(new_kinds | kept_kinds, new_namespaces | kept_namespaces, new_namespace_names)
        return result

    def _exists(self, ref: ObjectRef) -> bool:
        resolved = self.resolve("v1", ref.kind) if ref.kind == "Namespace" else None
        if resolved is None or resolved.resource is None:
            return False
        try:
            self.retry.call(resolved.resource.get, name=ref.name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise api_error(exc, "get", ref, resolved.resource.name) from None

    def _apply_one(
        self,
        obj: dict[str, Any],
        live: dict[ObjectRef, dict[str, Any]],
        result: ApplyResult,
        new_namespaces: set[str],
    ) -> None:
        ref = ObjectRef.of(obj)
        resolved = self.resolve(str(obj["apiVersion"]), ref.kind)
        body = label_child(obj, self.parent.id)
        if self.dry_run and (resolved.resource is None or ref.namespace in new_namespaces):
            # A server-side dry run cannot place an object in a namespace or of a kind that only this
            # apply would create; such an object is new by definition.
            result.created.append(ref)
            result.applied[ref] = body
            self.progress(ref, "created")
            return
        if resolved.resource is None:
            raise PlatformError(f"the kind of {ref} is still unknown after its CRD became Established")
        try:
            response = self.retry.call(
                self.dyn.server_side_apply,
                resolved.resource,
                body=body,
                name=ref.name,
                namespace=ref.namespace or None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True if self.force else None,
                dry_run="All" if self.dry_run else None,
                serialize=False,
            )
        except ApiException as exc:
            raise api_error(exc, "apply", ref, resolved.resource.name) from None
        applied: dict[str, Any] = json.loads(response.data)
        result.applied[ref] = applied
        action = classify(response.status, live.get(ref), applied, self.dry_run)
        getattr(result, action).append(ref)
        self.progress(ref, action)

    def _write_parent(self, kinds: set[str], namespaces: set[str], new_namespaces: set[str]) -> None:
        if self.dry_run:
            return
        manifest = self.parent.manifest(kinds, namespaces)
        secrets = self.resolve("v1", "Secret").resource
        ref = ObjectRef("", "Secret", self.namespace, self.parent.name)
        try:
            self.retry.call(
                self.dyn.server_side_apply,
                secrets,
                body=manifest,
                name=self.parent.name,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,  # the parent is ours alone: its annotations must say what we applied
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PlatformError(
                    f"namespace {self.namespace!r} does not exist, so the ApplySet parent {ref} cannot be "
                    "written; render a Namespace object for it or create the namespace first"
                ) from None
            raise api_error(exc, "apply", ref, "secrets") from None

    def _wait_for_crds(self, crds: list[dict[str, Any]]) -> None:
        if not crds or self.dry_run:
            return
        resource = self.resolve("apiextensions.k8s.io/v1", "CustomResourceDefinition").resource
        deadline = time.monotonic() + self.crd_timeout
        for crd in crds:
            name = str(crd["metadata"]["name"])
            while True:
                live = self.retry.call(resource.get, name=name).to_dict()
                conditions = (live.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise PlatformError(
                        f"CustomResourceDefinition {name} is not Established after {self.crd_timeout:.0f}s "
                        f"(conditions: {conditions}); check the API server's log"
                    )
                time.sleep(0.5)
        # New kinds exist now; the cached discovery does not know them yet.
        self.dyn.resources.invalidate_cache()

    def diff(self, objects: Iterable[dict[str, Any]]) -> list[tuple[ObjectRef, str]]:
        """A unified diff per object that a server-side dry-run apply (with prune) would change."""
        planner = Engine(
            self.dyn, self.namespace, parent_name=self.parent.name, force=self.force, dry_run=True, retry=self.retry
        )
        plan = planner.apply(objects, prune=True)
        diffs: list[tuple[ObjectRef, str]] = []
        for ref in plan.created + plan.configured:
            before = plan.previous.get(ref) or self.live_object(ref, plan.applied[ref])
            text = unified_diff(str(ref), *mask_secret_pair(before, plan.applied[ref]))
            if text:
                diffs.append((ref, text))
        for ref in plan.pruned:
            diffs.append((ref, unified_diff(str(ref), *mask_secret_pair(plan.previous[ref], None))))
        return diffs

    def live_object(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The object as it is in the cluster now, or None when it does not exist."""
        resolved = self.resolve(str(obj.get("apiVersion")), ref.kind)
        if resolved.resource is None:
            return None
        try:
            found = self.retry.call(resolved.resource.get, name=ref.name, namespace=ref.namespace or None)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, "get", ref, resolved.resource.name) from None
        live: dict[str, Any] = found.to_dict()
        return live

    # --------------------------------------------------------------------------------- deleting

    def _delete(self, ref: ObjectRef, obj: dict[str, Any]) -> None:
        resolved = self.resolve(str(obj.get("apiVersion")), ref.kind)
        if resolved.resource is None:
            return
        try:
            self.retry.call(
                resolved.resource.delete,
                name=ref.name,
                namespace=ref.namespace or None,
                propagation_policy="Background",
                dry_run="All" if self.dry_run else None,
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # already gone: the goal is reached
            raise api_error(exc, "delete", ref, resolved.resource.name) from None

    def destroy(self, *, purge_data: bool = False) -> ApplyResult:
        """Delete every object of the ApplySet in reverse apply order, keeping data unless purge_data."""
        result = ApplyResult(dry_run=self.dry_run)
        parent = self.live_parent()
        if parent is None:
            return result
        kinds, namespaces = recorded(parent)
        live = self.live_children(kinds, namespaces | {self.namespace})
        for ref in _deletion_sorted(list(live)):
            if ref.kind in DATA_KINDS and not purge_data:
                result.kept.append(ref)
                self.progress(ref, "kept")
                continue
            if ref.kind == "Namespace" and not purge_data and self._holds_kept_data(ref.name, result.kept):
                # Deleting the namespace would delete the claims we promised to keep.
                result.kept.append(ref)
                self.progress(ref, "kept")
                continue
            self._delete(ref, live[ref])
            result.pruned.append(ref)
            self.progress(ref, "deleted")
        if purge_data:
            for ref, claim in self._statefulset_claims(live):
                self._delete(ref, claim)
                result.pruned.append(ref)
                self.progress(ref, "deleted")
        if not result.kept:
            self._delete(ObjectRef("", "Secret", self.namespace, self.parent.name), {"apiVersion": "v1"})
        return result

    @staticmethod
    def _holds_kept_data(namespace: str, kept: list[ObjectRef]) -> bool:
        return any(ref.namespace == namespace for ref in kept)

    def _statefulset_claims(self, live: dict[ObjectRef, dict[str, Any]]) -> list[tuple[ObjectRef, dict[str, Any]]]:
        """PVCs a StatefulSet created from its volumeClaimTemplates: <template>-<statefulset>-<ordinal>."""
        prefixes: dict[str, list[str]] = {}
        for ref, obj in live.items():
            if ref.kind != "StatefulSet":
                continue
            for template in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
                name = str((template.get("metadata") or {}).get("name", ""))
                prefixes.setdefault(ref.namespace, []).append(f"{name}-{ref.name}-")
        claims: list[tuple[ObjectRef, dict[str, Any]]] = []
        pvcs = self.resolve("v1", "PersistentVolumeClaim").resource
        for namespace, names in prefixes.items():
            listed = self.retry.call(pvcs.get, namespace=namespace).to_dict()
            for item in listed.get("items") or []:
                name = str(item["metadata"]["name"])
                if any(name.startswith(p) and name[len(p) :].isdigit() for p in names):
                    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **item}
                    claims.append((ObjectRef.of(claim), claim))
        return claims


def classify(status: int, live: dict[str, Any] | None, applied: dict[str, Any], dry_run: bool) -> str:
    """created / configured / unchanged, from the apply response and the object as it was before."""
    if status == 201 or (live is None and dry_run and status != 200):
        return "created"
    if live is None:
        return "configured"  # it existed but was not ours yet: now it is
    if dry_run:
        return "unchanged" if normalize(live) == normalize(applied) else "configured"
    before = (live.get("metadata") or {}).get("resourceVersion")
    after = (applied.get("metadata") or {}).get("resourceVersion")
    return "unchanged" if before is not None and before == after else "configured"


def _deletion_sorted(refs: Iterable[ObjectRef]) -> list[ObjectRef]:
    return sorted(refs, key=lambda ref: (tuple(-k for k in sort_key(ref.kind)), ref))


def _check_unique(objects: list[dict[str, Any]]) -> None:
    seen: set[ObjectRef] = set()
    for obj in objects:
        ref = ObjectRef.of(obj)
        if ref in seen:
            raise PlatformError(f"{ref} is rendered twice; each object may appear once in the manifests")
        seen.add(ref)
