"""Planning and applying config/access.yaml against an in-memory stand-in of MLflow 3.17's auth API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlopskit import access
from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import MlflowClient
from mlopskit.settings import Settings, load_settings

ADMIN_PASSWORD = "Adm1n-Sample-Passw0rd-7f3a"
ENV = (
    f"MLFLOW_ADMIN_PASSWORD={ADMIN_PASSWORD}\n"
    "ALICE_MLFLOW_PASSWORD=alice-sample-password-1\n"
    "BOB_MLFLOW_PASSWORD=bob-sample-password-22\n"
)
FILE = """\
users:
  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}
  - {name: bob, password_env: BOB_MLFLOW_PASSWORD}
groups:
  - {name: team-a, members: [alice, bob]}
permissions:
  - {experiment: "team-a/*", groups: [team-a], level: READ}
  - {experiment: team-a/churn, users: [alice], level: EDIT}
  - {registered_model: churn, users: [bob], level: NO_PERMISSIONS}
"""


class FakeMlflow(MlflowClient):
    """The endpoints access.py calls, on dicts: users, per-user grants, experiments, registered models."""

    def __init__(self) -> None:
        super().__init__("http://mlflow.invalid", "admin", ADMIN_PASSWORD)
        self.users: dict[str, dict[str, Any]] = {"admin": {"id": 1, "admin": True, "password": ADMIN_PASSWORD}}
        self.grants: dict[tuple[str, str, str], str] = {}
        self.experiments = {"team-a/churn": "1", "team-a/fraud": "2", "team-b/x": "3"}
        self.models = {"churn"}
        self.writes: list[str] = []

    def accepts(self, user: str, password: str) -> bool:
        return user in self.users and self.users[user]["password"] == password

    def api(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        body = kwargs.get("json") or {}
        if endpoint == "users/list":
            return {"users": [{"id": u["id"], "username": n, "is_admin": u["admin"]} for n, u in self.users.items()]}
        if endpoint == "experiments/search":
            return {"experiments": [{"name": n, "experiment_id": i} for n, i in self.experiments.items()]}
        if endpoint == "registered-models/search":
            return {"registered_models": [{"name": n} for n in self.models]}
        self.writes.append(f"{endpoint} {body.get('username')}")
        if endpoint == "users/create":
            assert body["username"] not in self.users
            self.users[body["username"]] = {"id": len(self.users) + 1, "admin": False, "password": body["password"]}
        elif endpoint == "users/update-password":
            self.users[body["username"]]["password"] = body["password"]
        elif endpoint == "users/update-admin":
            self.users[body["username"]]["admin"] = body["is_admin"]
        elif endpoint == "users/delete":
            del self.users[body["username"]]
            self.grants = {k: v for k, v in self.grants.items() if k[0] != body["username"]}
        else:
            raise AssertionError(f"unexpected call {method} {endpoint}")
        return {}

    def api3(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        if endpoint == "users/permissions/list":
            name = kwargs["params"]["username"]
            role = f"__user_{self.users[name]['id']}__"
            rows = [
                {"role_name": role, "resource_type": kind, "resource_pattern": key, "permission": level}
                for (user, kind, key), level in self.grants.items()
                if user == name
            ]
            return {"permissions": rows}
        body = kwargs["json"]
        key = (body["username"], body["resource_type"], body["resource_id"])
        self.writes.append(f"{endpoint} {body['username']} {body['resource_type']} {body['resource_id']}")
        if endpoint == "users/permissions/grant":
            assert key not in self.grants, "MLflow refuses a grant that exists"
            self.grants[key] = body["permission"]
        elif endpoint == "users/permissions/revoke":
            del self.grants[key]
        else:
            raise AssertionError(f"unexpected call {method} {endpoint}")
        return {}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/access.yaml").write_text(FILE)
    (tmp_path / ".env").write_text(ENV)
    return load_settings(tmp_path, {})


@pytest.fixture
def mlflow() -> FakeMlflow:
    return FakeMlflow()


def applied(settings: Settings, mlflow: FakeMlflow, prune: bool = False) -> list[access.Change]:
    return access.apply_plan(settings, mlflow, access.make_plan(settings, mlflow, prune=prune))


def test_first_apply_creates_users_and_expands_a_prefix_to_existing_experiments(
    settings: Settings, mlflow: FakeMlflow
) -> None:
    applied(settings, mlflow)
    assert set(mlflow.users) == {"admin", "alice", "bob"}
    assert mlflow.grants == {
        ("alice", "experiment", "1"): "EDIT",
        ("alice", "experiment", "2"): "READ",
        ("bob", "experiment", "1"): "READ",
        ("bob", "experiment", "2"): "READ",
        ("bob", "registered_model", "churn"): "DENY",
    }


def test_the_highest_level_wins_when_a_user_and_its_group_are_both_granted(
    settings: Settings, mlflow: FakeMlflow
) -> None:
    applied(settings, mlflow)
    assert mlflow.grants[("alice", "experiment", "1")] == "EDIT"


def test_no_permissions_is_written_as_mlflows_deny_and_read_back_as_no_permissions(
    settings: Settings, mlflow: FakeMlflow
) -> None:
    applied(settings, mlflow)
    assert mlflow.grants[("bob", "registered_model", "churn")] == "DENY"
    assert access.make_plan(settings, mlflow).effective == []


def test_a_second_apply_changes_nothing(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow, prune=True)
    mlflow.writes.clear()
    assert applied(settings, mlflow, prune=True) == []
    assert mlflow.writes == []


def test_an_experiment_created_later_is_granted_by_the_next_apply(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow)
    mlflow.experiments["team-a/new"] = "9"
    plan = access.make_plan(settings, mlflow)
    assert [(c.action, c.user, plan.label(c.target)) for c in plan.effective] == [
        ("grant", "alice", "experiment team-a/new (id 9)"),
        ("grant", "bob", "experiment team-a/new (id 9)"),
    ]


def test_a_changed_level_is_planned_as_change_level_with_before_and_after(
    settings: Settings, mlflow: FakeMlflow
) -> None:
    applied(settings, mlflow)
    mlflow.grants[("bob", "experiment", "2")] = "MANAGE"
    plan = access.make_plan(settings, mlflow)
    assert plan.rows() == [("change level", "bob", "experiment team-a/fraud (id 2)", "MANAGE → READ")]
    access.apply_plan(settings, mlflow, plan)
    assert mlflow.grants[("bob", "experiment", "2")] == "READ"


def test_a_changed_password_is_rotated(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow)
    mlflow.users["alice"]["password"] = "the-old-password-of-alice"
    plan = access.make_plan(settings, mlflow)
    assert [(c.action, c.user) for c in plan.effective] == [("rotate password", "alice")]
    access.apply_plan(settings, mlflow, plan)
    assert mlflow.users["alice"]["password"] == "alice-sample-password-1"


def test_without_prune_undeclared_users_and_grants_are_kept_and_listed(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow)
    mlflow.users["carol"] = {"id": 7, "admin": False, "password": "x" * 12}
    mlflow.grants[("alice", "experiment", "3")] = "MANAGE"
    plan = access.make_plan(settings, mlflow)
    assert plan.effective == []
    assert [(c.action, c.user) for c in plan.undeclared] == [("revoke", "alice"), ("delete user", "carol")]


def test_prune_revokes_undeclared_grants_and_deletes_undeclared_users(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow)
    mlflow.users["carol"] = {"id": 7, "admin": False, "password": "x" * 12}
    mlflow.grants[("alice", "experiment", "3")] = "MANAGE"
    applied(settings, mlflow, prune=True)
    assert "carol" not in mlflow.users
    assert ("alice", "experiment", "3") not in mlflow.grants


def test_prune_never_touches_the_admin_running_it(settings: Settings, mlflow: FakeMlflow) -> None:
    mlflow.grants[("admin", "experiment", "3")] = "MANAGE"
    applied(settings, mlflow, prune=True)
    assert "admin" in mlflow.users
    assert mlflow.grants[("admin", "experiment", "3")] == "MANAGE"


def test_a_named_experiment_that_does_not_exist_is_a_note_not_a_change(settings: Settings, mlflow: FakeMlflow) -> None:
    del mlflow.experiments["team-a/churn"]
    plan = access.make_plan(settings, mlflow)
    assert any("experiment 'team-a/churn' does not exist yet" in note for note in plan.notes)
    assert all(c.target != access.Target("experiment", "1") for c in plan.effective)


def test_admin_flag_is_set_and_unset_as_declared(settings: Settings, mlflow: FakeMlflow) -> None:
    applied(settings, mlflow)
    mlflow.users["bob"]["admin"] = True
    plan = access.make_plan(settings, mlflow)
    assert [(c.action, c.user) for c in plan.effective] == [("unset admin", "bob")]


def test_admin_password_unchanged_when_mlflow_accepts_the_one_in_env(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: password == ADMIN_PASSWORD)
    assert access.ensure_admin_password(settings, "http://mlflow.invalid", []) == "unchanged"


def test_admin_password_is_rotated_with_the_previous_one(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    live = {"password": "previous-admin-password"}
    calls: list[dict[str, Any]] = []

    def patch(self: MlflowClient, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["json"])
        live["password"] = kwargs["json"]["password"]
        return {}

    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: password == live["password"])
    monkeypatch.setattr(MlflowClient, "api", patch)
    previous = [access.PreviousPassword("previous-admin-password", "the container")]
    assert access.ensure_admin_password(settings, "http://mlflow.invalid", previous) == "rotated"
    assert calls == [{"username": "admin", "password": ADMIN_PASSWORD, "current_password": "previous-admin-password"}]


def test_admin_password_dry_run_changes_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: password == "previous-admin-password")
    monkeypatch.setattr(MlflowClient, "api", lambda *args, **kwargs: pytest.fail("dry run must not write"))
    previous = [access.PreviousPassword("previous-admin-password", "the container")]
    state = access.ensure_admin_password(settings, "http://mlflow.invalid", previous, dry_run=True)
    assert state == "would rotate (previous password from the container)"


def test_admin_password_unknown_previous_stops_and_says_what_to_do(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: False)
    monkeypatch.setattr(MlflowClient, "api", lambda *args, **kwargs: pytest.fail("nothing may change"))
    with pytest.raises(PlatformError) as exc_info:
        access.ensure_admin_password(settings, "http://mlflow.invalid", [])
    message = str(exc_info.value)
    assert "nothing in MLflow was changed" in message
    assert "Put the password MLflow accepts back into .env as MLFLOW_ADMIN_PASSWORD" in message
    assert ADMIN_PASSWORD not in message


class Answer:
    status_code = 200
    content = b"{}"
    text = "{}"


def test_a_dropped_connection_on_a_login_check_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    attempts: list[str] = []

    def request(self: requests.Session, method: str, url: str, **kwargs: Any) -> Answer:
        attempts.append(method)
        if len(attempts) == 1:
            raise requests.ConnectionError("Remote end closed connection without response")
        return Answer()

    monkeypatch.setattr(requests.Session, "request", request)
    monkeypatch.setattr("mlopskit.mlflow_admin.time.sleep", lambda seconds: None)
    assert MlflowClient("http://mlflow.invalid", "admin", "x").accepts("alice", "secret-password")
    assert attempts == ["GET", "GET"]


def test_a_dropped_connection_on_a_create_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    attempts: list[str] = []

    def request(self: requests.Session, method: str, url: str, **kwargs: Any) -> Answer:
        attempts.append(method)
        raise requests.ConnectionError("Remote end closed connection without response")

    monkeypatch.setattr(requests.Session, "request", request)
    with pytest.raises(PlatformError, match="cannot reach MLflow"):
        MlflowClient("http://mlflow.invalid", "admin", "x").api("POST", "users/create", json={})
    assert attempts == ["POST"]


def test_a_plan_made_before_the_admin_rotation_logs_in_with_the_previous_password(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: password == "previous-admin-password")
    previous = [access.PreviousPassword("previous-admin-password", "the container")]
    client = access.admin_client(settings, "http://mlflow.invalid", previous)
    assert client.session.auth == ("admin", "previous-admin-password")


def test_the_admin_logs_in_with_the_password_in_env_once_mlflow_accepts_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MlflowClient, "accepts", lambda self, user, password: True)
    previous = [access.PreviousPassword("previous-admin-password", "the container")]
    client = access.admin_client(settings, "http://mlflow.invalid", previous)
    assert client.session.auth == ("admin", ADMIN_PASSWORD)
