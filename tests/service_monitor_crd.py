"""A stand-in for the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1), for tests only.

The operator's own CRD cannot be fetched here (no registry, no access to its repository). This one has the
same group, version, kind, scope and names, and the schema of the fields mlopskit renders, typed as the
operator's API reference types them (spec.selector is a LabelSelector, spec.endpoints a list of Endpoint
objects with `port`, `path`, `scheme`, `interval`). Unit tests validate against it with `strict` (unknown
fields are errors); the cluster tests install it without (an API server prunes unknown fields of a
structural schema, which a second deploy would then report as a change).
"""

from __future__ import annotations

import copy
from typing import Any

STRING: dict[str, Any] = {"type": "string"}
LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": STRING},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": STRING,
                    "operator": STRING,
                    "values": {"type": "array", "items": STRING},
                },
            },
        },
    },
}
ENDPOINT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "port": STRING,
        "path": STRING,
        "scheme": {"type": "string", "enum": ["http", "https"]},
        "interval": {
            "type": "string",
            "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
        },
        "scrapeTimeout": STRING,
        "honorLabels": {"type": "boolean"},
    },
}
SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["selector"],
    "properties": {
        "selector": LABEL_SELECTOR,
        "endpoints": {"type": "array", "items": ENDPOINT},
        "jobLabel": STRING,
        "namespaceSelector": {
            "type": "object",
            "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STRING}},
        },
    },
}


def _closed(schema: Any) -> Any:
    """The schema with every object that lists its properties refusing others (offline validation only)."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in schema:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def service_monitor_crd(strict: bool = False) -> dict[str, Any]:
    """The CRD object; strict: unknown fields anywhere under spec are schema errors."""
    spec = _closed(SPEC) if strict else copy.deepcopy(SPEC)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "categories": ["prometheus-operator"],
                "shortNames": ["smon"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": STRING,
                                "kind": STRING,
                                "metadata": {"type": "object"},
                                "spec": spec,
                            },
                        }
                    },
                }
            ],
        },
    }
