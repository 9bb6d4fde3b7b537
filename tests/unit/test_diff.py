"""Diff output: volatile server fields are ignored, real changes show as a unified diff, secrets never."""

from __future__ import annotations

from typing import Any

from mlopskit.kube.apply import classify
from mlopskit.kube.diff import mask_secret_pair, normalize, unified_diff
from mlopskit.kube.managed import ABSENT, project


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


OURS = {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}}


def owned(value: str, fields: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """A live ConfigMap whose `data.key` and `app` label our manager owns, as the API server records it."""
    entry = {"manager": "mlopskit", "operation": "Apply", "fieldsV1": fields or OURS}
    obj = configmap(value, managedFields=[entry], **metadata)
    obj["metadata"]["labels"] = {"app": "mlflow", **(metadata.get("labels") or {})}
    return obj


def test_apply_answering_201_is_created() -> None:
    assert classify(201, None, configmap("a"), dry_run=False) == "created"


def test_same_owned_fields_are_unchanged_although_the_resource_version_moved() -> None:
    before = owned("a", resourceVersion="7")
    assert classify(200, before, owned("a", resourceVersion="9"), dry_run=False) == "unchanged"


def test_a_changed_owned_field_is_configured() -> None:
    assert classify(200, owned("a"), owned("b"), dry_run=False) == "configured"


def test_what_other_actors_write_does_not_count() -> None:
    before = owned("a", resourceVersion="7")
    after = owned(
        "a",
        resourceVersion="12",
        annotations={"deployment.kubernetes.io/revision": "3", "pv.kubernetes.io/bind-completed": "yes"},
        labels={"added-by-a-controller": "x"},
        finalizers=["kubernetes.io/pvc-protection"],
    )
    after["status"] = {"phase": "Bound"}
    after["metadata"]["managedFields"].append({"manager": "kube-controller-manager", "operation": "Update"})
    assert classify(200, before, after, dry_run=False) == "unchanged"


def test_a_field_we_stop_setting_is_configured() -> None:
    fewer: dict[str, Any] = {"f:data": {"f:key": {}}}
    assert classify(200, owned("a"), owned("a", fields=fewer), dry_run=False) == "configured"


def test_dry_run_compares_owned_fields_of_live_and_dry_run_objects() -> None:
    live = owned("a", resourceVersion="7")
    assert classify(200, live, owned("a", resourceVersion="8", uid="u-2"), dry_run=True) == "unchanged"
    assert classify(200, live, owned("b", resourceVersion="7"), dry_run=True) == "configured"


def test_existing_object_not_yet_in_the_applyset_is_configured() -> None:
    assert classify(200, None, configmap("a", resourceVersion="3"), dry_run=False) == "configured"


def test_list_items_are_matched_by_their_keys_not_their_position() -> None:
    fields: dict[str, Any] = {
        "f:spec": {"f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}, "f:name": {}}}}
    }
    before = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]}}
    reordered = {"spec": {"ports": [{"port": 9, "protocol": "UDP"}, {"port": 80, "protocol": "TCP", "name": "http"}]}}
    renamed = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "web"}]}}
    assert project(before, fields) == project(reordered, fields)
    assert project(before, fields) != project(renamed, fields)


def test_an_owned_field_that_disappears_projects_as_absent() -> None:
    fields: dict[str, Any] = {"f:data": {"f:key": {}}}
    assert project({"data": {}}, fields) == {"f:data": {"f:key": ABSENT}}
