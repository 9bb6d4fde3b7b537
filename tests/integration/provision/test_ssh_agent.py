"""Keys held by a running ssh-agent, as many users keep them: a real OpenSSH agent and a real sshd host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.remote import HostError, connect
from mlopskit.settings import Settings
from tests.integration.provision.conftest import KeyPair, SshHost
from tests.ssh_agent import running_agent

pytestmark = pytest.mark.docker

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="module")
def host(start_host: Callable[[str], SshHost]) -> SshHost:
    return start_host("agent-user")


def inventory(host: SshHost, key_path: Path, use_agent: bool = True) -> str:
    return f"""
ssh: {{user: kit, key_path: {key_path}, connect_timeout: 5, use_agent: {str(use_agent).lower()}}}
hosts:
  - {{name: solo, address: {host.address}, roles: [server]}}
"""


def test_the_agents_key_logs_in_when_no_key_file_exists(
    host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(inventory(host, tmp_path / "no-such-key"))
    with running_agent(ssh_key.private) as socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        runs.validate(settings)  # the missing file is passed over: the agent offers a key
        remote = connect(settings, settings.cluster.hosts[0])
        try:
            assert remote.run("id -un").stdout.strip() == "kit"
        finally:
            remote.close()


def test_an_agent_key_the_host_refuses_is_named_in_the_error(
    host: SshHost, stranger_key: KeyPair, make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(inventory(host, tmp_path / "no-such-key"))
    with running_agent(stranger_key.private) as socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        remote = connect(settings, settings.cluster.hosts[0])
        with pytest.raises(HostError, match=r"no-such-key and the ssh-agent's 1 key\(s\) was refused for kit@"):
            remote.run("true")


def test_use_agent_false_refuses_a_missing_key_file_even_with_an_agent(
    host: SshHost, ssh_key: KeyPair, make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(inventory(host, tmp_path / "no-such-key", use_agent=False))
    with running_agent(ssh_key.private) as socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        with pytest.raises(PlatformError, match=r"no-such-key cannot be read.*use_agent is false"):
            runs.validate(settings)
