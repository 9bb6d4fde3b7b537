"""Provisioning failures stop with the host, the step and the host's last output, and show what completed.

Hosts are sshd containers; the K3s install script is a stand-in (see conftest.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from mlopskit.errors import PlatformError
from mlopskit.hosts.provision import RunFailed, provision
from mlopskit.settings import Settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, SUDO_PASSWORD, KeyPair, SshHost

pytestmark = pytest.mark.docker

MakeSettings = Callable[..., Settings]


def closed_local_port() -> int:
    """A port on 127.0.0.1 nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def host(start_host: Callable[[str], SshHost]) -> SshHost:
    return start_host("lonely")


def single(host: SshHost, key: KeyPair, *, user: str = "kit", extra: str = "", url: str = STANDIN_INSTALL_URL) -> str:
    return f"""
ssh: {{user: {user}, key_path: {key.private}, connect_timeout: 5}}
install_script_url: {url}
{extra}
hosts:
  - {{name: solo, address: {host.address}, roles: [server]}}
"""


def test_unreachable_host_is_named_and_other_hosts_complete(
    host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    inventory = f"""
ssh: {{user: kit, key_path: {ssh_key.private}, connect_timeout: 3}}
hosts:
  - {{name: good, address: {host.address}, roles: [server]}}
  - {{name: gone, address: 127.0.0.1, port: {closed_local_port()}, roles: [agent]}}
"""
    with pytest.raises(RunFailed) as failed:
        provision(make_settings(inventory))
    assert "step prerequisites on gone: cannot reach kit@127.0.0.1" in str(failed.value)
    cells = failed.value.report.cells
    assert cells["good"]["prerequisites"] in {"changed", "unchanged"}
    assert cells["gone"]["prerequisites"] == "failed"
    assert cells["good"]["k3s-server"] == "skipped"


def test_refused_key_names_the_key_and_the_user(
    host: SshHost, stranger_key: KeyPair, make_settings: MakeSettings
) -> None:
    with pytest.raises(RunFailed, match=f"SSH key {stranger_key.private} was refused for kit@{host.address}:22"):
        provision(make_settings(single(host, stranger_key)))


def test_wrong_sudo_password_is_reported(host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings) -> None:
    settings = make_settings(single(host, ssh_key, user="pw"), env_file="SSH_SUDO_PASSWORD=wrong\n")
    with pytest.raises(RunFailed, match="solo: sudo refused the password for pw"):
        provision(settings)


def test_missing_sudo_password_says_where_to_set_it(
    host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    with pytest.raises(RunFailed, match="sudo for pw asks for a password; set SSH_SUDO_PASSWORD"):
        provision(make_settings(single(host, ssh_key, user="pw")))


def test_correct_sudo_password_is_accepted(host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings) -> None:
    inventory = single(host, ssh_key, user="pw")
    report = provision(make_settings(inventory, env_file=f"SSH_SUDO_PASSWORD={SUDO_PASSWORD}\n"))
    assert report.cells["solo"]["k3s-server"] in {"changed", "unchanged"}


def test_failing_install_shows_step_and_last_output(
    start_host: Callable[[str], SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    settings = make_settings(single(start_host("broken"), ssh_key, url="file:///opt/standin/missing.sh"))
    with pytest.raises(RunFailed) as failed:
        provision(settings)
    message = str(failed.value)
    assert "step k3s-server on solo: command failed" in message
    assert "curl -sSfL file:///opt/standin/missing.sh" in message
    assert "curl: (37)" in message  # curl's own words about the missing file, from the host's output
    assert failed.value.report.cells["solo"]["prerequisites"] in {"changed", "unchanged"}


def test_unsupported_os_names_what_os_release_says(
    start_host: Callable[[str], SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    odd = start_host("odd")
    odd.sh("mv /usr/bin/apt-get /usr/bin/apt-get.hidden")
    with pytest.raises(
        RunFailed, match=r"unsupported OS \(Debian GNU/Linux 12 \(bookworm\)\): neither apt-get nor dnf"
    ):
        provision(make_settings(single(odd, ssh_key)))


def test_missing_key_file_fails_before_any_host_is_touched(host: SshHost, make_settings: MakeSettings) -> None:
    before = host.log()
    inventory = f"""
ssh: {{user: kit, key_path: /nonexistent/id_ed25519}}
hosts:
  - {{name: solo, address: {host.address}, roles: [server]}}
"""
    with pytest.raises(PlatformError, match="solo: SSH key /nonexistent/id_ed25519 cannot be read"):
        provision(make_settings(inventory))
    assert host.log() == before


def test_user_without_sudo_rights_is_told_so(host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings) -> None:
    inventory = single(host, ssh_key, user="nosudo")
    with pytest.raises(RunFailed, match="solo: nosudo may not use sudo; add nosudo to the sudo group"):
        provision(make_settings(inventory, env_file=f"SSH_SUDO_PASSWORD={SUDO_PASSWORD}\n"))
