"""config/access.yaml applied to the real MLflow of `invoke up`: users, grants, levels, prune and rotation.

Every behaviour is checked by logging in as the user and reading or writing an experiment (200 or 403 as
declared), not only by reading the auth API back. Tests run in file order against one stack.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.test_local_up import Stack, free_port, project_copy, remove_project

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Short, so a rotated password leaves the server workers' login caches quickly (MLflow's default is 30 s).
CACHE_TTL = 2
ALICE_PASSWORD = "alice-first-password-1"
BOB_PASSWORD = "bob-first-password-22"

ACCESS = """\
users:
  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}
  - {name: bob, password_env: BOB_MLFLOW_PASSWORD}
groups:
  - {name: team-a, members: [alice, bob]}
permissions:
  - {experiment: "team-a/*", groups: [team-a], level: READ}
  - {experiment: "team-b/*", users: [bob], level: EDIT}
"""


class AccessStack(Stack):
    def set_env(self, key: str, value: str) -> None:
        env = self.root / ".env"
        text = env.read_text()
        line = f"{key}={value}"
        text = re.sub(rf"^{key}=.*$", line, text, flags=re.M) if re.search(rf"^{key}=", text, re.M) else text + line
        env.write_text(text if text.endswith("\n") else text + "\n")

    def unset_env(self, key: str) -> None:
        env = self.root / ".env"
        env.write_text(re.sub(rf"^{key}=.*\n", "", env.read_text(), flags=re.M))

    def write_access(self, text: str) -> None:
        (self.root / "config" / "access.yaml").write_text(text)

    def status(self, user: str, password: str, method: str, path: str, **kwargs: Any) -> int:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        return requests.request(method, url, auth=(user, password), timeout=30, **kwargs).status_code

    def reads(self, user: str, password: str, experiment_id: str) -> int:
        return self.status(user, password, "GET", "experiments/get", params={"experiment_id": experiment_id})

    def writes(self, user: str, password: str, experiment_id: str) -> int:
        return self.status(user, password, "POST", "runs/create", json={"experiment_id": experiment_id})

    def logs_in(self, user: str, password: str) -> int:
        return self.status(user, password, "GET", "users/current")

    def experiment(self, name: str) -> str:
        response = self.api("POST", "experiments/create", json={"name": name})
        assert response.status_code == 200, response.text
        return str(response.json()["experiment_id"])


def refused_within(stack: AccessStack, user: str, password: str, seconds: float) -> int:
    """The status of a login with an old password once the workers' caches have let it go (polls, no sleep-and-hope)."""
    deadline = time.monotonic() + seconds
    while True:
        status = stack.logs_in(user, password)
        if status == 401 or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessStack]:
    project = f"mlkit-acl-{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = project_copy(tmp_path_factory.mktemp("project"), project, port)
    platform = root / "config" / "platform.yaml"
    text = platform.read_text()
    assert "auth_cache_ttl_seconds: 30" in text
    platform.write_text(text.replace("auth_cache_ttl_seconds: 30", f"auth_cache_ttl_seconds: {CACHE_TTL}"))
    made = AccessStack(root, project, port, subprocess.CompletedProcess([], 0, "", ""))
    ok(made.invoke("init"))
    made.set_env("ALICE_MLFLOW_PASSWORD", ALICE_PASSWORD)
    made.set_env("BOB_MLFLOW_PASSWORD", BOB_PASSWORD)
    made.write_access(ACCESS)
    made.first_up = made.invoke("up")
    try:
        yield made
    finally:
        made.invoke("down", "--volumes")
        remove_project(project)


@pytest.fixture(scope="module")
def experiments(stack: AccessStack) -> dict[str, str]:
    """Experiments the admin creates after the users exist: the prefixes reach them at the next apply."""
    ok(stack.first_up)
    return {name: stack.experiment(name) for name in ("team-a/churn", "team-b/fraud")}


def test_up_creates_the_users_declared_in_the_file(stack: AccessStack) -> None:
    out = ok(stack.first_up)
    assert "mlflow access (config/access.yaml) 2 change(s) applied" in out
    assert stack.logs_in("alice", ALICE_PASSWORD) == 200
    assert stack.logs_in("bob", BOB_PASSWORD) == 200


def test_apply_grants_what_the_file_declares(stack: AccessStack, experiments: dict[str, str]) -> None:
    out = ok(stack.invoke("access.apply"))
    assert "3 change(s) applied" in out
    team_a, team_b = experiments["team-a/churn"], experiments["team-b/fraud"]
    assert stack.reads("alice", ALICE_PASSWORD, team_a) == 200
    assert stack.writes("alice", ALICE_PASSWORD, team_a) == 403
    assert stack.reads("alice", ALICE_PASSWORD, team_b) == 403
    assert stack.writes("bob", BOB_PASSWORD, team_b) == 200


def test_plan_shows_nothing_after_apply(stack: AccessStack, experiments: dict[str, str]) -> None:
    out = ok(stack.invoke("access.plan"))
    assert "no differences" in out


def test_a_second_apply_says_unchanged(stack: AccessStack, experiments: dict[str, str]) -> None:
    out = ok(stack.invoke("access.apply"))
    assert "unchanged" in out


def test_a_changed_level_is_planned_then_lets_the_user_write(stack: AccessStack, experiments: dict[str, str]) -> None:
    stack.write_access(ACCESS.replace("groups: [team-a], level: READ", "groups: [team-a], level: EDIT"))
    plan = stack.invoke("access.plan")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert re.search(
        r"change level\s*│\s*alice\s*│\s*experiment team-a/churn \(id \d+\)\s*│\s*READ → EDIT", plan.stdout
    )
    ok(stack.invoke("access.apply"))
    assert stack.writes("alice", ALICE_PASSWORD, experiments["team-a/churn"]) == 200


def test_a_rotated_user_password_logs_in_and_the_old_one_is_refused(
    stack: AccessStack, experiments: dict[str, str]
) -> None:
    stack.set_env("ALICE_MLFLOW_PASSWORD", "alice-second-password-3")
    out = ok(stack.invoke("access.apply"))
    assert "rotate password" in out
    assert stack.reads("alice", "alice-second-password-3", experiments["team-a/churn"]) == 200
    assert refused_within(stack, "alice", ALICE_PASSWORD, CACHE_TTL + 10) == 401


def test_a_removed_user_is_kept_without_prune_and_deleted_with_it(
    stack: AccessStack, experiments: dict[str, str]
) -> None:
    without_bob = (
        "users:\n  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}\n"
        'permissions:\n  - {experiment: "team-a/*", users: [alice], level: EDIT}\n'
    )
    stack.write_access(without_bob)
    stack.unset_env("BOB_MLFLOW_PASSWORD")  # a key no user names is an unknown key in .env
    kept = ok(stack.invoke("access.apply"))
    assert "delete user bob" in kept and "--prune removes them" in kept
    assert stack.writes("bob", BOB_PASSWORD, experiments["team-b/fraud"]) == 200
    pruned = ok(stack.invoke("access.apply", "--prune"))
    assert re.search(r"delete user\s*│\s*bob", pruned)
    # Each worker keeps its own auth cache: a deleted user is refused everywhere once the TTL has passed.
    assert refused_within(stack, "bob", BOB_PASSWORD, CACHE_TTL + 10) == 401
    assert stack.reads("alice", "alice-second-password-3", experiments["team-a/churn"]) == 200


def test_up_rotates_a_changed_admin_password(stack: AccessStack, experiments: dict[str, str]) -> None:
    _, old = stack.admin()
    new = f"rotated-admin-{uuid.uuid4().hex[:12]}"
    stack.set_env("MLFLOW_ADMIN_PASSWORD", new)
    out = ok(stack.invoke("up"))
    assert "mlflow admin password rotated" in out
    assert stack.reads("admin", new, experiments["team-b/fraud"]) == 200
    assert refused_within(stack, "admin", old, CACHE_TTL + 10) == 401
    assert stack.writes("alice", "alice-second-password-3", experiments["team-a/churn"]) == 200


def test_up_stops_when_the_previous_admin_password_is_unknown(stack: AccessStack, experiments: dict[str, str]) -> None:
    _, current = stack.admin()
    ok(stack.invoke("down"))  # the container, and with it the password it ran with, is gone; the data stays
    stack.set_env("MLFLOW_ADMIN_PASSWORD", f"unknown-to-mlflow-{uuid.uuid4().hex[:8]}")
    refused = stack.invoke("up")
    assert refused.returncode == 1
    assert "no previous password works" in refused.stderr
    assert "Put the password MLflow accepts back into .env as MLFLOW_ADMIN_PASSWORD" in refused.stderr
    assert stack.reads("admin", current, experiments["team-b/fraud"]) == 200, "nothing in MLflow may change"
    stack.set_env("MLFLOW_ADMIN_PASSWORD", current)
    assert "Traceback" not in refused.stderr
    ok(stack.invoke("up"))
