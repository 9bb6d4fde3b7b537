"""Settings input that used to crash later or pass silently: each refused (or accepted) at load time, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from mlopskit.errors import SettingsError
from mlopskit.settings import ENV_KEYS, Settings, load_settings

from .conftest import SAMPLE_SECRETS, Project, problems, refused

MakeSettings = Callable[..., Settings]
ADMIN = f"MLFLOW_ADMIN_PASSWORD={SAMPLE_SECRETS['MLFLOW_ADMIN_PASSWORD']}\n"
HOST = "  - {name: s1, address: 10.0.0.1, roles: [server]}\n"


def load(root: Path, files: dict[str, str], environ: dict[str, str] | None = None, **kwargs: bool) -> Settings:
    (root / "config").mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return load_settings(root, environ or {}, **kwargs)


# ------------------------------------------------------------------------------- empty sections


@pytest.mark.parametrize(
    ("platform", "inventory"),
    [
        ("platform:\n  mlflow:\n  namespace: team-a\n", None),  # every key under mlflow: commented out
        ("platform:\n", None),
        ("platform:\n  postgres: ~\n", None),
        ("cluster: ~\n", "ssh:\nhosts:\n"),
    ],
)
def test_an_empty_section_means_its_defaults_and_env_keys_still_apply(
    make_settings: MakeSettings, platform: str, inventory: str | None
) -> None:
    settings = make_settings(
        platform=platform,
        inventory=inventory,
        env_file=ADMIN + "POSTGRES_PASSWORD=pg-sample-password-51d0a3\nSSH_USER=ubuntu\n",
    )
    assert settings.platform.mlflow.admin_password == SecretStr(SAMPLE_SECRETS["MLFLOW_ADMIN_PASSWORD"])
    assert settings.source_of("platform.postgres.password") == ".env:2"
    assert settings.cluster.ssh.user == "ubuntu"
    assert settings.platform.mlflow.admin_user == "admin"


@pytest.mark.parametrize("value", ["5", "[a, b]", "text"])
def test_a_section_written_as_a_value_names_key_file_and_line(make_settings: MakeSettings, value: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform=f"platform:\n  namespace: team-a\n  mlflow: {value}\n", env_file=ADMIN)
    text = problems(exc_info)
    assert "platform.mlflow [from config/platform.yaml:3]: must be a section of keys" in text
    assert "MlflowSettings" not in text and "dictionary" not in text


def test_an_empty_users_list_in_access_yaml_means_no_users(tmp_path: Path) -> None:
    settings = load(tmp_path, {"config/access.yaml": "users:\ngroups:\n", ".env": ADMIN})
    assert settings.access.users == []


# ------------------------------------------------------------------------- ASCII-only values


NON_ASCII = "пароль-пароль-1234"


@pytest.mark.parametrize("key", [k for k in ENV_KEYS if k.endswith(("PASSWORD", "SECRET_KEY", "TOKEN", "PASSPHRASE"))])
@pytest.mark.parametrize("door", ["env_file", "environ"])
def test_a_non_ascii_secret_is_refused_at_load_naming_key_and_source(
    make_settings: MakeSettings, key: str, door: str
) -> None:
    with pytest.raises(SettingsError) as exc_info:
        if door == "env_file":
            make_settings(env_file=f"{key}={NON_ASCII}\n")
        else:
            make_settings(environ={key: NON_ASCII})
    text = problems(exc_info)
    source = ".env:1" if door == "env_file" else f"environment ${key}"
    assert f"({key}) [from {source}]: must be printable ASCII" in text
    assert NON_ASCII not in text


def test_a_non_ascii_user_password_from_access_yaml_key_is_refused(tmp_path: Path) -> None:
    access = "users:\n  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}\n"
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {"config/access.yaml": access, ".env": ADMIN + f"ALICE_MLFLOW_PASSWORD={NON_ASCII}\n"})
    text = problems(exc_info)
    assert "access.users[alice].password (ALICE_MLFLOW_PASSWORD) [from .env:2]: must be printable ASCII" in text
    assert NON_ASCII not in text


def test_a_non_ascii_registry_password_is_refused(tmp_path: Path) -> None:
    inventory = (
        "registries:\n  configs:\n    reg.example:5000:\n      auth: {username: ci, password_env: REG_PASSWORD}\n"
    )
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {"config/inventory.yaml": inventory}, {"REG_PASSWORD": "Zugangsdaten-äöü"})
    text = problems(exc_info)
    assert (
        "cluster.registries.configs[reg.example:5000].auth.password (REG_PASSWORD) [from environment $REG_PASSWORD]"
        in text
    )
    assert "must be printable ASCII" in text and "äöü" not in text


@pytest.mark.parametrize("user", ["ad:min", "ädmin", "ad min"])
def test_an_admin_user_that_http_basic_auth_cannot_carry_is_refused(make_settings: MakeSettings, user: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file=f"MLFLOW_ADMIN_USER='{user}'\n")
    assert "platform.mlflow.admin_user (MLFLOW_ADMIN_USER) [from .env:1]: must be 1 to 255 letters" in problems(
        exc_info
    )


def test_a_registry_user_name_with_a_colon_is_refused(make_settings: MakeSettings) -> None:
    inventory = "registries:\n  configs:\n    reg.example:\n      auth: {username: 'c:i', password_env: REG_PASSWORD}\n"
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    assert "cluster.registries.configs[reg.example].auth.username [from config/inventory.yaml:4]: must be " in (
        problems(exc_info)
    )


# ------------------------------------------------------------------------- secrets never echoed


def test_a_short_backup_passphrase_is_not_echoed(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="BACKUP_PASSPHRASE=short-phrase\n")
    text = problems(exc_info)
    assert "backup.passphrase (BACKUP_PASSPHRASE) [from .env:1]: must be at least 16 characters" in text
    assert "short-phrase" not in text


def test_no_secret_typed_setting_echoes_its_value(make_settings: MakeSettings) -> None:
    """Every SecretStr setting, whatever its name, with a value each check refuses (not ASCII)."""
    secret_keys = [key for key, path in ENV_KEYS.items() if _is_secret_path(path)]
    assert "BACKUP_PASSPHRASE" in secret_keys and "POSTGRES_DSN" in secret_keys
    for key in secret_keys:
        with pytest.raises(SettingsError) as exc_info:
            make_settings(environ={key: "Visible-Secret-Value\u00e9"})
        assert "Visible-Secret-Value" not in problems(exc_info), key


def _is_secret_path(path: str) -> bool:
    from pydantic import BaseModel

    model: type[BaseModel] = Settings
    *parents, leaf = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return "SecretStr" in str(model.model_fields[leaf].annotation)


# ------------------------------------------------------------------------ the key an error names


def test_nfs_without_a_server_names_storage_kind_and_its_source(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(environ={"STORAGE_KIND": "nfs"})
    assert (
        "platform.storage.kind (STORAGE_KIND) [from environment $STORAGE_KIND]: storage kind 'nfs' needs an NFS server"
    ) in problems(exc_info)


def test_ingress_enabled_in_env_is_blamed_on_env_not_the_yaml_section(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(
            platform="platform:\n  ingress:\n    class_name: traefik\n",
            env_file="S3_BUCKET=mlflow\nINGRESS_ENABLED=yes\n",
        )
    assert "platform.ingress.enabled (INGRESS_ENABLED) [from .env:2]: an enabled ingress needs a host" in problems(
        exc_info
    )


def test_an_empty_required_key_names_its_env_line(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="S3_BUCKET=mlflow\nMLFLOW_ADMIN_PASSWORD=\n")
    with pytest.raises(SettingsError) as exc_info:
        settings.require("access")
    assert "MLFLOW_ADMIN_PASSWORD is empty in .env:2; give it a value there" in problems(exc_info)
    with pytest.raises(SettingsError) as exc_info:
        _ = settings.secrets.admin_password
    assert "MLFLOW_ADMIN_PASSWORD is empty in .env:2" in problems(exc_info)


def test_an_empty_required_variable_in_the_environment_is_named(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="S3_BUCKET=mlflow\n", environ={"MLFLOW_ADMIN_PASSWORD": ""})
    with pytest.raises(SettingsError) as exc_info:
        settings.require("access")
    assert "MLFLOW_ADMIN_PASSWORD is empty in environment $MLFLOW_ADMIN_PASSWORD; give it a value there" in problems(
        exc_info
    )


def test_a_line_without_equals_cannot_be_read_and_a_bare_known_key_is_not_given_twice(
    make_settings: MakeSettings,
) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="THIS_LINE_HAS_NO_EQUALS\nS3_BUCKET=\nS3_BUCKET\n")
    text = problems(exc_info)
    assert ".env:1: this line cannot be read as KEY=value (it has no '=')" in text
    assert "S3_BUCKET [from .env:3]: has no '='" in text
    assert "unknown key" not in text and "given twice" not in text


def test_an_empty_password_env_key_is_unset_not_unknown(tmp_path: Path) -> None:
    access = "users:\n  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}\n"
    settings = load(tmp_path, {"config/access.yaml": access, ".env": ADMIN + "ALICE_MLFLOW_PASSWORD=\n"})
    assert settings.access.users[0].password is None


# ------------------------------------------------------------------------ silently accepted before


def test_env_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {})
    assert ".env: is not a file (a directory?)" in problems(exc_info)


def test_platform_yaml_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config/platform.yaml").mkdir(parents=True)
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {})
    assert "config/platform.yaml: is not a file" in problems(exc_info)


@pytest.mark.parametrize("value", ["{}", "", "{mlflow: {}}"])
def test_an_unknown_top_level_key_with_an_empty_value_is_refused(make_settings: MakeSettings, value: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform=f"plattform: {value}\n")
    assert "plattform [from config/platform.yaml:1]: unknown key; did you mean platform?" in problems(exc_info)


@pytest.mark.parametrize(("first", "second"), [("10.0.0.1", "10.0.0.1"), ("fd00::1", "fd00:0::1"), ("a.lan", "A.lan")])
def test_two_hosts_with_one_address_are_refused(make_settings: MakeSettings, first: str, second: str) -> None:
    inventory = (
        f"hosts:\n  - {{name: s1, address: '{first}', roles: [server]}}\n"
        f"  - {{name: a1, address: '{second}', roles: [agent]}}\n"
    )
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    assert "cluster.hosts [from config/inventory.yaml:1]: host addresses must be unique" in problems(exc_info)
    assert ": s1, a1" in problems(exc_info)


def test_a_sudo_password_in_the_inventory_ssh_section_is_refused(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory="ssh:\n  user: ubuntu\n  sudo_password: inventory-sudo-secret\nhosts:\n" + HOST)
    text = problems(exc_info)
    assert "cluster.ssh.sudo_password (SSH_SUDO_PASSWORD) [from config/inventory.yaml:3]: secrets stay out" in text
    assert "set SSH_SUDO_PASSWORD in .env" in text and "inventory-sudo-secret" not in text


def test_a_sudo_password_in_a_host_entry_is_refused(make_settings: MakeSettings) -> None:
    inventory = (
        "hosts:\n  - name: s1\n    address: 10.0.0.1\n    roles: [server]\n    sudo_password: host-sudo-secret\n"
    )
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    text = problems(exc_info)
    assert "cluster.hosts[s1].sudo_password [from config/inventory.yaml:5]: secrets stay out" in text
    assert "sudo_password_env" in text and "host-sudo-secret" not in text


def test_a_hosts_own_sudo_password_comes_from_the_key_it_names(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], sudo_password_env: S1_SUDO_PASSWORD}\n"
    settings = make_settings(inventory=inventory, env_file="S1_SUDO_PASSWORD=host-sudo-secret\n")
    assert settings.cluster.hosts[0].sudo_password == SecretStr("host-sudo-secret")
    assert settings.source_of("cluster.hosts.0.sudo_password") == ".env:1"
    unset = make_settings(inventory=inventory, env_file="S3_BUCKET=mlflow\n")
    with pytest.raises(SettingsError) as exc_info:
        unset.require("provision")
    assert "cluster.hosts[s1].sudo_password_env [from config/inventory.yaml:2]: S1_SUDO_PASSWORD is not set" in (
        problems(exc_info)
    )
    empty = make_settings(inventory=inventory, env_file="S3_BUCKET=mlflow\nS1_SUDO_PASSWORD=\n")
    with pytest.raises(SettingsError) as exc_info:
        empty.require("provision")
    assert "S1_SUDO_PASSWORD is empty in .env:2; give it a value there" in problems(exc_info)


# --------------------------------------------------------- access.yaml does not block status and down


def test_a_leftover_user_key_is_not_blamed_on_a_platform_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {".env": ADMIN + "BOB_MLFLOW_PASSWORD=bob-sample-password-1\n"})
    text = problems(exc_info)
    assert "BOB_MLFLOW_PASSWORD [from .env:2]: is not named by any password_env in config/access.yaml" in text
    assert "did you mean" not in text


def test_without_access_a_broken_access_file_and_leftover_keys_do_not_block(tmp_path: Path) -> None:
    files = {".env": ADMIN + "BOB_MLFLOW_PASSWORD=bob-sample-password-1\n", "config/access.yaml": "users: 5\n"}
    with pytest.raises(SettingsError):
        load(tmp_path, files)
    settings = load(tmp_path, files, access=False)
    assert settings.access.users == []


@pytest.mark.parametrize("command", ["down --dry-run", "status"])
def test_status_and_down_are_not_blocked_by_access_yaml(project: Project, command: str) -> None:
    project.write_env({**SAMPLE_SECRETS, "BOB_MLFLOW_PASSWORD": "bob-sample-password-1"})
    project.write("config/access.yaml", "users:\n  - {name: bob}\n")
    result = project.invoke(*command.split())
    assert "Invalid settings" not in result.stderr, result.stderr
    assert "BOB_MLFLOW_PASSWORD" not in result.stderr


def test_a_short_user_password_names_its_env_key(tmp_path: Path) -> None:
    access = "users:\n  - {name: bob, password_env: BOB_MLFLOW_PASSWORD}\n"
    with pytest.raises(SettingsError) as exc_info:
        load(tmp_path, {"config/access.yaml": access, ".env": ADMIN + "BOB_MLFLOW_PASSWORD=short-pw\n"})
    text = problems(exc_info)
    assert "access.users[bob].password (BOB_MLFLOW_PASSWORD) [from .env:2]: must be at least 12 characters" in text
    assert "short-pw" not in text


@pytest.mark.parametrize(
    ("command", "ran"),
    [
        ("restore-scheduled", "restore --scheduled"),
        ("backup-list", "backup --list"),
        ("access", "access.plan"),
        ("deploy", "diff"),
        ("up", "restore --target local"),
    ],
)
def test_a_missing_key_names_the_command_as_the_user_typed_it(
    make_settings: MakeSettings, command: str, ran: str
) -> None:
    settings = make_settings(env_file="S3_BUCKET=mlflow\nMLFLOW_ADMIN_PASSWORD=\n")
    with pytest.raises(SettingsError) as exc_info:
        settings.require(command, ran=ran)
    assert f"required by `invoke {ran}` but not set" in problems(exc_info)
    assert f"`invoke {command}`" not in problems(exc_info).replace(f"`invoke {ran}`", "")


@pytest.mark.parametrize(
    ("args", "typed"),
    [
        (["restore", "--scheduled", "latest"], "restore --scheduled"),
        (["backup", "--list"], "backup --list"),
        (["access.plan"], "access.plan"),
        (["diff"], "diff"),
    ],
)
def test_tasks_name_themselves_in_missing_key_messages(
    project: Project, sample_env: dict[str, str], args: list[str], typed: str
) -> None:
    project.write_env({**sample_env, "MLFLOW_ADMIN_PASSWORD": "", "S3_SECRET_KEY": ""})
    result = project.invoke(*args)
    assert result.returncode == 1
    assert f"required by `invoke {typed}` but not set" in result.stderr, result.stderr


def test_restore_scheduled_checks_the_stamp_first_and_says_when_backups_are_off(
    project: Project, sample_env: dict[str, str]
) -> None:
    project.write_env(sample_env)
    wrong = project.invoke("restore", "--scheduled", "yesterday")
    assert wrong.returncode == 1
    assert "--scheduled 'yesterday': expected a UTC stamp" in wrong.stderr
    assert "BACKUP_S3" not in wrong.stderr
    off = project.invoke("restore", "--scheduled", "latest")
    assert off.returncode == 1
    assert "platform.backup.enabled [from default] is false: scheduled backups are made only while it is on" in (
        off.stderr
    )


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("LOCAL_PROJECT=second", "local.project has no .env key: set it in config/platform.yaml"),
        ("local_port=5001", ".env keys are upper case: LOCAL_PORT"),
        ("GC_SCHEDULE=@daily", "platform.gc.schedule has no .env key: set it in config/platform.yaml"),
        ("S3_BUKET=mlflow", "did you mean S3_BUCKET?"),
    ],
)
def test_an_unknown_env_key_gets_the_hint_that_fits(make_settings: MakeSettings, line: str, hint: str) -> None:
    text = refused(make_settings, env_file=f"S3_BUCKET=mlflow\n{line}\n")
    assert f"{line.split('=')[0]} [from .env:2]: unknown key; {hint}" in text, text


def test_a_check_over_two_keys_names_the_one_set_in_env(make_settings: MakeSettings) -> None:
    platform = "platform:\n  backup:\n    enabled: true\n    destination: {bucket: backups}\n"
    dsn = "postgresql://u:p@db.example.test:5432/mlflow"
    from_env = refused(make_settings, platform=platform, environ={"POSTGRES_MODE": "external", "POSTGRES_DSN": dsn})
    assert "platform.postgres.mode (POSTGRES_MODE) [from environment $POSTGRES_MODE]: backup.enabled dumps" in (
        from_env
    )
    in_files = refused(make_settings, platform=platform + "  postgres:\n    mode: external\n    dsn: " + dsn + "\n")
    assert "platform.postgres.mode (POSTGRES_MODE) [from config/platform.yaml:6]: backup.enabled dumps" in in_files
