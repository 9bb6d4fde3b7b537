"""`upgrade` of an HA cluster (three servers with embedded etcd, one agent) over real SSH: the order of things.

The hosts are sshd containers (see conftest.py). Stand-ins, because this machine cannot run K3s: the install
script and the k3s binary, whose kubectl (cordon, drain, uncordon, get nodes) and etcd-snapshot record each
call with a timestamp; the order below is read from those records across all hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlopskit.hosts.k3s import SNAPSHOT_DIR
from mlopskit.hosts.provision import provision, upgrade
from mlopskit.settings import Settings, load_settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, KeyPair, SshHost, StartHost, timeline

pytestmark = pytest.mark.docker

NEW_VERSION = "v1.35.0+k3s1"


@dataclass
class HaCluster:
    settings: Settings
    hosts: list[SshHost]  # three servers, then the agent


@pytest.fixture(scope="module")
def ha(start_host: StartHost, ssh_key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> HaCluster:
    root = tmp_path_factory.mktemp("ha-upgrade")
    (root / "config").mkdir()
    hosts = [start_host("up-s1"), start_host("up-s2"), start_host("up-s3"), start_host("up-a1")]
    roles = ["server", "server", "server", "agent"]
    listed = "".join(
        f"  - {{name: {host.name}, address: {host.address}, roles: [{role}]}}\n"
        for host, role in zip(hosts, roles, strict=True)
    )
    (root / "config/inventory.yaml").write_text(
        f"ssh: {{user: kit, key_path: {ssh_key.private}, connect_timeout: 5}}\n"
        f"install_script_url: {STANDIN_INSTALL_URL}\nkubeconfig: {root / 'kc.yaml'}\nhosts:\n{listed}"
    )
    (root / "empty-ssh-config").write_text("")
    settings = load_settings(root, {"SSH_CONFIG_PATH": str(root / "empty-ssh-config")})
    provision(settings)
    version = settings.cluster.k3s_version
    hosts[0].write("/var/lib/standin/nodes", "".join(f"{h.name} Ready <none> 9m {version}\n" for h in hosts))
    return HaCluster(settings, hosts)


def test_snapshot_then_each_node_cordoned_drained_replaced_ready_and_uncordoned_in_turn(ha: HaCluster) -> None:
    old = ha.settings.cluster.k3s_version
    start = max(stamp for stamp, _, _ in timeline(*ha.hosts))
    report = upgrade(ha.settings, NEW_VERSION, ready_timeout=10, drain_timeout=120)
    assert report.changed
    snapshot = f"pre-upgrade-{old.replace('+', '-')}-to-{NEW_VERSION.replace('+', '-')}"
    expected = [("up-s1", "k3s kubectl get nodes --no-headers"), ("up-s1", f"k3s etcd-snapshot save --name {snapshot}")]
    for host in ha.hosts:
        role = "agent" if host.name == "up-a1" else "server"
        expected += [
            ("up-s1", f"k3s kubectl cordon {host.name}"),
            ("up-s1", f"k3s kubectl drain {host.name} --ignore-daemonsets --delete-emptydir-data --timeout=120s"),
            (host.name, f"install.sh {role} {NEW_VERSION}"),
            ("up-s1", f"k3s kubectl get node {host.name} --no-headers"),
            ("up-s1", f"k3s kubectl uncordon {host.name}"),
        ]
    happened = [
        (host, event) for stamp, host, event in timeline(*ha.hosts) if stamp > start and (host, event) in expected
    ]
    assert [step for index, step in enumerate(happened) if index == 0 or happened[index - 1] != step] == expected
    code, listing = ha.hosts[0].sh(f"ls {SNAPSHOT_DIR}")
    assert code == 0 and listing.startswith(f"{snapshot}-up-s1-")


def test_a_second_upgrade_to_the_same_version_snapshots_drains_and_installs_nothing(ha: HaCluster) -> None:
    upgrade(ha.settings, NEW_VERSION, ready_timeout=10)  # the first test's upgrade, when run alone
    start = max(stamp for stamp, _, _ in timeline(*ha.hosts))
    report = upgrade(ha.settings, NEW_VERSION, ready_timeout=10)
    assert not report.changed
    later = [event for stamp, _, event in timeline(*ha.hosts) if stamp > start]
    assert not any(word in event for event in later for word in ("etcd-snapshot", "cordon", "drain", "install.sh"))
