"""Flags are settings too: each is checked by the same rule as its setting, before anything is touched."""

from __future__ import annotations

import pytest

from mlopskit.errors import SettingsError
from mlopskit.settings import check_flag, check_k3s_version, check_seconds

from .conftest import Project


def test_flag_error_names_the_flag_the_value_and_the_setting_with_the_same_rule() -> None:
    with pytest.raises(SettingsError) as caught:
        check_flag("--version", "1.34.2", check_k3s_version, "K3S_VERSION")
    assert caught.value.problems == [
        "--version [from the command line]: must be a K3s release such as v1.34.1+k3s1 (got '1.34.2'); "
        "the same rule as K3S_VERSION"
    ]


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan", "inf", ""])
def test_seconds_refuse_what_is_not_a_positive_number(value: str) -> None:
    with pytest.raises(ValueError, match="must be a number of seconds"):
        check_seconds(value)


def test_seconds_accept_a_positive_number() -> None:
    assert check_seconds("90.5") == 90.5


@pytest.mark.parametrize("version", ["1.34.2", "garbage", "v1.34.2", "v1.34.2+k3s1\n"])
def test_cli_upgrade_refuses_a_version_that_is_not_a_k3s_release(project: Project, version: str) -> None:
    result = project.invoke("upgrade", "--version", version, "--dry-run")
    assert result.returncode == 1
    assert "--version [from the command line]: must be a K3s release such as v1.34.1+k3s1" in result.stderr
    assert "the same rule as K3S_VERSION" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--timeout", "abc"], "--timeout [from the command line]: must be a number of seconds, such as 600"),
        (["--timeout", "-5"], "--timeout [from the command line]: must be a number of seconds above zero"),
        (["--timeout=0"], "must be a number of seconds above zero"),
        (["--image", "MLflow Image:1"], "--image [from the command line]: must be an image reference"),
    ],
    ids=["timeout-abc", "timeout-negative", "timeout-zero", "image"],
)
def test_cli_deploy_refuses_a_bad_flag_before_loading_anything(
    project: Project, args: list[str], expected: str
) -> None:
    result = project.invoke("deploy", "--dry-run", *args)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_render_refuses_a_bad_image_flag(project: Project) -> None:
    result = project.invoke("render", "--dry-run", "--image", "registry/mlflow:")
    assert result.returncode == 1
    assert "--image [from the command line]: must be an image reference" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_seal_refuses_an_unknown_scope_before_loading_settings(project: Project) -> None:
    result = project.invoke("seal", "--scope", "global", "--dry-run")
    assert result.returncode == 1
    assert "--scope 'global': expected one of strict, namespace-wide, cluster-wide" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
