"""Rewriting the K3s kubeconfig for remote use and merging it into an existing one."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from mlopskit.errors import PlatformError
from mlopskit.hosts.kubeconfig import merge, rewrite, save


def k3s_kubeconfig() -> dict[str, Any]:
    """What K3s writes to /etc/rancher/k3s/k3s.yaml: everything named default, server on localhost."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "default", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="}}
        ],
        "users": [{"name": "default", "user": {"client-certificate-data": "Qw==", "client-key-data": "Sw=="}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }


def test_rewrite_points_at_the_server_address() -> None:
    config = rewrite(k3s_kubeconfig(), "https://10.0.0.1:6443", "lab")
    assert config["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert config["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="


def test_rewrite_renames_cluster_user_and_context() -> None:
    config = rewrite(k3s_kubeconfig(), "https://10.0.0.1:6443", "lab")
    assert [config[s][0]["name"] for s in ("clusters", "users", "contexts")] == ["lab", "lab", "lab"]
    assert config["contexts"][0]["context"] == {"cluster": "lab", "user": "lab"}
    assert config["current-context"] == "lab"


def test_rewrite_leaves_the_input_untouched() -> None:
    original = k3s_kubeconfig()
    rewrite(original, "https://10.0.0.1:6443", "lab")
    assert original == k3s_kubeconfig()


def test_rewrite_rejects_an_unexpected_kubeconfig() -> None:
    config = k3s_kubeconfig()
    config["users"] = []
    with pytest.raises(PlatformError, match="one entry in users, found 0"):
        rewrite(config, "https://10.0.0.1:6443", "lab")


def test_merge_replaces_entries_of_the_same_name_and_keeps_the_rest() -> None:
    existing = rewrite(k3s_kubeconfig(), "https://old:6443", "lab")
    other = rewrite(k3s_kubeconfig(), "https://other:6443", "other")
    combined = merge(merge({}, other), existing)
    fresh = rewrite(k3s_kubeconfig(), "https://10.0.0.1:6443", "lab")
    merged = merge(combined, fresh)
    assert [c["name"] for c in merged["clusters"]] == ["other", "lab"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert merged["clusters"][0]["cluster"]["server"] == "https://other:6443"
    assert merged["current-context"] == "lab"


def test_merge_into_nothing_makes_a_complete_kubeconfig() -> None:
    merged = merge({}, rewrite(k3s_kubeconfig(), "https://10.0.0.1:6443", "lab"))
    assert merged["apiVersion"] == "v1" and merged["kind"] == "Config"
    assert len(merged["contexts"]) == 1


def test_save_writes_owner_only_and_reports_unchanged_content(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "lab.yaml"
    assert save(path, "a: 1\n") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert save(path, "a: 1\n") is False
    assert save(path, "a: 2\n") is True
