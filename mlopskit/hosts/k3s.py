"""K3s: config.yaml written before install, the first server, joins with the first server's token, upgrades.

Joins and the kubeconfig use the fixed registration address (cluster.api_endpoint or cluster.vip) when there
is one, else the first server's address. Upgrades cordon and drain each node through `k3s kubectl` on the
first server before its K3s is replaced, after an etcd snapshot.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from mlopskit.errors import PlatformError
from mlopskit.formats import url
from mlopskit.hosts import kube_vip, registries
from mlopskit.hosts.outcome import Outcome
from mlopskit.hosts.remote import HostError, Remote
from mlopskit.settings import Host, Settings, k3s_version_key

CONFIG_FILE = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/var/lib/rancher/k3s/server/node-token"
BINARY = "/usr/local/bin/k3s"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
INSTALL_SCRIPT = "/usr/local/lib/mlopskit/k3s-install.sh"
ETCD_DIR = "/var/lib/rancher/k3s/server/db/etcd"
SNAPSHOT_DIR = "/var/lib/rancher/k3s/server/db/snapshots"
KUBECTL = f"{BINARY} kubectl"

# Restarts K3s on a node to apply a changed file: (remote, service, why). The provisioning run passes one
# that restarts one node at a time and waits for it to be Ready again.
Restart = Callable[[Remote, str, str], None]


def first_server(settings: Settings) -> Host:
    return settings.cluster.servers[0]


def role(host: Host) -> str:
    return "server" if "server" in host.roles else "agent"


def service(host: Host) -> str:
    """The systemd unit the K3s installer creates for the host's role."""
    return "k3s" if role(host) == "server" else "k3s-agent"


def join_address(settings: Settings) -> str:
    """Where further servers, agents and the kubeconfig reach the API: the fixed endpoint, else the first server."""
    return settings.cluster.endpoint or first_server(settings).address


def api_url(settings: Settings) -> str:
    return url("https", join_address(settings), settings.cluster.api_port)


def endpoint_warning(settings: Settings) -> str | None:
    """With 3 or more servers and no fixed endpoint, losing the first server cuts agents and users off."""
    cluster = settings.cluster
    if cluster.endpoint is not None or len(cluster.servers) < 3:
        return None
    first = first_server(settings)
    return (
        f"{len(cluster.servers)} servers but no cluster.api_endpoint or cluster.vip: agents, further servers and "
        f"the kubeconfig use {first.name}'s address ({first.address}), so losing {first.name} cuts them off although "
        "etcd keeps quorum. Set cluster.vip {address, interface} (kube-vip on the servers) or cluster.api_endpoint "
        "(a DNS name or load balancer in front of the servers)"
    )


def render_config(settings: Settings, host: Host, token: str | None) -> str:
    """The /etc/rancher/k3s/config.yaml of one host; token is the cluster's (None only for the first server)."""
    cluster = settings.cluster
    first = first_server(settings)
    config: dict[str, object] = {"node-name": host.name}
    if role(host) == "server":
        if host == first and len(cluster.servers) > 1:
            config["cluster-init"] = True
        fixed = [name for name in (cluster.api_endpoint, cluster.vip.address if cluster.vip else None) if name]
        config["tls-san"] = list(dict.fromkeys([*fixed, first.address, host.address, *cluster.tls_san]))
        if cluster.disable:
            config["disable"] = list(cluster.disable)
        if cluster.api_port != 6443:
            config["https-listen-port"] = cluster.api_port
    if host != first:
        config["server"] = api_url(settings)
    if token:
        config["token"] = token
    if host.labels:
        config["node-label"] = [f"{key}={value}" for key, value in sorted(host.labels.items())]
    if host.taints:
        config["node-taint"] = list(host.taints)
    return "# Written by mlopskit (invoke provision); edit the inventory, not this file.\n" + yaml.safe_dump(
        config, sort_keys=False
    )


def installed_version(remote: Remote) -> str | None:
    result = remote.run(f"{BINARY} --version", warn=True)
    match = re.search(r"k3s version (\S+)", result.stdout) if result.ok else None
    return match.group(1) if match else None


def check_upgrade(host: str, current: str | None, target: str) -> str | None:
    """Refuse to install an older K3s than `host` runs; a warning when the step skips a minor version."""
    installed, wanted = k3s_version_key(current or ""), k3s_version_key(target)
    if installed is None or wanted is None:
        return None  # not installed yet, or a build we cannot compare: the install decides
    if wanted < installed:
        raise HostError(
            host,
            f"runs K3s {current}, newer than {target}: K3s upgrades only go forward (Kubernetes does not support "
            f"downgrades); set K3S_VERSION (or --version) to {current} or a newer release",
        )
    major, minor = installed[:2]
    if wanted[0] == major and wanted[1] > minor + 1:
        return (
            f"{current} → {target} skips Kubernetes {major}.{minor + 1}: Kubernetes supports upgrading one minor "
            f"version at a time; consider upgrading to a v{major}.{minor + 1} release first"
        )
    return None


def read_token(remote: Remote) -> str:
    """The join token from the first server (root-only file)."""
    token = remote.read(TOKEN_FILE)
    if not token or not token.strip():
        raise HostError(remote.name, f"{TOKEN_FILE} is missing: the first server has not finished installing K3s")
    return token.strip()


def check_airgap_files(settings: Settings) -> list[Path]:
    """The air-gap files, each checked to exist before any host is touched."""
    airgap = settings.cluster.airgap
    files = {
        "k3s_binary": airgap.k3s_binary,
        "images_tarball": airgap.images_tarball,
        "install_script": airgap.install_script,
    }
    resolved = []
    for key, path in files.items():
        if path is None:
            raise PlatformError(
                f"cluster.airgap.{key} [from {settings.source_of('cluster.airgap')}]: required when airgap is "
                "enabled; set it in the inventory"
            )
        full = path.expanduser() if path.expanduser().is_absolute() else settings.root / path.expanduser()
        if not full.is_file():
            raise PlatformError(
                f"cluster.airgap.{key} [from {settings.source_of(f'cluster.airgap.{key}')}]: {full} does not exist; "
                "download it from the K3s release page"
            )
        resolved.append(full)
    return resolved


def install_command(settings: Settings, host: Host, version: str) -> str:
    """The root shell command that installs (or upgrades) K3s; the token stays in config.yaml, off argv."""
    kind = role(host)
    if settings.cluster.airgap.enabled:
        env = f"INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION={shlex.quote(version)}"
        return f"env {env} sh {INSTALL_SCRIPT} {kind}"
    url = shlex.quote(settings.cluster.install_script_url)
    # Downloaded first, not piped: `curl | sh` succeeds with an empty script when curl fails.
    return (
        f"mkdir -p {posixpath.dirname(INSTALL_SCRIPT)} && curl -sSfL {url} -o {INSTALL_SCRIPT}.download && "
        f"env INSTALL_K3S_VERSION={shlex.quote(version)} sh {INSTALL_SCRIPT}.download {kind}"
    )


def upload_airgap(remote: Remote, settings: Settings) -> bool:
    binary, images, script = check_airgap_files(settings)
    changed = remote.upload(binary, BINARY, mode="0755")
    changed = remote.upload(images, posixpath.join(IMAGES_DIR, images.name)) or changed
    return remote.upload(script, INSTALL_SCRIPT, mode="0755") or changed


def restart_now(remote: Remote, unit: str, why: str) -> None:
    remote.sudo(f"systemctl restart {unit}")


def k3s(
    remote: Remote,
    settings: Settings,
    token: str | None,
    version: str | None = None,
    restart: Restart = restart_now,
) -> Outcome:
    """Install, join or upgrade one host: registries.yaml and config.yaml first, then the install (or a restart
    when only a file changed), then kube-vip on servers; unchanged when all of it already matches."""
    outcome = Outcome()
    host = remote.host
    version = version or settings.cluster.k3s_version
    registry_changes = registries.apply(remote, settings)
    outcome.changes += registry_changes
    config_changed = remote.write(CONFIG_FILE, render_config(settings, host, token), mode="0600")
    outcome.record(config_changed, f"wrote {CONFIG_FILE}")
    uploaded = settings.cluster.airgap.enabled and upload_airgap(remote, settings)
    outcome.record(uploaded, "uploaded air-gap files")
    current = installed_version(remote)
    check_upgrade(host.name, current, version)
    if current != version or uploaded:
        remote.sudo(install_command(settings, host, version))
        outcome.changes.append(f"K3s {current or 'absent'} → {version}")
        installed = installed_version(remote)
        if installed != version:
            raise HostError(host.name, f"after install, k3s --version reports {installed}, expected {version}")
    elif config_changed or registry_changes:
        changed = [
            name
            for name, flag in ((CONFIG_FILE, config_changed), (registries.REGISTRIES_FILE, bool(registry_changes)))
            if flag
        ]
        why = f"{' and '.join(changed)} changed"
        restart(remote, service(host), why)
        outcome.changes.append(f"restarted {service(host)} ({why})")
    if role(host) == "server":
        outcome.changes += kube_vip.apply(remote, settings)
    return outcome


def wait_ready(first: Remote, node: str, version: str, timeout: float = 300, interval: float = 5) -> None:
    """Wait until the node reports Ready on `version`, asked through `k3s kubectl` on the first server."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        result = first.sudo(f"{KUBECTL} get node {shlex.quote(node)} --no-headers", warn=True)
        last = result.stdout + result.stderr
        # A node still shows Ready on the old version until its kubelet restarts; wait for both.
        if result.ok and re.search(r"\sReady(\s|,)", last) and version in last.split():
            return
        if time.monotonic() > deadline:
            raise HostError(node, f"node did not report Ready on {version} within {timeout:.0f}s", last)
        time.sleep(interval)


def wait_endpoint(first: Remote, settings: Settings, timeout: float = 300, interval: float = 5) -> None:
    """Wait until the fixed endpoint answers /readyz, asked from the first server with its admin credentials
    (so the endpoint's name must be in the certificate too); HostError with what to check when it does not."""
    target = api_url(settings)
    deadline = time.monotonic() + timeout
    while True:
        result = first.sudo(
            f"{KUBECTL} --server {shlex.quote(target)} --request-timeout=5s get --raw=/readyz", warn=True
        )
        if result.ok:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    if settings.cluster.vip is not None:
        hint = (
            f"kube-vip should hold {settings.cluster.vip.address} on {settings.cluster.vip.interface}: check "
            f"`k3s kubectl -n kube-system logs kube-vip-{first.name}` on {first.name}, that vip.interface names "
            "the servers' network interface and that the address is free in their subnet"
        )
    else:
        hint = "check that cluster.api_endpoint resolves to the servers (or to a load balancer in front of them)"
    raise HostError(
        first.name,
        f"the API endpoint {target} did not answer within {timeout:.0f}s, so no further node can join through it; "
        + hint,
        result.stdout + result.stderr,
    )


# ------------------------------------------------------------------------------------------- upgrades


def node_states(first: Remote) -> dict[str, str]:
    """Node name -> STATUS column (Ready, NotReady, Ready,SchedulingDisabled, ...) from `kubectl get nodes`."""
    result = first.sudo(f"{KUBECTL} get nodes --no-headers", warn=True)
    if not result.ok:
        raise HostError(
            first.name, "`k3s kubectl get nodes` failed: is K3s running there?", result.stdout + result.stderr
        )
    states = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            states[fields[0]] = fields[1]
    return states


def check_all_ready(first: Remote, settings: Settings) -> None:
    """Before an upgrade touches anything: every node of the cluster, and every inventory host, is Ready."""
    states = node_states(first)
    problems = [f"{name} is {state}" for name, state in states.items() if "Ready" not in state.split(",")]
    problems += [
        f"{host.name} is not a node of the cluster" for host in settings.cluster.hosts if host.name not in states
    ]
    if problems:
        raise HostError(
            first.name,
            f"not every node is Ready ({'; '.join(problems)}): an upgrade drains nodes one by one and needs the "
            "others to take their pods; fix those nodes (or remove them from the inventory) and rerun. "
            "Nothing was changed.",
        )


def snapshot_name(current: str, target: str) -> str:
    """pre-upgrade-v1.34.1-k3s1-to-v1.35.0-k3s1: both versions, in the characters snapshot names allow."""
    return re.sub(r"[^a-z0-9.-]", "-", f"pre-upgrade-{current}-to-{target}".lower())


def etcd_snapshot(first: Remote, current: str, target: str) -> str | None:
    """`k3s etcd-snapshot save` on the first server when it runs embedded etcd; the name, None without etcd."""
    if not first.probe(f"test -d {ETCD_DIR}"):
        return None
    name = snapshot_name(current, target)
    first.sudo(f"{BINARY} etcd-snapshot save --name {shlex.quote(name)}")
    return name


def cordon(first: Remote, node: str) -> None:
    first.sudo(f"{KUBECTL} cordon {shlex.quote(node)}")


def uncordon(first: Remote, node: str) -> None:
    first.sudo(f"{KUBECTL} uncordon {shlex.quote(node)}")


def drain(first: Remote, node: str, timeout: float) -> None:
    """Evict the node's pods (DaemonSet pods stay); HostError listing the pods still there when it fails."""
    result = first.sudo(
        f"{KUBECTL} drain {shlex.quote(node)} --ignore-daemonsets --delete-emptydir-data --timeout={timeout:.0f}s",
        warn=True,
    )
    if result.ok:
        return
    blockers = pods_on(first, node)
    listed = ", ".join(blockers) if blockers else "none listed (see kubectl's output below)"
    raise HostError(
        node,
        f"drain did not finish within {timeout:.0f}s; pods still on the node: {listed}. A PodDisruptionBudget "
        "that allows no eviction or a pod without a controller usually blocks a drain: relax the budget or move "
        "the pod, give --drain-timeout more seconds, or upgrade without draining (--no-drain)",
        result.stdout + result.stderr,
    )


def pods_on(first: Remote, node: str) -> list[str]:
    """namespace/name (owner kind) of the pods on a node that a drain evicts: not DaemonSet or static pods."""
    result = first.sudo(
        f"{KUBECTL} get pods --all-namespaces --field-selector spec.nodeName={shlex.quote(node)} -o json", warn=True
    )
    try:
        items = json.loads(result.stdout).get("items", []) if result.ok else []
    except ValueError:
        return []
    pods = []
    for pod in items:
        meta = pod.get("metadata", {})
        owners = [owner.get("kind", "") for owner in meta.get("ownerReferences") or []]
        mirror = "kubernetes.io/config.mirror" in (meta.get("annotations") or {})
        done = pod.get("status", {}).get("phase") in {"Succeeded", "Failed"}
        if "DaemonSet" in owners or mirror or done:
            continue
        pods.append(f"{meta.get('namespace')}/{meta.get('name')} ({owners[0] if owners else 'no controller'})")
    return pods


def uninstall(remote: Remote) -> Outcome:
    """Run the uninstall script the K3s installer left; unchanged when K3s is not installed."""
    outcome = Outcome()
    for script in ("/usr/local/bin/k3s-agent-uninstall.sh", "/usr/local/bin/k3s-uninstall.sh"):
        if remote.probe(f"test -x {script}"):
            remote.sudo(script)
            outcome.changes.append(f"ran {script}")
    return outcome
