"""Air-gapped install, upgrade, reset and image import on real SSH hosts.

Hosts are sshd containers; the K3s install script and the k3s binary (with its kubectl) are stand-ins that
record their arguments (see conftest.py), because this machine cannot run K3s. Upgrade tests tell the
stand-in kubectl which nodes exist and how they are (/var/lib/standin/nodes), which pods a drain leaves
(pods.json) and whether a drain is blocked (drain-blocked).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlopskit.errors import PlatformError
from mlopskit.hosts.images import import_images, import_to_nodes
from mlopskit.hosts.provision import RunFailed, provision, reset, upgrade
from mlopskit.hosts.remote import connect
from mlopskit.images import save_images
from mlopskit.settings import Settings
from tests.integration.provision.conftest import HERE, STANDIN_INSTALL_URL, SUDO_PASSWORD, KeyPair, SshHost

pytestmark = pytest.mark.docker

MakeSettings = Callable[..., Settings]
NEW_VERSION = "v1.35.0+k3s1"
OLD_VERSION = "v1.33.5+k3s1"


# The agent's own sudo password, from the .env key its inventory entry names.
AGT_ENV = f"AGT_SUDO_PASSWORD={SUDO_PASSWORD}\n"


def two_hosts(server: SshHost, agent: SshHost, key: KeyPair, extra: str = "") -> str:
    return f"""
ssh: {{user: kit, key_path: {key.private}, connect_timeout: 5}}
install_script_url: {STANDIN_INSTALL_URL}
{extra}
hosts:
  - {{name: srv, address: {server.address}, roles: [server]}}
  - {{name: agt, address: {agent.address}, roles: [agent], user: pw, sudo_password_env: AGT_SUDO_PASSWORD}}
"""


@pytest.fixture
def pair(start_host: Callable[[str], SshHost]) -> tuple[SshHost, SshHost]:
    return start_host("srv"), start_host("agt")


@pytest.fixture
def airgap_files(tmp_path: Path) -> dict[str, Path]:
    images = tmp_path / "k3s-airgap-images-amd64.tar.zst"
    images.write_bytes(os.urandom(256 * 1024))
    return {
        "k3s_binary": HERE / "sshd/standin-k3s",
        "images_tarball": images,
        "install_script": HERE / "sshd/standin-install.sh",
    }


def test_airgap_uploads_files_and_installs_without_download(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, airgap_files: dict[str, Path], make_settings: MakeSettings
) -> None:
    server, agent = pair
    airgap = "airgap: {enabled: true, " + ", ".join(f"{k}: {v}" for k, v in airgap_files.items()) + "}"
    report = provision(make_settings(two_hosts(server, agent, ssh_key, airgap), env_file=AGT_ENV))
    assert report.cells["agt"]["k3s-agent"] == "changed"
    for host in (server, agent):
        assert host.sh("stat -c %a /usr/local/bin/k3s")[1].strip() == "755"
        assert host.read("/usr/local/bin/k3s") == (HERE / "sshd/standin-k3s").read_text()
        digest = host.sh("sha256sum /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst")[1].split()[0]
        assert digest == hashlib.sha256(airgap_files["images_tarball"].read_bytes()).hexdigest()
        assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in host.log()


def test_airgap_rerun_uploads_nothing(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, airgap_files: dict[str, Path], make_settings: MakeSettings
) -> None:
    server, agent = pair
    airgap = "airgap: {enabled: true, " + ", ".join(f"{k}: {v}" for k, v in airgap_files.items()) + "}"
    settings = make_settings(two_hosts(server, agent, ssh_key, airgap), env_file=AGT_ENV)
    provision(settings)
    second = provision(settings)
    assert {status for row in second.cells.values() for status in row.values()} == {"unchanged"}


def nodes(server: SshHost, states: dict[str, str], version: str) -> None:
    """What the stand-in `kubectl get nodes` on the server answers from now on."""
    server.write(
        "/var/lib/standin/nodes", "".join(f"{name} {state} <none> 5m {version}\n" for name, state in states.items())
    )


def test_upgrade_rolls_version_and_waits_for_ready(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    nodes(server, {"srv": "Ready", "agt": "Ready"}, settings.cluster.k3s_version)
    report = upgrade(settings, NEW_VERSION, ready_timeout=10)
    assert report.cells == {"srv": {"pre-upgrade": "unchanged", "upgrade": "changed"}, "agt": {"upgrade": "changed"}}
    for host in (server, agent):
        assert f"install.sh {'server' if host is server else 'agent'} INSTALL_K3S_VERSION={NEW_VERSION}" in host.log()
    log = server.log()
    assert log.index("k3s kubectl get node srv") < log.index("k3s kubectl get node agt")


def test_a_single_server_has_no_etcd_to_snapshot_and_says_so(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    nodes(server, {"srv": "Ready", "agt": "Ready"}, settings.cluster.k3s_version)
    report = upgrade(settings, NEW_VERSION, ready_timeout=10)
    assert "etcd-snapshot" not in server.log()
    assert (
        "no etcd snapshot: a single server keeps its datastore in SQLite"
        in report.details[("srv", "pre-upgrade")].notes[0]
    )


def test_upgrade_is_refused_while_a_node_is_not_ready_and_changes_nothing(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    nodes(server, {"srv": "Ready", "agt": "NotReady"}, settings.cluster.k3s_version)
    with pytest.raises(RunFailed) as refused:
        upgrade(settings, NEW_VERSION, ready_timeout=10)
    assert "not every node is Ready (agt is NotReady)" in str(refused.value)
    assert refused.value.report.cells["agt"]["upgrade"] == "skipped"
    for host in (server, agent):
        assert NEW_VERSION not in host.log() and "cordon" not in host.log()


def test_a_blocked_drain_lists_the_pods_uncordons_and_replaces_nothing(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    nodes(server, {"srv": "Ready", "agt": "Ready"}, settings.cluster.k3s_version)
    pods = {
        "items": [
            pod("default", "web-0", "StatefulSet"),
            pod("kube-system", "svclb-x", "DaemonSet"),  # a drain leaves these: not a blocker
            pod("default", "bare", None),
        ]
    }
    server.write("/var/lib/standin/pods.json", json.dumps(pods))
    server.write(
        "/var/lib/standin/drain-blocked", 'error when evicting pods/"web-0" -n "default": global timeout reached'
    )
    with pytest.raises(RunFailed) as stopped:
        upgrade(settings, NEW_VERSION, ready_timeout=10, drain_timeout=1)
    message = str(stopped.value)
    blockers = "default/web-0 (StatefulSet), default/bare (no controller)"
    assert f"srv: drain did not finish within 1s; pods still on the node: {blockers}" in message
    assert "The node was uncordoned again; its K3s was not replaced" in message
    assert "global timeout reached" in message  # kubectl's own words, in the last output
    log = server.log()
    assert (
        log.index("k3s kubectl cordon srv") < log.index("k3s kubectl drain srv") < log.index("k3s kubectl uncordon srv")
    )
    assert server.read("/var/lib/standin/k3s-version").strip() == settings.cluster.k3s_version
    assert NEW_VERSION not in agent.log()


def pod(namespace: str, name: str, owner: str | None) -> dict[str, object]:
    owners = [{"kind": owner, "name": f"{name}-owner"}] if owner else []
    return {
        "metadata": {"namespace": namespace, "name": name, "ownerReferences": owners},
        "status": {"phase": "Running"},
    }


def test_no_drain_upgrades_without_cordon_or_drain(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    nodes(server, {"srv": "Ready", "agt": "Ready"}, settings.cluster.k3s_version)
    report = upgrade(settings, NEW_VERSION, ready_timeout=10, drain=False)
    assert report.cells["agt"]["upgrade"] == "changed"
    assert "cordon" not in server.log() and "drain" not in server.log()
    assert agent.read("/var/lib/standin/k3s-version").strip() == NEW_VERSION


def test_upgrade_to_an_older_release_is_refused_and_installs_nothing(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    with pytest.raises(PlatformError) as refused:
        upgrade(settings, OLD_VERSION, ready_timeout=10)
    assert f"srv: runs K3s {settings.cluster.k3s_version}, newer than {OLD_VERSION}" in str(refused.value)
    assert f"agt: runs K3s {settings.cluster.k3s_version}, newer than {OLD_VERSION}" in str(refused.value)
    for host in (server, agent):
        assert f"INSTALL_K3S_VERSION={OLD_VERSION}" not in host.log()
        assert host.read("/var/lib/standin/k3s-version").strip() == settings.cluster.k3s_version


def test_reset_runs_the_uninstall_scripts_and_then_is_unchanged(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    assert reset(settings).cells == {"srv": {"uninstall": "changed"}, "agt": {"uninstall": "changed"}}
    assert "k3s-agent-uninstall" in agent.log() and "k3s-uninstall" in server.log()
    assert reset(settings).cells == {"srv": {"uninstall": "unchanged"}, "agt": {"uninstall": "unchanged"}}


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield bytes((start // size) % 256 for _ in range(min(size, total - start)))


def test_image_import_streams_into_k3s_ctr_with_sudo_password(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    total = 3 * 1024 * 1024 + 17
    expected = hashlib.sha256(b"".join(chunks(total))).hexdigest()
    for host in settings.cluster.hosts:
        remote = connect(settings, host)
        import_images(remote.connection, chunks(total), remote.access.sudo_password)
        remote.close()
    for test_host in (server, agent):
        assert "k3s ctr images import -" in test_host.log()
        assert test_host.sh("sha256sum /var/lib/standin/imported.tar")[1].split()[0] == expected


def test_build_images_to_nodes_streams_a_docker_save_archive(
    pair: tuple[SshHost, SshHost], ssh_key: KeyPair, make_settings: MakeSettings
) -> None:
    """The real `docker save` of the local Debian base image, streamed to both nodes over SSH."""
    server, agent = pair
    settings = make_settings(two_hosts(server, agent, ssh_key), env_file=AGT_ENV)
    provision(settings)
    refs = ["mlopskit/debian:bookworm"]
    assert import_to_nodes(settings, lambda: save_images(refs)) == ["srv", "agt"]
    for host in (server, agent):
        code, listing = host.sh("tar -tf /var/lib/standin/imported.tar")
        assert code == 0 and "manifest.json" in listing.split()
