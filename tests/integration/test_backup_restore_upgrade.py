"""The second restore drill: an archive of an older MLflow restored into a stack of a newer image tag, where the
migrations bring the schema forward; and the reverse, refused.

The old stack is the project's own image built by `invoke up` with `images.mlflow_version: 3.16.1` in
config/platform.yaml (a real MLflow release from PyPI; docker/mlflow's pins follow that build argument),
tagged 3.16.1-<sha>. Its tracking schema head differs from 3.17.2's, so the restore has real migrations to
run. Then the same project goes back to the default (3.17.2, the newest release), `invoke up` runs the newer
tag and `invoke restore` brings the old archive in. Last, an archive of the 3.17.2 stack is refused by a
3.16.1 stack (migrations only go forward) with nothing changed.

A copy of the project with its own project name and port; tests run in file order against one stack.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import docker
from mlopskit.backup import crypto, flow
from mlopskit.backup.archive import Manifest
from mlopskit.backup.postgres import query_command
from tests.integration.test_backup_restore import PASSPHRASE, Drill
from tests.integration.test_local_up import Stack, free_port, project_copy, remove_project

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OLD_MLFLOW = "3.16.1"
NEW_MLFLOW = "3.17.2"
ALICE = ("alice", "alice-" + PASSPHRASE)


def use_mlflow(stack: Stack, version: str | None) -> None:
    """Point the project's config/platform.yaml at an MLflow release (None: the default, the newest)."""
    path = stack.root / "config" / "platform.yaml"
    text = path.read_text().split("\n# drill: mlflow release\n")[0]
    if version:
        text += f"\n# drill: mlflow release\nimages:\n  mlflow_version: {version!r}\n"
    path.write_text(text)


def live_revision(stack: Stack, database: str, table: str) -> str:
    """The schema revision in the running stack's database, read with psql in its container."""
    container = docker.from_env().containers.get(f"{stack.project}-postgres")
    sql = f"SELECT version_num FROM {table}"  # noqa: S608 - the two table names are constants of this module
    code, out = container.exec_run(query_command(database, sql))
    assert code == 0 and isinstance(out, bytes), out
    return out.decode().strip()


def manifest_of(archive: Path) -> Manifest:
    with flow.opened(archive, crypto.Keys(passphrase=PASSPHRASE)) as reader:
        return reader.manifest


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    project = f"mlkit-up-{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = project_copy(tmp_path_factory.mktemp("project"), project, port)
    stack = Stack(root, project, port, subprocess.CompletedProcess([], 0, "", ""))
    made = Drill(stack, tmp_path_factory.mktemp("backups") / "old.tar.age")
    assert stack.invoke("init").returncode == 0
    env = root / ".env"
    env.write_text(env.read_text().replace("\nBACKUP_PASSPHRASE=\n", f"\nBACKUP_PASSPHRASE={PASSPHRASE}\n"))
    use_mlflow(stack, OLD_MLFLOW)
    start = time.monotonic()
    stack.first_up = stack.invoke("up")
    made.data["timings"] = {"up (3.16.1, image built or reused)": time.monotonic() - start}
    assert stack.first_up.returncode == 0, stack.first_up.stdout + stack.first_up.stderr
    try:
        yield made
    finally:
        print("upgrade drill timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in made.data["timings"].items()))
        stack.invoke("down", "--volumes")
        remove_project(project)


@pytest.fixture(autouse=True)
def mlflow_as_admin(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = drill.stack.admin()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def timed(drill: Drill, label: str, *args: str) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    done = drill.stack.invoke(*args) if args[0] in ("up", "down") else drill.run(*args)
    drill.data["timings"][label] = time.monotonic() - start
    return done


def test_the_old_stack_runs_mlflow_3_16_1(drill: Drill) -> None:
    version = requests.get(f"{drill.stack.url}/version", auth=drill.stack.admin(), timeout=30)
    assert version.status_code == 200 and version.text.strip() == OLD_MLFLOW


def test_the_old_stack_is_filled_and_backed_up(drill: Drill, tmp_path: Path) -> None:
    client = drill.client()
    experiment = client.create_experiment("upgrade-drill")
    runs = []
    for n in range(3):
        run = client.create_run(experiment, tags={"drill": "upgrade"})
        client.log_param(run.info.run_id, "n", str(n))
        for step in range(4):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1 + n), step=step)
        client.set_terminated(run.info.run_id)
        runs.append(run.info.run_id)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(os.urandom(2 * 1024 * 1024))
    client.log_artifact(runs[0], str(artifact))
    client.create_registered_model("upgrade-model")
    version = client.create_model_version("upgrade-model", f"runs:/{runs[0]}/model.bin", run_id=runs[0])
    client.set_registered_model_alias("upgrade-model", "champion", version.version)
    created = requests.post(
        f"{drill.stack.url}/api/2.0/mlflow/users/create",
        json={"username": ALICE[0], "password": ALICE[1]},
        auth=drill.stack.admin(),
        timeout=30,
    )
    assert created.status_code == 200, created.text
    grant = {"username": ALICE[0], "resource_type": "experiment", "resource_id": experiment, "permission": "READ"}
    assert drill.permissions("POST", "grant", json=grant).status_code == 200
    drill.data |= {
        "experiment": experiment,
        "runs": runs,
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "model_version": version.version,
    }
    backup = timed(drill, "backup (3.16.1)", "backup", "--out", str(drill.archive))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert manifest_of(drill.archive).versions["mlflow"] == OLD_MLFLOW  # from the running image's label


def test_the_archive_restores_into_a_stack_of_the_newer_image(drill: Drill) -> None:
    assert timed(drill, "down --volumes", "down", "--volumes").returncode == 0
    use_mlflow(drill.stack, None)
    up = timed(drill, f"up ({NEW_MLFLOW})", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    version = requests.get(f"{drill.stack.url}/version", auth=drill.stack.admin(), timeout=30)
    assert version.text.strip() == NEW_MLFLOW
    restored = timed(drill, "restore (3.16.1 archive into 3.17.2)", "restore", str(drill.archive))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "migrations run" in restored.stdout and "counts match the manifest" in restored.stdout


def test_the_migrations_brought_the_tracking_schema_forward(drill: Drill) -> None:
    archived = manifest_of(drill.archive).databases
    live = live_revision(drill.stack, "mlflow", "alembic_version")
    assert archived["tracking"]["revision"] and live != archived["tracking"]["revision"]
    # The live revision is the newer image's head: what a fresh 3.17.2 stack's manifest would record too.
    assert live_revision(drill.stack, "mlflow_auth", "alembic_version_auth") == archived["auth"]["revision"]


def test_runs_metrics_artifact_alias_and_the_second_user_are_back(drill: Drill, tmp_path: Path) -> None:
    client = drill.client()
    for n, run_id in enumerate(drill.data["runs"]):
        run = client.get_run(run_id)
        assert run.data.params["n"] == str(n) and run.data.tags["drill"] == "upgrade"
        assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0 / (s + 1 + n) for s in range(4)]
    path = client.download_artifacts(drill.data["runs"][0], "model.bin", str(tmp_path))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == drill.data["artifact_sha256"]
    assert client.get_model_version_by_alias("upgrade-model", "champion").version == drill.data["model_version"]
    seen = requests.get(
        f"{drill.stack.url}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": drill.data["experiment"]},
        auth=ALICE,
        timeout=30,
    )
    assert seen.status_code == 200, seen.text


def test_an_archive_of_the_newer_mlflow_is_refused_by_the_older_stack(drill: Drill, tmp_path: Path) -> None:
    newer = tmp_path / "new.tar.age"
    made = drill.run("backup", "--out", str(newer))
    assert made.returncode == 0, made.stdout + made.stderr
    assert manifest_of(newer).versions["mlflow"] == NEW_MLFLOW
    assert drill.stack.invoke("down", "--volumes").returncode == 0
    use_mlflow(drill.stack, OLD_MLFLOW)
    up = drill.stack.invoke("up")
    assert up.returncode == 0, up.stdout + up.stderr
    refused = drill.run("restore", str(newer), "--yes")
    assert refused.returncode == 1
    assert f"written by MLflow {NEW_MLFLOW}, this platform runs {OLD_MLFLOW}" in refused.stderr, refused.stderr
    assert "nothing was changed" in refused.stderr and "Traceback" not in refused.stderr
    client: Any = drill.client()
    assert client.get_experiment_by_name("upgrade-drill") is None
    assert requests.get(f"{drill.stack.url}/health", timeout=10).status_code == 200
