"""The order of provisioning steps per host, and `invoke provision --dry-run`."""

from __future__ import annotations

from collections.abc import Callable

from mlopskit.hosts.provision import Phase, plan_rows, provision_phases, reset_phases, upgrade_phases
from mlopskit.settings import Settings
from tests.unit.conftest import REPO, Project, private_key_text, public_key_text

INVENTORY = """
hosts:
  - {name: s1, address: 10.0.0.1, roles: [server, nfs]}
  - {name: s2, address: 10.0.0.2, roles: [server]}
  - {name: s3, address: 10.0.0.3, roles: [server]}
  - {name: w1, address: 10.0.0.4, roles: [agent]}
  - {name: w2, address: 10.0.0.5, roles: [agent]}
"""


def steps(phases: list[Phase]) -> list[list[str]]:
    return [[f"{host.name}:{step}" for host, step in phase] for phase in phases]


def test_provision_order(make_settings: Callable[..., Settings]) -> None:
    assert steps(provision_phases(make_settings(inventory=INVENTORY))) == [
        ["s1:prerequisites", "s2:prerequisites", "s3:prerequisites", "w1:prerequisites", "w2:prerequisites"],
        ["s1:nfs-server"],
        ["s1:k3s-server"],
        ["s2:k3s-server"],
        ["s3:k3s-server"],
        ["w1:k3s-agent", "w2:k3s-agent"],
        ["s1:kubeconfig"],
    ]


def test_upgrade_checks_and_snapshots_first_then_goes_server_by_server_then_agent_by_agent(
    make_settings: Callable[..., Settings],
) -> None:
    assert steps(upgrade_phases(make_settings(inventory=INVENTORY))) == [
        ["s1:pre-upgrade"],
        ["s1:upgrade"],
        ["s2:upgrade"],
        ["s3:upgrade"],
        ["w1:upgrade"],
        ["w2:upgrade"],
    ]


def test_reset_removes_agents_first_and_the_first_server_last(make_settings: Callable[..., Settings]) -> None:
    assert steps(reset_phases(make_settings(inventory=INVENTORY))) == [
        ["w1:uninstall", "w2:uninstall"],
        ["s3:uninstall"],
        ["s2:uninstall"],
        ["s1:uninstall"],
    ]


def test_plan_rows_mark_parallel_phases(make_settings: Callable[..., Settings]) -> None:
    rows = plan_rows(provision_phases(make_settings(inventory=INVENTORY)))
    assert rows[0][:3] == ("1 parallel", "s1", "prerequisites")
    assert rows[5][:3] == ("2", "s1", "nfs-server")


def test_dry_run_prints_the_plan_and_touches_nothing(project: Project) -> None:
    key = project.write("keys/id_ed25519", private_key_text())
    # The addresses are never contacted: a dry run stops after printing the plan.
    project.write("config/inventory.yaml", f"ssh: {{key_path: {key}}}\n" + INVENTORY)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "s1" in result.stdout and "nfs-server" in result.stdout and "k3s-agent" in result.stdout
    assert "dry run: no host was touched" in result.stdout


def test_missing_key_file_fails_before_the_plan(project: Project) -> None:
    project.write("config/inventory.yaml", "ssh: {key_path: /nonexistent/key}\n" + INVENTORY)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 1
    assert "s1: SSH key /nonexistent/key cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_inventory_loads_and_plans(make_settings: Callable[..., Settings]) -> None:
    example = (REPO / "config/inventory.example.yaml").read_text()
    phases = provision_phases(make_settings(inventory=example))
    assert steps(phases)[-2:] == [["k3s-agent-1:k3s-agent", "k3s-agent-2:k3s-agent"], ["k3s-server-1:kubeconfig"]]


def test_public_key_given_as_ssh_key_path_is_refused_before_the_plan(project: Project) -> None:
    key = project.write("keys/id_ed25519.pub", public_key_text())
    project.write(".env", f"SSH_KEY_PATH={key}\n")
    project.write("config/inventory.yaml", INVENTORY)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 1
    assert f"s1: SSH key {key} is a public key; set cluster.ssh.key_path (SSH_KEY_PATH) [from .env:1]" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_file_that_is_not_a_private_key_is_refused(project: Project) -> None:
    key = project.write("keys/id_ed25519", "hello\n")
    project.write("config/inventory.yaml", f"ssh: {{key_path: {key}}}\n" + INVENTORY)
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 1
    assert f"SSH key {key} is not a private key" in result.stderr


def test_host_key_path_names_the_host_entry(project: Project) -> None:
    key = project.write("keys/host.pub", public_key_text())
    project.write(
        "config/inventory.yaml", f"hosts:\n  - {{name: s1, address: 10.0.0.1, roles: [server], key_path: {key}}}\n"
    )
    result = project.invoke("provision", "--dry-run")
    assert result.returncode == 1
    assert "cluster.hosts[s1].key_path [from config/inventory.yaml:2]" in result.stderr


def test_reset_without_a_terminal_refuses_and_says_to_pass_yes(project: Project) -> None:
    key = project.write("keys/id_ed25519", private_key_text())
    # The addresses are never contacted: the confirmation comes before any connection.
    project.write("config/inventory.yaml", f"ssh: {{key_path: {key}, connect_timeout: 1}}\n" + INVENTORY)
    result = project.invoke("reset")
    assert result.returncode == 1
    assert "refusing to uninstall K3s from s1, s2, s3, w1, w2: there is no terminal" in result.stderr
    assert "rerun with --yes" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
