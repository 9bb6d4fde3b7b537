"""Diff output: volatile server fields are ignored, real changes show as a unified diff, secrets never."""

from __future__ import annotations

from typing import Any

from mlopskit.kube.apply import classify
from mlopskit.kube.diff import mask_secret_pair, normalize, unified_diff


def configmap(value: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "mlops", **metadata},
        "data": {"key": value},
    }


SERVER_FIELDS = {
    "resourceVersion": "123",
    "uid": "u-1",
    "generation": 4,
    "creationTimestamp": "2026-01-01T00:00:00Z",
    "managedFields": [{"manager": "mlopskit"}],
}


def test_normalize_drops_status_and_server_owned_metadata() -> None:
    live = {**configmap("a", **SERVER_FIELDS), "status": {"phase": "x"}}
    assert normalize(live) == configmap("a")


def test_no_diff_when_only_server_fields_differ() -> None:
    assert unified_diff("ConfigMap mlops/c", configmap("a", **SERVER_FIELDS), configmap("a")) == ""


def test_changed_value_shows_as_unified_diff_lines() -> None:
    text = unified_diff("ConfigMap mlops/c", configmap("a"), configmap("b"))
    assert "--- live/ConfigMap mlops/c" in text
    assert "+++ desired/ConfigMap mlops/c" in text
    assert "-  key: a" in text
    assert "+  key: b" in text


def test_new_object_diffs_against_dev_null() -> None:
    assert unified_diff("ConfigMap mlops/c", None, configmap("a")).startswith("--- /dev/null")


def test_secret_values_are_masked_and_changes_still_show() -> None:
    live = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "b2xk", "b": "c2FtZQ=="}}
    desired = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "bmV3", "b": "c2FtZQ=="}}
    text = unified_diff("Secret s", *mask_secret_pair(live, desired))
    assert "b2xk" not in text and "bmV3" not in text and "c2FtZQ==" not in text
    assert "-  a: <secret value (old)>" in text
    assert "+  a: <secret value (new)>" in text


def test_apply_answering_201_is_created() -> None:
    assert classify(201, None, configmap("a"), dry_run=False) == "created"


def test_same_resource_version_after_apply_is_unchanged() -> None:
    live = configmap("a", resourceVersion="7")
    assert classify(200, live, configmap("a", resourceVersion="7"), dry_run=False) == "unchanged"


def test_new_resource_version_after_apply_is_configured() -> None:
    live = configmap("a", resourceVersion="7")
    assert classify(200, live, configmap("b", resourceVersion="8"), dry_run=False) == "configured"


def test_dry_run_compares_content_not_resource_version() -> None:
    live = configmap("a", resourceVersion="7")
    assert classify(200, live, configmap("a", resourceVersion="7"), dry_run=True) == "unchanged"
    assert classify(200, live, configmap("b", resourceVersion="7"), dry_run=True) == "configured"


def test_existing_object_not_yet_in_the_applyset_is_configured() -> None:
    assert classify(200, None, configmap("a", resourceVersion="3"), dry_run=False) == "configured"
