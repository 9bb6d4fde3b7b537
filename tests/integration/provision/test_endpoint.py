"""A fixed registration address over real SSH: cluster.api_endpoint (a DNS name) and cluster.vip (kube-vip).

The hosts are sshd containers (see conftest.py). Stand-ins: the K3s install script and the k3s binary (its
`kubectl` answers the endpoint's /readyz, its `ctr` records imported image names), because this machine
cannot run K3s; and the kube-vip image, a few bytes built from scratch, because ghcr.io is out of reach.
Everything else is real: SSH, sudo, the files written, the `docker save` stream of the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import yaml

from mlopskit.hosts.kube_vip import MANIFEST
from mlopskit.hosts.provision import RunReport, provision
from mlopskit.settings import Settings, load_settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, KeyPair, SshHost, StartHost, timeline

pytestmark = pytest.mark.docker

MakeSettings = Callable[..., Settings]
ENDPOINT = "k3s-api.example.test"
VIP = "192.0.2.10"  # TEST-NET-1: never a real machine; only the stand-in kubectl "answers" on it
CONFIG = "/etc/rancher/k3s/config.yaml"


def config_of(host: SshHost) -> dict[str, object]:
    data = yaml.safe_load(host.read(CONFIG))
    assert isinstance(data, dict)
    return data


def ssh_section(key: KeyPair) -> str:
    return (
        f"ssh: {{user: kit, key_path: {key.private}, connect_timeout: 5}}\ninstall_script_url: {STANDIN_INSTALL_URL}\n"
    )


# ----------------------------------------------------------------------------------- api_endpoint


@dataclass
class EndpointCluster:
    settings: Settings
    server: SshHost
    agent: SshHost
    report: RunReport


@pytest.fixture(scope="module")
def endpoint_cluster(
    start_host: StartHost, ssh_key: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> EndpointCluster:
    root = tmp_path_factory.mktemp("endpoint")
    (root / "config").mkdir()
    server, agent = start_host("ep-s1"), start_host("ep-a1")
    (root / "config/inventory.yaml").write_text(
        ssh_section(ssh_key) + f"api_endpoint: {ENDPOINT}\nkubeconfig: {root / 'kubeconfig.yaml'}\nhosts:\n"
        f"  - {{name: ep-s1, address: {server.address}, roles: [server]}}\n"
        f"  - {{name: ep-a1, address: {agent.address}, roles: [agent]}}\n"
    )
    (root / "empty-ssh-config").write_text("")
    settings = load_settings(root, {"SSH_CONFIG_PATH": str(root / "empty-ssh-config")})
    return EndpointCluster(settings, server, agent, provision(settings))


def test_api_endpoint_is_the_first_name_in_the_servers_certificate(endpoint_cluster: EndpointCluster) -> None:
    assert config_of(endpoint_cluster.server)["tls-san"] == [ENDPOINT, endpoint_cluster.server.address]


def test_agents_join_through_the_api_endpoint(endpoint_cluster: EndpointCluster) -> None:
    assert config_of(endpoint_cluster.agent)["server"] == f"https://{ENDPOINT}:6443"


def test_the_endpoint_answers_before_the_first_node_joins_through_it(endpoint_cluster: EndpointCluster) -> None:
    events = [(host, event) for _, host, event in timeline(endpoint_cluster.server, endpoint_cluster.agent)]
    probe = ("ep-s1", f"k3s kubectl --server https://{ENDPOINT}:6443 --request-timeout=5s get --raw=/readyz")
    assert probe in events
    assert events.index(probe) < events.index(
        ("ep-a1", f"install.sh agent {endpoint_cluster.settings.cluster.k3s_version}")
    )


def test_kubeconfig_reaches_the_api_endpoint(endpoint_cluster: EndpointCluster) -> None:
    kubeconfig = yaml.safe_load(endpoint_cluster.settings.cluster.kubeconfig_path.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{ENDPOINT}:6443"


def test_without_a_vip_no_kube_vip_manifest_is_written(endpoint_cluster: EndpointCluster) -> None:
    for host in (endpoint_cluster.server, endpoint_cluster.agent):
        assert host.sh(f"test -e {MANIFEST}")[0] != 0


# -------------------------------------------------------------------------------------------- VIP


@dataclass
class VipCluster:
    settings: Settings
    servers: list[SshHost]
    agent: SshHost
    report: RunReport


@pytest.fixture(scope="module")
def vip_cluster(
    start_host: StartHost, ssh_key: KeyPair, kube_vip_image: str, tmp_path_factory: pytest.TempPathFactory
) -> VipCluster:
    """Three servers and an agent with cluster.vip; images.source offline, so the image goes over SSH."""
    root = tmp_path_factory.mktemp("vip")
    (root / "config").mkdir()
    servers = [start_host(f"vip-s{i}") for i in (1, 2, 3)]
    agent = start_host("vip-a1")
    hosts = "".join(
        f"  - {{name: vip-s{i}, address: {host.address}, roles: [server]}}\n" for i, host in enumerate(servers, 1)
    )
    (root / "config/inventory.yaml").write_text(
        ssh_section(ssh_key)
        + f"vip: {{address: {VIP}, interface: eth0, image: {kube_vip_image}}}\n"
        + f"kubeconfig: {root / 'kubeconfig.yaml'}\nhosts:\n{hosts}"
        + f"  - {{name: vip-a1, address: {agent.address}, roles: [agent]}}\n"
    )
    (root / "config/platform.yaml").write_text("images: {source: offline}\n")
    (root / "empty-ssh-config").write_text("")
    settings = load_settings(root, {"SSH_CONFIG_PATH": str(root / "empty-ssh-config")})
    return VipCluster(settings, servers, agent, provision(settings))


def test_vip_is_in_every_servers_certificate(vip_cluster: VipCluster) -> None:
    first = vip_cluster.servers[0].address
    for server in vip_cluster.servers:
        assert config_of(server)["tls-san"] == list(dict.fromkeys([VIP, first, server.address]))


def test_further_servers_and_agents_join_through_the_vip(vip_cluster: VipCluster) -> None:
    assert "server" not in config_of(vip_cluster.servers[0])
    for host in (*vip_cluster.servers[1:], vip_cluster.agent):
        assert config_of(host)["server"] == f"https://{VIP}:6443"


def test_kube_vip_manifest_is_on_every_server_and_on_no_agent(vip_cluster: VipCluster, kube_vip_image: str) -> None:
    for server in vip_cluster.servers:
        pod = yaml.safe_load(server.read(MANIFEST))
        [container] = pod["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert (pod["kind"], pod["metadata"]["namespace"], pod["spec"]["hostNetwork"]) == ("Pod", "kube-system", True)
        assert container["image"] == kube_vip_image
        assert (env["address"], env["vip_interface"], env["vip_arp"], env["cp_enable"]) == (VIP, "eth0", "true", "true")
        assert env["vip_leaderelection"] == "true" and env["port"] == "6443"
        assert server.sh(f"stat -c '%a %U' {MANIFEST}")[1].strip() == "600 root"
    assert vip_cluster.agent.sh(f"test -e {MANIFEST}")[0] != 0


def test_kube_vip_image_is_streamed_into_each_servers_containerd_only(
    vip_cluster: VipCluster, kube_vip_image: str
) -> None:
    for server in vip_cluster.servers:
        assert server.read("/var/lib/standin/images").split() == [f"docker.io/{kube_vip_image}"]
    assert vip_cluster.agent.sh("test -e /var/lib/standin/images")[0] != 0


def test_second_servers_join_waits_for_the_vip_to_answer(vip_cluster: VipCluster) -> None:
    events = [(host, event) for _, host, event in timeline(*vip_cluster.servers)]
    version = vip_cluster.settings.cluster.k3s_version
    imported = events.index(("vip-s1", "k3s ctr images import -"))
    probe = events.index(("vip-s1", f"k3s kubectl --server https://{VIP}:6443 --request-timeout=5s get --raw=/readyz"))
    assert imported < probe < events.index(("vip-s2", f"install.sh server {version}"))


def test_kubeconfig_reaches_the_vip(vip_cluster: VipCluster) -> None:
    kubeconfig = yaml.safe_load(vip_cluster.settings.cluster.kubeconfig_path.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443"


def test_rerun_with_a_vip_changes_nothing_and_imports_nothing(vip_cluster: VipCluster) -> None:
    before = [len(host.timeline()) for host in vip_cluster.servers]
    second = provision(vip_cluster.settings)
    assert {status for row in second.cells.values() for status in row.values()} == {"unchanged"}
    for host, count in zip(vip_cluster.servers, before, strict=True):
        later = [event for _, _, event in host.timeline()[count:]]
        assert not any("images import" in event or "install.sh" in event or "restart" in event for event in later)
