"""Validate rendered objects against the OpenAPI schema of the pinned Kubernetes release.

Built-in kinds use the strict JSON schemas that the `kubernetes-validate` package ships per release
(unknown fields are errors, so a typo in a template fails here instead of being dropped by the API
server). Custom resources are checked against the openAPIV3Schema of their CRD when that CRD is in
the same rendered set or was read from the cluster (deploy passes those), or against KNOWN_CUSTOM_SCHEMAS
(CRDs a cluster brings, such as K3s's HelmChartConfig), and reported as skipped otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from packaging.version import Version
from referencing import Registry, Resource

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.kube.render import TEMPLATE_ANNOTATION

_SCHEMA_ROOT = "kubernetes-json-schema"


@dataclass
class ValidationReport:
    """The result of validating a set of objects: problems (one line each) and skipped objects."""

    version: str
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    validated: int = 0


def shipped_versions() -> list[str]:
    """The Kubernetes minors (e.g. '1.34') whose schemas the installed kubernetes-validate ships."""
    root = resources.files("kubernetes_validate").joinpath(_SCHEMA_ROOT)
    found = {
        m.group(1) for entry in root.iterdir() if (m := re.fullmatch(r"v(\d+\.\d+)\.\d+-local-strict", entry.name))
    }
    return sorted(found, key=Version)


def minor_version(kubernetes_version: str) -> str:
    """'v1.34.1+k3s1', '1.34.1' and '1.34' all become '1.34'."""
    match = re.match(r"^v?(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise PlatformError(
            f"Kubernetes version {kubernetes_version!r} is not a version such as 1.34 or v1.34.1+k3s1; "
            "check cluster.k3s_version in config/platform.yaml"
        )
    return f"{match.group(1)}.{match.group(2)}"


def schema_version(kubernetes_version: str) -> str:
    """The shipped schema release for a cluster version: the same minor, else the newest older one."""
    wanted = Version(minor_version(kubernetes_version))
    shipped = shipped_versions()
    usable = [v for v in shipped if Version(v) <= wanted]
    if not shipped or Version(shipped[-1]) < wanted or not usable:
        have = f"{shipped[0]} to {shipped[-1]}" if shipped else "none"
        raise PlatformError(
            f"no Kubernetes {wanted} schema in the installed kubernetes-validate (it ships {have}); "
            "upgrade it (pip install -U kubernetes-validate) or pin cluster.k3s_version to a shipped release"
        )
    return usable[-1]


def _schema_dir(version: str) -> str:
    return f"v{version}.0-local-strict"


@cache
def _load(version: str, name: str) -> dict[str, Any] | None:
    path = resources.files("kubernetes_validate").joinpath(_SCHEMA_ROOT, _schema_dir(version), name)
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@cache
def _builtin_validator(version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    # rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1: the file naming of kubernetes-validate.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = _load(version, f"{kind.lower()}-{group_version}.json")
    if schema is None:
        return None
    definitions = _load(version, "_definitions.json") or {}
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return validator


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(object)"


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name = f"{obj.get('kind', '?')}/{meta.get('name', '?')}"
    template = (meta.get("annotations") or {}).get(TEMPLATE_ANNOTATION) if isinstance(meta, dict) else None
    return f"{name} ({template})" if template else name


# Custom resources we render whose CRD the cluster brings, by (apiVersion, kind): the fields of their CRD's
# openAPIV3Schema, strict (unknown fields are errors, where the API server would silently prune them).
KNOWN_CUSTOM_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    # k3s-io/helm-controller's helmchartconfigs.helm.cattle.io (K3s installs it with its packaged charts).
    ("helm.cattle.io/v1", "HelmChartConfig"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "failurePolicy": {"type": "string", "enum": ["abort", "reinstall", "retry"]},
                    "forceConflicts": {"type": "boolean"},
                    "values": {},
                    "valuesContent": {"type": "string"},
                    "valuesSecrets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "ignoreUpdates": {"type": "boolean"},
                                "keys": {"type": "array", "items": {"type": "string"}},
                                "name": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _crd_validators(objects: list[dict[str, Any]]) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, from the CustomResourceDefinitions in the rendered set and the known ones."""
    found: dict[tuple[str, str], jsonschema.protocols.Validator] = {
        key: jsonschema.Draft4Validator(schema) for key, schema in KNOWN_CUSTOM_SCHEMAS.items()
    }
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if group and kind and schema:
                # CRD schemas are OpenAPI v3 subsets; Draft 4 keywords are the closest match.
                found[(f"{group}/{version.get('name')}", kind)] = jsonschema.Draft4Validator(schema)
    return found


def custom_kinds(objects: list[dict[str, Any]], kubernetes_version: str) -> list[tuple[str, str]]:
    """(apiVersion, kind) of the objects that neither a built-in schema nor a CRD of the same set covers: the
    kinds whose CRD, if the cluster has one, check_objects can be given (`crds`)."""
    version = schema_version(kubernetes_version)
    custom = _crd_validators(objects)
    found: dict[tuple[str, str], None] = {}
    for obj in objects:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str) or (api_version, kind) in custom:
            continue
        if _builtin_validator(version, kind, api_version) is None:
            found[(api_version, kind)] = None
    return list(found)


def check_objects(
    objects: list[dict[str, Any]], kubernetes_version: str, crds: Sequence[dict[str, Any]] = ()
) -> ValidationReport:
    """Validate every object; collect every problem instead of stopping at the first.

    Custom resources are checked against a CRD of the same set, else against one of `crds` (CRDs read
    from the cluster, such as the Prometheus Operator's ServiceMonitor), else reported as skipped."""
    version = schema_version(kubernetes_version)
    report = ValidationReport(version)
    custom = _crd_validators([*crds, *objects])
    for obj in objects:
        label = _describe(obj)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str):
            report.errors.append(f"{label}: kind and apiVersion must be strings")
            continue
        validator = _builtin_validator(version, kind, api_version)
        if validator is None:
            validator = custom.get((api_version, kind))
            if validator is None:
                report.skipped.append(f"{label}: no schema for {api_version} {kind} in Kubernetes {version}")
                continue
        problems = sorted(validator.iter_errors(obj), key=lambda e: _path(e.absolute_path))
        for problem in problems:
            report.errors.append(f"{label}: {_path(problem.absolute_path)}: {_message(problem)}")
        report.validated += 1
    return report


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return f"{error.message} (unknown field; check its spelling and indentation)"
    if error.validator in {"oneOf", "anyOf"} and error.context:
        return str(jsonschema.exceptions.best_match(error.context).message)
    return error.message


def validate_objects(
    objects: list[dict[str, Any]], kubernetes_version: str, crds: Sequence[dict[str, Any]] = ()
) -> None:
    """Raise PlatformError listing every invalid object (kind/name, template, field path, message)."""
    report = check_objects(objects, kubernetes_version, crds)
    for line in report.skipped:
        console.warn(f"not validated: {line}")
    if report.errors:
        lines = "\n  ".join(report.errors)
        raise PlatformError(
            f"{len(report.errors)} problem(s) against the Kubernetes {report.version} schema:\n  {lines}\n"
            "Fix the named template (or the setting it renders)."
        )
