"""Tasks that change the cluster's objects: deploy, diff, destroy."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from mlopskit import console, formats
from mlopskit.contract import MLFLOW_SERVICE
from mlopskit.errors import PlatformError
from mlopskit.kube import deploy as flow
from mlopskit.settings import check_flag, check_seconds
from mlopskit.tasks.common import confirm, platform_task, settings_for


@platform_task(
    help={
        "dry-run": "server-side dry run: print what would change, change nothing (default: off)",
        "force": "take over fields another field manager owns instead of stopping on the conflict (default: off)",
        "timeout": "seconds to wait for rollouts before reporting what is stuck (default: 600)",
        "no-verify": "skip the MLflow smoke check after the rollout (default: verify)",
        "purge-data": "also prune PersistentVolumeClaims that are no longer rendered (default: keep them)",
        "image": "MLflow image to deploy (default: the tag `invoke build-images` gives it: <version>-<git sha>)",
    }
)
def deploy(
    c: Context,
    dry_run: bool = False,
    force: bool = False,
    timeout: str = "600",
    no_verify: bool = False,
    purge_data: bool = False,
    image: str | None = None,
) -> None:
    """Render, seal and apply the platform to the cluster, prune leftovers, wait for it and verify MLflow."""
    seconds = check_flag("--timeout", timeout, check_seconds)
    if image is not None:
        check_flag("--image", image, formats.check_image, "images.* in config/platform.yaml")
    settings = settings_for(c, "deploy")
    outcome = flow.deploy(
        settings,
        dry_run=dry_run,
        force=force,
        timeout=seconds,
        verify=not no_verify,
        purge_data=purge_data,
        mlflow_image=image,
    )
    for note in outcome.notes:
        console.info(note)
    for check in outcome.checks:
        console.ok(check)
    result = outcome.result
    if dry_run:
        console.ok(f"dry run: {result.summary()}; nothing was changed")
        return
    console.ok(result.summary() if result.changed else f"unchanged: {result.summary()}")
    if outcome.url:
        console.info(f"MLflow: {outcome.url} (log in as {settings.platform.mlflow.admin_user}; password in .env)")
    else:
        console.info(
            f"MLflow: kubectl -n {settings.platform.namespace} port-forward svc/{MLFLOW_SERVICE} 5000 "
            "then http://127.0.0.1:5000 (or enable the ingress: INGRESS_ENABLED, INGRESS_HOST)"
        )


@platform_task(
    help={"image": "MLflow image to compare with, as given to `invoke deploy --image` (default: the built tag)"}
)
def diff(c: Context, image: str | None = None) -> None:
    """Show what `invoke deploy` would change, as unified diffs; exit 1 when anything differs."""
    if image is not None:
        check_flag("--image", image, formats.check_image, "images.* in config/platform.yaml")
    settings = settings_for(c, "deploy", ran="diff")
    diffs = flow.diff(settings, mlflow_image=image)
    for _, text in diffs:
        console.console.out(text, highlight=False)
    if diffs:
        raise Exit(f"{len(diffs)} object(s) differ", code=1)
    console.ok("no differences: the cluster matches the rendered manifests")


@platform_task(
    help={
        "yes": "do not ask for confirmation (default: ask; required without a terminal)",
        "purge-data": "also delete PersistentVolumeClaims, StatefulSet volume claims included (default: keep)",
        "dry-run": "server-side dry run: list what would be deleted, delete nothing (default: off)",
    }
)
def destroy(c: Context, yes: bool = False, purge_data: bool = False, dry_run: bool = False) -> None:
    """Delete everything `invoke deploy` created, in reverse order; data volumes stay unless --purge-data."""
    settings = settings_for(c)
    namespace = settings.platform.namespace
    if not yes and not dry_run:
        what = "everything, data volumes included" if purge_data else "everything but the data volumes"
        question = f"Delete {what} that mlopskit deployed to namespace {namespace!r}? Type the namespace: "
        if not confirm(question, {namespace}, f"refusing to destroy the platform in namespace {namespace!r}"):
            raise PlatformError("not confirmed: nothing was deleted")
    result = flow.destroy(settings, purge_data=purge_data, dry_run=dry_run)
    deleted = f"{len(result.pruned)} object(s) {'would be ' if dry_run else ''}deleted"
    if not result.pruned and not result.kept:
        console.ok(f"unchanged: nothing of mlopskit's is deployed in namespace {namespace}")
        return
    console.ok(deleted)
    if result.kept:
        console.info(
            f"kept {len(result.kept)} object(s) holding data: "
            + ", ".join(str(ref) for ref in result.kept)
            + "; rerun with --purge-data to delete them"
        )
