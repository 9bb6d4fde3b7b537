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
        self._live: dict[str, Any] | None = None  # the parent as last read or written

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
        self._live = parent
        tooling = ((parent.get("metadata") or {}).get("annotations") or {}).get(TOOLING_ANNOTATION, "")
        if tooling and not str(tooling).startswith("mlopskit/"):
            raise PlatformError(
                f"{self.ref} is the ApplySet parent of another tool ({TOOLING_ANNOTATION}={tooling}); "
                "mlopskit will not change its objects. Use another namespace or remove that ApplySet."
            )
        return parent

    def write(self, kinds: Iterable[str], namespaces: Iterable[str]) -> None:
        """Record the group-kinds and namespaces to look in when pruning; no request when it says so already."""
        manifest = self.parent.manifest(kinds, namespaces)
        if self._records(manifest):
            return
        try:
            response = self.retry.call(
                self.dyn.server_side_apply,
                self._secrets(),
                body=manifest,
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
        self._live = response.to_dict()

    def _records(self, manifest: dict[str, Any]) -> bool:
        """Whether the parent as last seen carries every label and annotation of the manifest."""
        live = (self._live or {}).get("metadata") or {}
        wanted = manifest["metadata"]
        return bool(self._live) and all(
            ((live.get(field) or {}).get(key) == value)
            for field in ("labels", "annotations")
            for key, value in wanted[field].items()
        )

    def delete(self) -> None:
        """Remove the parent (the ApplySet is empty); a parent already gone is fine."""
        try:
            self.retry.call(self._secrets().delete, name=self.parent.name, namespace=self.parent.namespace)
            self._live = None
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, "delete", self.ref, "secrets") from None
