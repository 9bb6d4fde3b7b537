"""Tasks for MLflow users and permissions declared in config/access.yaml: plan and apply."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from mlopskit import access, console
from mlopskit.mlflow_admin import RERUN_CLUSTER, RERUN_LOCAL, MlflowClient, wait_healthy
from mlopskit.settings import ACCESS_FILE
from mlopskit.tasks.common import platform_task, settings_for

TARGET_HELP = "reach the cluster's MLflow through a port-forward (default: the local stack of `invoke up`)"
PRUNE_HELP = f"also delete users and revoke grants that {ACCESS_FILE} does not declare; never the admin (default: off)"


def _healthy(url: str, cluster: bool) -> None:
    wait_healthy(MlflowClient(url, "-", "-", rerun=RERUN_CLUSTER if cluster else RERUN_LOCAL), timeout=60)


def _show(plan: access.Plan, title: str) -> None:
    rows = plan.rows()
    if rows:
        console.table(title, ["action", "user", "resource", "level"], rows)
    for note in plan.notes:
        console.info(f"note: {note}")
    if plan.undeclared and not plan.prune:
        console.info(
            f"not declared in {ACCESS_FILE}, kept: "
            + "; ".join(
                " ".join([c.action, c.user] + ([plan.label(c.target)] if c.target else [])) for c in plan.undeclared
            )
            + " (--prune removes them)"
        )


@platform_task(help={"cluster": TARGET_HELP, "prune": PRUNE_HELP})
def plan(c: Context, cluster: bool = False, prune: bool = False) -> None:
    """Show what `invoke access.apply` would change in MLflow's users and permissions; exit 1 when anything differs."""
    settings = settings_for(c, "access", ran="access.plan")
    with access.mlflow_endpoint(settings, cluster=cluster) as (url, previous):
        _healthy(url, cluster)
        rotation = access.ensure_admin_password(settings, url, previous, dry_run=True)
        result = access.make_plan(settings, access.admin_client(settings, url, previous), prune=prune)
    _show(result, f"Access plan for {url}")
    if rotation != "unchanged":
        console.info(f"admin password: {rotation}")
    if result.effective or rotation != "unchanged":
        count = len(result.effective) + (rotation != "unchanged")
        raise Exit(f"{count} change(s) to apply: run `invoke access.apply`", code=1)
    console.ok(f"no differences: MLflow matches {ACCESS_FILE}")


@platform_task(
    help={
        "cluster": TARGET_HELP,
        "prune": PRUNE_HELP,
        "dry-run": "print the plan and change nothing (default: off)",
    }
)
def apply(c: Context, cluster: bool = False, prune: bool = False, dry_run: bool = False) -> None:
    """Make MLflow's users, passwords and permissions match config/access.yaml; a second run changes nothing."""
    settings = settings_for(c, "access", ran="access.apply")
    with access.mlflow_endpoint(settings, cluster=cluster) as (url, previous):
        _healthy(url, cluster)
        rotation = access.ensure_admin_password(settings, url, previous, dry_run=dry_run)
        admin = access.admin_client(settings, url, previous)
        result = access.make_plan(settings, admin, prune=prune)
        if dry_run:
            _show(result, f"Would change in {url}")
            console.ok(f"dry run: {len(result.effective)} change(s), admin password {rotation}; nothing was changed")
            return
        done = access.apply_plan(settings, admin, result)
    _show(result, f"Changed in {url}")
    if not done and rotation == "unchanged":
        console.ok(f"unchanged: MLflow already matches {ACCESS_FILE}")
        return
    console.ok(f"{len(done)} change(s) applied; admin password {rotation}")
    console.info("next: `invoke access.plan` shows no differences; users log in with the passwords in .env")
