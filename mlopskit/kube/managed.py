"""What our field manager owns, and whether an apply changed any of it.

A rerun is `unchanged` when the fields our manager set have the same values before and after the apply,
and it owns the same fields. Everything other actors write (status, defaulted fields the server filled
in, controller annotations such as `deployment.kubernetes.io/revision` or `pv.kubernetes.io/*`, an
allocated `clusterIP`, finalizers, labels a controller adds) lies outside our fields and cannot make an
unchanged object look configured, however often it changes between our read and our write.

The field sets come from `metadata.managedFields[].fieldsV1`, the format the API server uses for
server-side apply (structured-merge-diff): `f:<name>` a field of a map, `k:<json>` a list item by its
keys, `v:<json>` a set item by value, `i:<n>` a list item by index, `.` the node itself. See
https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlopskit.kube.diff import normalize

FIELD_MANAGER = "mlopskit"
ABSENT = "<absent>"  # what a projection holds where an owned field is missing


def owned_fields(obj: Mapping[str, Any] | None, manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """The fieldsV1 tree our manager owns through Apply on the object itself (not its subresources)."""
    owned: dict[str, Any] = {}
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        owned = merge_fields(owned, entry.get("fieldsV1") or {})
    return owned


def merge_fields(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """The union of two fieldsV1 trees."""
    merged = {key: dict(value) for key, value in left.items()}
    for key, value in right.items():
        merged[key] = merge_fields(merged.get(key, {}), value)
    return merged


def project(value: Any, fields: Mapping[str, Any]) -> Any:
    """The part of value that a fieldsV1 tree names; a leaf (`{}` or only `.`) keeps the whole value."""
    children = {key: sub for key, sub in fields.items() if key != "."}
    if value is ABSENT or not children:
        return value
    out: dict[str, Any] = {}
    for key, sub in sorted(children.items()):
        kind, _, raw = key.partition(":")
        out[key] = project(_child(value, kind, raw), sub)
    return out


def _child(value: Any, kind: str, raw: str) -> Any:
    if kind == "f":
        return value.get(raw, ABSENT) if isinstance(value, dict) else ABSENT
    if not isinstance(value, list):
        return ABSENT
    if kind == "k":
        keys = json.loads(raw)
        matches = [item for item in value if isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items())]
        return matches[0] if matches else ABSENT
    if kind == "v":
        return json.loads(raw) in value
    if kind == "i":
        index = int(raw)
        return value[index] if index < len(value) else ABSENT
    return ABSENT


def changed_by_us(before: Mapping[str, Any], after: Mapping[str, Any], manager: str = FIELD_MANAGER) -> bool:
    """Whether the fields our manager owns (before or after) differ between the two objects."""
    owned_before, owned_after = owned_fields(before, manager), owned_fields(after, manager)
    if owned_before != owned_after:
        return True
    if not owned_after:  # no record of ours (a server without managedFields): compare everything but noise
        return bool(normalize(before) != normalize(after))
    return bool(project(dict(before), owned_after) != project(dict(after), owned_after))


def classify(status: int, live: Mapping[str, Any] | None, applied: Mapping[str, Any], dry_run: bool) -> str:
    """created / configured / unchanged, from the apply response and the object as it was before.

    `live` is None when the object did not carry our ApplySet label before: either it did not exist
    (HTTP 201, or a dry run of a new object) or we adopt it now, which is a change.
    """
    if status == 201 or (live is None and dry_run and status != 200):
        return "created"
    if live is None:
        return "configured"
    return "configured" if changed_by_us(live, applied) else "unchanged"
