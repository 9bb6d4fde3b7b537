"""The deploy/diff/destroy tasks' contracts: exit codes and confirmation, without a cluster.

The cluster side (mlopskit.kube.deploy) is replaced by recorded answers: these tests are about what
the task layer does with them.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from mlopskit.kube import deploy as flow
from mlopskit.kube.apply import ApplyResult
from mlopskit.kube.applyset import ObjectRef
from mlopskit.settings import Settings
from mlopskit.tasks import deploy as tasks

CHANGED = ObjectRef("", "ConfigMap", "mlops", "mlflow-config")


@pytest.fixture(autouse=True)
def default_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "settings_for", lambda c, command=None, ran=None: Settings())


def test_diff_exits_0_when_nothing_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "diff", lambda settings, mlflow_image: [])
    tasks.diff(Context())


def test_diff_exits_1_and_prints_the_diff_when_something_differs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(flow, "diff", lambda settings, mlflow_image: [(CHANGED, "--- live/x\n+++ desired/x\n-a\n+b\n")])
    with pytest.raises(Exit) as caught:
        tasks.diff(Context())
    assert caught.value.code == 1
    assert "+++ desired/x" in capsys.readouterr().out


def test_destroy_without_a_terminal_and_without_yes_refuses_and_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []

    def destroy(*args: Any, **kwargs: Any) -> ApplyResult:
        calls.append(args)
        return ApplyResult()

    monkeypatch.setattr(flow, "destroy", destroy)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(Exit) as caught:
        tasks.destroy(Context())
    assert caught.value.code == 1
    assert "rerun with --yes" in str(caught.value.message)
    assert calls == []


def test_destroy_with_yes_deletes_and_reports_kept_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = ObjectRef("", "PersistentVolumeClaim", "mlops", "data-postgres-0")
    result = ApplyResult(pruned=[CHANGED], kept=[kept])
    monkeypatch.setattr(flow, "destroy", lambda settings, purge_data, dry_run: result)
    tasks.destroy(Context(), yes=True)
    out = capsys.readouterr().out
    assert "1 object(s) deleted" in out
    assert "PersistentVolumeClaim mlops/data-postgres-0" in out
    assert "--purge-data" in out
