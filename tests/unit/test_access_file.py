"""config/access.yaml is validated into Settings: every bad file fails before any request, naming key, file and line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopskit.errors import SettingsError
from mlopskit.settings import Settings, load_settings

from .conftest import SAMPLE_SECRETS, Project, problems

ADMIN = f"MLFLOW_ADMIN_PASSWORD={SAMPLE_SECRETS['MLFLOW_ADMIN_PASSWORD']}\n"
ALICE = "ALICE_MLFLOW_PASSWORD=alice-sample-password-1\n"
BOB = "BOB_MLFLOW_PASSWORD=bob-sample-password-22\n"

GOOD = """\
users:
  - name: alice
    password_env: ALICE_MLFLOW_PASSWORD
  - name: bob
    admin: true
    password_env: BOB_MLFLOW_PASSWORD
groups:
  - name: team-a
    members: [alice, bob]
permissions:
  - experiment: team-a/*
    groups: [team-a]
    level: EDIT
  - registered_model: churn
    users: [alice]
    level: READ
"""

Load = Callable[..., Settings]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """Settings from an access file and a .env written into a fresh project."""

    def make(access: str, env: str = ADMIN + ALICE + BOB, environ: dict[str, str] | None = None) -> Settings:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config/access.yaml").write_text(access)
        (tmp_path / ".env").write_text(env)
        return load_settings(tmp_path, environ or {})

    return make


def test_a_good_file_loads_users_groups_and_grants(load: Load) -> None:
    access = load(GOOD).access
    assert [(u.name, u.admin) for u in access.users] == [("alice", False), ("bob", True)]
    assert access.members(access.permissions[0]) == ["alice", "bob"]
    assert (access.permissions[1].kind, access.permissions[1].pattern) == ("registered_model", "churn")


def test_a_password_env_key_is_read_from_env_with_its_line(load: Load) -> None:
    settings = load(GOOD)
    alice = settings.access.users[0]
    assert alice.password is not None and alice.password.get_secret_value() == "alice-sample-password-1"
    assert settings.source_of("access.users.0.password") == ".env:2"


def test_the_environment_overrides_a_password_from_env(load: Load) -> None:
    settings = load(GOOD, environ={"ALICE_MLFLOW_PASSWORD": "alice-from-environment"})
    alice = settings.access.users[0]
    assert alice.password is not None and alice.password.get_secret_value() == "alice-from-environment"


def test_a_key_no_user_names_is_still_unknown_in_env(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD, env=ADMIN + ALICE + BOB + "CAROL_MLFLOW_PASSWORD=carol-sample-password\n")
    text = problems(exc_info)
    assert ("CAROL_MLFLOW_PASSWORD [from .env:4]: is not named by any password_env in config/access.yaml") in text
    assert "remove the line if its user is gone" in text
    assert "did you mean" not in text  # no platform key is meant: a removed user's leftover, most likely


def test_unknown_user_in_a_grant_names_key_file_and_line(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("users: [alice]", "users: [carol]"))
    assert (
        "access.permissions.1.users.0 [from config/access.yaml:15]: unknown user 'carol'; declare it under users "
        "(declared: alice, bob)" in problems(exc_info)
    )


def test_unknown_group_in_a_grant_names_key_file_and_line(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("groups: [team-a]", "groups: [team-b]"))
    assert "access.permissions.0.groups.0 [from config/access.yaml:12]: unknown group 'team-b'" in problems(exc_info)


def test_unknown_group_member_names_key_file_and_line(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("members: [alice, bob]", "members: [alice, zed]"))
    assert "access.groups[team-a].members.1 [from config/access.yaml:9]: unknown user 'zed'" in problems(exc_info)


def test_unknown_level_names_key_file_line_and_the_levels(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("level: READ", "level: WRITE"))
    assert (
        "access.permissions.1.level [from config/access.yaml:16]: must be one of 'READ', 'USE', 'EDIT', 'MANAGE' "
        "or 'NO_PERMISSIONS'" in problems(exc_info)
    )


def test_duplicate_user_names_both_lines(load: Load) -> None:
    duplicate = GOOD.replace("groups:", "  - name: alice\n    password_env: BOB_MLFLOW_PASSWORD\ngroups:", 1)
    with pytest.raises(SettingsError) as exc_info:
        load(duplicate)
    assert (
        "access.users[alice].name [from config/access.yaml:7]: user alice is declared twice (first on line 2); "
        "keep one of them" in problems(exc_info)
    )


def test_a_grant_to_both_an_experiment_and_a_model_is_refused(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("  - registered_model: churn\n", "  - registered_model: churn\n    experiment: x\n"))
    assert (
        "access.permissions.1 [from config/access.yaml:14]: name exactly one of experiment: or registered_model:"
        in (problems(exc_info))
    )


def test_a_star_inside_a_name_is_refused(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("team-a/*", "team-*/a"))
    assert "access.permissions.0.experiment [from config/access.yaml:11]: must be a name, a prefix ending in '*'" in (
        problems(exc_info)
    )


def test_the_platform_admin_cannot_be_declared_as_a_user(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("name: bob", "name: admin").replace("[alice, bob]", "[alice]"))
    assert "access.users[admin].name [from config/access.yaml:4]: admin is the platform admin" in problems(exc_info)


def test_a_platform_key_cannot_be_a_password_env(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD.replace("BOB_MLFLOW_PASSWORD", "POSTGRES_PASSWORD"), env=ADMIN + ALICE)
    assert "access.users[bob].password_env [from config/access.yaml:6]: POSTGRES_PASSWORD is a platform setting" in (
        problems(exc_info)
    )


def test_a_short_user_password_names_the_env_line_not_the_value(load: Load) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(GOOD, env=ADMIN + "ALICE_MLFLOW_PASSWORD=short\n" + BOB)
    text = problems(exc_info)
    assert "access.users[alice].password (ALICE_MLFLOW_PASSWORD) [from .env:2]: must be at least 12 characters" in text
    assert "short" not in text.replace("shorter", "")


def test_a_password_env_missing_from_env_fails_the_access_command(load: Load) -> None:
    settings = load(GOOD, env=ADMIN + ALICE)
    with pytest.raises(SettingsError) as exc_info:
        settings.require("access")
    assert (
        "access.users[bob].password_env [from config/access.yaml:6]: BOB_MLFLOW_PASSWORD is not set; add "
        "BOB_MLFLOW_PASSWORD=<password> to .env" in problems(exc_info)
    )


def test_a_password_env_listed_empty_in_env_names_its_line_not_add_it(load: Load) -> None:
    # "add it to .env" would make the user write the key twice ("given twice") instead of filling in the line.
    settings = load(GOOD, env=ADMIN + ALICE + "BOB_MLFLOW_PASSWORD=\n")
    with pytest.raises(SettingsError) as exc_info:
        settings.require("access")
    text = problems(exc_info)
    assert "BOB_MLFLOW_PASSWORD is empty in .env:3; give it a value there" in text
    assert "add BOB_MLFLOW_PASSWORD" not in text


def test_a_password_env_empty_in_the_environment_names_the_variable(load: Load) -> None:
    settings = load(GOOD, env=ADMIN + ALICE, environ={"BOB_MLFLOW_PASSWORD": ""})
    with pytest.raises(SettingsError) as exc_info:
        settings.require("access")
    assert "BOB_MLFLOW_PASSWORD is empty in environment $BOB_MLFLOW_PASSWORD; give it a value there" in problems(
        exc_info
    )


def test_a_password_env_missing_from_env_still_loads_for_commands_without_mlflow(load: Load) -> None:
    # `invoke config` and `invoke doctor` must still show the settings; the commands that need it refuse.
    assert load(GOOD, env=ADMIN + ALICE).access.users[1].password is None


def test_access_plan_with_a_bad_file_fails_before_any_request(project: Project, sample_env: dict[str, str]) -> None:
    project.write("config/access.yaml", GOOD.replace("users: [alice]", "users: [carol]"))
    # Nothing listens on port 9: a request would fail with "cannot reach MLflow" instead.
    project.write_env(
        {**sample_env, "LOCAL_PORT": "9"} | {"ALICE_MLFLOW_PASSWORD": "a" * 16, "BOB_MLFLOW_PASSWORD": "b" * 16}
    )
    result = project.invoke("access.plan")
    assert result.returncode == 1
    assert "access.permissions.1.users.0 [from config/access.yaml:15]: unknown user 'carol'" in result.stderr
    assert "cannot reach" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_access_apply_without_a_users_password_fails_before_any_request(
    project: Project, sample_env: dict[str, str]
) -> None:
    project.write("config/access.yaml", GOOD)
    project.write_env({**sample_env, "LOCAL_PORT": "9", "ALICE_MLFLOW_PASSWORD": "a" * 16})
    result = project.invoke("access.apply")
    assert result.returncode == 1
    assert "access.users[bob].password_env [from config/access.yaml:6]: BOB_MLFLOW_PASSWORD is not set" in (
        result.stderr
    )
    assert "cannot reach" not in result.stdout + result.stderr


def test_the_example_file_loads(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "config").mkdir()
    example = (repo / "config" / "access.example.yaml").read_text()
    (tmp_path / "config" / "access.yaml").write_text(example)
    keys = re.findall(r"password_env: (\w+)", example)
    settings = load_settings(tmp_path, {key: f"{key.lower()}-sample-1234" for key in keys})
    assert len(settings.access.users) == len(keys) > 0
    assert settings.access.permissions


def test_config_shows_one_row_per_user_with_its_password_masked(project: Project, sample_env: dict[str, str]) -> None:
    project.write("config/access.yaml", GOOD)
    project.write_env(
        sample_env | {"ALICE_MLFLOW_PASSWORD": "alice-sample-password-1", "BOB_MLFLOW_PASSWORD": "b" * 16}
    )
    result = project.invoke("config")
    assert result.returncode == 0, result.stderr
    assert re.search(r"access\.users\[alice\].*password=\*+.*config/access\.yaml:2", result.stdout)
    assert "alice-sample-password-1" not in result.stdout


@pytest.mark.parametrize(
    ("broken", "cause"),
    [
        (GOOD.replace("users:", "users_:", 1), "users_"),
        (GOOD + "\t- oops\n", "not valid YAML"),
    ],
)
def test_a_broken_access_file_does_not_call_the_users_keys_leftovers(load: Load, broken: str, cause: str) -> None:
    # The keys may well be named by the file once it is fixed: "remove the line" would lose passwords.
    with pytest.raises(SettingsError) as exc_info:
        load(broken)
    text = problems(exc_info)
    assert cause in text
    assert "is not named by any password_env" not in text
