"""The fixed registration address in K3s's config.yaml, the kube-vip manifest and how its image travels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.k3s import endpoint_warning, join_address, render_config
from mlopskit.hosts.kube_vip import (
    check_image_here,
    containerd_name,
    delivered_over_ssh,
    image_registry,
    render_manifest,
)
from mlopskit.hosts.remote import Remote
from mlopskit.settings import Host, Settings
from tests.unit.conftest import Project, private_key_text

MakeSettings = Callable[..., Settings]

THREE_SERVERS = """
hosts:
  - {name: s1, address: 10.0.0.1, roles: [server]}
  - {name: s2, address: 10.0.0.2, roles: [server]}
  - {name: s3, address: 10.0.0.3, roles: [server]}
  - {name: w1, address: 10.0.0.4, roles: [agent]}
"""
VIP = "vip: {address: 10.0.0.50, interface: eth1}\n"


def config_of(settings: Settings, name: str) -> dict[str, object]:
    host = next(h for h in settings.cluster.hosts if h.name == name)
    data = yaml.safe_load(render_config(settings, host, "tok"))
    assert isinstance(data, dict)
    return data


def test_api_endpoint_leads_every_servers_tls_san(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="api_endpoint: k3s.example.test\ntls_san: [extra.test]\n" + THREE_SERVERS)
    assert config_of(settings, "s1")["tls-san"] == ["k3s.example.test", "10.0.0.1", "extra.test"]
    assert config_of(settings, "s3")["tls-san"] == ["k3s.example.test", "10.0.0.1", "10.0.0.3", "extra.test"]


def test_further_servers_and_agents_join_through_the_api_endpoint(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="api_endpoint: k3s.example.test\napi_port: 7443\n" + THREE_SERVERS)
    assert "server" not in config_of(settings, "s1")
    for name in ("s2", "s3", "w1"):
        assert config_of(settings, name)["server"] == "https://k3s.example.test:7443"


def test_with_a_vip_the_vip_is_in_tls_san_and_the_join_address(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=VIP + THREE_SERVERS)
    assert config_of(settings, "s2")["tls-san"] == ["10.0.0.50", "10.0.0.1", "10.0.0.2"]
    assert config_of(settings, "w1")["server"] == "https://10.0.0.50:6443"
    assert "tls-san" not in config_of(settings, "w1")


def test_a_dns_name_for_the_vip_joins_by_name_and_certifies_both(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="api_endpoint: k3s.example.test\n" + VIP + THREE_SERVERS)
    assert config_of(settings, "s1")["tls-san"] == ["k3s.example.test", "10.0.0.50", "10.0.0.1"]
    assert config_of(settings, "w1")["server"] == "https://k3s.example.test:6443"


def test_an_ipv6_vip_is_bracketed_in_the_join_url(make_settings: MakeSettings) -> None:
    inventory = 'vip: {address: "fd00::50", interface: eth0}\n' + THREE_SERVERS
    assert config_of(make_settings(inventory=inventory), "w1")["server"] == "https://[fd00::50]:6443"


def test_without_an_endpoint_nodes_join_the_first_server(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=THREE_SERVERS)
    assert join_address(settings) == "10.0.0.1"
    assert config_of(settings, "w1")["server"] == "https://10.0.0.1:6443"


def test_three_servers_without_an_endpoint_are_warned_about(make_settings: MakeSettings) -> None:
    warning = endpoint_warning(make_settings(inventory=THREE_SERVERS))
    assert warning is not None
    assert warning.startswith("3 servers but no cluster.api_endpoint or cluster.vip: agents, further servers and the")
    assert "use s1's address (10.0.0.1), so losing s1 cuts them off" in warning


@pytest.mark.parametrize(
    "inventory",
    [
        VIP + THREE_SERVERS,
        "api_endpoint: k3s.example.test\n" + THREE_SERVERS,
        "hosts: [{name: s1, address: 10.0.0.1, roles: [server]}]",
    ],
    ids=["vip", "api-endpoint", "one-server"],
)
def test_no_warning_with_an_endpoint_or_fewer_than_three_servers(make_settings: MakeSettings, inventory: str) -> None:
    assert endpoint_warning(make_settings(inventory=inventory)) is None


def test_dry_run_warns_about_three_servers_without_an_endpoint(project: Project) -> None:
    key = project.write("keys/id_ed25519", private_key_text())
    project.write("config/inventory.yaml", f"ssh: {{key_path: {key}}}\n" + THREE_SERVERS)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "3 servers but no cluster.api_endpoint or cluster.vip" in " ".join(result.stderr.split())
    assert "nodes join and the kubeconfig reaches the API at 10.0.0.1" in result.stdout


# ---------------------------------------------------------------------------------------- kube-vip


def test_kube_vip_manifest_runs_control_plane_arp_with_leader_election(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=VIP + "api_port: 7443\n" + THREE_SERVERS)
    assert settings.cluster.vip is not None
    pod = yaml.safe_load(render_manifest(settings.cluster.vip, settings.cluster.api_port))
    [container] = pod["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env == {
        "vip_nodename": None,  # from the pod's spec.nodeName
        "vip_arp": "true",
        "port": "7443",
        "vip_interface": "eth1",
        "vip_subnet": "32",
        "cp_enable": "true",
        "cp_namespace": "kube-system",
        "svc_enable": "false",
        "vip_leaderelection": "true",
        "vip_leasename": "plndr-cp-lock",
        "vip_leaseduration": "5",
        "vip_renewdeadline": "3",
        "vip_retryperiod": "1",
        "address": "10.0.0.50",
    }
    assert container["image"] == settings.cluster.vip.image
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["volumes"] == [
        {"name": "kubeconfig", "hostPath": {"path": "/etc/rancher/k3s/k3s.yaml", "type": "File"}}
    ]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/kubernetes/admin.conf"


def test_an_ipv6_vip_is_a_128_bit_subnet(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory='vip: {address: "fd00::50", interface: eth0}\n' + THREE_SERVERS)
    assert settings.cluster.vip is not None
    pod = yaml.safe_load(render_manifest(settings.cluster.vip, 6443))
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    assert env["vip_subnet"] == "128"


@pytest.mark.parametrize(
    ("image", "registry", "name"),
    [
        ("ghcr.io/kube-vip/kube-vip:v1.0.4", "ghcr.io", "ghcr.io/kube-vip/kube-vip:v1.0.4"),
        ("plndr/kube-vip:0.3", "docker.io", "docker.io/plndr/kube-vip:0.3"),
        ("busybox:1", "docker.io", "docker.io/library/busybox:1"),
        ("registry.local:5000/vip:1", "registry.local:5000", "registry.local:5000/vip:1"),
    ],
)
def test_image_registry_and_containerd_name(image: str, registry: str, name: str) -> None:
    assert (image_registry(image), containerd_name(image)) == (registry, name)


@pytest.mark.parametrize(
    ("platform", "inventory", "delivered"),
    [
        ("", VIP, False),
        ("images: {source: offline}\n", VIP, True),
        ("", VIP + "airgap: {enabled: true}\n", True),
        (
            "images: {source: offline}\n",
            VIP + "registries: {mirrors: {ghcr.io: {endpoint: [https://m.test]}}}\n",
            False,
        ),
        ("images: {source: offline}\n", VIP + "registries: {mirrors: {'*': {endpoint: [https://m.test]}}}\n", False),
        (
            "images: {source: offline}\n",
            VIP + "registries: {mirrors: {docker.io: {endpoint: [https://m.test]}}}\n",
            True,
        ),
        ("images: {source: offline}\n", "", False),
    ],
    ids=["registry", "offline", "airgap", "mirrored", "mirror-all", "other-mirror", "no-vip"],
)
def test_the_image_goes_over_ssh_only_without_a_registry_or_mirror(
    make_settings: MakeSettings, platform: str, inventory: str, delivered: bool
) -> None:
    assert delivered_over_ssh(make_settings(platform=platform, inventory=inventory + THREE_SERVERS)) is delivered


def test_an_image_to_deliver_that_is_not_here_is_refused_saying_how_to_get_it(make_settings: MakeSettings) -> None:
    settings = make_settings(platform="images: {source: offline}\n", inventory=VIP + THREE_SERVERS)
    with pytest.raises(PlatformError) as refused:
        check_image_here(settings, lambda image: False)
    message = str(refused.value)
    assert message.startswith("cluster.vip.image [from default]: ghcr.io/kube-vip/kube-vip:")
    assert "must reach the servers over SSH (images.source is offline and no registry mirror serves ghcr.io)" in message
    assert "add a mirror for ghcr.io under cluster.registries.mirrors" in message
    check_image_here(settings, lambda image: True)  # here: nothing to say


def test_provision_refuses_a_missing_kube_vip_image_before_any_host(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    settings = make_settings(
        platform="images: {source: offline}\n", inventory=f"ssh: {{key_path: {key}}}\n" + VIP + THREE_SERVERS
    )

    def never(settings: Settings, host: Host) -> Remote:
        raise AssertionError("no host may be contacted")

    with pytest.raises(PlatformError, match=r"cluster\.vip\.image .* the local Docker engine does not have it"):
        runs.provision(settings, connector=never, image_present=lambda image: False)
