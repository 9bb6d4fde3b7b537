"""cluster.api_endpoint, cluster.vip, cluster.registries and the SSH settings: bad input is refused at load
time (or, for what needs the command, before any host is touched), naming the key and its file and line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlopskit.errors import SettingsError
from mlopskit.settings import Settings

MakeSettings = Callable[..., Settings]

SERVER = "hosts: [{name: s1, address: 10.0.0.1, roles: [server]}]\n"


def problems(make_settings: MakeSettings, inventory: str, **kwargs: object) -> str:
    with pytest.raises(SettingsError) as caught:
        make_settings(inventory=inventory, **kwargs)
    return str(caught.value)


# ------------------------------------------------------------------------------- endpoint and VIP


def test_api_endpoint_and_vip_load_and_the_vip_is_the_endpoint_without_a_name(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="vip: {address: 10.0.0.50, interface: eth0}\n" + SERVER)
    assert settings.cluster.endpoint == "10.0.0.50"
    assert settings.cluster.vip is not None and settings.cluster.vip.image.startswith("ghcr.io/kube-vip/kube-vip:")
    named = make_settings(
        inventory="api_endpoint: k3s.example.test\nvip: {address: 10.0.0.50, interface: eth0}\n" + SERVER
    )
    assert named.cluster.endpoint == "k3s.example.test"


def test_api_endpoint_must_be_a_host_name_or_address(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "api_endpoint: https://k3s.example.test\n" + SERVER)
    assert "cluster.api_endpoint [from config/inventory.yaml:1]: must be a host name" in message


def test_vip_address_must_be_an_ip_address(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "vip:\n  address: vip.example.test\n  interface: eth0\n" + SERVER)
    assert (
        "cluster.vip.address [from config/inventory.yaml:2]: must be an IP address (kube-vip announces it with ARP); "
        "a DNS name belongs in cluster.api_endpoint (got 'vip.example.test')"
    ) in message


def test_vip_interface_must_be_an_interface_name(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "vip: {address: 10.0.0.50, interface: 'eth0; reboot'}\n" + SERVER)
    assert "cluster.vip.interface [from config/inventory.yaml:1]: must be a network interface name" in message


def test_vip_needs_an_interface(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "vip: {address: 10.0.0.50}\n" + SERVER)
    assert "cluster.vip.interface [from config/inventory.yaml:1]: is required" in message


def test_vip_may_not_be_a_hosts_address(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "vip: {address: 10.0.0.1, interface: eth0}\n" + SERVER)
    assert "cluster.vip.address [from config/inventory.yaml:1]: vip.address 10.0.0.1 is the address of host s1" in (
        message
    )


def test_an_api_endpoint_address_other_than_the_vip_is_refused(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "api_endpoint: 10.0.0.60\nvip: {address: 10.0.0.50, interface: eth0}\n" + SERVER)
    assert "cluster.api_endpoint [from config/inventory.yaml:1]: api_endpoint 10.0.0.60 and vip" in (message)


def test_vip_image_must_be_an_image_reference(make_settings: MakeSettings) -> None:
    message = problems(make_settings, "vip: {address: 10.0.0.50, interface: eth0, image: 'Kube VIP'}\n" + SERVER)
    assert "cluster.vip.image [from config/inventory.yaml:1]: must be an image reference" in message


# -------------------------------------------------------------------------------------- registries

REGISTRIES = """registries:
  mirrors:
    docker.io:
      endpoint: [https://mirror.example.test:5000]
  configs:
    mirror.example.test:5000:
      auth: {username: puller, password_env: MIRROR_PASSWORD}
"""


def test_registry_password_comes_from_env_with_its_source(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=REGISTRIES + SERVER, env_file="MIRROR_PASSWORD=from-dotenv-7\n")
    auth = settings.cluster.registries.configs["mirror.example.test:5000"].auth
    assert auth is not None and auth.password is not None
    assert auth.password.get_secret_value() == "from-dotenv-7"
    assert settings.source_of("cluster.registries.configs.mirror.example.test:5000.auth.password") == ".env:1"
    assert settings.source_of("cluster.registries.mirrors.docker.io.endpoint") == "config/inventory.yaml:4"


def test_registry_password_from_the_environment_wins_over_dotenv(make_settings: MakeSettings) -> None:
    settings = make_settings(
        inventory=REGISTRIES + SERVER, env_file="MIRROR_PASSWORD=file\n", environ={"MIRROR_PASSWORD": "environ"}
    )
    auth = settings.cluster.registries.configs["mirror.example.test:5000"].auth
    assert auth is not None and auth.password is not None and auth.password.get_secret_value() == "environ"


def test_a_registry_password_written_in_a_settings_file_is_refused(make_settings: MakeSettings) -> None:
    inventory = REGISTRIES.replace("password_env: MIRROR_PASSWORD", "password_env: MIRROR_PASSWORD, password: leak")
    message = problems(make_settings, inventory + SERVER, env_file="MIRROR_PASSWORD=x-from-env\n")
    assert (
        "cluster.registries.configs[mirror.example.test:5000].auth.password [from config/inventory.yaml:7]: secrets "
        "stay out of the settings files"
    ) in message
    assert "leak" not in message


def test_a_user_password_written_in_access_yaml_is_refused_too(make_settings: MakeSettings, tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path)) / "proj"
    (root / "config").mkdir(parents=True)
    (root / "config/access.yaml").write_text(
        "users:\n  - {name: alice, password_env: ALICE_PW, password: Sup3r-Secret-Passw0rd}\n"
    )
    message = problems(make_settings, SERVER)
    assert "access.users[alice].password [from config/access.yaml:2]: secrets stay out of the settings files" in message
    assert "Sup3r" not in message


def test_a_missing_registry_password_stops_provision_naming_the_key(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=REGISTRIES + SERVER)
    with pytest.raises(SettingsError) as caught:
        settings.require("provision")
    assert (
        "cluster.registries.configs[mirror.example.test:5000].auth.password_env [from config/inventory.yaml:7]: "
        "MIRROR_PASSWORD is not set; add MIRROR_PASSWORD=<the registry password> to .env"
    ) in str(caught.value)


def test_password_env_may_not_name_a_platform_setting(make_settings: MakeSettings) -> None:
    message = problems(make_settings, REGISTRIES.replace("MIRROR_PASSWORD", "S3_SECRET_KEY") + SERVER)
    assert "auth.password_env [from config/inventory.yaml:7]: S3_SECRET_KEY is a platform setting" in message


def test_a_registry_name_with_a_scheme_is_refused_naming_it(make_settings: MakeSettings) -> None:
    message = problems(make_settings, REGISTRIES.replace("    docker.io:", "    https://docker.io:") + SERVER)
    assert "cluster.registries.mirrors[https://docker.io] [from config/inventory.yaml:3]" in message
    assert "is not a registry: use its host[:port]" in message


def test_a_mirror_endpoint_must_be_a_url(make_settings: MakeSettings) -> None:
    message = problems(make_settings, REGISTRIES.replace("https://mirror", "mirror") + SERVER)
    assert "cluster.registries.mirrors[docker.io].endpoint [from config/inventory.yaml:4]: endpoint" in message


def test_a_rewrite_must_be_a_regular_expression(make_settings: MakeSettings) -> None:
    inventory = REGISTRIES.replace(
        "      endpoint: [https://mirror.example.test:5000]\n",
        "      endpoint: [https://mirror.example.test:5000]\n      rewrite: {'^library/(.*': 'hub/$1'}\n",
    )
    message = problems(make_settings, inventory + SERVER, env_file="MIRROR_PASSWORD=x-from-env\n")
    assert "cluster.registries.mirrors[docker.io].rewrite [from config/inventory.yaml:5]: rewrite" in message


def test_a_misspelt_registry_key_gets_a_suggestion(make_settings: MakeSettings) -> None:
    message = problems(make_settings, REGISTRIES.replace("password_env", "pasword_env") + SERVER)
    assert (
        "cluster.registries.configs[mirror.example.test:5000].auth.pasword_env [from config/inventory.yaml:7]: "
        "unknown key; did you mean password_env?"
    ) in message


def test_a_client_certificate_needs_its_key(make_settings: MakeSettings) -> None:
    inventory = REGISTRIES + "      tls: {cert_file: ./client.pem}\n"
    message = problems(make_settings, inventory + SERVER, env_file="MIRROR_PASSWORD=x-from-env\n")
    assert "cluster.registries.configs[mirror.example.test:5000].tls [from config/inventory.yaml:8]" in message
    assert "cert_file and key_file go together" in message


# --------------------------------------------------------------------------------------------- SSH


def test_ssh_config_path_comes_from_dotenv(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=SERVER, env_file="SSH_CONFIG_PATH=/etc/mlops/ssh_config\n")
    assert str(settings.cluster.ssh.config_path) == "/etc/mlops/ssh_config"
    assert settings.describe("cluster.ssh.config_path") == "cluster.ssh.config_path (SSH_CONFIG_PATH) [from .env:1]"


def test_ssh_host_may_not_look_like_an_option(make_settings: MakeSettings) -> None:
    message = problems(
        make_settings, "hosts: [{name: s1, address: 10.0.0.1, roles: [server], ssh_host: -oProxyCommand=x}]\n"
    )
    assert (
        "cluster.hosts[s1].ssh_host [from config/inventory.yaml:1]: must be a host name, address or Host alias"
        in message
    )
