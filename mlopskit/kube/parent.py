"""The ApplySet parent Secret as a small store: read what it records, write it, remove it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.applyset import TOOLING_ANNOTATION, ApplySetParent, ObjectRef
from mlopskit.kube.managed import FIELD_MANAGER
from mlopskit.kube.retry import RetryPolicy


class ParentStore:
    """Reads and writes one ApplySet's parent Secret; refuses a parent that another tool owns."""

    def __init__(self, dyn: DynamicClient, parent: ApplySetParent, retry: RetryPolicy) -> None:
        self.dyn = dyn
        self.parent = parent
        self.retry = retry
        self.ref = ObjectRef("", "Secret", parent.namespace, parent.name)

    def _secrets(self) -> Any:
        return self.retry.call(self.dyn.resources.get, api_version="v1", kind="Secret")

    def read(self) -> dict[str, Any] | None:
        """The live parent, or None when there is none yet."""
        try:
            found = self.retry.call(self._secrets().get, name=self.parent.name, namespace=self.parent.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, "get", self.ref) from None
        parent: dict[str, Any] = found.to_dict()
        tooling = ((parent.get("metadata") or {}).get("annotations") or {}).get(TOOLING_ANNOTATION, "")
        if tooling and not str(tooling).startswith("mlopskit/"):
            raise PlatformError(
                f"{self.ref} is the ApplySet parent of another tool ({TOOLING_ANNOTATION}={tooling}); "
                "mlopskit will not change its objects. Use another namespace or remove that ApplySet."
            )
        return parent

    def write(self, kinds: Iterable[str], namespaces: Iterable[str]) -> None:
        """Record the group-kinds and namespaces to look in when pruning."""
        try:
            self.retry.call(
                self.dyn.server_side_apply,
                self._secrets(),
                body=self.parent.manifest(kinds, namespaces),
                name=self.parent.name,
                namespace=self.parent.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,  # the parent is ours alone: its annotations must say what we applied
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PlatformError(
                    f"namespace {self.parent.namespace!r} does not exist, so the ApplySet parent {self.ref} cannot "
                    "be written; render a Namespace object for it or create the namespace first"
                ) from None
            raise api_error(exc, "apply", self.ref, "secrets") from None

    def delete(self) -> None:
        """Remove the parent (the ApplySet is empty); a parent already gone is fine."""
        try:
            self.retry.call(self._secrets().delete, name=self.parent.name, namespace=self.parent.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, "delete", self.ref, "secrets") from None
