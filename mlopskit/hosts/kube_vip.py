"""kube-vip: the cluster's virtual IP (cluster.vip), a static pod on every server in control-plane ARP mode.

The kubelet of each server runs /var/lib/rancher/k3s/agent/pod-manifests/kube-vip.yaml; the instances elect a
leader through a Lease (with the server's own admin kubeconfig, /etc/rancher/k3s/k3s.yaml) and the leader
holds the address on vip.interface, announcing it with gratuitous ARP. See https://kube-vip.io/docs/.

Its image comes from a registry, or, when the cluster has none (images.source offline or an air-gapped
install, and no registry mirror for the image's registry), from this machine's Docker engine over SSH into
the server's containerd, as `invoke build-images --to-nodes` delivers the platform's images.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Iterable

import yaml

from mlopskit.errors import PlatformError
from mlopskit.hosts.remote import Remote
from mlopskit.settings import Settings, VipSettings

MANIFEST = "/var/lib/rancher/k3s/agent/pod-manifests/kube-vip.yaml"
HEADER = "# Written by mlopskit (invoke provision) from cluster.vip; edit the settings, not this file.\n"
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
# Where kube-vip looks for a kubeconfig when it runs as a static pod.
KUBE_VIP_KUBECONFIG = "/etc/kubernetes/admin.conf"
LEASE = "plndr-cp-lock"


def render_manifest(vip: VipSettings, api_port: int) -> str:
    """The static pod: control plane only (no Service load balancing), ARP, leader election."""
    subnet = "32" if ipaddress.ip_address(vip.address).version == 4 else "128"
    env = {
        "vip_arp": "true",
        "port": str(api_port),
        "vip_interface": vip.interface,
        "vip_subnet": subnet,
        "cp_enable": "true",
        "cp_namespace": "kube-system",
        "svc_enable": "false",
        "vip_leaderelection": "true",
        "vip_leasename": LEASE,
        "vip_leaseduration": "5",
        "vip_renewdeadline": "3",
        "vip_retryperiod": "1",
        "address": vip.address,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system", "labels": {"app.kubernetes.io/name": "kube-vip"}},
        "spec": {
            "containers": [
                {
                    "name": "kube-vip",
                    "image": vip.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["manager"],
                    "env": [
                        {"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        *({"name": name, "value": value} for name, value in env.items()),
                    ],
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
                    "volumeMounts": [{"name": "kubeconfig", "mountPath": KUBE_VIP_KUBECONFIG, "readOnly": True}],
                }
            ],
            "hostNetwork": True,
            # The admin kubeconfig names https://127.0.0.1:<port>; kube-vip also dials "kubernetes".
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}],
            "priorityClassName": "system-node-critical",
            "volumes": [{"name": "kubeconfig", "hostPath": {"path": K3S_KUBECONFIG, "type": "File"}}],
        },
    }
    return HEADER + yaml.safe_dump(pod, sort_keys=False)


def image_registry(image: str) -> str:
    """The registry an image name points at: its first component when that has a '.' or ':', else docker.io."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def containerd_name(image: str) -> str:
    """The name containerd lists an image under: docker.io/library/ added as Docker's short names imply."""
    registry = image_registry(image)
    if registry != "docker.io" or image.startswith("docker.io/"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def delivered_over_ssh(settings: Settings) -> bool:
    """True when the servers cannot pull the kube-vip image: no registry (images.source offline, or an
    air-gapped install) and no mirror in cluster.registries for the image's registry."""
    vip = settings.cluster.vip
    if vip is None:
        return False
    no_registry = settings.images.source == "offline" or settings.cluster.airgap.enabled
    mirrors = settings.cluster.registries.mirrors
    return no_registry and not ({"*", image_registry(vip.image)} & set(mirrors))


def check_image_here(settings: Settings, present: Callable[[str], bool]) -> None:
    """Before any host is touched: an image to deliver over SSH must be in the local Docker engine."""
    vip = settings.cluster.vip
    if vip is None or not delivered_over_ssh(settings) or present(vip.image):
        return
    reason = "images.source is offline" if settings.images.source == "offline" else "cluster.airgap is enabled"
    raise PlatformError(
        f"cluster.vip.image [from {settings.source_of('cluster.vip.image')}]: {vip.image} must reach the servers over "
        f"SSH ({reason} and no registry mirror serves {image_registry(vip.image)}), but the local Docker engine does "
        f"not have it: `docker pull {vip.image}` on a machine with registry access, `docker save` it and "
        f"`docker load` it here, or add a mirror for {image_registry(vip.image)} under cluster.registries.mirrors"
    )


def has_image(remote: Remote, image: str) -> bool:
    found = remote.sudo(f"k3s ctr -n k8s.io images ls -q name=={shlex.quote(containerd_name(image))}", warn=True)
    return bool(found.ok and containerd_name(image) in found.stdout.split())


def apply(remote: Remote, settings: Settings, stream: Callable[[str], Iterable[bytes]] | None = None) -> list[str]:
    """On a server where K3s runs: the image (delivered when needed), then the manifest; what changed.

    Without cluster.vip a manifest this tool wrote earlier is removed. `stream(image)` yields a `docker save`
    tar stream of the image (default: from the local Docker engine).
    """
    vip = settings.cluster.vip
    if vip is None:
        existing = remote.read(MANIFEST)
        if existing is None or not existing.startswith(HEADER):
            return []
        remote.sudo(f"rm -f {MANIFEST}")
        return [f"removed {MANIFEST} (cluster.vip is not set now)"]
    changes = []
    if delivered_over_ssh(settings) and not has_image(remote, vip.image):
        from mlopskit.hosts.images import import_images  # hosts.images needs provision, which needs this module

        remote.run("true")  # connects, so a refused key or an unreachable host gets its readable error
        import_images(remote.connection, (stream or _docker_save)(vip.image), remote.access.sudo_password)
        if not has_image(remote, vip.image):
            raise PlatformError(f"{remote.name}: {vip.image} was imported but containerd does not list it")
        changes.append(f"imported {vip.image} into containerd")
    if remote.write(MANIFEST, render_manifest(vip, settings.cluster.api_port), mode="0600"):
        changes.append(f"wrote {MANIFEST}")
    return changes


def _docker_save(image: str) -> Iterable[bytes]:
    from mlopskit.images import save_images

    return save_images([image])
