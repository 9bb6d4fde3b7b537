"""Tasks about container images: build the MLflow image (and offline stand-ins), push it."""

from __future__ import annotations

from invoke.context import Context
from rich.progress import Progress, TaskID

from mlopskit import console, images
from mlopskit.hosts.images import images_to_deliver, import_to_nodes
from mlopskit.image_names import (
    OFFLINE_POSTGRES,
    OFFLINE_PYTHON,
    OFFLINE_SEAWEEDFS,
    cluster_image,
    mlflow_image_ref,
    mlflow_repository,
)
from mlopskit.tasks.common import platform_task, settings_for


def progress_reporter(progress: Progress) -> images.Reporter:
    """A build reporter that shows one progress bar per image, advancing with the Dockerfile's steps."""
    bars: dict[str, TaskID] = {}

    def report(image: str, step: int, total: int, text: str) -> None:
        if image not in bars:
            bars[image] = progress.add_task(f"build {image}", total=total or None)
        if total:
            label = f"build {image}: {text[:60]}" if text else None
            progress.update(bars[image], completed=step, total=total, description=label or f"build {image}")

    return report


def human_size(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


@platform_task(
    help={
        "push": "push the MLflow image to images.registry (IMAGE_REGISTRY) after building [default: off]",
        "no_cache": "rebuild every image from scratch, ignoring the input-hash and layer caches [default: off]",
        "dry_run": "print which images would be built or reused and their tags, build nothing [default: off]",
        "to_nodes": "after building, stream the images into every K3s node's containerd over SSH "
        "(`k3s ctr images import`), for clusters without a registry [default: off]",
    }
)
def build_images(
    c: Context, push: bool = False, no_cache: bool = False, dry_run: bool = False, to_nodes: bool = False
) -> None:
    """Build the MLflow image (and offline stand-ins when the registry is out of reach); print sizes."""
    settings = settings_for(c, "push" if push else None, ran="build-images --push")
    ref = mlflow_image_ref(settings)
    if dry_run:
        console.info(f"would build {ref} and {mlflow_repository(settings)}:latest from docker/mlflow")
        console.info(
            f"base {settings.images.python_base}, images.source={settings.images.source} "
            f"(stand-ins: {OFFLINE_PYTHON}, {OFFLINE_POSTGRES}, {OFFLINE_SEAWEEDFS})"
        )
        console.info(f"the cluster's Sealed Secrets controller: {cluster_image(settings, 'sealed_secrets_controller')}")
        if push:
            console.info(f"would push {ref}")
        return
    client = images.docker_client()
    with console.progress() as progress:
        builder = images.ImageBuilder(settings, client, progress_reporter(progress), no_cache=no_cache)
        image_set = builder.image_set()
        controller = builder.sealed_secrets_controller()
    for note in builder.log.notes:
        console.warn(note)
    for info in builder.log.infos:
        console.info(info)
    rows = []
    services = [("mlflow", image_set.mlflow), ("postgres", image_set.postgres), ("s3", image_set.s3)]
    if controller is not None:
        services.append(("sealed-secrets", controller))
    for label, name in services:
        built = next((r for r in builder.log.results if r.ref == name), None)
        state = "unchanged" if built is None or not built.changed else "built"
        rows.append((label, name, state, human_size(images.image_size(client, name))))
    console.table("Images", ["service", "image", "state", "size"], rows)
    if push:
        console.step(f"pushing {ref}")
        images.push_image(client, ref)
        console.ok(f"pushed {ref}")
    if to_nodes:
        # Exactly the images the manifests name, so every pod finds its image on the node.
        refs = images_to_deliver(settings, ref, lambda name: images.image_present(client, name))
        nodes = import_to_nodes(settings, lambda: images.save_images(refs, client))
        console.ok(f"imported {', '.join(refs)} into {', '.join(nodes)}")
    console.ok(f"MLflow image: {ref}")
