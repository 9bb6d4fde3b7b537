"""K3s: config.yaml written before install, the first server, joins with the first server's token, upgrades."""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from pathlib import Path

import yaml

from mlopskit.errors import PlatformError
from mlopskit.formats import url
from mlopskit.hosts.outcome import Outcome
from mlopskit.hosts.remote import HostError, Remote
from mlopskit.settings import Host, Settings, k3s_version_key

CONFIG_FILE = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/var/lib/rancher/k3s/server/node-token"
BINARY = "/usr/local/bin/k3s"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
INSTALL_SCRIPT = "/usr/local/lib/mlopskit/k3s-install.sh"


def first_server(settings: Settings) -> Host:
    return settings.cluster.servers[0]


def role(host: Host) -> str:
    return "server" if "server" in host.roles else "agent"


def render_config(settings: Settings, host: Host, token: str | None) -> str:
    """The /etc/rancher/k3s/config.yaml of one host; token is the cluster's (None only for the first server)."""
    cluster = settings.cluster
    first = first_server(settings)
    config: dict[str, object] = {"node-name": host.name}
    if role(host) == "server":
        if host == first and len(cluster.servers) > 1:
            config["cluster-init"] = True
        config["tls-san"] = list(dict.fromkeys([first.address, host.address, *cluster.tls_san]))
        if cluster.disable:
            config["disable"] = list(cluster.disable)
        if cluster.api_port != 6443:
            config["https-listen-port"] = cluster.api_port
    if host != first:
        config["server"] = url("https", first.address, cluster.api_port)
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
            raise PlatformError(f"cluster.airgap.{key}: required when airgap is enabled; set it in the inventory")
        full = path.expanduser() if path.expanduser().is_absolute() else settings.root / path.expanduser()
        if not full.is_file():
            raise PlatformError(f"cluster.airgap.{key}: {full} does not exist; download it from the K3s release page")
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


def k3s(remote: Remote, settings: Settings, token: str | None, version: str | None = None) -> Outcome:
    """Install, join or upgrade one host; unchanged when the pinned version runs with the same config."""
    outcome = Outcome()
    host = remote.host
    version = version or settings.cluster.k3s_version
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
    elif config_changed:
        service = "k3s" if role(host) == "server" else "k3s-agent"
        remote.sudo(f"systemctl restart {service}")
        outcome.changes.append(f"restarted {service}")
    return outcome


def wait_ready(first: Remote, node: str, version: str, timeout: float = 300, interval: float = 5) -> None:
    """Wait until the node reports Ready on `version`, asked through `k3s kubectl` on the first server."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        result = first.sudo(f"{BINARY} kubectl get node {shlex.quote(node)} --no-headers", warn=True)
        last = result.stdout + result.stderr
        # A node still shows Ready on the old version until its kubelet restarts; wait for both.
        if result.ok and re.search(r"\sReady(\s|,)", last) and version in last.split():
            return
        if time.monotonic() > deadline:
            raise HostError(node, f"node did not report Ready on {version} within {timeout:.0f}s", last)
        time.sleep(interval)


def uninstall(remote: Remote) -> Outcome:
    """Run the uninstall script the K3s installer left; unchanged when K3s is not installed."""
    outcome = Outcome()
    for script in ("/usr/local/bin/k3s-agent-uninstall.sh", "/usr/local/bin/k3s-uninstall.sh"):
        if remote.probe(f"test -x {script}"):
            remote.sudo(script)
            outcome.changes.append(f"ran {script}")
    return outcome
