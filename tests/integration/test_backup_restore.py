"""The restore drill on the local stack, as a user runs it: `invoke up`, data, `invoke backup`,
`invoke down --volumes`, `invoke up`, `invoke restore`, and everything is back. Then the refusals.

A copy of the project with its own project name and port (as tests/integration/test_local_up.py does);
tests run in file order against one stack.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from mlopskit.settings import ENV_KEYS
from tests.drill_data import fill
from tests.integration.test_local_up import UP_TIMEOUT, Stack, free_port, project_copy, remove_project

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ARTIFACT_BYTES = 21 * 1024 * 1024
PASSPHRASE = "drill-" + secrets.token_urlsafe(18)


@dataclass
class Drill:
    stack: Stack
    archive: Path
    data: dict[str, Any] = field(default_factory=dict)
    backup: subprocess.CompletedProcess[str] | None = None
    restore: subprocess.CompletedProcess[str] | None = None

    def run(self, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
        """`invoke ARGS` in the copy; `environ` sets settings variables for this call only."""
        invoke = Path(sys.executable).with_name("invoke")
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS} | {"COLUMNS": "200"} | environ
        return subprocess.run(
            [str(invoke), *args],
            cwd=self.stack.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
            env=env,
            check=False,
        )

    def permissions(self, method: str, action: str, **kwargs: Any) -> requests.Response:
        """MLflow 3's user-permission API (/api/3.0/mlflow/users/permissions/*), as the admin."""
        url = f"{self.stack.url}/api/3.0/mlflow/users/permissions/{action}"
        return requests.request(method, url, auth=self.stack.admin(), timeout=30, **kwargs)

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.stack.url)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    project = f"mlkit-br-{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = project_copy(tmp_path_factory.mktemp("project"), project, port)
    stack = Stack(root, project, port, subprocess.CompletedProcess([], 0, "", ""))
    made = Drill(stack, tmp_path_factory.mktemp("backups") / "drill.tar.age")
    assert stack.invoke("init").returncode == 0
    env = root / ".env"
    env.write_text(env.read_text().replace("\nBACKUP_PASSPHRASE=\n", f"\nBACKUP_PASSPHRASE={PASSPHRASE}\n"))
    stack.first_up = stack.invoke("up")
    assert stack.first_up.returncode == 0, stack.first_up.stdout + stack.first_up.stderr
    try:
        yield made
    finally:
        stack.invoke("down", "--volumes")
        remove_project(project)


@pytest.fixture(autouse=True)
def mlflow_as_admin(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = drill.stack.admin()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _auth(drill: Drill, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{drill.stack.url}/api/2.0/mlflow/{path}", auth=drill.stack.admin(), timeout=30, **kwargs
    )


def test_the_platform_is_filled_with_runs_an_artifact_a_model_and_a_second_user(drill: Drill, tmp_path: Path) -> None:
    client = drill.client()
    filled = fill(client, tmp_path, ARTIFACT_BYTES)
    experiments = filled["experiments"]
    created = _auth(drill, "POST", "users/create", json={"username": "alice", "password": "alice-" + PASSPHRASE})
    assert created.status_code == 200, created.text
    grant = {"username": "alice", "resource_type": "experiment", "resource_id": experiments[0], "permission": "EDIT"}
    granted = drill.permissions("POST", "grant", json=grant)
    assert granted.status_code == 200, granted.text
    drill.data = filled


def test_backup_writes_an_archive_only_its_owner_can_read(drill: Drill) -> None:
    drill.backup = drill.run("backup", "--out", str(drill.archive))
    assert drill.backup.returncode == 0, drill.backup.stdout + drill.backup.stderr
    assert stat.S_IMODE(drill.archive.stat().st_mode) == 0o600
    assert drill.archive.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert PASSPHRASE not in drill.backup.stdout + drill.backup.stderr


ROTATED = "rotated-" + secrets.token_urlsafe(18)
CAROL = ("carol", "carol-" + secrets.token_urlsafe(12))


def test_restore_onto_a_fresh_stack_after_down_volumes_succeeds(drill: Drill) -> None:
    """Between backup and restore, as a user's week goes: the admin password rotated in .env and a
    config/access.yaml user added. The fresh stack holds only what `up` made from them, so no --yes."""
    down = drill.stack.invoke("down", "--volumes")
    assert down.returncode == 0, down.stderr
    drill.data["old_admin"] = drill.stack.admin()
    env = drill.stack.root / ".env"
    old_line = f"\nMLFLOW_ADMIN_PASSWORD={drill.data['old_admin'][1]}\n"
    assert old_line in env.read_text()
    env.write_text(
        env.read_text().replace(old_line, f"\nMLFLOW_ADMIN_PASSWORD={ROTATED}\n")
        + f"CAROL_MLFLOW_PASSWORD={CAROL[1]}\n"
    )
    (drill.stack.root / "config/access.yaml").write_text(
        "users:\n  - name: carol\n    password_env: CAROL_MLFLOW_PASSWORD\n"
    )
    up = drill.stack.invoke("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert _auth(drill, "GET", "experiments/get-by-name", params={"experiment_name": "drill-0"}).status_code == 404
    drill.restore = drill.run("restore", str(drill.archive))
    assert drill.restore.returncode == 0, drill.restore.stdout + drill.restore.stderr
    assert "counts match the manifest" in drill.restore.stdout
    assert "password set to MLFLOW_ADMIN_PASSWORD from .env" in drill.restore.stdout
    assert "config/access.yaml applied" in drill.restore.stdout


def _login(drill: Drill, auth: tuple[str, str]) -> int:
    return requests.get(f"{drill.stack.url}/api/2.0/mlflow/users/current", auth=auth, timeout=30).status_code


def test_the_admin_logs_in_with_the_rotated_password_and_not_the_archived_one(drill: Drill) -> None:
    assert drill.stack.admin() == ("admin", ROTATED)
    assert _login(drill, drill.stack.admin()) == 200
    assert _login(drill, drill.data["old_admin"]) == 401


def test_the_access_file_user_the_archive_lacks_logs_in_after_the_restore(drill: Drill) -> None:
    assert _login(drill, CAROL) == 200


def test_every_run_with_params_tags_and_metric_history_is_back(drill: Drill) -> None:
    client = drill.client()
    for n, run_id in enumerate(drill.data["runs"]):
        run = client.get_run(run_id)
        assert run.data.params["lr"] == str(0.1 * (n % 3 + 1))
        assert run.data.tags["drill"] == "yes"
        history = [m.value for m in client.get_metric_history(run_id, "loss")]
        assert history == [1.0 / (step + 1 + n % 3) for step in range(5)]


def test_the_21_mb_artifact_is_byte_equal(drill: Drill, tmp_path: Path) -> None:
    path = drill.client().download_artifacts(drill.data["runs"][0], "weights.bin", str(tmp_path))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == drill.data["artifact_sha256"]


def test_the_model_alias_is_back(drill: Drill) -> None:
    version = drill.client().get_model_version_by_alias("drill-model", "champion")
    assert version.version == drill.data["model_version"]


def test_the_second_user_logs_in_and_keeps_the_permission(drill: Drill) -> None:
    alice = ("alice", "alice-" + PASSPHRASE)
    experiment = drill.data["experiments"][0]
    seen = requests.get(
        f"{drill.stack.url}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment},
        auth=alice,
        timeout=30,
    )
    assert seen.status_code == 200, seen.text
    wanted = {"username": "alice", "resource_type": "experiment", "resource_id": experiment}
    permission = drill.permissions("GET", "get", params=wanted)
    assert permission.status_code == 200, permission.text
    assert permission.json()["permission"] == "EDIT"


def test_the_admin_logs_in(drill: Drill) -> None:
    assert _auth(drill, "GET", "users/get", params={"username": "admin"}).status_code == 200


def _unchanged(drill: Drill) -> None:
    """The refused restore left the platform as it was: running, data in place."""
    assert requests.get(f"{drill.stack.url}/health", timeout=10).status_code == 200
    assert len(drill.client().search_runs(drill.data["experiments"])) == len(drill.data["runs"])


def test_a_platform_holding_data_is_not_overwritten_without_yes(drill: Drill) -> None:
    refused = drill.run("restore", str(drill.archive))
    assert refused.returncode == 1
    assert "holds data" in refused.stderr and "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    _unchanged(drill)


def test_a_corrupted_archive_is_refused(drill: Drill, tmp_path: Path) -> None:
    data = bytearray(drill.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = tmp_path / "corrupted.tar.age"
    broken.write_bytes(bytes(data))
    refused = drill.run("restore", str(broken), "--yes")
    assert refused.returncode == 1
    assert "cannot decrypt" in refused.stderr and "damaged" in refused.stderr
    _unchanged(drill)


def test_a_truncated_archive_is_refused(drill: Drill, tmp_path: Path) -> None:
    data = drill.archive.read_bytes()
    short = tmp_path / "truncated.tar.age"
    short.write_bytes(data[: len(data) - 4096])
    refused = drill.run("restore", str(short), "--yes")
    assert refused.returncode == 1
    assert "truncated" in refused.stderr
    _unchanged(drill)


def test_a_wrong_passphrase_is_refused(drill: Drill) -> None:
    refused = drill.run("restore", str(drill.archive), "--yes", BACKUP_PASSPHRASE="wrong-" + PASSPHRASE)
    assert refused.returncode == 1
    assert "cannot decrypt with BACKUP_PASSPHRASE" in refused.stderr
    _unchanged(drill)


def test_an_archive_of_another_cluster_is_refused(drill: Drill, tmp_path: Path) -> None:
    other = tmp_path / "other.tar.age"
    made = drill.run("backup", "--out", str(other), CLUSTER_NAME="other-cluster")
    assert made.returncode == 0, made.stdout + made.stderr
    refused = drill.run("restore", str(other), "--yes")
    assert refused.returncode == 1
    assert "comes from cluster 'other-cluster'" in refused.stderr and "nothing was changed" in refused.stderr
    _unchanged(drill)
