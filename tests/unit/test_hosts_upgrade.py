"""K3s only goes forward: a downgrade is refused before any host changes; a skipped minor version is a warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.k3s import check_all_ready, check_upgrade, pods_on, snapshot_name
from mlopskit.hosts.remote import HostError, Remote
from mlopskit.settings import Host, Settings

from .conftest import Project, private_key_text

MakeSettings = Callable[..., Settings]


def test_downgrade_is_refused_naming_host_and_both_versions() -> None:
    with pytest.raises(HostError) as caught:
        check_upgrade("s1", "v1.34.1+k3s1", "v1.33.5+k3s1")
    assert str(caught.value).startswith(
        "s1: runs K3s v1.34.1+k3s1, newer than v1.33.5+k3s1: K3s upgrades only go forward"
    )


def test_older_k3s_build_of_the_same_release_is_a_downgrade() -> None:
    with pytest.raises(HostError):
        check_upgrade("s1", "v1.34.1+k3s2", "v1.34.1+k3s1")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (None, "v1.34.1+k3s1"),
        ("v1.34.1+k3s1", "v1.34.1+k3s1"),
        ("v1.34.1+k3s1", "v1.34.2+k3s1"),
        ("v1.34.1+k3s1", "v1.34.1+k3s2"),
        ("v1.34.1+k3s1", "v1.35.0+k3s1"),
    ],
    ids=["not-installed", "same", "patch", "build", "next-minor"],
)
def test_forward_steps_pass_without_a_warning(current: str | None, target: str) -> None:
    assert check_upgrade("s1", current, target) is None


def test_skipping_a_minor_version_is_a_warning_naming_the_skipped_one() -> None:
    warning = check_upgrade("s1", "v1.32.3+k3s1", "v1.34.1+k3s1")
    assert warning is not None
    assert "v1.32.3+k3s1 → v1.34.1+k3s1 skips Kubernetes 1.33" in warning


@dataclass
class Answer:
    stdout: str
    ok: bool = True
    stderr: str = ""


@dataclass
class FakeRemote:
    """A host that reports a K3s version and records every command it is asked to run."""

    host: Host
    version: str
    commands: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.host.name

    def run(self, command: str, *, warn: bool = False) -> Answer:
        self.commands.append(command)
        return Answer(f"k3s version {self.version} (abc)\n")

    def sudo(self, command: str, *, warn: bool = False) -> Answer:
        self.commands.append(f"sudo {command}")
        return Answer("")

    def close(self) -> None:
        pass


@pytest.fixture
def cluster(make_settings: MakeSettings, tmp_path: Path) -> Settings:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    return make_settings(
        inventory=f"ssh: {{key_path: {key}}}\nhosts:\n"
        "  - {name: s1, address: 10.0.0.1, roles: [server]}\n"
        "  - {name: w1, address: 10.0.0.2, roles: [agent]}\n"
    )


def connector_for(versions: dict[str, str], remotes: dict[str, FakeRemote]) -> runs.Connector:
    def connect(settings: Settings, host: Host) -> Remote:
        remotes[host.name] = FakeRemote(host, versions[host.name])
        return remotes[host.name]  # type: ignore[return-value]

    return connect


def test_upgrade_to_an_older_release_changes_no_host(cluster: Settings) -> None:
    remotes: dict[str, FakeRemote] = {}
    connector = connector_for({"s1": "v1.34.1+k3s1", "w1": "v1.34.1+k3s1"}, remotes)
    with pytest.raises(PlatformError) as caught:
        runs.upgrade(cluster, "v1.33.5+k3s1", connector=connector)
    message = str(caught.value)
    assert "s1: runs K3s v1.34.1+k3s1, newer than v1.33.5+k3s1" in message
    assert "w1: runs K3s v1.34.1+k3s1, newer than v1.33.5+k3s1" in message
    assert "No host was changed." in message
    assert all(command.endswith("--version") for remote in remotes.values() for command in remote.commands)


def test_provision_with_an_older_pinned_version_changes_no_host(cluster: Settings) -> None:
    remotes: dict[str, FakeRemote] = {}
    connector = connector_for({"s1": "v1.35.0+k3s1", "w1": "v1.34.1+k3s1"}, remotes)
    with pytest.raises(PlatformError, match=r"s1: runs K3s v1.35.0\+k3s1, newer than v1.34.1\+k3s1"):
        runs.provision(cluster, connector=connector)
    assert all(command.endswith("--version") for remote in remotes.values() for command in remote.commands)


# ------------------------------------------------------------------------- snapshot, readiness, drain


def test_snapshot_name_holds_both_versions_in_allowed_characters() -> None:
    assert snapshot_name("v1.34.1+k3s1", "v1.35.0+k3s2") == "pre-upgrade-v1.34.1-k3s1-to-v1.35.0-k3s2"


@dataclass
class Answering:
    """A first server whose `k3s kubectl` answers with fixed output."""

    host: Host
    stdout: str
    commands: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.host.name

    def sudo(self, command: str, *, warn: bool = False) -> Answer:
        self.commands.append(command)
        return Answer(self.stdout)


def test_every_node_must_be_ready_before_an_upgrade(cluster: Settings) -> None:
    first = Answering(
        cluster.cluster.hosts[0], "s1 Ready control-plane 3d v1.34.1+k3s1\nw1 NotReady <none> 3d v1.34.1+k3s1\n"
    )
    with pytest.raises(HostError) as caught:
        check_all_ready(first, cluster)  # type: ignore[arg-type]
    assert "not every node is Ready (w1 is NotReady)" in str(caught.value)
    assert "Nothing was changed." in str(caught.value)


def test_an_inventory_host_that_is_no_node_stops_the_upgrade(cluster: Settings) -> None:
    first = Answering(cluster.cluster.hosts[0], "s1 Ready control-plane 3d v1.34.1+k3s1\n")
    with pytest.raises(HostError, match=r"w1 is not a node of the cluster"):
        check_all_ready(first, cluster)  # type: ignore[arg-type]


def test_a_cordoned_but_ready_node_counts_as_ready(cluster: Settings) -> None:
    first = Answering(
        cluster.cluster.hosts[0], "s1 Ready,SchedulingDisabled control-plane 3d v1\nw1 Ready <none> 3d v1\n"
    )
    check_all_ready(first, cluster)  # type: ignore[arg-type]


def test_pods_that_block_a_drain_are_listed_without_daemonset_static_or_finished_pods(cluster: Settings) -> None:
    def pod(name: str, owner: str | None, **extra: object) -> dict[str, object]:
        meta: dict[str, object] = {
            "namespace": "ns",
            "name": name,
            "ownerReferences": [{"kind": owner}] if owner else [],
        }
        meta.update(extra)
        return {"metadata": meta, "status": {"phase": "Running"}}

    items = [
        pod("web-0", "StatefulSet"),
        pod("agent-x", "DaemonSet"),
        pod("kube-vip-s1", "Node", annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("bare", None),
        {**pod("job-1", "Job"), "status": {"phase": "Succeeded"}},
    ]
    first = Answering(cluster.cluster.hosts[0], json.dumps({"items": items}))
    assert pods_on(first, "s1") == ["ns/web-0 (StatefulSet)", "ns/bare (no controller)"]  # type: ignore[arg-type]
    assert "--field-selector spec.nodeName=s1" in first.commands[0]


def test_a_single_node_is_not_drained_without_no_drain(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(inventory="hosts: [{name: solo, address: 10.0.0.1, roles: [server]}]\n")
    with pytest.raises(PlatformError, match=r"solo is the only node: draining it .* Rerun with --no-drain"):
        runs.check_drain(settings, drain=True)
    runs.check_drain(settings, drain=False)


def test_upgrade_task_refuses_to_drain_a_single_node_before_any_host(project: Project) -> None:
    key = project.write("keys/id_ed25519", private_key_text())
    project.write(
        "config/inventory.yaml",
        f"ssh: {{key_path: {key}}}\nhosts: [{{name: solo, address: 10.0.0.1, roles: [server]}}]\n",
    )
    result = project.invoke("upgrade", "--version", "v1.35.0+k3s1")
    assert result.returncode == 1
    assert "solo is the only node" in result.stderr and "--no-drain" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_drain_timeout_that_is_not_seconds_is_refused(project: Project) -> None:
    result = project.invoke("upgrade", "--drain-timeout", "soon")
    assert result.returncode == 1
    assert "--drain-timeout [from the command line]: must be a number of seconds" in result.stderr
