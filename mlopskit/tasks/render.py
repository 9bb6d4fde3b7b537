"""`invoke render`: the platform's manifests as files, for review or `kubectl apply -f`."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context

from mlopskit import console, formats, public_host
from mlopskit.image_names import mlflow_image_ref
from mlopskit.kube.render import manifest_files, render_manifests, write_manifests
from mlopskit.kube.validate import validate_objects
from mlopskit.settings import check_flag
from mlopskit.tasks.common import platform_task, project_root, settings_for


@platform_task(
    help={
        "out": "folder to write one YAML file per object into (default: build/manifests)",
        "image": "MLflow image the manifests run (default: [registry/]repository:<mlflow version>-<git sha>)",
        "force": "write into a non-empty folder that `invoke render` did not create (default: refuse)",
        "dry-run": "list the files that would change, write nothing (default: off)",
    }
)
def render(
    c: Context, out: str = "build/manifests", image: str | None = None, force: bool = False, dry_run: bool = False
) -> None:
    """Render and validate the k8s/ templates into one file per object (credentials are sealed separately)."""
    if image is not None:
        check_flag("--image", image, formats.check_image, "images.* in config/platform.yaml")
    settings = settings_for(c)
    objects = render_manifests(settings, mlflow_image=image or mlflow_image_ref(settings))
    validate_objects(objects, settings.cluster.k3s_version)
    console.ok(f"{len(objects)} objects rendered and valid against Kubernetes {settings.cluster.k3s_version}")
    metrics = settings.platform.metrics
    if metrics.enabled and metrics.service_monitor == "auto":
        console.info(
            "no ServiceMonitor: platform.metrics.service_monitor is auto and `invoke render` asks no cluster "
            "whether it serves one; `invoke deploy` adds it where the CRD exists (true renders it here too)"
        )
    if public_host.traefik_values(settings.platform.ingress) is not None:
        console.info(
            "no HelmChartConfig for Traefik's upload timeout: `invoke render` asks no cluster whether it is K3s; "
            "`invoke deploy` adds it where the cluster has K3s's HelmChartConfig CRD"
        )
    folder = Path(out)
    if not folder.is_absolute():
        folder = project_root(c) / folder
    result = write_manifests(manifest_files(objects), folder, force=force, dry_run=dry_run)
    prefix = "(dry run) " if dry_run else ""
    for action, names in (("create", result.created), ("update", result.updated), ("remove", result.removed)):
        for name in names:
            console.info(f"  {prefix}{action:<7} {folder / name}")
    if not result.changed:
        console.ok(f"unchanged: {folder} already holds these {len(result.unchanged)} files")
    elif dry_run:
        console.ok(
            f"dry run: {len(result.created)} to create, {len(result.updated)} to update, "
            f"{len(result.removed)} to remove; nothing written"
        )
    else:
        console.ok(
            f"{folder}: {len(result.created)} created, {len(result.updated)} updated, {len(result.removed)} removed"
        )
    console.info("Review them, or apply with: invoke deploy (seals the credentials, applies in order, prunes, waits)")
