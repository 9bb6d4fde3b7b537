"""A small stand-in for the rendered platform, shaped like it: shared objects plus switchable components.

The real renderer (mlopskit/kube/render.py) is tested on its own; these tests are about the apply engine,
so they use objects whose every field they control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knobs:
    """The 'settings' of the stand-in platform."""

    mlflow_workers: str = "2"
    mlflow_replicas: int = 1
    objectstore: bool = True


def _deployment(name: str, replicas: int, env: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    # No node may run it: these tests never depend on pods.
                    "nodeSelector": {"mlopskit.test/no-such-node": "true"},
                    "containers": [
                        {
                            "name": name,
                            "image": "registry.invalid/mlopskit/none:0",
                            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                        }
                    ],
                },
            },
        },
    }


def objects(knobs: Knobs = Knobs()) -> list[dict[str, Any]]:
    shared: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mlflow"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "mlflow-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "mlflow-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mlflow-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "mlflow"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mlflow-config"},
            "data": {"workers": knobs.mlflow_workers},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "mlflow"},
            "spec": {"selector": {"app": "mlflow"}, "ports": [{"name": "http", "port": 5000}]},
        },
        _deployment("mlflow", knobs.mlflow_replicas, {"WORKERS": knobs.mlflow_workers}),
    ]
    objectstore: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "objectstore-data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "objectstore"},
            "spec": {"selector": {"app": "objectstore"}, "ports": [{"name": "s3", "port": 8333}]},
        },
        _deployment("objectstore", 1, {}),
    ]
    return shared + (objectstore if knobs.objectstore else [])
