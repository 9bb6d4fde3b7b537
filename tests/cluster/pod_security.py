"""The container securityContext that Pod Security `restricted` admits, for the test pods the cluster tier
creates itself (the platform's own come from mlopskit/kube/render.py)."""

from __future__ import annotations

from typing import Any

RESTRICTED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
