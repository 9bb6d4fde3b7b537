"""`invoke provision` as a user runs it: the plan, the host × step table, and failures without tracebacks.

The SSH host is an sshd container whose K3s install script and k3s binary are stand-ins (see conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlopskit.settings import ENV_KEYS
from tests.integration.provision.conftest import REPO, STANDIN_INSTALL_URL, KeyPair, SshHost

pytestmark = pytest.mark.docker


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(Path(sys.executable).with_name("invoke")), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path, start_host: Callable[[str], SshHost], ssh_key: KeyPair) -> Path:
    host = start_host("cli")
    shutil.copy(REPO / "tasks.py", tmp_path / "tasks.py")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/inventory.yaml").write_text(
        f"""
ssh: {{user: kit, key_path: {ssh_key.private}, connect_timeout: 3}}
install_script_url: {STANDIN_INSTALL_URL}
kubeconfig: {tmp_path}/kubeconfig.yaml
hosts:
  - {{name: cli-server, address: {host.address}, roles: [server]}}
"""
    )
    return tmp_path


def test_provision_prints_the_table_and_the_next_command(project: Path) -> None:
    result = invoke(project, "provision")
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout[result.stdout.index("provision") :]
    assert "cli-server" in table and "changed" in table
    assert f"export KUBECONFIG={project}/kubeconfig.yaml" in result.stdout


def test_second_cli_run_says_unchanged(project: Path) -> None:
    invoke(project, "provision")
    result = invoke(project, "provision")
    assert result.returncode == 0, result.stderr
    assert "cluster unchanged: every step was already done" in result.stdout
    assert " changed " not in result.stdout


def test_failure_names_host_and_step_without_traceback(project: Path) -> None:
    inventory = project / "config/inventory.yaml"
    inventory.write_text(inventory.read_text().replace(STANDIN_INSTALL_URL, "file:///nowhere/install.sh"))
    result = invoke(project, "provision")
    assert result.returncode == 1
    assert "error: step k3s-server on cli-server: command failed" in result.stderr
    assert "provision (stopped)" in result.stdout and "failed" in result.stdout
    assert "Traceback" not in result.stderr
