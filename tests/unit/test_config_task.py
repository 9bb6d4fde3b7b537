"""`invoke config`, `invoke init`, `invoke doctor` and the task list, run as a user runs them."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlopskit.config_view import MASK, settings_rows
from mlopskit.doctor import check_kubeconfig, check_ssh_keys
from mlopskit.envfile import write_env_file
from mlopskit.errors import PlatformError
from mlopskit.settings import GENERATED_KEYS, load_settings

from .conftest import REPO, Project, private_key_text, public_key_text

INVENTORY = """
ssh:
  key_path: {key}
hosts:
  - name: s1
    address: 10.0.0.1
    roles: [server, nfs]
    sudo_password_env: S1_SUDO_PASSWORD
"""


def test_config_output_contains_no_secret_value(project: Project, sample_env: dict[str, str]) -> None:
    project.write_env({**sample_env, "S1_SUDO_PASSWORD": "host-sudo-secret-77aa"})
    project.write("config/inventory.yaml", INVENTORY.format(key="~/.ssh/id_ed25519"))
    result = project.invoke("config")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for key, value in [*sample_env.items(), ("host sudo", "host-sudo-secret-77aa")]:
        assert value not in output, f"{key} leaked into `invoke config` output"
    assert MASK in output


def test_config_output_shows_value_and_source(project: Project, sample_env: dict[str, str]) -> None:
    project.write_env({**sample_env, "PLATFORM_NAMESPACE": "team-a"})
    result = project.invoke("config")
    row = next(line for line in result.stdout.splitlines() if "platform.namespace" in line)
    assert "team-a" in row and ".env" in row


def test_every_secret_is_masked_whatever_its_source(sample_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in sample_env.items()))
    rows = settings_rows(load_settings(tmp_path, {"POSTGRES_DSN": "postgresql://u:dsn-secret@h/db"}))
    text = "\n".join(" ".join(row) for row in rows)
    for value in [*sample_env.values(), "dsn-secret"]:
        assert value not in text
    masked = {row[0].split(" ")[0] for row in rows if row[1] == MASK}
    assert {"platform.mlflow.admin_password", "platform.postgres.dsn", "cluster.token"} <= masked


def test_invoke_list_shows_every_task_with_help() -> None:
    import subprocess
    import sys

    invoke = Path(sys.executable).with_name("invoke")
    result = subprocess.run([str(invoke), "--list"], cwd=REPO, capture_output=True, text=True, check=True)
    tasks = re.findall(r"^  (\S+)(.*)$", result.stdout, flags=re.MULTILINE)
    assert {"config", "doctor", "init"} <= {name for name, _ in tasks}
    for name, help_text in tasks:
        assert help_text.strip(), f"task {name} has no help text"


def test_init_writes_env_with_generated_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text((REPO / ".env.example").read_text())
    generated = write_env_file(tmp_path)
    assert generated == list(GENERATED_KEYS)
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    settings = load_settings(tmp_path, {})
    settings.require("up")  # the generated values pass every check
    password = settings.platform.mlflow.admin_password
    assert password is not None and len(password.get_secret_value()) >= 32


def test_init_generates_different_secrets_each_time(tmp_path: Path) -> None:
    values = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / ".env.example").write_text((REPO / ".env.example").read_text())
        write_env_file(root)
        values.append((root / ".env").read_text())
    assert values[0] != values[1]


def test_init_never_overwrites_an_existing_env(project: Project) -> None:
    project.write(".env", "PLATFORM_NAMESPACE=keep-me\n")
    result = project.invoke("init")
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert (project.root / ".env").read_text() == "PLATFORM_NAMESPACE=keep-me\n"


def test_init_without_example_says_how_to_restore_it(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"git checkout -- \.env\.example"):
        write_env_file(tmp_path)


def test_doctor_reports_missing_key_with_fix(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/inventory.yaml").write_text(INVENTORY.format(key=tmp_path / "no-such-key"))
    [check] = check_ssh_keys(load_settings(tmp_path, {}))
    assert not check.ok
    assert "ssh-keygen -t ed25519" in check.fix


def test_doctor_accepts_a_readable_private_key(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    (tmp_path / "config").mkdir()
    (tmp_path / "config/inventory.yaml").write_text(INVENTORY.format(key=key))
    [check] = check_ssh_keys(load_settings(tmp_path, {}))
    assert check.ok


def test_doctor_reports_unreachable_api_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    settings = load_settings(tmp_path, {"KUBECONFIG_PATH": str(kubeconfig)})

    def refuse(path: Path) -> str:
        raise ConnectionRefusedError("connection refused")

    check = check_kubeconfig(settings, probe=refuse)
    assert not check.ok
    assert "connection refused" in check.detail


def test_doctor_cli_prints_table_and_fails_when_the_command_asked_for_cannot_run(project: Project) -> None:
    project.write("config/inventory.yaml", INVENTORY.format(key=project.root / "missing-key"))
    result = project.invoke("doctor", "--for", "provision")
    assert result.returncode == 1
    assert "SSH key" in result.stdout and "MISSING" in result.stdout
    assert "Traceback" not in result.stderr


def test_doctor_reports_a_public_key_given_as_the_private_key(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519.pub"
    key.write_text(public_key_text())
    (tmp_path / "config").mkdir()
    (tmp_path / "config/inventory.yaml").write_text(INVENTORY.format(key=key))
    [check] = check_ssh_keys(load_settings(tmp_path, {}))
    assert not check.ok
    assert check.detail == "is a public key"


def test_doctor_reports_an_explicit_kubeconfig_path_that_does_not_exist(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, {"KUBECONFIG_PATH": str(tmp_path / "missing.yaml")})
    check = check_kubeconfig(settings, probe=lambda path: "never asked")
    assert not check.ok
    assert "cluster.kubeconfig (KUBECONFIG_PATH) [from environment $KUBECONFIG_PATH]" in check.detail


def test_python_m_mlopskit_offers_the_same_commands_as_invoke(project: Project) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "mlopskit", "--list"], cwd=project.root, capture_output=True, text=True, check=True
    ).stdout
    via_invoke = project.invoke("--list").stdout
    names = [line.split()[0] for line in via_invoke.splitlines() if line.startswith("  ") and line.strip()]
    assert names and all(f"  {name} " in listed or listed.rstrip().endswith(name) for name in names)


def test_up_can_run_with_python_and_docker_alone() -> None:
    from mlopskit.doctor import Check, runnable

    checks = [
        Check("Python >= 3.11", "every command", True, "3.11", ""),
        Check("Docker engine reachable", "up, build-images, integration tests", True, "engine", ""),
        Check(".env present", "deploy, diff, destroy, seal", False, "missing", "invoke init"),
        Check("Inventory", "provision, upgrade, reset", False, "no hosts", "cp ..."),
        Check("Kubeconfig reachable", "deploy, diff, destroy, seal", False, "not found", "provision"),
    ]
    assert runnable(checks) == {"up": True, "build-images": True, "provision": False, "deploy": False}


def test_doctor_for_provision_fails_without_an_inventory_and_says_how_to_fix_it(project: Project) -> None:
    result = project.invoke("doctor", "--for", "provision")
    assert result.returncode == 1
    assert "cp config/inventory.example.yaml config/inventory.yaml" in result.stdout.replace("\n", "")


def test_doctor_without_a_command_names_what_can_run_now(project: Project) -> None:
    result = project.invoke("doctor")
    assert "not yet:" in result.stdout and "provision, upgrade, reset" in result.stdout
    assert result.returncode == (0 if "can run now:" in result.stdout else 1)


def test_doctor_refuses_an_unknown_command_group(project: Project) -> None:
    result = project.invoke("doctor", "--for", "nope")
    assert result.returncode == 1
    assert "expected one of up, build-images, provision, deploy" in result.stderr
    assert "Traceback" not in result.stderr
