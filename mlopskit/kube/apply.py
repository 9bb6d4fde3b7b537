"""The apply engine: plan, server-side apply in dependency order, prune; diff as a dry-run plan; destroy.

One field manager ("mlopskit") owns every field we set; conflicts with other managers are taken over
only when the user says --force. No kubectl: everything goes through the kubernetes DynamicClient.
Discovery lives in discovery.py, the ApplySet parent in parent.py, and what counts as a change in
managed.py: an object is `unchanged` when the fields we own did not change, whatever else did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.applyset import (
    DEFAULT_PARENT_NAME,
    PART_OF_LABEL,
    ApplySetParent,
    ObjectRef,
    api_group,
    check_unique,
    group_kind,
    label_child,
    prune_set,
    recorded,
)
from mlopskit.kube.diff import mask_secret_pair, unified_diff
from mlopskit.kube.discovery import Discovery, Resolved
from mlopskit.kube.managed import FIELD_MANAGER, classify
from mlopskit.kube.order import batch_key, deletion_sorted, phase_of, sort_objects
from mlopskit.kube.parent import ParentStore
from mlopskit.kube.render import TEMPLATE_ANNOTATION
from mlopskit.kube.retry import RetryPolicy

__all__ = ["FIELD_MANAGER", "ApplyResult", "Engine", "classify"]

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
class ApplyPlan:
    """What an apply starts from: the objects in order, what the ApplySet recorded, and what is live."""

    ordered: list[dict[str, Any]]
    desired: set[ObjectRef]
    recorded_kinds: set[str]
    recorded_namespaces: set[str]
    kinds: set[str]
    namespaces: set[str]
    live: dict[ObjectRef, dict[str, Any]]
    new_namespaces: set[str]  # Namespace objects this apply creates


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
        self.discovery = Discovery(dyn, self.retry)
        self.store = ParentStore(dyn, self.parent, self.retry)

    def resolve(self, api_version: str, kind: str) -> Resolved:
        return self.discovery.resolve(api_version, kind)

    def with_namespace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Namespaced objects without a namespace go into the platform namespace; cluster-scoped lose it."""
        return self.discovery.with_namespace(obj, self.namespace)

    # ---------------------------------------------------------------------------------- reading

    def live_children(self, group_kinds: Iterable[str], namespaces: Iterable[str]) -> dict[ObjectRef, dict[str, Any]]:
        """Every object carrying our part-of label, listed per group-kind and namespace, concurrently."""
        selector = f"{PART_OF_LABEL}={self.parent.id}"
        queries: list[tuple[Any, str | None]] = []
        for value in sorted(set(group_kinds)):
            resource = self.discovery.resolve_group_kind(value)
            if resource is None:
                continue  # the kind is gone from the server (e.g. its CRD was removed): nothing to list
            scopes: list[str | None] = list(sorted(set(namespaces))) if resource.namespaced else [None]
            queries.extend((resource, ns) for ns in scopes)

        def list_one(query: tuple[Any, str | None]) -> list[dict[str, Any]]:
            resource, ns = query
            try:
                listed = self.retry.call(resource.get, namespace=ns, label_selector=selector)
            except ApiException as exc:
                if exc.status == 404:
                    return []
                ref = ObjectRef(api_group(resource.group_version), resource.kind, ns or "", "*")
                raise api_error(exc, "list", ref, resource.name) from None
            items: list[dict[str, Any]] = listed.to_dict().get("items") or []
            for item in items:
                item.setdefault("apiVersion", resource.group_version)
                item.setdefault("kind", resource.kind)
            return items

        found: dict[ObjectRef, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            for items in pool.map(list_one, queries):
                found.update((ObjectRef.of(item), item) for item in items)
        return found

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

    # --------------------------------------------------------------------------------- planning

    def plan(self, objects: Iterable[dict[str, Any]]) -> ApplyPlan:
        """Order the objects, read the parent's record and every live child: nothing is written."""
        rendered = list(objects)
        self.discovery.remember_crds(rendered)
        ordered = [self.with_namespace(obj) for obj in sort_objects(rendered)]
        check_unique(ordered, _source_of)
        desired = {ObjectRef.of(obj) for obj in ordered}
        recorded_kinds, recorded_namespaces = recorded(self.store.read())
        kinds = {group_kind(obj) for obj in ordered}
        namespaces = {ref.namespace for ref in desired if ref.namespace} | {self.namespace}
        live = self.live_children(recorded_kinds | kinds, recorded_namespaces | namespaces)
        new_namespaces = {
            ref.name for ref in desired if ref.kind == "Namespace" and ref not in live and not self._exists(ref)
        }
        return ApplyPlan(ordered, desired, recorded_kinds, recorded_namespaces, kinds, namespaces, live, new_namespaces)

    def _exists(self, ref: ObjectRef) -> bool:
        return self.live_object(ref, {"apiVersion": "v1"}) is not None

    # --------------------------------------------------------------------------------- applying

    def apply(self, objects: Iterable[dict[str, Any]], *, prune: bool = True, purge_data: bool = False) -> ApplyResult:
        """Apply objects in dependency order, record them in the ApplySet, prune what is no longer rendered."""
        plan = self.plan(objects)
        result = ApplyResult(dry_run=self.dry_run, previous=plan.live)
        early = [obj for obj in plan.ordered if phase_of(str(obj["kind"])) in EARLY_PHASES]
        rest = [obj for obj in plan.ordered if phase_of(str(obj["kind"])) not in EARLY_PHASES]
        for obj in early:
            self._apply_one(obj, plan, result)
        if not self.dry_run:
            crds = [obj for obj in early if obj["kind"] == "CustomResourceDefinition"]
            self.discovery.wait_established(crds, self.crd_timeout)
            # The parent lists old and new kinds until pruning is done, so an interrupted run can still prune.
            self.store.write(plan.recorded_kinds | plan.kinds, plan.recorded_namespaces | plan.namespaces)
        # Objects that do not depend on each other are applied concurrently, batch after batch (order.py).
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            for _, phase in groupby(rest, key=lambda obj: batch_key(str(obj["kind"]))):
                list(pool.map(lambda obj: self._apply_one(obj, plan, result), list(phase)))
        if prune:
            self._prune(plan, result, purge_data)
        return result

    def _apply_one(self, obj: dict[str, Any], plan: ApplyPlan, result: ApplyResult) -> None:
        ref = ObjectRef.of(obj)
        resolved = self.resolve(str(obj["apiVersion"]), ref.kind)
        body = label_child(obj, self.parent.id)
        if self.dry_run and (resolved.resource is None or ref.namespace in plan.new_namespaces):
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
        action = classify(response.status, plan.live.get(ref), applied, self.dry_run)
        getattr(result, action).append(ref)
        self.progress(ref, action)

    def _prune(self, plan: ApplyPlan, result: ApplyResult, purge_data: bool) -> None:
        kept_kinds: set[str] = set()
        for ref in deletion_sorted(prune_set(plan.live, plan.desired)):
            if ref.kind in DATA_KINDS and not purge_data:
                result.kept.append(ref)
                kept_kinds.add(group_kind(plan.live[ref]))
                self.progress(ref, "kept")
                continue
            self._delete(ref, plan.live[ref])
            result.pruned.append(ref)
            self.progress(ref, "pruned")
        if not self.dry_run:
            kept_namespaces = {ref.namespace for ref in result.kept if ref.namespace}
            self.store.write(plan.kinds | kept_kinds, plan.namespaces | kept_namespaces)

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
            # Our fields changed even when the normalized YAML looks the same (e.g. ownership moved to us).
            diffs.append((ref, text or f"(ownership of {ref}'s fields moves to {FIELD_MANAGER})\n"))
        for ref in plan.pruned:
            diffs.append((ref, unified_diff(str(ref), *mask_secret_pair(plan.previous[ref], None))))
        return diffs

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
        """Delete every object of the ApplySet in reverse apply order.

        Without purge_data, volume claims stay: ours, the ones StatefulSets made from their claim
        templates, and the namespaces that hold any claim (deleting a namespace deletes its claims).
        With purge_data, our claims and the StatefulSets' claims are deleted too.
        """
        result = ApplyResult(dry_run=self.dry_run)
        parent = self.store.read()
        if parent is None:
            return result
        kinds, namespaces = recorded(parent)
        live = self.live_children(kinds, namespaces | {self.namespace})
        targets = {**live, **dict(self._statefulset_claims(live))}
        for ref in deletion_sorted(targets):
            if not purge_data and (ref.kind in DATA_KINDS or (ref.kind == "Namespace" and self._claims_in(ref.name))):
                result.kept.append(ref)
                self.progress(ref, "kept")
                continue
            self._delete(ref, targets[ref])
            result.pruned.append(ref)
            self.progress(ref, "deleted")
        if not result.kept and not self.dry_run:
            self.store.delete()
        return result

    def _claims_in(self, namespace: str) -> list[dict[str, Any]]:
        """Every PersistentVolumeClaim in a namespace, whoever made it."""
        claims = self.resolve("v1", "PersistentVolumeClaim").resource
        items: list[dict[str, Any]] = self.retry.call(claims.get, namespace=namespace).to_dict().get("items") or []
        return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", **item} for item in items]

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
        for namespace, names in prefixes.items():
            for claim in self._claims_in(namespace):
                name = str(claim["metadata"]["name"])
                if any(name.startswith(p) and name[len(p) :].isdigit() for p in names):
                    claims.append((ObjectRef.of(claim), claim))
        return claims


def _source_of(obj: dict[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_ANNOTATION) or "the manifests")
