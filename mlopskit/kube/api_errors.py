"""API failures translated into messages that say what was refused and how to fix it."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlopskit.errors import PlatformError
from mlopskit.kube.applyset import ObjectRef


def status_body(exc: ApiException) -> dict[str, Any]:
    """The Status object the API server sent with an error, or {} when the body is not one."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def server_message(exc: ApiException) -> str:
    return str(status_body(exc).get("message") or exc.reason or f"HTTP {exc.status}")


def guess_plural(kind: str) -> str:
    """The resource name Kubernetes guesses for a kind when discovery is not at hand: lower case, then "es"
    after a final s, "ies" for a final y, else "s" (Ingress -> ingresses, NetworkPolicy -> networkpolicies).
    Source: UnsafeGuessKindToResource, k8s.io/apimachinery/pkg/api/meta/restmapper.go."""
    lower = kind.lower()
    if not lower:
        return lower
    if lower.endswith("s"):
        return f"{lower}es"
    if lower.endswith("y"):
        return f"{lower[:-1]}ies"
    return f"{lower}s"


def plural_of(ref: ObjectRef, plural: str | None) -> str:
    resource = plural or guess_plural(ref.kind)
    return f"{resource}.{ref.group}" if ref.group else resource


def permission_error(exc: ApiException, verb: str, ref: ObjectRef, plural: str | None = None) -> PlatformError:
    """A 403 as: which verb on which resource in which namespace the account may not use."""
    resource = plural_of(ref, plural)
    where = f"in namespace {ref.namespace!r}" if ref.namespace else "at cluster scope"
    return PlatformError(
        f"permission denied: the Kubernetes account in your kubeconfig may not {verb} {resource} {where} "
        f"(object {ref}).\n  The API server said: {server_message(exc)}\n"
        f"  Fix: grant the account a Role/ClusterRole with the verb {verb!r} on {resource!r} "
        "(deploy needs get, list, create, patch and delete on every kind it manages), "
        "or point KUBECONFIG_PATH at an admin kubeconfig."
    )


def conflict_error(exc: ApiException, ref: ObjectRef) -> PlatformError:
    """A server-side apply conflict as: which fields, which manager owns them, and --force."""
    causes = (status_body(exc).get("details") or {}).get("causes") or []
    lines = [f"    {c.get('field', '?')}: {c.get('message', '')}" for c in causes if isinstance(c, dict)]
    detail = "\n".join(lines) or f"    {server_message(exc)}"
    return PlatformError(
        f"conflict applying {ref}: fields are owned by another field manager:\n{detail}\n"
        "  Another tool (or kubectl edit) changed these fields. Rerun with --force to take them over "
        "for the field manager 'mlopskit', or change the settings to match."
    )


# The API server refuses new objects in a namespace being deleted with a 403 that names no permission.
TERMINATING = "because it is being terminated"


def terminating_namespace_error(namespace: str) -> PlatformError:
    return PlatformError(
        f"namespace {namespace!r} is being deleted (an `invoke destroy` or `kubectl delete namespace` still "
        f"finishing): nothing was applied. Wait until `kubectl get namespace {namespace}` finds nothing, then rerun."
    )


def api_error(exc: ApiException, verb: str, ref: ObjectRef, plural: str | None = None) -> PlatformError:
    """Any other refusal: the object, the verb and the server's message."""
    if exc.status == 403 and TERMINATING in server_message(exc):
        return terminating_namespace_error(ref.namespace or "?")
    if exc.status == 403:
        return permission_error(exc, verb, ref, plural)
    if exc.status == 409 and verb == "apply":
        return conflict_error(exc, ref)
    if exc.status == 401:
        return PlatformError(
            f"the API server rejected the credentials of your kubeconfig while trying to {verb} {ref} "
            f"(401: {server_message(exc)}); refresh the kubeconfig (invoke provision writes it)"
        )
    message = server_message(exc)
    if exc.status == 422 and "immutable" in message:
        where = f"-n {ref.namespace} " if ref.namespace else ""
        return PlatformError(
            f"could not {verb} {ref}: HTTP 422: {message}\n  These fields cannot change in place: delete the "
            f"object (kubectl {where}delete {ref.kind.lower()} {ref.name}) and deploy again."
        )
    return PlatformError(f"could not {verb} {ref}: HTTP {exc.status}: {message}")


def unexpected_api_error(exc: ApiException) -> PlatformError:
    """A refusal that reached a task without a more specific explanation: the status, the server's message
    and what to check. The last resort of every task (tasks.common.expected_errors), never a traceback."""
    hint = {
        401: "refresh the kubeconfig (invoke provision writes it)",
        403: "the account in your kubeconfig lacks a permission: use an admin kubeconfig (KUBECONFIG_PATH)",
    }.get(exc.status or 0, "check the cluster (kubectl get --raw /readyz) and rerun")
    return PlatformError(
        f"the Kubernetes API server refused a request: HTTP {exc.status}: {server_message(exc)}; {hint}"
    )
