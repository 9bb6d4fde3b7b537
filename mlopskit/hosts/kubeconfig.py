"""The cluster's kubeconfig: fetched from the first server, rewritten to reach the cluster's fixed endpoint
(or that server), saved and optionally merged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mlopskit.errors import PlatformError
from mlopskit.formats import url
from mlopskit.hosts.outcome import Outcome
from mlopskit.hosts.remote import HostError, Remote
from mlopskit.kube.client import parse_kubeconfig, read_kubeconfig
from mlopskit.private_files import write_private
from mlopskit.settings import Settings

REMOTE_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


def rewrite(kubeconfig: dict[str, Any], server: str, name: str) -> dict[str, Any]:
    """Point the K3s kubeconfig at `server` and rename its cluster, user and context to `name`."""
    config = copy.deepcopy(kubeconfig)
    for section, _ in SECTIONS:
        entries = config.get(section) or []
        if len(entries) != 1:
            raise PlatformError(f"the K3s kubeconfig should have one entry in {section}, found {len(entries)}")
        entries[0]["name"] = name
    config["clusters"][0]["cluster"]["server"] = server
    config["contexts"][0]["context"].update(cluster=name, user=name)
    config["current-context"] = name
    return config


def merge(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`existing` with the entries of `new` added, replacing entries of the same name; the rest is kept."""
    merged: dict[str, Any] = (
        copy.deepcopy(existing) if existing else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    )
    for section, _ in SECTIONS:
        incoming = new.get(section) or []
        names = {entry["name"] for entry in incoming}
        kept = [entry for entry in merged.get(section) or [] if entry.get("name") not in names]
        merged[section] = kept + copy.deepcopy(incoming)
    merged["current-context"] = new.get("current-context", merged.get("current-context"))
    return merged


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def save(path: Path, text: str) -> bool:
    """Write with mode 0600 (it holds a client key) unless the same content is there; True when it changed."""
    if path.is_file() and path.read_text() == text and (path.stat().st_mode & 0o777) == 0o600:
        return False
    write_private(path, text, replace=True)
    return True


def fetch_kubeconfig(remote: Remote, settings: Settings, merge_into: Path | None = None) -> Outcome:
    """Fetch, rewrite and save the kubeconfig; with merge_into, also merge it there under the context name."""
    outcome = Outcome()
    cluster = settings.cluster
    text = remote.read(REMOTE_KUBECONFIG)
    if text is None:
        raise HostError(remote.name, f"{REMOTE_KUBECONFIG} is missing: K3s did not finish installing")
    # The fixed endpoint (api_endpoint or the VIP) keeps the kubeconfig working when the first server is gone.
    server = url("https", cluster.endpoint or remote.host.address, cluster.api_port)
    try:
        fetched = parse_kubeconfig(text.encode(), f"{remote.name}:{REMOTE_KUBECONFIG}", "check the K3s install there")
    except PlatformError as exc:
        raise HostError(remote.name, str(exc)) from None
    config = rewrite(fetched, server, cluster.kube_context)
    target = cluster.kubeconfig_path
    outcome.record(save(target, dump(config)), f"saved {target}")
    if merge_into is not None:
        existing = read_kubeconfig(merge_into) if merge_into.is_file() else {}
        outcome.record(save(merge_into, dump(merge(existing, config))), f"merged into {merge_into}")
    return outcome


def merge_target(settings: Settings) -> Path | None:
    """~/.kube/config when the settings ask to merge into it."""
    return Path("~/.kube/config").expanduser() if settings.cluster.merge_kubeconfig else None


def check_merge_target(path: Path | None) -> None:
    """Before any host is touched: the kubeconfig to merge into, when it exists, must be one."""
    if path is not None and path.is_file():
        read_kubeconfig(path)
