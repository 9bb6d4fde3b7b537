"""Registry mirrors over real SSH: /etc/rancher/k3s/registries.yaml on every node, restarts one node at a time.

The hosts are sshd containers (see conftest.py). Stand-ins, because this machine cannot run K3s or systemd:
the K3s install script, the k3s binary (its kubectl answers that a node is Ready) and systemctl, whose
restarts last a moment and are stamped at their start and end, so overlapping restarts would show.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlopskit.hosts.provision import provision
from mlopskit.hosts.registries import REGISTRIES_FILE, node_tls_path
from mlopskit.settings import Settings, load_settings
from tests.integration.provision.conftest import STANDIN_INSTALL_URL, KeyPair, SshHost, StartHost, timeline

pytestmark = pytest.mark.docker

MIRROR = "mirror.example.test:5000"
PASSWORD = "mirror-Pass-from-dotenv-81"


def inventory(key: KeyPair, hosts: list[SshHost], ca: Path, endpoints: list[str] | None) -> str:
    roles = ["server", "agent", "agent"]
    listed = "".join(
        f"  - {{name: {host.name}, address: {host.address}, roles: [{role}]}}\n"
        for host, role in zip(hosts, roles, strict=True)
    )
    registries = ""
    if endpoints is not None:
        registries = f"""registries:
  mirrors:
    docker.io:
      endpoint: [{", ".join(endpoints)}]
  configs:
    {MIRROR}:
      auth: {{username: puller, password_env: MIRROR_PASSWORD}}
      tls: {{ca_file: {ca}}}
"""
    return f"""ssh: {{user: kit, key_path: {key.private}, connect_timeout: 5}}
install_script_url: {STANDIN_INSTALL_URL}
{registries}hosts:
{listed}"""


@dataclass
class Mirrored:
    root: Path
    key: KeyPair
    hosts: list[SshHost]
    ca: Path

    def settings(self, endpoints: list[str] | None) -> Settings:
        (self.root / "config/inventory.yaml").write_text(inventory(self.key, self.hosts, self.ca, endpoints))
        # A .env key nothing names is an error: the password goes with the registry settings.
        (self.root / ".env").write_text("" if endpoints is None else f"MIRROR_PASSWORD={PASSWORD}\n")
        return load_settings(
            self.root,
            {"SSH_CONFIG_PATH": str(self.root / "empty-ssh-config"), "KUBECONFIG_PATH": str(self.root / "kc.yaml")},
        )


@pytest.fixture(scope="module")
def mirrored(start_host: StartHost, ssh_key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Mirrored:
    root = tmp_path_factory.mktemp("registries")
    (root / "config").mkdir()
    (root / "empty-ssh-config").write_text("")
    ca = root / "mirror-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nstand-in CA for the test mirror\n-----END CERTIFICATE-----\n")
    hosts = [start_host("reg-s1"), start_host("reg-a1"), start_host("reg-a2")]
    state = Mirrored(root, ssh_key, hosts, ca)
    provision(state.settings([f"https://{MIRROR}"]))
    return state


def restarts(hosts: list[SshHost], since: float) -> list[tuple[float, float, str]]:
    """(start, end, host) of every K3s restart after `since`, in the order they began."""
    begun: dict[str, float] = {}
    spans = []
    for stamp, host, event in timeline(*hosts):
        if stamp <= since:
            continue
        if event.startswith("restart-begin"):
            begun[host] = stamp
        elif event.startswith("restart-end"):
            spans.append((begun.pop(host), stamp, host))
    return sorted(spans)


def last_stamp(hosts: list[SshHost]) -> float:
    return max(stamp for stamp, _, _ in timeline(*hosts))


def test_registries_yaml_on_every_node_holds_mirror_auth_from_env_and_tls(mirrored: Mirrored) -> None:
    for host in mirrored.hosts:
        assert yaml.safe_load(host.read(REGISTRIES_FILE)) == {
            "mirrors": {"docker.io": {"endpoint": [f"https://{MIRROR}"]}},
            "configs": {
                MIRROR: {
                    "auth": {"username": "puller", "password": PASSWORD},
                    "tls": {"ca_file": node_tls_path(MIRROR, "ca_file")},
                }
            },
        }
        assert host.sh(f"stat -c '%a %U' {REGISTRIES_FILE}")[1].strip() == "600 root"
        assert host.read(node_tls_path(MIRROR, "ca_file")) == mirrored.ca.read_text()


def test_registries_yaml_is_there_before_k3s_installs(mirrored: Mirrored) -> None:
    # The install script stand-in notes the files it finds when it runs.
    for host, role in zip(mirrored.hosts, ["server", "agent", "agent"], strict=True):
        log = host.log()
        assert log.index(f"install.sh saw {REGISTRIES_FILE}") < log.index(f"install.sh {role} ")


def test_first_install_restarts_nothing(mirrored: Mirrored) -> None:
    assert restarts(mirrored.hosts, since=0) == []


def test_unchanged_registries_leave_every_node_untouched(mirrored: Mirrored) -> None:
    since = last_stamp(mirrored.hosts)
    report = provision(mirrored.settings([f"https://{MIRROR}"]))
    assert {status for row in report.cells.values() for status in row.values()} == {"unchanged"}
    assert restarts(mirrored.hosts, since) == []


def test_a_changed_mirror_restarts_k3s_on_each_node_once_one_node_at_a_time(
    mirrored: Mirrored, capsys: pytest.CaptureFixture[str]
) -> None:
    since = last_stamp(mirrored.hosts)
    report = provision(mirrored.settings([f"https://{MIRROR}", "https://backup-mirror.example.test"]))
    assert report.cells["reg-s1"]["k3s-server"] == "changed"
    assert report.cells["reg-a1"]["k3s-agent"] == report.cells["reg-a2"]["k3s-agent"] == "changed"
    spans = restarts(mirrored.hosts, since)
    assert sorted(host for _, _, host in spans) == ["reg-a1", "reg-a2", "reg-s1"]
    for (_, end, host), (start, _, _) in itertools.pairwise(spans):
        assert end < start, f"{host}'s restart had not ended when the next began: {spans}"
    # Each node is Ready again (asked on the first server) before the next restart begins.
    checks = [(stamp, event) for stamp, host, event in timeline(*mirrored.hosts) if host == "reg-s1" and stamp > since]
    for (_, end, host), (start, _, _) in zip(spans, [*spans[1:], (float("inf"), 0.0, "")], strict=True):
        assert any(end < stamp < start and f"kubectl get node {host} " in event for stamp, event in checks), host
    for node in mirrored.hosts:
        assert "https://backup-mirror.example.test" in node.read(REGISTRIES_FILE)
    said = capsys.readouterr().out
    assert f"reg-a1: restarting k3s-agent because {REGISTRIES_FILE} changed (one node at a time)" in said


def test_removing_the_registries_removes_the_file_and_restarts(mirrored: Mirrored) -> None:
    since = last_stamp(mirrored.hosts)
    provision(mirrored.settings(None))
    for host in mirrored.hosts:
        assert host.sh(f"test -e {REGISTRIES_FILE}")[0] != 0
    assert sorted(host for _, _, host in restarts(mirrored.hosts, since)) == ["reg-a1", "reg-a2", "reg-s1"]
