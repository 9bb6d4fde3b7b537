"""Names of the images the platform runs: the official ones, or the offline stand-ins that replace them.

Kept apart from images.py (which needs Docker and git) so rendering the manifests needs neither, and so
the names the manifests render and the names `invoke build-images --to-nodes` delivers come from one place.
"""

from __future__ import annotations

from typing import Literal

from mlopskit.settings import Settings

DEBIAN_BASE = "mlopskit/debian:bookworm"
OFFLINE_PYTHON = "mlopskit/python:3.11-bookworm"
OFFLINE_POSTGRES = "mlopskit/postgres:15-bookworm"
SEAWEEDFS_VERSION = "4.48"
OFFLINE_SEAWEEDFS = f"mlopskit/seaweedfs:{SEAWEEDFS_VERSION}"
# The upstream release the manifests render (ImageSettings.sealed_secrets_controller); the stand-in's tag says
# which controller it stands in for, so the rendered version labels stay the same.
SEALED_SECRETS_VERSION = "0.32.2"
OFFLINE_SEALED_SECRETS = f"mlopskit/sealed-secrets-controller:{SEALED_SECRETS_VERSION}"

Workload = Literal["postgres", "seaweedfs", "minio", "nfs_provisioner", "sealed_secrets_controller"]

# Official image setting -> the stand-in built from docker/offline/ when images.source is "offline".
STANDINS: dict[str, str] = {
    "postgres": OFFLINE_POSTGRES,
    "seaweedfs": OFFLINE_SEAWEEDFS,
    "sealed_secrets_controller": OFFLINE_SEALED_SECRETS,
}


def official_image(settings: Settings, workload: Workload) -> str:
    """The image setting for a workload (images.<workload> in config/platform.yaml)."""
    image: str = getattr(settings.images, workload)
    return image


def cluster_image(settings: Settings, workload: Workload) -> str:
    """The image the cluster manifests name: the stand-in when images.source is "offline" and one exists."""
    if settings.images.source == "offline" and workload in STANDINS:
        return STANDINS[workload]
    return official_image(settings, workload)
