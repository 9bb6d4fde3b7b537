"""Checks of what each command needs, each with the fix for when it is missing."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlopskit.errors import PlatformError
from mlopskit.hosts.remote import access_for, agent_key_count, load_ssh_config, private_key_problem
from mlopskit.kube.client import kubeconfig_file
from mlopskit.settings import Settings

MIN_PYTHON = (3, 11)

# What a user may be about to do, and the commands each group stands for.
GROUPS: dict[str, str] = {
    "up": "up, down, status (the local platform)",
    "build-images": "build-images",
    "provision": "provision, upgrade, reset",
    "deploy": "deploy, diff, destroy, seal",
}
_NEEDED_BY: dict[str, tuple[str, ...]] = {
    "every command": tuple(GROUPS),
    "up, build-images, integration tests": ("up", "build-images"),
    "provision, upgrade, reset": ("provision",),
    "deploy, diff, destroy, seal": ("deploy",),
    # `invoke doctor --cluster` (mlopskit/cluster_checks.py): how the live platform is, not what a command needs.
    "the deployed platform": (),
}


@dataclass(frozen=True)
class Check:
    name: str
    needed_by: str
    ok: bool
    detail: str
    fix: str
    skipped: bool = False  # not applicable to these settings (counts as ok); the detail says why

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else "OK" if self.ok else "FAIL"

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups of GROUPS that cannot run while this check fails."""
        return _NEEDED_BY[self.needed_by]


def runnable(checks: list[Check]) -> dict[str, bool]:
    """For each group of commands, whether every check it needs passed."""
    return {group: all(ch.ok for ch in checks if group in ch.groups) for group in GROUPS}


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    good = sys.version_info[:2] >= MIN_PYTHON
    return Check(
        "Python >= 3.11",
        "every command",
        good,
        version,
        "" if good else "install Python 3.11 or newer and re-run scripts/setup.sh",
    )


def check_docker() -> Check:
    fix = "start the engine: scripts/ensure-docker.sh (installs docker.io and starts dockerd if needed)"
    try:
        import docker

        client = docker.from_env(timeout=5)
        version = client.version().get("Version", "?")
        client.close()
        return Check("Docker engine reachable", "up, build-images, integration tests", True, f"engine {version}", "")
    except Exception as exc:
        return Check("Docker engine reachable", "up, build-images, integration tests", False, _first_line(exc), fix)


def check_ssh_keys(settings: Settings) -> list[Check]:
    """The keys provisioning would use: each host's, as the inventory and the SSH config choose them."""
    try:
        ssh_config = load_ssh_config(settings)
    except PlatformError as exc:
        return [Check("SSH config", "provision, upgrade, reset", False, str(exc), "fix the file or SSH_CONFIG_PATH")]
    keys: set[Path] = set()
    for host in settings.cluster.hosts:
        try:
            keys.update(access_for(settings, host, ssh_config).key_paths)
        except PlatformError as exc:
            return [Check("SSH config", "provision, upgrade, reset", False, str(exc), "fix the SSH config")]
    if not settings.cluster.hosts:
        keys.add(settings.cluster.ssh.key_path)
    agent_keys = agent_key_count() if settings.cluster.ssh.use_agent else 0
    checks = []
    for key in sorted(keys, key=str):
        path = key.expanduser()
        path = path if path.is_absolute() else settings.root / path
        problem = private_key_problem(path)
        readable = problem is None or (agent_keys > 0 and not path.exists())
        detail = "a private key" if problem is None else str(problem)
        if problem is not None and readable:
            detail = f"missing; the ssh-agent's {agent_keys} key(s) are offered instead"
        checks.append(
            Check(
                f"SSH key {key}",
                "provision, upgrade, reset",
                readable,
                detail,
                ""
                if readable
                else f"create it (ssh-keygen -t ed25519 -f {key}) or set SSH_KEY_PATH / ssh.key_path "
                "in config/inventory.yaml",
            )
        )
    return checks


def check_inventory(settings: Settings) -> Check:
    hosts = settings.cluster.hosts
    good = bool(hosts)
    detail = (
        f"{len(settings.cluster.servers)} server(s), {len(settings.cluster.agents)} agent(s)" if good else "no hosts"
    )
    return Check(
        "Inventory",
        "provision, upgrade, reset",
        good,
        detail,
        "" if good else "cp config/inventory.example.yaml config/inventory.yaml and list your hosts",
    )


def check_kubeconfig(settings: Settings, probe: Callable[[Path], str] | None = None) -> Check:
    path = settings.cluster.kubeconfig_path
    try:
        explicit = kubeconfig_file(settings)
    except PlatformError as exc:
        return Check("Kubeconfig reachable", "deploy, diff, destroy, seal", False, str(exc), "see the detail")
    env_path = os.environ.get("KUBECONFIG")
    candidate = explicit if explicit else Path(env_path) if env_path else None
    if candidate is None or not candidate.is_file():
        return Check(
            "Kubeconfig reachable",
            "deploy, diff, destroy, seal",
            False,
            f"{path} not found",
            "run `invoke provision`, or set KUBECONFIG_PATH to an existing kubeconfig",
        )
    try:
        version = (probe or _api_version)(candidate)
    except Exception as exc:
        return Check(
            "Kubeconfig reachable",
            "deploy, diff, destroy, seal",
            False,
            f"{candidate}: {_first_line(exc)}",
            "check that the API server in that kubeconfig is up and reachable from here",
        )
    return Check("Kubeconfig reachable", "deploy, diff, destroy, seal", True, f"{candidate}: {version}", "")


def _api_version(kubeconfig: Path) -> str:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    api_client.configuration.retries = 0
    try:
        info = client.VersionApi(api_client).get_code(_request_timeout=5)
        return f"Kubernetes {info.git_version}"
    finally:
        api_client.close()


def check_env_file(settings: Settings) -> Check:
    path = settings.root / ".env"
    good = path.is_file()
    return Check(
        ".env present",
        "deploy, diff, destroy, seal",
        good,
        str(path) if good else "missing",
        "" if good else "run `invoke init` (writes .env with generated secrets; `invoke up` does it by itself)",
    )


def run_checks(settings: Settings) -> list[Check]:
    return [
        check_python(),
        check_env_file(settings),
        check_docker(),
        check_inventory(settings),
        *check_ssh_keys(settings),
        check_kubeconfig(settings),
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
