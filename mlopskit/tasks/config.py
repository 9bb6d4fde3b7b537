"""Tasks about settings: show them, check the machine, write a first .env."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from mlopskit import console
from mlopskit.config_view import settings_rows
from mlopskit.doctor import run_checks
from mlopskit.envfile import write_env_file
from mlopskit.tasks.common import platform_task, project_root, settings_for


@platform_task()
def show_config(c: Context) -> None:
    """Print the effective settings, secrets masked, with where each value came from."""
    settings = settings_for(c)
    console.table("Effective settings", ["key", "value", "source"], settings_rows(settings))


@platform_task()
def doctor(c: Context) -> None:
    """Check what each command needs (Python, Docker, SSH keys, kubeconfig) and how to fix what is missing."""
    settings = settings_for(c)
    checks = run_checks(settings)
    console.table(
        "invoke doctor",
        ["check", "needed by", "status", "detail", "fix"],
        [(ch.name, ch.needed_by, "OK" if ch.ok else "MISSING", ch.detail, ch.fix) for ch in checks],
    )
    missing = [ch for ch in checks if not ch.ok]
    if missing:
        raise Exit(f"{len(missing)} check(s) missing; each row says how to fix it", code=1)
    console.ok("everything every command needs is here")


@platform_task()
def init(c: Context) -> None:
    """Write .env from .env.example with fresh random secrets (never overwrites an existing .env)."""
    root = project_root(c)
    generated = write_env_file(root)
    console.ok(f"wrote {root / '.env'} (mode 0600) with generated {', '.join(generated)}")
    console.info("Review it, then run `invoke config` to see the effective settings.")
