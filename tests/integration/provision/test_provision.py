"""`provision` against three real SSH hosts: a server that also serves NFS, and two agents.

The hosts are containers (see conftest.py); exportfs, systemctl, the K3s install script and the k3s binary
are stand-ins that record their arguments, because this machine can run neither an NFS server nor K3s.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlopskit.hosts.provision import RunReport, provision
from mlopskit.settings import Settings, load_settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, SUDO_PASSWORD, KeyPair, SshHost

pytestmark = pytest.mark.docker


@dataclass
class Cluster:
    settings: Settings
    server: SshHost
    agent_pw: SshHost
    agent_kit: SshHost
    merged_kubeconfig: Path
    first: RunReport

    def run(self) -> RunReport:
        return provision(self.settings, merge_into=self.merged_kubeconfig)


def inventory(server: SshHost, agent_pw: SshHost, agent_kit: SshHost, key: KeyPair, kubeconfig: Path) -> str:
    return f"""
ssh: {{user: kit, key_path: {key.private}, connect_timeout: 5}}
install_script_url: {STANDIN_INSTALL_URL}
kubeconfig: {kubeconfig}
context: lab
tls_san: [k3s.example.test]
hosts:
  - {{name: s1, address: {server.address}, roles: [server, nfs], labels: {{tier: control}}}}
  - name: a1
    address: {agent_pw.address}
    roles: [agent]
    user: pw
    sudo_password_env: A1_SUDO_PASSWORD
    taints: ["gpu=true:NoSchedule"]
  - {{name: a2, address: {agent_kit.address}, roles: [agent]}}
"""


@pytest.fixture(scope="module")
def cluster(
    start_host: Callable[[str], SshHost], ssh_key: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> Cluster:
    root = tmp_path_factory.mktemp("project")
    (root / "config").mkdir()
    server, agent_pw, agent_kit = start_host("s1"), start_host("a1"), start_host("a2")
    kubeconfig = root / "out/lab.yaml"
    (root / "config/inventory.yaml").write_text(inventory(server, agent_pw, agent_kit, ssh_key, kubeconfig))
    (root / "config/platform.yaml").write_text("platform: {storage: {kind: nfs, nfs_path: /srv/nfs/k8s}}\n")
    (root / ".env").write_text(f"A1_SUDO_PASSWORD={SUDO_PASSWORD}\n")
    merged = root / "home/.kube/config"
    merged.parent.mkdir(parents=True)
    other = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "other", "cluster": {"server": "https://other.test:6443"}}],
        "users": [{"name": "other", "user": {"token": "t"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
        "current-context": "other",
    }
    merged.write_text(yaml.safe_dump(other))
    settings = load_settings(root, {})
    first = provision(settings, merge_into=merged)
    return Cluster(settings, server, agent_pw, agent_kit, merged, first)


def test_first_run_changes_every_step_on_every_host(cluster: Cluster) -> None:
    assert cluster.first.cells == {
        "s1": {"prerequisites": "changed", "nfs-server": "changed", "k3s-server": "changed", "kubeconfig": "changed"},
        "a1": {"prerequisites": "changed", "k3s-agent": "changed"},
        "a2": {"prerequisites": "changed", "k3s-agent": "changed"},
    }


def test_prerequisites_installs_packages_with_apt(cluster: Cluster) -> None:
    for host in (cluster.server, cluster.agent_pw, cluster.agent_kit):
        code, output = host.sh("dpkg-query -W -f='${Status}' curl ca-certificates nfs-common")
        assert code == 0 and output.count("install ok installed") == 3, output


def test_prerequisites_writes_kernel_settings(cluster: Cluster) -> None:
    sysctl = cluster.agent_pw.read("/etc/sysctl.d/90-k3s.conf")
    assert "net.ipv4.ip_forward = 1" in sysctl and "net.bridge.bridge-nf-call-iptables = 1" in sysctl
    assert cluster.agent_pw.read("/etc/modules-load.d/k3s.conf").split() == ["br_netfilter", "overlay"]


def test_nfs_export_lists_every_host_with_options(cluster: Cluster) -> None:
    exports = cluster.server.read("/etc/exports")
    options = "(rw,sync,no_subtree_check,no_root_squash)"
    addresses = (cluster.server.address, cluster.agent_pw.address, cluster.agent_kit.address)
    assert f"/srv/nfs/k8s {' '.join(a + options for a in addresses)}\n" in exports
    assert "exportfs -ra" in cluster.server.log()


def test_nfs_export_directory_is_world_writable_and_owned_by_nobody(cluster: Cluster) -> None:
    assert cluster.server.sh("stat -c '%a %U %G' /srv/nfs/k8s")[1].strip() == "777 nobody nogroup"


def test_k3s_server_config_is_written_before_install_with_pinned_version(cluster: Cluster) -> None:
    config = yaml.safe_load(cluster.server.read("/etc/rancher/k3s/config.yaml"))
    assert config == {
        "node-name": "s1",
        "tls-san": [cluster.server.address, "k3s.example.test"],
        "node-label": ["tier=control"],
    }
    log = cluster.server.log()
    assert log.index("install.sh saw /etc/rancher/k3s/config.yaml") < log.index("install.sh server")
    assert f"INSTALL_K3S_VERSION={cluster.settings.cluster.k3s_version}" in log


def test_agents_join_with_the_token_read_from_the_first_server(cluster: Cluster) -> None:
    token = cluster.server.read("/var/lib/rancher/k3s/server/node-token").strip()
    for agent in (cluster.agent_pw, cluster.agent_kit):
        config = yaml.safe_load(agent.read("/etc/rancher/k3s/config.yaml"))
        assert config["token"] == token
        assert config["server"] == f"https://{cluster.server.address}:6443"
        assert "install.sh agent" in agent.log()
    assert yaml.safe_load(cluster.agent_pw.read("/etc/rancher/k3s/config.yaml"))["node-taint"] == [
        "gpu=true:NoSchedule"
    ]


def test_agent_config_is_readable_by_root_only(cluster: Cluster) -> None:
    assert cluster.agent_kit.sh("stat -c '%a %U' /etc/rancher/k3s/config.yaml")[1].strip() == "600 root"


def test_kubeconfig_points_at_first_server_under_context_name(cluster: Cluster) -> None:
    path = cluster.settings.cluster.kubeconfig_path
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0] == {
        "name": "lab",
        "cluster": {"certificate-authority-data": "Q0E=", "server": f"https://{cluster.server.address}:6443"},
    }
    assert config["contexts"] == [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]
    assert config["current-context"] == "lab"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_kubeconfig_merge_keeps_other_contexts(cluster: Cluster) -> None:
    merged = yaml.safe_load(cluster.merged_kubeconfig.read_text())
    assert [c["name"] for c in merged["contexts"]] == ["other", "lab"]
    assert merged["current-context"] == "lab"


def test_second_run_reports_every_step_unchanged(cluster: Cluster) -> None:
    hosts = (cluster.server, cluster.agent_pw, cluster.agent_kit)
    before = [host.log() for host in hosts]
    second = cluster.run()
    assert {status for row in second.cells.values() for status in row.values()} == {"unchanged"}
    for host, log in zip(hosts, before, strict=True):
        assert "install.sh" not in host.log()[len(log) :]


def test_further_servers_join_embedded_etcd_with_the_first_servers_token(
    start_host: Callable[[str], SshHost], ssh_key: KeyPair, make_settings: Callable[..., Settings]
) -> None:
    servers = [start_host(f"ha{i}") for i in (1, 2, 3)]
    hosts = "\n".join(
        f"  - {{name: ha{i}, address: {h.address}, roles: [server]}}" for i, h in enumerate(servers, start=1)
    )
    settings = make_settings(
        f"ssh: {{user: kit, key_path: {ssh_key.private}}}\ninstall_script_url: {STANDIN_INSTALL_URL}\nhosts:\n{hosts}\n"
    )
    report = provision(settings)
    assert {row["k3s-server"] for row in report.cells.values()} == {"changed"}
    first = yaml.safe_load(servers[0].read("/etc/rancher/k3s/config.yaml"))
    assert first["cluster-init"] is True and "server" not in first
    token = servers[0].read("/var/lib/rancher/k3s/server/node-token").strip()
    for joiner in servers[1:]:
        config = yaml.safe_load(joiner.read("/etc/rancher/k3s/config.yaml"))
        assert config["server"] == f"https://{servers[0].address}:6443"
        assert config["token"] == token
        assert "install.sh server" in joiner.log()
