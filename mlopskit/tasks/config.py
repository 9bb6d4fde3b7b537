"""Tasks about settings: show them, check the machine, write a first .env."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from mlopskit import console
from mlopskit.config_view import settings_rows
from mlopskit.doctor import GROUPS, check_kubeconfig, run_checks, runnable
from mlopskit.envfile import write_env_file
from mlopskit.errors import PlatformError
from mlopskit.settings import Settings
from mlopskit.tasks.common import platform_task, project_root, settings_for


@platform_task()
def show_config(c: Context) -> None:
    """Print the effective settings, secrets masked, with where each value came from."""
    settings = settings_for(c)
    console.table("Effective settings", ["key", "value", "source"], settings_rows(settings))


@platform_task(
    help={
        "for": f"only what this command needs: {', '.join(GROUPS)}; exit 1 when it cannot run "
        "(default: every group; exit 1 only when none can run)",
        "cluster": "instead, check that the deployed platform agrees with the settings: the Ingress, MLflow's "
        "allowed hosts and CORS, the TLS certificate (30+ days left), the host reachable through the ingress; "
        "exit 1 on any FAIL (default: off)",
    }
)
def doctor(c: Context, for_: str | None = None, cluster: bool = False) -> None:
    """Check what each command needs (Python, Docker, SSH keys, kubeconfig) and how to fix what is missing."""
    if for_ is not None and for_ not in GROUPS:
        raise PlatformError(f"--for {for_!r} [from the command line]: expected one of {', '.join(GROUPS)}")
    if cluster and for_ is not None:
        raise PlatformError("--cluster and --for [from the command line]: give one of them (different checks)")
    settings = settings_for(c)
    if cluster:
        doctor_cluster(settings)
        return
    checks = [ch for ch in run_checks(settings) if for_ is None or for_ in ch.groups]
    console.table(
        "invoke doctor" + (f" --for {for_}" if for_ else ""),
        ["check", "needed by", "status", "detail", "fix"],
        [(ch.name, ch.needed_by, "OK" if ch.ok else "MISSING", ch.detail, ch.fix) for ch in checks],
    )
    ready = runnable(checks)
    if for_ is not None:
        if not ready[for_]:
            raise Exit(f"`invoke {for_}` cannot run yet; each MISSING row says how to fix it", code=1)
        console.ok(f"everything `invoke {for_}` needs is here")
        return
    can = [group for group, ok in ready.items() if ok]
    cannot = [group for group, ok in ready.items() if not ok]
    if can:
        console.ok("can run now: " + "; ".join(GROUPS[g] for g in can))
    if cannot:
        console.info("not yet: " + "; ".join(GROUPS[g] for g in cannot) + " (see the MISSING rows)")
    if not can:
        raise Exit("no command can run yet; each MISSING row says how to fix it", code=1)


@platform_task()
def init(c: Context) -> None:
    """Write .env from .env.example with fresh random secrets (never overwrites an existing .env)."""
    root = project_root(c)
    generated = write_env_file(root)
    console.ok(f"wrote {root / '.env'} (mode 0600) with generated {', '.join(generated)}")
    console.info("Review it, then run `invoke config` to see the effective settings.")


def doctor_cluster(settings: Settings) -> None:
    """`invoke doctor --cluster`: one row per check of the live platform; exit 1 when any fails."""
    from mlopskit.cluster_checks import run_cluster_checks
    from mlopskit.kube.client import api_client, dynamic_client

    reach = check_kubeconfig(settings)
    checks = [reach]
    if reach.ok:
        checks += run_cluster_checks(settings, dynamic_client(api_client(settings)))
    console.table(
        "invoke doctor --cluster",
        ["check", "status", "detail", "fix"],
        [(ch.name, ch.status, ch.detail, ch.fix) for ch in checks],
    )
    failed = [ch for ch in checks if not ch.ok]
    if failed:
        raise Exit(f"{len(failed)} check(s) failed; each FAIL row says how to fix it", code=1)
    console.ok(f"the deployed platform in namespace {settings.platform.namespace} agrees with the settings")
