"""SSH as users have it: hosts reachable only through a bastion, found through an OpenSSH client config.

The targets sit on an internal Docker network; the bastion joins it and is the only host that publishes SSH,
on 127.0.0.1. Docker lets this machine reach even an internal network, so each target's sshd also accepts
logins only from the bastion's address (AllowUsers *@<bastion>): the one way in is ProxyJump. The SSH config
gives the bastion's port, the users and keys, a Host alias for the server and ProxyJump for both targets; the
inventory names no user, port or key. As everywhere in these tests, the K3s install script and the k3s binary
are stand-ins (see conftest.py); SSH, the jump, sudo and the files are real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from docker.models.networks import Network

from mlopskit.hosts.provision import RunReport, provision
from mlopskit.hosts.remote import HostError, connect
from mlopskit.settings import Settings, load_settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, KeyPair, SshHost, StartHost

pytestmark = pytest.mark.docker


@dataclass
class Behind:
    root: Path
    bastion: SshHost
    server: SshHost
    agent: SshHost
    key: KeyPair
    bastion_inside: str  # the bastion's address on the internal network

    def ssh_config(self, target_user: str = "kit", jump_key: Path | None = None) -> Path:
        path = self.root / "ssh_config"
        path.write_text(f"""# As a user would write it.
Host jump
    HostName 127.0.0.1
    Port {self.bastion.published_port()}
    User kit
    IdentityFile {jump_key or self.key.private}

Host pj-server
    HostName {self.server.address}

Host pj-server {self.agent.address}
    User {target_user}
    IdentityFile {self.key.private}
    ProxyJump jump
""")
        return path

    def settings(self, ssh: str = "", target_user: str = "kit", jump_key: Path | None = None) -> Settings:
        (self.root / "config/inventory.yaml").write_text(f"""{ssh}
install_script_url: {STANDIN_INSTALL_URL}
kubeconfig: {self.root / "kubeconfig.yaml"}
hosts:
  - {{name: pj-s1, address: {self.server.address}, ssh_host: pj-server, roles: [server]}}
  - {{name: pj-a1, address: {self.agent.address}, roles: [agent]}}
""")
        return load_settings(self.root, {"SSH_CONFIG_PATH": str(self.ssh_config(target_user, jump_key))})


@pytest.fixture(scope="module")
def behind(
    start_host: StartHost, internal_network: Network, ssh_key: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> Behind:
    root = tmp_path_factory.mktemp("proxyjump")
    (root / "config").mkdir()
    bastion = start_host("pj-bastion", publish=True, also_on=(internal_network,))
    inside = bastion.networks[str(internal_network.name)]
    server = start_host("pj-s1", on=internal_network, allow_from=inside)
    agent = start_host("pj-a1", on=internal_network, allow_from=inside)
    return Behind(root, bastion, server, agent, ssh_key, inside)


@pytest.fixture(scope="module")
def provisioned(behind: Behind) -> RunReport:
    return provision(behind.settings())


def test_the_targets_refuse_a_login_that_does_not_come_through_the_bastion(behind: Behind, tmp_path: Path) -> None:
    empty = tmp_path / "no-ssh-config"
    empty.write_text("")
    (behind.root / "config/inventory.yaml").write_text(
        f"ssh: {{user: kit, key_path: {behind.key.private}, connect_timeout: 5}}\n"
        f"hosts: [{{name: pj-s1, address: {behind.server.address}, roles: [server]}}]\n"
    )
    direct = load_settings(behind.root, {"SSH_CONFIG_PATH": str(empty)})
    remote = connect(direct, direct.cluster.hosts[0])
    with pytest.raises(HostError, match=r"was refused for kit@"):
        remote.run("true")
    remote.close()


def test_hosts_behind_a_bastion_are_provisioned_through_proxyjump(behind: Behind, provisioned: RunReport) -> None:
    assert provisioned.cells == {
        "pj-s1": {"prerequisites": "changed", "k3s-server": "changed", "kubeconfig": "changed"},
        "pj-a1": {"prerequisites": "changed", "k3s-agent": "changed"},
    }
    agent_config = yaml.safe_load(behind.agent.read("/etc/rancher/k3s/config.yaml"))
    assert agent_config["server"] == f"https://{behind.server.address}:6443"
    # Both targets saw their logins come from the bastion's address on the internal network.
    for target in (behind.server, behind.agent):
        assert f"Accepted publickey for kit from {behind.bastion_inside} " in target.container.logs().decode()


def test_a_rerun_through_the_bastion_changes_nothing(behind: Behind, provisioned: RunReport) -> None:
    second = provision(behind.settings())
    assert {status for row in second.cells.values() for status in row.values()} == {"unchanged"}


def test_the_ssh_configs_user_applies_unless_the_inventory_sets_one(behind: Behind) -> None:
    from_config = behind.settings(target_user="pw")
    remote = connect(from_config, from_config.cluster.hosts[0])
    assert remote.run("id -un").stdout.strip() == "pw"
    remote.close()
    overridden = behind.settings(ssh="ssh: {user: kit}", target_user="pw")
    remote = connect(overridden, overridden.cluster.hosts[0])
    assert remote.run("id -un").stdout.strip() == "kit"
    remote.close()


def test_a_refused_jump_host_is_named_in_the_error(behind: Behind, stranger_key: KeyPair) -> None:
    settings = behind.settings(jump_key=stranger_key.private)
    remote = connect(settings, settings.cluster.hosts[1])
    with pytest.raises(HostError, match=r"pj-a1: .* via jump"):
        remote.run("true")
    remote.close()
