""".env and the YAML files are data: read literally, each problem named with its file and line."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mlopskit.errors import SettingsError
from mlopskit.settings import Settings

from .conftest import Project, problems

MakeSettings = Callable[..., Settings]


# ---------------------------------------------------------------------------------- .env is data


def test_env_value_with_dollar_braces_is_kept_literally(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="MLFLOW_ADMIN_PASSWORD=Adm1n${HOME}Pa55word\n")
    assert settings.platform.mlflow.admin_password is not None
    assert settings.platform.mlflow.admin_password.get_secret_value() == "Adm1n${HOME}Pa55word"


def test_env_value_in_double_quotes_is_not_interpolated(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file='MLFLOW_ADMIN_PASSWORD="Adm1n${USER}and$HOME"\n')
    assert settings.platform.mlflow.admin_password is not None
    assert settings.platform.mlflow.admin_password.get_secret_value() == "Adm1n${USER}and$HOME"


def test_env_value_records_its_line(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="# namespace\n\nPLATFORM_NAMESPACE=team-a\n")
    assert settings.source_of("platform.namespace") == ".env:3"


def test_env_line_with_unbalanced_quote_is_an_error_naming_file_and_line(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file='S3_BUCKET=mlflow\nMLFLOW_ADMIN_PASSWORD="unbalanced-secret-value\n')
    text = problems(exc_info)
    assert ".env:2: the line for MLFLOW_ADMIN_PASSWORD cannot be read as KEY=value" in text
    assert "unbalanced-secret-value" not in text


def test_env_line_that_is_not_key_value_is_an_error(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="S3_BUCKET=mlflow\nthis is not a setting\n")
    assert ".env:2: this line cannot be read as KEY=value" in problems(exc_info)


def test_env_key_without_equals_sign_is_an_error(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="S3_BUCKET\n")
    assert "S3_BUCKET [from .env:1]: has no '='; write S3_BUCKET=value, or S3_BUCKET= to leave it unset" in (
        problems(exc_info)
    )


def test_env_key_given_twice_is_an_error_naming_both_lines(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file="S3_BUCKET=first\nPLATFORM_NAMESPACE=a\nS3_BUCKET=second\n")
    assert "S3_BUCKET [from .env:3]: is given twice (first on line 1); keep one of them" in problems(exc_info)


def test_env_file_in_latin1_names_file_and_line(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(env_file_bytes="S3_BUCKET=mlflow\nMLFLOW_ADMIN_USER=jos\xe9\n".encode("latin-1"))
    assert ".env:2: is not UTF-8 text (byte 0xe9); save the file as UTF-8" in problems(exc_info)


def test_env_file_with_utf8_bom_loads(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file_bytes="\ufeffPLATFORM_NAMESPACE=team-a\n".encode())
    assert settings.platform.namespace == "team-a"


# ----------------------------------------------------------------------------------------- YAML


def test_yaml_key_given_twice_is_an_error_naming_file_and_lines(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform="platform:\n  namespace: a\n  namespace: b\n")
    assert (
        "config/platform.yaml:3: key platform.namespace is given twice (first on line 2); keep one of them"
        in problems(exc_info)
    )


def test_inventory_host_field_given_twice_is_an_error(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - name: s1\n    address: 10.0.0.1\n    address: 10.0.0.2\n    roles: [server]\n"
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory=inventory)
    assert "config/inventory.yaml:4: key hosts.0.address is given twice (first on line 3)" in problems(exc_info)


def test_yaml_in_latin1_names_file_and_line(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform_bytes="# Plattform f\xfcr MLflow\nplatform:\n  namespace: a\n".encode("latin-1"))
    assert "config/platform.yaml:1: is not UTF-8 text (byte 0xfc)" in problems(exc_info)


def test_inventory_in_latin1_names_the_inventory(make_settings: MakeSettings) -> None:
    with pytest.raises(SettingsError) as exc_info:
        make_settings(inventory_bytes="hosts: []\n# r\xe9seau\n".encode("latin-1"))
    assert "config/inventory.yaml:2: is not UTF-8 text" in problems(exc_info)


BILLION_LAUGHS = "lol: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


def test_nested_yaml_aliases_are_refused_quickly(make_settings: MakeSettings) -> None:
    started = time.monotonic()
    with pytest.raises(SettingsError) as exc_info:
        make_settings(platform=BILLION_LAUGHS)
    assert time.monotonic() - started < 5
    assert "config/platform.yaml:1: YAML anchor 'a' is not allowed in settings files" in problems(exc_info)


def test_cli_config_refuses_a_billion_laughs_document_without_hanging(project: Project) -> None:
    project.write("config/platform.yaml", BILLION_LAUGHS)
    result = project.invoke("config")
    assert result.returncode == 1
    assert "config/platform.yaml:1: YAML anchor 'a' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("relative", "content", "expected"),
    [
        (".env", "MLFLOW_ADMIN_USER=jos\xe9\n".encode("latin-1"), ".env:1: is not UTF-8 text"),
        ("config/platform.yaml", "# f\xfcr\n".encode("latin-1"), "config/platform.yaml:1: is not UTF-8 text"),
        (".env", b'MLFLOW_ADMIN_PASSWORD="open\n', ".env:1: the line for MLFLOW_ADMIN_PASSWORD cannot be read"),
        (".env", b"S3_BUCKET=a-bucket\nS3_BUCKET=b-bucket\n", "S3_BUCKET [from .env:2]: is given twice"),
    ],
    ids=["latin1-env", "latin1-platform", "unbalanced-quote", "duplicate-env-key"],
)
def test_cli_refuses_a_bad_file_with_file_line_and_no_traceback(
    project: Project, relative: str, content: bytes, expected: str
) -> None:
    (project.root / relative).write_bytes(content)
    result = project.invoke("config")
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
