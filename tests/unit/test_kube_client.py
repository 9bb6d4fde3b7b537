"""Which kubeconfig the client uses, and a clear error when it is missing or not a kubeconfig."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlopskit.errors import PlatformError
from mlopskit.kube.client import api_client, kubeconfig_file, read_kubeconfig
from mlopskit.settings import Settings

from .conftest import Project

MakeSettings = Callable[..., Settings]

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- {name: c, cluster: {server: "https://[fd00::10]:6443"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: x, context: {cluster: c, user: u}}
current-context: x
"""


def test_explicit_kubeconfig_path_that_is_missing_is_an_error_not_a_fallback(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(env_file=f"KUBECONFIG_PATH={tmp_path / 'missing.yaml'}\n")
    with pytest.raises(PlatformError) as caught:
        kubeconfig_file(settings)
    assert "cluster.kubeconfig (KUBECONFIG_PATH) [from .env:1]" in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_explicit_kubeconfig_path_in_the_inventory_that_is_missing_is_an_error(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="kubeconfig: /nonexistent/kubeconfig.yaml\n")
    with pytest.raises(PlatformError, match=r"cluster.kubeconfig \(KUBECONFIG_PATH\) \[from config/inventory.yaml:1\]"):
        kubeconfig_file(settings)


def test_default_kubeconfig_path_that_is_missing_leaves_the_choice_to_the_client(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig_file(make_settings()) is None


def test_kubeconfig_that_is_not_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nclusters: [unclosed\n")
    with pytest.raises(PlatformError, match=rf"{path}:3: is not a kubeconfig: not valid YAML"):
        read_kubeconfig(path)


def test_kubeconfig_in_latin1_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes("# caf\xe9\napiVersion: v1\n".encode("latin-1"))
    with pytest.raises(PlatformError, match=rf"{path}:1: is not a kubeconfig: not UTF-8 text"):
        read_kubeconfig(path)


def test_kubeconfig_that_is_plain_text_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("hello world\n")
    with pytest.raises(PlatformError, match="expected a mapping of clusters, users, contexts"):
        read_kubeconfig(path)


def test_api_client_reads_a_kubeconfig_with_an_ipv6_server(make_settings: MakeSettings, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    api = api_client(make_settings(environ={"KUBECONFIG_PATH": str(path)}))
    assert api.configuration.host == "https://[fd00::10]:6443"


def test_api_client_refuses_a_kubeconfig_that_is_not_yaml(make_settings: MakeSettings, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("{{{\n")
    with pytest.raises(PlatformError, match="is not a kubeconfig"):
        api_client(make_settings(environ={"KUBECONFIG_PATH": str(path)}))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"clusters: [unclosed\n", "kubeconfig.yaml:2: is not a kubeconfig: not valid YAML"),
        ("caf\xe9: 1\n".encode("latin-1"), "kubeconfig.yaml:1: is not a kubeconfig: not UTF-8 text"),
        (None, "cluster.kubeconfig (KUBECONFIG_PATH) [from .env:"),
    ],
    ids=["not-yaml", "latin1", "missing"],
)
def test_cli_deploy_refuses_a_bad_kubeconfig_without_traceback(
    project: Project, sample_env: dict[str, str], content: bytes | None, expected: str
) -> None:
    path = project.root / "kubeconfig.yaml"
    if content is not None:
        path.write_bytes(content)
    project.write_env(sample_env | {"KUBECONFIG_PATH": str(path)})
    result = project.invoke("deploy", "--dry-run")
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
