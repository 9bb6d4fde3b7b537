"""The NFS server: package, export directory, the /etc/exports line, and a reload only when it changed."""

from __future__ import annotations

import shlex

from mlopskit.hosts.outcome import Outcome
from mlopskit.hosts.prerequisites import NFS_SERVER_PACKAGE, install_packages, package_manager
from mlopskit.hosts.remote import Remote
from mlopskit.settings import Settings

EXPORTS_FILE = "/etc/exports"
EXPORT_OPTIONS = "rw,sync,no_subtree_check,no_root_squash"
# nfs-subdir-external-provisioner creates one directory per volume as root inside the export.
EXPORT_OWNER = {"apt": "nobody:nogroup", "dnf": "nobody:nobody"}
EXPORT_MODE = "777"


def nfs_clients(settings: Settings) -> list[str]:
    """Who may mount: the configured CIDRs, else every inventory host's address."""
    configured = settings.platform.storage.nfs_clients
    return list(configured) if configured else [h.address for h in settings.cluster.hosts]


def exports_line(path: str, clients: list[str]) -> str:
    return path + " " + " ".join(f"{client}({EXPORT_OPTIONS})" for client in clients)


def merge_exports(current: str, line: str) -> str:
    """/etc/exports with the line for this path replaced (or added); other exports are kept."""
    path = line.split()[0]
    kept = [entry for entry in current.splitlines() if not (entry.split() and entry.split()[0] == path)]
    return "\n".join([*kept, line]).lstrip("\n") + "\n"


def nfs_server(remote: Remote, settings: Settings) -> Outcome:
    outcome = Outcome()
    manager = package_manager(remote)
    installed = install_packages(remote, manager, (NFS_SERVER_PACKAGE[manager],))
    outcome.record(bool(installed), f"installed {' '.join(installed)}")
    path = settings.platform.storage.nfs_path
    owner = EXPORT_OWNER[manager]
    quoted = shlex.quote(path)
    expected = f"{EXPORT_MODE} {owner.replace(':', ' ')}"
    state = remote.sudo(f"stat -c '%a %U %G' {quoted}", warn=True)
    if not (state.ok and state.stdout.strip() == expected):
        remote.sudo(f"mkdir -p {quoted} && chown {owner} {quoted} && chmod {EXPORT_MODE} {quoted}")
        outcome.changes.append(f"export directory {path}")
    current = remote.read(EXPORTS_FILE) or ""
    wanted = merge_exports(current, exports_line(path, nfs_clients(settings)))
    if current != wanted:
        remote.write(EXPORTS_FILE, wanted)
        remote.sudo("exportfs -ra")
        outcome.changes.append(f"{EXPORTS_FILE} and exportfs -ra")
    service = "nfs-kernel-server" if manager == "apt" else "nfs-server"
    if not remote.probe(f"systemctl is-enabled --quiet {service}"):
        remote.sudo(f"systemctl enable --now {service}")
        outcome.changes.append(f"enabled {service}")
    return outcome
