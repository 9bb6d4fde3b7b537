"""Waiting for rollouts (Deployments and StatefulSets ready, Jobs complete; diagnostics on timeout) and for a
namespace being deleted to be gone."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.kube.api_errors import api_error, terminating_namespace_error
from mlopskit.kube.applyset import ObjectRef
from mlopskit.kube.retry import RetryPolicy

WAITED_KINDS = frozenset({"Deployment", "StatefulSet", "Job"})


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str
    failed: bool = False


def readiness(obj: Mapping[str, Any]) -> Readiness:
    """Whether a Deployment/StatefulSet has every replica updated and ready, or a Job has completed."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if kind == "Job":
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                return Readiness(True, "complete")
            if condition.get("type") == "Failed":
                return Readiness(False, f"failed: {condition.get('reason')}: {condition.get('message')}", True)
        return Readiness(False, f"{status.get('succeeded', 0) or 0} succeeded, {status.get('active', 0) or 0} active")
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    detail = f"{ready}/{wanted} ready, {updated}/{wanted} updated"
    if generation is not None and (observed is None or observed < generation):
        return Readiness(False, f"{detail}; controller has not seen generation {generation} yet")
    if kind == "Deployment":
        available = int(status.get("availableReplicas") or 0)
        done = updated >= wanted and ready >= wanted and available >= wanted
        total = int(status.get("replicas") or 0)
        # Old replicas still terminating mean the rollout is not over.
        return Readiness(done and total <= wanted, detail)
    if kind == "StatefulSet":
        same_revision = status.get("currentRevision") == status.get("updateRevision") or updated >= wanted
        return Readiness(ready >= wanted and updated >= wanted and same_revision, detail)
    return Readiness(True, "not waited for")


def wait_for_rollout(
    dyn: DynamicClient,
    objects: list[dict[str, Any]],
    *,
    timeout: float,
    on_update: Callable[[ObjectRef, Readiness], None] | None = None,
    retry: RetryPolicy | None = None,
    poll: float = 2.0,
) -> None:
    """Poll until every Deployment, StatefulSet and Job is ready; a timeout explains what is stuck."""
    retry = retry or RetryPolicy()
    pending = {ObjectRef.of(obj): obj for obj in objects if obj.get("kind") in WAITED_KINDS}
    deadline = time.monotonic() + timeout
    last: dict[ObjectRef, tuple[dict[str, Any], Readiness]] = {}
    while pending:
        for ref, obj in list(pending.items()):
            resource = dyn.resources.get(api_version=obj["apiVersion"], kind=ref.kind)
            live = retry.call(resource.get, name=ref.name, namespace=ref.namespace).to_dict()
            state = readiness(live)
            last[ref] = (live, state)
            if on_update:
                on_update(ref, state)
            if state.failed:
                raise PlatformError(f"{ref} {state.detail}\n{diagnose(dyn, live)}")
            if state.ready:
                del pending[ref]
        if not pending:
            return
        if time.monotonic() > deadline:
            stuck = "\n".join(f"  {ref}: {last[ref][1].detail}\n{diagnose(dyn, last[ref][0])}" for ref in pending)
            raise PlatformError(
                f"not ready after {timeout:.0f}s:\n{stuck}\n"
                "Fix the cause above and rerun `invoke deploy` (a rerun only changes what is still different)."
            )
        time.sleep(poll)


def wait_for_namespace_deletion(
    dyn: DynamicClient,
    namespace: str,
    timeout: float,
    *,
    retry: RetryPolicy | None = None,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once `namespace` is not being deleted (absent, or live without a deletionTimestamp).

    A deploy right after `invoke destroy --purge-data` finds the namespace still terminating while its finalizers
    run, and the API server refuses every new object in it. Waits up to timeout seconds (deploy's --timeout),
    saying so once. Raises PlatformError: terminating_namespace_error when it is still there after that, or
    api_error's explanation when reading it is refused (transient failures are retried first)."""
    retry = retry or RetryPolicy()
    namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
    deadline = clock() + timeout
    said = False
    while True:
        try:
            live = retry.call(namespaces.get, name=namespace).to_dict()
        except ApiException as exc:  # the dynamic client's NotFoundError is one
            if exc.status == 404:
                return
            raise api_error(exc, "get", ObjectRef("", "Namespace", "", namespace)) from exc
        if not (live.get("metadata") or {}).get("deletionTimestamp"):
            return
        if clock() > deadline:
            raise terminating_namespace_error(namespace)
        if not said:
            console.info(f"namespace {namespace} is being deleted (a destroy finishing); waiting up to {timeout:.0f} s")
            said = True
        time.sleep(poll)


def diagnose(dyn: DynamicClient, obj: Mapping[str, Any], log_lines: int = 20) -> str:
    """The pods of a workload: their conditions, recent events and last log lines."""
    core = client.CoreV1Api(dyn.client)
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    spec = obj.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if obj.get("kind") == "Job" and not labels:
        labels = {"job-name": meta.get("name")}
    if not labels:
        return "    (no pod selector to inspect)"
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    out: list[str] = []
    try:
        pod_api = dyn.resources.get(api_version="v1", kind="Pod")
        event_api = dyn.resources.get(api_version="v1", kind="Event")
        pods: list[dict[str, Any]] = pod_api.get(namespace=namespace, label_selector=selector).to_dict()["items"]
    except ApiException as exc:
        return f"    (cannot list pods {selector} in {namespace}: HTTP {exc.status})"
    if not pods:
        out.append(f"    no pods match {selector} in {namespace} (is there a node to schedule them on?)")
    for pod in pods[:3]:
        name = str(pod["metadata"]["name"])
        status = pod.get("status") or {}
        out.append(f"    pod {name}: phase {status.get('phase')}")
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                why = f"{condition.get('reason') or ''} {condition.get('message') or ''}".strip()
                out.append(f"      condition {condition.get('type')}={condition.get('status')}: {why}")
        troubled: list[tuple[str, bool]] = []  # (container, restarted) whose log is worth showing
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            cname = str(container.get("name"))
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                out.append(f"      container {cname} waiting: {waiting.get('reason')}: {waiting.get('message') or ''}")
            last = (container.get("lastState") or {}).get("terminated") or (container.get("state") or {}).get(
                "terminated"
            )
            if last and last.get("exitCode"):
                out.append(
                    f"      container {cname} exited with code {last.get('exitCode')} ({last.get('reason')}), "
                    f"{container.get('restartCount', 0)} restart(s)"
                )
            if not container.get("ready"):
                troubled.append((cname, bool(container.get("restartCount"))))
        try:
            events = event_api.get(namespace=namespace, field_selector=f"involvedObject.name={name}").to_dict()
        except ApiException:
            events = {}
        for event in (events.get("items") or [])[-5:]:
            out.append(f"      event {event.get('type')} {event.get('reason')}: {event.get('message')}")
        for cname, restarted in troubled[:2]:
            log = _pod_log(core, name, namespace, cname, log_lines, previous=False)
            if not log.strip() and restarted:  # waiting to restart: the last run has the log
                log = _pod_log(core, name, namespace, cname, log_lines, previous=True)
            for line in log.splitlines()[-log_lines:]:
                out.append(f"      log {cname} | {line}")
    return "\n".join(out)


def _pod_log(core: client.CoreV1Api, pod: str, namespace: str, container: str, lines: int, *, previous: bool) -> str:
    try:
        log = core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=lines, previous=previous)
        return str(log or "")
    except ApiException:
        return ""
