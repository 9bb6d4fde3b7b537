"""Names of the images the platform runs: the official ones, or the offline stand-ins that replace them.

Kept apart from images.py (which needs Docker) so the names the manifests render and the names `invoke
build-images --to-nodes` delivers come from one place. Rendering takes the MLflow image as an argument:
the tasks work it out once here (its default tag runs `git rev-parse`) and pass it down.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from mlopskit.settings import SEAWEEDFS_VERSION as SEAWEEDFS_VERSION
from mlopskit.settings import Settings

DEBIAN_BASE = "mlopskit/debian:bookworm"
OFFLINE_PYTHON = "mlopskit/python:3.11-bookworm"
OFFLINE_POSTGRES = "mlopskit/postgres:15-bookworm"
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


def git_short_sha(root: Path) -> str:
    """The checkout's short commit id, or "nogit" outside a git checkout (the one place that runs git)."""
    result = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "nogit"


def mlflow_tag(settings: Settings) -> str:
    """settings.images.tag, else <mlflow version>-<git short sha>."""
    return settings.images.tag or f"{settings.images.mlflow_version}-{git_short_sha(settings.root)}"


def mlflow_repository(settings: Settings) -> str:
    registry = settings.images.registry
    repository = settings.images.mlflow_repository
    return f"{registry.rstrip('/')}/{repository}" if registry else repository


def mlflow_image_ref(settings: Settings) -> str:
    """The MLflow image the platform runs: [registry/]repository:tag."""
    return f"{mlflow_repository(settings)}:{mlflow_tag(settings)}"
