"""Prerequisites on every host: the package manager, NFS client, what K3s needs, kernel settings."""

from __future__ import annotations

import re

from mlopskit.hosts.outcome import Outcome
from mlopskit.hosts.remote import HostError, Remote

SYSCTL_FILE = "/etc/sysctl.d/90-k3s.conf"
SYSCTL_CONTENT = (
    "# Written by mlopskit: kernel settings K3s expects.\n"
    "net.ipv4.ip_forward = 1\n"
    "net.bridge.bridge-nf-call-iptables = 1\n"
)
MODULES_FILE = "/etc/modules-load.d/k3s.conf"
MODULES = ("br_netfilter", "overlay")

PACKAGES = {
    "apt": ("curl", "ca-certificates", "nfs-common"),
    "dnf": ("curl", "ca-certificates", "nfs-utils"),
}
NFS_SERVER_PACKAGE = {"apt": "nfs-kernel-server", "dnf": "nfs-utils"}


def package_manager(remote: Remote) -> str:
    """apt or dnf; anything else is an unsupported OS, named from /etc/os-release."""
    for manager in ("apt-get", "dnf"):
        if remote.run(f"command -v {manager}", warn=True).ok:
            return "apt" if manager == "apt-get" else "dnf"
    release = remote.run("cat /etc/os-release", warn=True).stdout
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)', release, re.MULTILINE)
    found = match.group(1) if match else "no /etc/os-release"
    raise HostError(
        remote.name, f"unsupported OS ({found}): neither apt-get nor dnf found; use a Debian/Ubuntu or RHEL-like host"
    )


def missing_packages(remote: Remote, manager: str, packages: tuple[str, ...]) -> list[str]:
    missing = []
    for package in packages:
        if manager == "apt":
            query = f"dpkg-query -W -f='${{Status}}' {package} 2>/dev/null | grep -q 'install ok installed'"
        else:
            query = f"rpm -q {package}"
        if not remote.run(query, warn=True).ok:
            missing.append(package)
    return missing


def install_packages(remote: Remote, manager: str, packages: tuple[str, ...]) -> list[str]:
    """Install what is missing; returns what was installed."""
    missing = missing_packages(remote, manager, packages)
    if not missing:
        return []
    names = " ".join(missing)
    if manager == "apt":
        # Fresh images have no package lists; only then is an update needed before installing.
        if not remote.probe("ls /var/lib/apt/lists/ | grep -q _Packages"):
            remote.sudo("apt-get update -qq")
        remote.sudo(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {names}")
    else:
        remote.sudo(f"dnf install -y -q {names}")
    return missing


def prerequisites(remote: Remote) -> Outcome:
    outcome = Outcome()
    manager = package_manager(remote)
    installed = install_packages(remote, manager, PACKAGES[manager])
    outcome.record(bool(installed), f"installed {' '.join(installed)}")
    outcome.record(remote.write(MODULES_FILE, "\n".join(MODULES) + "\n"), f"wrote {MODULES_FILE}")
    for module in MODULES:
        if not remote.probe(f"grep -q '^{module} ' /proc/modules") and not remote.probe(f"modprobe {module}"):
            outcome.notes.append(f"kernel module {module} could not be loaded here; K3s loads what it needs")
    if remote.write(SYSCTL_FILE, SYSCTL_CONTENT):
        outcome.changes.append(f"wrote {SYSCTL_FILE}")
        if not remote.probe(f"sysctl -p {SYSCTL_FILE}"):
            outcome.notes.append(f"{SYSCTL_FILE} not applied now (read-only /proc/sys?); it applies at boot")
    return outcome
