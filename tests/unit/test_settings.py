"""The settings object: sources, precedence, and a clear error for every kind of bad input."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopskit.errors import SettingsError
from mlopskit.settings import ENV_KEYS, GENERATED_KEYS, Settings, check_bucket_name, load_settings

from .conftest import REPO, SAMPLE_SECRETS, Project, problems

MakeSettings = Callable[..., Settings]

THREE_HOSTS = """
hosts:
  - {name: s1, address: 10.0.0.1, roles: [server]}
  - {name: a1, address: 10.0.0.2, roles: [agent]}
  - {name: a2, address: a2.example.com, roles: [agent, nfs]}
"""


# ------------------------------------------------------------------ loading, sources and precedence


def test_defaults_load_without_any_file(make_settings: MakeSettings) -> None:
    settings = make_settings()
    assert settings.platform.namespace == "mlops"
    assert settings.images.mlflow_version == "3.17.2"
    assert settings.source_of("platform.namespace") == "default"


def test_yaml_value_records_file_and_line(make_settings: MakeSettings) -> None:
    settings = make_settings(platform="platform:\n  namespace: team-a\n")
    assert settings.platform.namespace == "team-a"
    assert settings.source_of("platform.namespace") == "config/platform.yaml:2"


def test_env_file_overrides_yaml(make_settings: MakeSettings) -> None:
    settings = make_settings(platform="platform:\n  namespace: team-a\n", env_file="PLATFORM_NAMESPACE=team-b\n")
    assert settings.platform.namespace == "team-b"
    assert settings.source_of("platform.namespace") == ".env:1"


def test_environment_overrides_env_file(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="PLATFORM_NAMESPACE=team-b\n", environ={"PLATFORM_NAMESPACE": "team-c"})
    assert settings.platform.namespace == "team-c"
    assert settings.source_of("platform.namespace") == "environment $PLATFORM_NAMESPACE"


def test_inventory_fills_cluster_hosts(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=THREE_HOSTS)
    assert [h.name for h in settings.cluster.servers] == ["s1"]
    assert [h.name for h in settings.cluster.agents] == ["a1", "a2"]
    assert settings.nfs_server == "a2.example.com"


def test_comma_separated_list_from_env(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="MLFLOW_ALLOWED_HOSTS=mlflow.example.com, ml.internal\n")
    assert settings.platform.mlflow.allowed_hosts == ["mlflow.example.com", "ml.internal"]


def test_secret_values_are_wrapped(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="MLFLOW_ADMIN_PASSWORD=a-long-enough-password\n")
    assert settings.platform.mlflow.admin_password is not None
    assert "a-long-enough-password" not in repr(settings)
    assert settings.platform.mlflow.admin_password.get_secret_value() == "a-long-enough-password"


def test_empty_env_value_means_not_set(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="PLATFORM_NAMESPACE=\n")
    assert settings.platform.namespace == "mlops"


# ------------------------------------------------------------------------------------- bad input


def test_unknown_yaml_key_names_key_file_line_and_suggestion(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform="platform:\n  object_store:\n    buckt: models\n")
    assert "platform.object_store.buckt [from config/platform.yaml:3]: unknown key; did you mean bucket?" in (
        problems(exc_info)
    )


def test_unknown_env_file_key_names_key_and_suggestion(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="MLFLOW_ADMN_PASSWORD=whatever-long-pass\n")
    assert "MLFLOW_ADMN_PASSWORD [from .env:1]: unknown key; did you mean MLFLOW_ADMIN_PASSWORD?" in problems(exc_info)


def test_wrong_type_names_key_source_and_value(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform="platform:\n  mlflow:\n    replicas: many\n")
    text = problems(exc_info)
    assert "platform.mlflow.replicas [from config/platform.yaml:3]" in text
    assert "must be a whole number" in text and "'many'" in text


def test_wrong_type_from_environment_names_the_variable(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(environ={"LOCAL_PORT": "http"})
    assert "local.port (LOCAL_PORT) [from environment $LOCAL_PORT]" in problems(exc_info)


def test_choice_outside_the_allowed_values(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="OBJECT_STORE=ceph\n")
    assert "platform.object_store.kind (OBJECT_STORE) [from .env:1]: must be one of 'seaweedfs', 'minio' or" in (
        problems(exc_info)
    )


@pytest.mark.parametrize("command", ["up", "deploy", "seal"])
def test_required_key_missing_for_command(make_settings: MakeSettings, command: str) -> None:
    settings = make_settings()
    with pytest.raises(SettingsError) as exc_info:
        settings.require(command)
    text = problems(exc_info)
    assert (
        f"platform.mlflow.admin_password: required by `invoke {command}` but not set; "
        "set MLFLOW_ADMIN_PASSWORD in .env" in text
    )
    assert "S3_SECRET_KEY" in text


def test_provision_without_hosts_says_where_to_list_them(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings().require("provision")
    assert "copy config/inventory.example.yaml to config/inventory.yaml" in problems(exc_info)


def test_external_postgres_does_not_require_internal_password(make_settings: MakeSettings) -> None:
    env = "\n".join(
        [
            "POSTGRES_MODE=external",
            "POSTGRES_DSN=postgresql://u:p@db.example.com:5432/mlflow",
            "MLFLOW_ADMIN_PASSWORD=a-long-enough-password",
            "MLFLOW_FLASK_SECRET_KEY=0123456789abcdef0123",
            "S3_ACCESS_KEY=ak",
            "S3_SECRET_KEY=sk",
        ]
    )
    make_settings(env_file=env).require("deploy")


@pytest.mark.parametrize(
    ("inventory", "expected"),
    [
        (
            "hosts:\n  - {name: s1, address: 'bad_host!', roles: [server]}\n",
            "cluster.hosts[s1].address [from config/inventory.yaml:2]: must be a host name",
        ),
        (
            "hosts:\n  - {name: 'my host', address: 10.0.0.1, roles: [server]}\n",
            "cluster.hosts[my host].name [from config/inventory.yaml:2]: must be a Kubernetes node name",
        ),
        (
            "hosts:\n  - {name: s1, address: 10.0.0.1, port: 70000, roles: [server]}\n",
            "cluster.hosts[s1].port [from config/inventory.yaml:2]: must be at most 65535",
        ),
        ("ssh:\n  port: 0\n", "cluster.ssh.port (SSH_PORT) [from config/inventory.yaml:2]: must be at least 1"),
        (
            "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [master]}\n",
            "cluster.hosts[s1].roles.0 [from config/inventory.yaml:2]: must be one of 'server', 'agent' or 'nfs'",
        ),
    ],
    ids=["bad-address", "bad-name", "port-too-high", "port-zero", "unknown-role"],
)
def test_invalid_host_or_port(make_settings: MakeSettings, inventory: str, expected: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    assert expected in problems(exc_info)


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("short-pass", "must be at least 12 characters"),
        ("password1234", "is a published default password"),
        ("PASSWORD1234", "is a published default password"),
    ],
)
def test_weak_admin_password(make_settings: MakeSettings, password: str, expected: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file=f"MLFLOW_ADMIN_PASSWORD={password}\n")
    text = problems(exc_info)
    assert f"platform.mlflow.admin_password (MLFLOW_ADMIN_PASSWORD) [from .env:1]: {expected}" in text
    assert password not in text  # a secret is never echoed back, even a bad one


@pytest.mark.parametrize(
    "bucket",
    ["ab", "My_Bucket", "-mlflow", "ml..flow", "192.168.1.1", "xn--mlflow", "mlflow-s3alias", "a" * 64],
)
def test_bucket_name_that_s3_rejects(make_settings: MakeSettings, bucket: str) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file=f"S3_BUCKET={bucket}\n")
    assert "platform.object_store.bucket (S3_BUCKET) [from .env:1]: is not a valid S3 bucket name" in problems(exc_info)


@pytest.mark.parametrize("bucket", ["mlflow", "ml-artifacts.team1", "abc", "a" * 63])
def test_bucket_names_that_s3_accepts(bucket: str) -> None:
    assert check_bucket_name(bucket) == bucket


def test_even_number_of_servers_above_one(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n" + "".join(f"  - {{name: s{i}, address: 10.0.0.{i}, roles: [server]}}\n" for i in range(1, 5))
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    text = problems(exc_info)
    assert "cluster.hosts [from config/inventory.yaml:1]" in text
    assert "4 servers: embedded etcd needs an odd number of servers" in text


@pytest.mark.parametrize("count", [1, 3, 5])
def test_odd_number_of_servers_is_accepted(make_settings: MakeSettings, count: int) -> None:
    inventory = "hosts:\n" + "".join(
        f"  - {{name: s{i}, address: 10.0.0.{i}, roles: [server]}}\n" for i in range(1, count + 1)
    )
    assert len(make_settings(inventory=inventory).cluster.servers) == count


def test_duplicate_host_names(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server]}\n" * 1 + (
        "  - {name: s1, address: 10.0.0.2, roles: [agent]}\n"
    )
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    assert "host names must be unique; repeated: s1" in problems(exc_info)


def test_invalid_yaml_names_file_and_line(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform="platform:\n  namespace: [unclosed\n")
    assert re.search(r"config/platform\.yaml:\d+: not valid YAML", problems(exc_info))


def test_nfs_storage_without_a_server(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="STORAGE_KIND=nfs\n")
    assert "storage kind 'nfs' needs an NFS server" in problems(exc_info)


def test_every_problem_is_reported_at_once(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="S3_BUCKET=BAD\nMLFLOW_ADMIN_PASSWORD=short\nLOCAL_PORT=0\n")
    assert len(exc_info.value.problems) == 3


# ------------------------------------------------------------------- the CLI: message, no traceback


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"config/platform.yaml": "platform:\n  namespac: x\n"},
            "platform.namespac [from config/platform.yaml:2]",
        ),
        (
            {"config/platform.yaml": "local:\n  port: web\n"},
            "local.port (LOCAL_PORT) [from config/platform.yaml:2]",
        ),
        (
            {"config/inventory.yaml": "hosts:\n  - {name: s1, address: 'x y', roles: [server]}\n"},
            "cluster.hosts[s1].address [from config/inventory.yaml:2]",
        ),
        (
            {".env": "MLFLOW_ADMIN_PASSWORD=password1234\n"},
            "platform.mlflow.admin_password (MLFLOW_ADMIN_PASSWORD)",
        ),
        ({".env": "S3_BUCKET=Bad_Bucket\n"}, "platform.object_store.bucket (S3_BUCKET) [from .env:1]"),
        (
            {
                "config/inventory.yaml": "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server]}\n"
                "  - {name: s2, address: 10.0.0.2, roles: [server]}\n"
            },
            "embedded etcd needs an odd number of servers",
        ),
    ],
    ids=["unknown-key", "wrong-type", "bad-host", "default-password", "bad-bucket", "even-servers"],
)
def test_cli_prints_one_clear_message_and_no_traceback(project: Project, files: dict[str, str], expected: str) -> None:
    for relative, text in files.items():
        project.write(relative, text)
    result = project.invoke("config")
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_required_key_missing_names_key_and_fix(project: Project) -> None:
    result = project.invoke("deploy", "--dry-run")
    assert result.returncode == 1
    assert "platform.mlflow.admin_password: required by `invoke deploy` but not set" in result.stderr
    assert "set MLFLOW_ADMIN_PASSWORD in .env" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# ------------------------------------------------------------- .env.example documents every key


def _example_keys() -> list[str]:
    text = (REPO / ".env.example").read_text()
    return re.findall(r"^([A-Z0-9_]+)=", text, flags=re.MULTILINE)


def test_env_example_lists_every_key_in_order() -> None:
    assert _example_keys() == list(ENV_KEYS)


def test_env_example_has_one_comment_line_per_key() -> None:
    lines = (REPO / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z0-9_]+=", line):
            assert lines[index - 1].startswith("# "), f"{line} has no comment line above it"


def test_env_example_puts_required_keys_first() -> None:
    keys = _example_keys()
    assert keys[: len(GENERATED_KEYS)] == list(GENERATED_KEYS)


def test_repository_config_loads(tmp_path: Path) -> None:
    """The shipped config/platform.yaml and the example inventory are valid as they are."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config/platform.yaml").write_text((REPO / "config/platform.yaml").read_text())
    (tmp_path / "config/inventory.yaml").write_text((REPO / "config/inventory.example.yaml").read_text())
    settings = load_settings(tmp_path, {})
    assert len(settings.cluster.hosts) == 3


@pytest.mark.parametrize("key", ["POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "SSH_SUDO_PASSWORD", "K3S_TOKEN"])
def test_a_secret_with_a_line_break_is_refused_by_name_without_echoing_it(tmp_path: Path, key: str) -> None:
    secret = "first-line-secret-4411\nsecond-line"
    environ = dict(SAMPLE_SECRETS) | {key: secret}
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path, environ)
    message = str(caught.value)
    assert f"({key})" in message and "control character" in message
    assert "first-line-secret-4411" not in message
