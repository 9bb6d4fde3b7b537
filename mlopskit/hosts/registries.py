"""Registry mirrors: /etc/rancher/k3s/registries.yaml on every node, rendered from cluster.registries.

K3s reads the file when it starts (https://docs.k3s.io/installation/private-registry), so a node whose file
changed needs its K3s restarted; the k3s step does that one node at a time. The file holds registry
passwords (from .env, through auth.password_env): it is root-only, and its content is never printed.
TLS files are local files, copied next to it; the file names their copies on the node.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import yaml

from mlopskit.errors import PlatformError
from mlopskit.hosts.remote import Remote
from mlopskit.settings import Settings

REGISTRIES_FILE = "/etc/rancher/k3s/registries.yaml"
TLS_DIR = "/etc/rancher/k3s/registry-tls"
HEADER = "# Written by mlopskit (invoke provision) from cluster.registries; edit the settings, not this file.\n"
TLS_KINDS = ("ca_file", "cert_file", "key_file")


def node_tls_path(registry: str, kind: str) -> str:
    """Where a registry's TLS file lives on the nodes: /etc/rancher/k3s/registry-tls/<registry>/<kind>.pem."""
    folder = re.sub(r"[^A-Za-z0-9.-]", "_", registry)  # reg.example.com:5000 -> reg.example.com_5000
    return posixpath.join(TLS_DIR, folder, f"{kind.removesuffix('_file')}.pem")


def tls_files(settings: Settings) -> list[tuple[str, str, Path]]:
    """(registry, kind, local file) for every TLS file the settings name; PlatformError when one is missing."""
    found = []
    for registry, config in settings.cluster.registries.configs.items():
        if config.tls is None:
            continue
        for kind in TLS_KINDS:
            path: Path | None = getattr(config.tls, kind)
            if path is None:
                continue
            full = path.expanduser() if path.expanduser().is_absolute() else settings.root / path.expanduser()
            if not full.is_file():
                key = f"cluster.registries.configs.{registry}.tls.{kind}"
                raise PlatformError(
                    f"cluster.registries.configs[{registry}].tls.{kind} [from {settings.source_of(key)}]: {full} "
                    "does not exist; give the path of the PEM file on this machine (mlopskit copies it to every node)"
                )
            found.append((registry, kind, full))
    return found


def render(settings: Settings) -> str | None:
    """The registries.yaml every node gets, or None when cluster.registries is empty."""
    registries = settings.cluster.registries
    if not registries.configured:
        return None
    data: dict[str, Any] = {}
    if registries.mirrors:
        data["mirrors"] = {
            name: {"endpoint": list(mirror.endpoint), **({"rewrite": dict(mirror.rewrite)} if mirror.rewrite else {})}
            for name, mirror in registries.mirrors.items()
        }
    configs: dict[str, Any] = {}
    for name, config in registries.configs.items():
        entry: dict[str, Any] = {}
        if config.auth is not None:
            if config.auth.password is None:
                raise PlatformError(f"cluster.registries.configs[{name}].auth: {config.auth.password_env} is not set")
            entry["auth"] = {"username": config.auth.username, "password": config.auth.password.get_secret_value()}
        if config.tls is not None:
            tls: dict[str, Any] = {
                kind: node_tls_path(name, kind) for kind in TLS_KINDS if getattr(config.tls, kind) is not None
            }
            if config.tls.insecure_skip_verify:
                tls["insecure_skip_verify"] = True
            entry["tls"] = tls
        configs[name] = entry
    if configs:
        data["configs"] = configs
    return HEADER + yaml.safe_dump(data, sort_keys=False)


def apply(remote: Remote, settings: Settings) -> list[str]:
    """Make the node's registries.yaml (and TLS files) match the settings; what changed, [] when nothing did.

    Without cluster.registries a file this tool wrote earlier is removed; a file someone else wrote is kept.
    """
    text = render(settings)
    if text is None:
        existing = remote.read(REGISTRIES_FILE)
        if existing is None or not existing.startswith(HEADER):
            return []
        remote.sudo(f"rm -rf {REGISTRIES_FILE} {TLS_DIR}")
        return [f"removed {REGISTRIES_FILE} (cluster.registries is empty now)"]
    changes = []
    for registry, kind, local in tls_files(settings):
        path = node_tls_path(registry, kind)
        if remote.upload(local, path, mode="0600" if kind == "key_file" else "0644"):
            changes.append(f"copied {local.name} to {path}")
    if remote.write(REGISTRIES_FILE, text, mode="0600"):
        changes.append(f"wrote {REGISTRIES_FILE}")
    return changes
