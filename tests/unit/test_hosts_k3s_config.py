"""/etc/rancher/k3s/config.yaml rendering and the install command, from the inventory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlopskit.errors import PlatformError
from mlopskit.hosts.k3s import check_airgap_files, install_command, render_config
from mlopskit.settings import Settings

MakeSettings = Callable[..., Settings]

THREE_SERVERS = """
tls_san: [api.example.test]
disable: [traefik, servicelb]
hosts:
  - {name: s1, address: 10.0.0.1, roles: [server], labels: {zone: a}, taints: ["role=control:NoSchedule"]}
  - {name: s2, address: 10.0.0.2, roles: [server]}
  - {name: s3, address: 10.0.0.3, roles: [server]}
  - {name: w1, address: 10.0.0.4, roles: [agent]}
"""


def config_of(settings: Settings, name: str, token: str | None) -> dict[str, object]:
    host = next(h for h in settings.cluster.hosts if h.name == name)
    data = yaml.safe_load(render_config(settings, host, token))
    assert isinstance(data, dict)
    return data


def test_first_of_several_servers_initialises_embedded_etcd(make_settings: MakeSettings) -> None:
    assert config_of(make_settings(inventory=THREE_SERVERS), "s1", None) == {
        "node-name": "s1",
        "cluster-init": True,
        "tls-san": ["10.0.0.1", "api.example.test"],
        "disable": ["traefik", "servicelb"],
        "node-label": ["zone=a"],
        "node-taint": ["role=control:NoSchedule"],
    }


def test_single_server_does_not_initialise_etcd(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="hosts: [{name: s1, address: 10.0.0.1, roles: [server]}]")
    assert "cluster-init" not in config_of(settings, "s1", None)


def test_further_servers_join_the_first_with_the_token(make_settings: MakeSettings) -> None:
    config = config_of(make_settings(inventory=THREE_SERVERS), "s2", "K10abc::server:xyz")
    assert config["server"] == "https://10.0.0.1:6443"
    assert config["token"] == "K10abc::server:xyz"
    assert config["tls-san"] == ["10.0.0.1", "10.0.0.2", "api.example.test"]
    assert "cluster-init" not in config


def test_agents_get_server_and_token_but_no_server_options(make_settings: MakeSettings) -> None:
    assert config_of(make_settings(inventory=THREE_SERVERS), "w1", "tok") == {
        "node-name": "w1",
        "server": "https://10.0.0.1:6443",
        "token": "tok",
    }


def test_configured_token_is_written_on_the_first_server(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="hosts: [{name: s1, address: 10.0.0.1, roles: [server]}]")
    assert config_of(settings, "s1", "chosen")["token"] == "chosen"


def test_install_pins_the_version_and_keeps_the_token_off_the_command_line(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=THREE_SERVERS, environ={"K3S_TOKEN": "very-secret-token"})
    command = install_command(settings, settings.cluster.hosts[3], "v1.34.1+k3s1")
    assert "INSTALL_K3S_VERSION=v1.34.1+k3s1" in command
    assert "https://get.k3s.io" in command
    assert command.endswith(" agent")
    assert "very-secret-token" not in command


def test_airgap_install_skips_the_download(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=THREE_SERVERS + "airgap: {enabled: true}\n")
    command = install_command(settings, settings.cluster.hosts[0], "v1.34.1+k3s1")
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in command
    assert "curl" not in command


def test_airgap_files_must_exist_locally(make_settings: MakeSettings, tmp_path: Path) -> None:
    binary = tmp_path / "k3s"
    binary.write_text("binary")
    inventory = THREE_SERVERS + f"airgap: {{enabled: true, k3s_binary: {binary}, images_tarball: /nope/images.tar}}\n"
    with pytest.raises(
        PlatformError,
        match=r"cluster\.airgap\.images_tarball \[from config/inventory\.yaml:\d+\]: /nope/images.tar does not exist",
    ):
        check_airgap_files(make_settings(inventory=inventory))


def test_airgap_files_must_be_set(make_settings: MakeSettings) -> None:
    with pytest.raises(
        PlatformError,
        match=r"cluster\.airgap\.k3s_binary \[from config/inventory\.yaml:\d+\]: required when airgap is enabled",
    ):
        check_airgap_files(make_settings(inventory=THREE_SERVERS + "airgap: {enabled: true}\n"))
