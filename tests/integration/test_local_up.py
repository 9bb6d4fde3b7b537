"""`invoke up` end to end, as a user runs it: a copy of the project with no .env, no registry, real Docker.

The copy gets its own project name and port (config/platform.yaml), so it never touches a user's stack.
Tests run in file order against one stack: up, use it, up again, down and up, down --volumes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

import docker
from mlopskit.settings import ENV_KEYS

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT = 1200


@dataclass
class Stack:
    root: Path
    project: str
    port: int
    first_up: subprocess.CompletedProcess[str]
    # (seconds after start, lines in the log file) while the first `up` ran with its output in a file.
    first_up_log_growth: list[tuple[float, int]] = field(default_factory=list)
    first_up_ended: float = 0.0

    @staticmethod
    def _env() -> dict[str, str]:
        # The user's own settings must not leak into the copy: only .env and the copy's config count.
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
        env["COLUMNS"] = "200"  # one line per message, so the output can be matched
        return env

    def invoke(
        self, *args: str, root: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        invoke = Path(sys.executable).with_name("invoke")
        return subprocess.run(
            [str(invoke), *args],
            cwd=root or self.root,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
            env=self._env() | (env or {}),
            check=False,
        )

    def invoke_into_file(self, log: Path, *args: str) -> None:
        """Run a task as `invoke ARGS > LOG 2>&1` would, watching the file grow; sets the first_up_* fields."""
        invoke = Path(sys.executable).with_name("invoke")
        growth: list[tuple[float, int]] = []
        start = time.monotonic()
        with (
            log.open("w") as sink,
            subprocess.Popen(
                [str(invoke), *args], cwd=self.root, stdout=sink, stderr=subprocess.STDOUT, env=self._env()
            ) as child,
        ):
            while child.poll() is None:
                if time.monotonic() - start > UP_TIMEOUT:
                    child.kill()
                growth.append((time.monotonic() - start, len(log.read_text().splitlines())))
                time.sleep(0.25)
        self.first_up_ended = time.monotonic() - start
        self.first_up_log_growth = growth
        self.first_up = subprocess.CompletedProcess(child.args, child.returncode, log.read_text(), "")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self) -> tuple[str, str]:
        password = dotenv_values(self.root / ".env")["MLFLOW_ADMIN_PASSWORD"]
        assert password
        return "admin", password

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", auth=self.admin(), timeout=30, **kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_copy(target: Path, project: str, port: int) -> Path:
    for name in ("tasks.py", ".env.example"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "docker", target / "docker")
    shutil.copytree(REPO / "config", target / "config")
    platform = target / "config" / "platform.yaml"
    platform.write_text(platform.read_text() + f"\nlocal:\n  project: {project}\n  port: {port}\n")
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = f"mlkit-it-{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = project_copy(tmp_path_factory.mktemp("project"), project, port)
    made = Stack(root, project, port, subprocess.CompletedProcess([], 0, "", ""))
    made.invoke_into_file(tmp_path_factory.mktemp("log") / "up.log", "up")
    try:
        yield made
    finally:
        made.invoke("down", "--volumes")
        remove_project(project)


def remove_project(project: str) -> None:
    """Whatever of the project `down` left behind: containers, volumes, networks."""
    client = docker.from_env()
    label = f"io.mlopskit.project={project}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()


def test_up_on_a_fresh_copy_writes_env_and_prints_the_url(stack: Stack) -> None:
    out = stack.first_up.stdout + stack.first_up.stderr
    assert stack.first_up.returncode == 0, out
    assert ".env was missing" in out
    assert f"MLflow:   {stack.url}" in out
    assert "MLFLOW_ADMIN_PASSWORD in" in out
    assert stack.admin()[1] not in out, "the admin password must never be printed"
    assert out.count("mlflow: healthy") == 1, out  # once, when its admin and access are set
    assert "[0/1] (done)" not in out, out


def test_progress_reaches_a_redirected_file_while_up_runs(stack: Stack) -> None:
    """Without a terminal each step is a line written when it happens, not a block flushed at exit."""
    assert stack.first_up.returncode == 0, stack.first_up.stdout
    total = len(stack.first_up.stdout.splitlines())
    seen_early = max((count for at, count in stack.first_up_log_growth if at < stack.first_up_ended - 5), default=0)
    # Most lines were readable at least 5 s before `up` ended (46 of 59 when measured), and they were the steps.
    assert seen_early >= max(3, total // 2), (seen_early, total, stack.first_up.stdout)
    early_text = "\n".join(stack.first_up.stdout.splitlines()[:seen_early])
    assert re.search(r"\[\s*\d+(\.\d+)?s\]|\d\d:\d\d:\d\d", early_text), early_text  # timestamped step lines


def test_health_answers_200(stack: Stack) -> None:
    assert requests.get(f"{stack.url}/health", timeout=10).status_code == 200


def test_an_unauthenticated_api_call_answers_401(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10)
    assert response.status_code == 401


def test_the_admin_logs_a_run_with_an_artifact(stack: Stack) -> None:
    experiment = stack.api("POST", "experiments/create", json={"name": "local-up"})
    assert experiment.status_code == 200, experiment.text
    run = stack.api("POST", "runs/create", json={"experiment_id": experiment.json()["experiment_id"]})
    run_id = run.json()["run"]["info"]["run_id"]
    logged = stack.api("POST", "runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.25, "timestamp": 0})
    assert logged.status_code == 200, logged.text
    artifact = requests.put(
        f"{stack.url}/api/2.0/mlflow-artifacts/artifacts/{experiment.json()['experiment_id']}/{run_id}/artifacts/a.txt",
        data=b"hello",
        auth=stack.admin(),
        timeout=30,
    )
    assert artifact.status_code == 200, artifact.text
    stored = requests.get(artifact.url, auth=stack.admin(), timeout=30)
    assert stored.content == b"hello"


def test_a_second_up_changes_nothing_and_says_unchanged(stack: Stack) -> None:
    again = stack.invoke("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "unchanged" in again.stdout
    assert "recreated" not in again.stdout and "created" not in again.stdout
    # Stand-ins built by the first up are reused, and said so plainly: no warning that something was built.
    assert "could not be pulled" not in again.stdout + again.stderr
    assert "built earlier" in again.stdout  # what it does say: which local stand-in it used
    assert "warning" not in again.stderr
    dry = stack.invoke("up", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "nothing to do" in dry.stdout and "Would" not in dry.stdout, dry.stdout


def containers_of(project: str) -> dict[str, tuple[str, str]]:
    """name -> (id, status) of the project's containers: what a refused `up` must leave as it was."""
    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": f"io.mlopskit.project={project}"})
    return {str(c.name): (str(c.id), c.status) for c in found}


def test_up_refuses_a_port_another_program_holds_before_touching_anything(stack: Stack) -> None:
    before = containers_of(stack.project)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        taken = int(listener.getsockname()[1])
        up = stack.invoke("up", env={"LOCAL_PORT": str(taken)})
    out = up.stdout + up.stderr
    assert up.returncode != 0, out
    assert f"port {taken} on 127.0.0.1 is already in use" in out and "LOCAL_PORT" in out, out
    assert "Traceback" not in out
    assert containers_of(stack.project) == before  # the running stack (on its own port) was not touched


def test_a_second_checkout_with_the_same_project_name_is_refused(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A re-clone in another folder: own .env (fresh secrets), same project name and port."""
    before = containers_of(stack.project)
    other = project_copy(tmp_path_factory.mktemp("second-checkout"), stack.project, stack.port)
    for args in (("up", "--dry-run"), ("up",), ("down",)):
        result = stack.invoke(*args, root=other)
        out = result.stdout + result.stderr
        assert result.returncode != 0, (args, out)
        assert f"was started from {stack.root}" in out, (args, out)
        assert f"`invoke down` in {stack.root}" in out and "local.project" in out, out
        assert "Traceback" not in out
    assert containers_of(stack.project) == before


def test_up_refuses_a_postgres_password_the_kept_data_does_not_accept(stack: Stack) -> None:
    before = containers_of(stack.project)
    up = stack.invoke("up", env={"POSTGRES_PASSWORD": "another-password-7c1d99e0"})
    out = up.stdout + up.stderr
    assert up.returncode != 0, out
    assert f"volume {stack.project}-postgres-data was initialised with another POSTGRES_PASSWORD" in out, out
    assert "Traceback" not in out and "another-password-7c1d99e0" not in out
    assert containers_of(stack.project) == before


@contextlib.contextmanager
def platform_edited(stack: Stack, old: str, new: str) -> Iterator[None]:
    """config/platform.yaml of the copy with the first match of the regular expression `old` replaced by `new`
    while the block runs (a pattern, so a comment after a value does not break the edit)."""
    path = stack.root / "config" / "platform.yaml"
    original = path.read_text()
    assert re.search(old, original), old
    path.write_text(re.sub(old, new, original, count=1))
    try:
        yield
    finally:
        path.write_text(original)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("\nlocal:\n", "\nlocal:\n  bind: 192.0.2.77\n", "local.bind [from config/platform.yaml"),
        (
            "\n    mode: internal",
            "\n    user: mlflow2\n    mode: internal",
            "initialised with PostgreSQL user 'mlflow'",
        ),
        (
            r"\n    tracking_db: mlflow\b[^\n]*\n",
            "\n    tracking_db: renamed\n",
            "holds database(s) 'mlflow', 'mlflow_auth'",
        ),
    ],
    ids=["bind-address-not-here", "postgres-user", "tracking-db"],
)
def test_up_refuses_a_change_docker_or_the_kept_data_would_refuse_before_touching_anything(
    stack: Stack, old: str, new: str, expected: str
) -> None:
    """192.0.2.77 (TEST-NET-1) is on no machine; the running MLflow holds the port, so only the address check
    can see it. A new user or database name over the kept volume: PostgreSQL would refuse MLflow after `up`
    replaced it."""
    before = containers_of(stack.project)
    with platform_edited(stack, old, new):
        for args in (("up", "--dry-run"), ("up",)):
            result = stack.invoke(*args)
            out = result.stdout + result.stderr
            assert result.returncode != 0, (args, out)
            assert expected in out and "nothing was" in out, (args, out)
            assert "Traceback" not in out and "another POSTGRES_PASSWORD" not in out, out
    after = containers_of(stack.project)
    assert after == before and after[f"{stack.project}-mlflow"][1] == "running"


def test_data_survives_down_and_up(stack: Stack) -> None:
    down = stack.invoke("down")
    assert down.returncode == 0, down.stderr
    assert f"volume {stack.project}-postgres-data" not in down.stdout
    up = stack.invoke("up")
    assert up.returncode == 0, up.stdout + up.stderr
    found = stack.api("GET", "experiments/get-by-name", params={"experiment_name": "local-up"})
    assert found.status_code == 200, found.text
    runs = stack.api("POST", "runs/search", json={"experiment_ids": [found.json()["experiment"]["experiment_id"]]})
    assert [m["value"] for m in runs.json()["runs"][0]["data"]["metrics"]] == [0.25]


def test_a_new_postgres_password_on_kept_data_fails_plainly_after_down(stack: Stack) -> None:
    """With no running PostgreSQL to ask first, the migrations find out: one plain error, then the right
    password brings the stack back."""
    assert stack.invoke("down").returncode == 0
    up = stack.invoke("up", env={"POSTGRES_PASSWORD": "another-password-7c1d99e0"})
    out = up.stdout + up.stderr
    assert up.returncode != 0, out
    assert "database migrations failed" in out and f"volume {stack.project}-postgres-data" in out, out
    assert "Traceback" not in out and "sqlalchemy" not in out.lower()
    again = stack.invoke("up")
    assert again.returncode == 0, again.stdout + again.stderr


def test_down_with_volumes_removes_the_data(stack: Stack) -> None:
    down = stack.invoke("down", "--volumes")
    assert down.returncode == 0, down.stderr
    assert re.search(rf"volume {stack.project}-postgres-data", down.stdout)
    client = docker.from_env()
    assert client.volumes.list(filters={"label": f"io.mlopskit.project={stack.project}"}) == []
