"""Differences between live objects and what a server-side dry-run apply would make of them."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import yaml

# Fields the server owns or that change on every write; comparing them would report noise.
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")
_VOLATILE_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")


def normalize(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy without status, managedFields, resourceVersion, uid, generation and creationTimestamp."""
    if not obj:
        return {}
    clean = copy.deepcopy(dict(obj))
    clean.pop("status", None)
    metadata = clean.get("metadata")
    if isinstance(metadata, dict):
        for key in _VOLATILE_METADATA:
            metadata.pop(key, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            for key in _VOLATILE_ANNOTATIONS:
                annotations.pop(key, None)
            if not annotations:
                metadata.pop("annotations")
    return clean


def _yaml_lines(obj: Mapping[str, Any]) -> list[str]:
    if not obj:
        return []
    return yaml.safe_dump(dict(obj), sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def unified_diff(label: str, live: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> str:
    """A unified diff of the normalized YAML, live first; '' when the two are the same."""
    before, after = normalize(live), normalize(desired)
    if before == after:
        return ""
    lines = difflib.unified_diff(
        _yaml_lines(before),
        _yaml_lines(after),
        fromfile=f"live/{label}" if live else "/dev/null",
        tofile=f"desired/{label}" if desired else "/dev/null",
    )
    return "".join(lines)


def mask_secret_pair(
    live: Mapping[str, Any] | None, desired: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Secret values replaced by markers that only say whether a value changed: a diff never prints one."""
    if not ((live or {}).get("kind") == "Secret" or (desired or {}).get("kind") == "Secret"):
        return (dict(live) if live else None), (dict(desired) if desired else None)
    before = copy.deepcopy(dict(live)) if live else None
    after = copy.deepcopy(dict(desired)) if desired else None
    for field in ("data", "stringData"):
        old = (before or {}).get(field) or {}
        new = (after or {}).get(field) or {}
        for key in set(old) | set(new):
            same = key in old and key in new and old[key] == new[key]
            if before is not None and key in old:
                before[field][key] = "<secret value>" if same else "<secret value (old)>"
            if after is not None and key in new:
                after[field][key] = "<secret value>" if same else "<secret value (new)>"
    return before, after
