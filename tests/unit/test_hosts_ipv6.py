"""IPv6 hosts: every URL built from a host and a port brackets the address; the plan is the same as for IPv4."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlopskit.hosts.k3s import render_config
from mlopskit.hosts.kubeconfig import fetch_kubeconfig
from mlopskit.hosts.nfs import exports_line, nfs_clients
from mlopskit.hosts.provision import plan_rows, provision_phases
from mlopskit.hosts.remote import Remote, access_for
from mlopskit.local import mlflow_url
from mlopskit.settings import Host, Settings

from .conftest import Project, private_key_text
from .test_hosts_kubeconfig import k3s_kubeconfig

MakeSettings = Callable[..., Settings]

IPV6_HOSTS = """
hosts:
  - {name: s1, address: "fd00::10", roles: [server, nfs]}
  - {name: s2, address: "fd00::11", roles: [server]}
  - {name: s3, address: "fd00::12", roles: [server]}
  - {name: w1, address: "fd00::20", roles: [agent]}
"""


def config_of(settings: Settings, name: str) -> dict[str, object]:
    host = next(h for h in settings.cluster.hosts if h.name == name)
    data = yaml.safe_load(render_config(settings, host, "tok"))
    assert isinstance(data, dict)
    return data


def test_agent_joins_an_ipv6_server_through_a_bracketed_url(make_settings: MakeSettings) -> None:
    assert config_of(make_settings(inventory=IPV6_HOSTS), "w1")["server"] == "https://[fd00::10]:6443"


def test_joining_server_uses_a_bracketed_url_on_a_custom_port(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory="api_port: 7443\n" + IPV6_HOSTS)
    assert config_of(settings, "s2")["server"] == "https://[fd00::10]:7443"


def test_tls_san_lists_ipv6_addresses_bare(make_settings: MakeSettings) -> None:
    assert config_of(make_settings(inventory=IPV6_HOSTS), "s2")["tls-san"] == ["fd00::10", "fd00::11"]


def test_provision_plan_with_ipv6_hosts(make_settings: MakeSettings) -> None:
    rows = plan_rows(provision_phases(make_settings(inventory=IPV6_HOSTS)))
    assert [(order, host, step) for order, host, step, _ in rows] == [
        ("1 parallel", "s1", "prerequisites"),
        ("1 parallel", "s2", "prerequisites"),
        ("1 parallel", "s3", "prerequisites"),
        ("1 parallel", "w1", "prerequisites"),
        ("2", "s1", "nfs-server"),
        ("3", "s1", "k3s-server"),
        ("4", "s2", "k3s-server"),
        ("5", "s3", "k3s-server"),
        ("6", "w1", "k3s-agent"),
        ("7", "s1", "kubeconfig"),
    ]


def test_nfs_export_lists_ipv6_clients_bare(make_settings: MakeSettings) -> None:
    settings = make_settings(inventory=IPV6_HOSTS)
    line = exports_line("/srv/nfs/k8s", nfs_clients(settings))
    assert line.startswith("/srv/nfs/k8s fd00::10(rw,")


@dataclass
class KubeconfigHost:
    host: Host

    @property
    def name(self) -> str:
        return self.host.name

    def read(self, path: str) -> str:
        return yaml.safe_dump(k3s_kubeconfig())


def test_kubeconfig_from_an_ipv6_server_points_at_a_bracketed_url(make_settings: MakeSettings, tmp_path: Path) -> None:
    target = tmp_path / "kube.yaml"
    settings = make_settings(inventory=IPV6_HOSTS, environ={"KUBECONFIG_PATH": str(target)})
    remote = KubeconfigHost(settings.cluster.hosts[0])
    fetch_kubeconfig(remote, settings)  # type: ignore[arg-type]
    saved = yaml.safe_load(target.read_text())
    assert saved["clusters"][0]["cluster"]["server"] == "https://[fd00::10]:6443"


def test_local_url_on_an_ipv6_bind_is_bracketed(make_settings: MakeSettings) -> None:
    assert mlflow_url(make_settings(platform="local:\n  bind: '::1'\n")) == "http://[::1]:5000"


def test_cli_provision_dry_run_plans_ipv6_hosts(project: Project) -> None:
    key = project.write("keys/id_ed25519", private_key_text())
    project.write("config/inventory.yaml", f"ssh: {{key_path: {key}}}\n" + IPV6_HOSTS)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "k3s-agent" in result.stdout and "dry run: no host was touched" in result.stdout


def test_ssh_connection_to_an_ipv6_host_keeps_the_whole_address(make_settings: MakeSettings, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    settings = make_settings(inventory=f"ssh: {{key_path: {key}, port: 2222}}\n" + IPV6_HOSTS)
    host = settings.cluster.hosts[0]
    remote = Remote(host, access_for(settings, host))
    assert (remote.connection.host, remote.connection.port) == ("fd00::10", 2222)
