"""Tasks for the local platform on Docker: up, down, status."""

from __future__ import annotations

from invoke.context import Context
from rich.progress import TaskID

from mlopskit import console, images, local
from mlopskit.envfile import write_env_file
from mlopskit.settings import ENV_BY_PATH, ENV_FILE
from mlopskit.tasks.common import platform_task, project_root, settings_for
from mlopskit.tasks.images import progress_reporter


@platform_task(
    help={"dry_run": "print what would be created, recreated or started; change nothing [default: off]"},
)
def up(c: Context, dry_run: bool = False) -> None:
    """Run MLflow, PostgreSQL and S3 on this machine's Docker; a second run changes nothing."""
    root = project_root(c)
    if not (root / ENV_FILE).exists():
        # Another checkout's stack or an address this machine lacks is refused before this folder gets secrets.
        first = settings_for(c)
        local.check_owner(images.docker_client(), first)
        local.check_bind(first)
        if dry_run:
            console.info(f"would write {root / ENV_FILE} with fresh secrets (as `invoke init` does)")
            return
        generated = write_env_file(root)
        console.ok(f"{ENV_FILE} was missing: wrote {root / ENV_FILE} (mode 0600) with generated {', '.join(generated)}")
    settings = settings_for(c, "up")
    client = images.docker_client()
    local.preflight(client, settings)  # before building images: all that Docker or the kept data would refuse
    with console.progress() as progress:
        if dry_run:
            image_set = images.planned_image_set(settings, client)
        else:
            builder = images.ImageBuilder(settings, client, progress_reporter(progress))
            image_set = builder.image_set()
            for note in builder.log.notes:
                console.warn(note)
            for info in builder.log.infos:
                console.info(info)
        bars: dict[str, TaskID] = {}

        def report(service: str, state: str) -> None:
            if service not in bars:
                bars[service] = progress.add_task(service, total=1)
            progress.update(bars[service], description=f"{service}: {state}", completed=int(state == "healthy"))

        result = local.up(client, settings, image_set, report, dry_run=dry_run)
    if dry_run:
        planned = [(k, v) for k, v in result.actions.items() if v != "unchanged"]
        if planned:
            console.table("Would", ["object", "action"], planned)
        else:
            console.ok("nothing to do: every container already runs with these settings")
        return
    if result.changed:
        changed = [f"{k} {v}" for k, v in result.actions.items() if v != "unchanged"]
        console.ok("local platform is up: " + "; ".join(changed))
    else:
        console.ok("local platform unchanged: every container already runs with these settings")
    password_key = ENV_BY_PATH["platform.mlflow.admin_password"]
    console.info(f"MLflow:   {result.url}")
    console.info(f"user:     {settings.platform.mlflow.admin_user}")
    console.info(f"password: {password_key} in {root / ENV_FILE}")
    console.info("next:     `invoke status`; `invoke down` stops it (data kept), `invoke down --volumes` deletes data")


@platform_task(
    help={
        "volumes": "also delete the named volumes, i.e. all tracking data and artifacts [default: off]",
        "dry_run": "print what would be removed; remove nothing [default: off]",
    },
)
def down(c: Context, volumes: bool = False, dry_run: bool = False) -> None:
    """Stop and remove the local platform's containers and network; data stays unless --volumes."""
    settings = settings_for(c, access=False)
    removed = local.down(images.docker_client(), settings, volumes=volumes, dry_run=dry_run)
    if not removed:
        console.ok(f"unchanged: nothing of project {settings.local.project} is running")
        return
    verb = "would remove" if dry_run else "removed"
    console.ok(f"{verb}: " + ", ".join(removed))
    if not volumes and not dry_run:
        console.info("data volumes kept; `invoke up` continues where you left off")


@platform_task()
def status(c: Context) -> None:
    """Show the local platform's containers, their health and published addresses."""
    settings = settings_for(c, access=False)
    rows = local.status(images.docker_client(), settings)
    console.table(
        f"Local platform ({settings.local.project})",
        ["service", "container", "state", "health", "address", "image"],
        [(r.service, r.container, r.state, r.health, r.address, r.image) for r in rows],
    )
    if all(r.health == "healthy" for r in rows):
        console.info(f"MLflow: {local.mlflow_url(settings)}")
