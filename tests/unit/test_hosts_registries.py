"""/etc/rancher/k3s/registries.yaml rendered from cluster.registries, and its TLS files checked before any host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.registries import HEADER, node_tls_path, render, tls_files
from mlopskit.hosts.remote import Remote
from mlopskit.settings import Host, Settings
from tests.unit.conftest import private_key_text

MakeSettings = Callable[..., Settings]

SERVER = "hosts: [{name: s1, address: 10.0.0.1, roles: [server]}]\n"


def test_no_registries_render_no_file(make_settings: MakeSettings) -> None:
    assert render(make_settings(inventory=SERVER)) is None


def test_mirrors_auth_and_tls_render_as_k3s_reads_them(make_settings: MakeSettings, tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client-key.pem"))
    inventory = f"""registries:
  mirrors:
    docker.io:
      endpoint: [https://mirror.example.test:5000, http://10.0.0.9:5000]
      rewrite: {{"^library/(.*)": "hub/$1"}}
    "*":
      endpoint: [https://any.example.test]
  configs:
    mirror.example.test:5000:
      auth: {{username: puller, password_env: MIRROR_PASSWORD}}
      tls: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
    10.0.0.9:5000:
      tls: {{insecure_skip_verify: true}}
"""
    text = render(make_settings(inventory=inventory + SERVER, env_file="MIRROR_PASSWORD='p@ss: #1'\n"))
    assert text is not None and text.startswith(HEADER)
    assert yaml.safe_load(text) == {
        "mirrors": {
            "docker.io": {
                "endpoint": ["https://mirror.example.test:5000", "http://10.0.0.9:5000"],
                "rewrite": {"^library/(.*)": "hub/$1"},
            },
            "*": {"endpoint": ["https://any.example.test"]},
        },
        "configs": {
            "mirror.example.test:5000": {
                "auth": {"username": "puller", "password": "p@ss: #1"},
                "tls": {
                    "ca_file": "/etc/rancher/k3s/registry-tls/mirror.example.test_5000/ca.pem",
                    "cert_file": "/etc/rancher/k3s/registry-tls/mirror.example.test_5000/cert.pem",
                    "key_file": "/etc/rancher/k3s/registry-tls/mirror.example.test_5000/key.pem",
                },
            },
            "10.0.0.9:5000": {"tls": {"insecure_skip_verify": True}},
        },
    }


def test_node_tls_paths_keep_registries_apart() -> None:
    assert node_tls_path("reg.test:5000", "ca_file") != node_tls_path("reg.test:5001", "ca_file")
    assert node_tls_path("reg.test", "key_file") == "/etc/rancher/k3s/registry-tls/reg.test/key.pem"


def test_a_missing_tls_file_names_the_key_and_line(make_settings: MakeSettings, tmp_path: Path) -> None:
    inventory = f"registries:\n  configs:\n    reg.test:\n      tls: {{ca_file: {tmp_path / 'nope.pem'}}}\n"
    with pytest.raises(PlatformError) as caught:
        tls_files(make_settings(inventory=inventory + SERVER))
    assert str(caught.value).startswith(
        f"cluster.registries.configs[reg.test].tls.ca_file [from config/inventory.yaml:4]: {tmp_path / 'nope.pem'} "
        "does not exist"
    )


def test_relative_tls_files_are_found_under_the_project(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="registries: {configs: {reg.test: {tls: {ca_file: certs/ca.pem}}}}\n" + SERVER)
    (settings.root / "certs").mkdir()
    (settings.root / "certs/ca.pem").write_text("ca")
    assert tls_files(settings) == [("reg.test", "ca_file", settings.root / "certs/ca.pem")]


def test_provision_checks_tls_files_before_connecting(make_settings: MakeSettings, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    inventory = f"ssh: {{key_path: {key}}}\nregistries: {{configs: {{reg.test: {{tls: {{ca_file: /nope/ca.pem}}}}}}}}\n"
    settings = make_settings(inventory=inventory + SERVER)

    def never(settings: Settings, host: Host) -> Remote:
        raise AssertionError("no host may be contacted")

    with pytest.raises(PlatformError, match=r"tls\.ca_file .*/nope/ca.pem does not exist"):
        runs.provision(settings, connector=never)
