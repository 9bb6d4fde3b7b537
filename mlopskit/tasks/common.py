"""What every task shares: the settings loader and the translation of expected errors into exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from mlopskit import console, database_url
from mlopskit.errors import PlatformError
from mlopskit.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def project_root(c: Context) -> Path:
    """The repository root, set by tasks.py; the current directory when run outside it."""
    root = c.config.get("mlopskit", {}).get("root")
    return Path(root) if root else Path.cwd()


def settings_for(c: Context, command: str | None = None, *, ran: str | None = None, access: bool = True) -> Settings:
    """Load and validate the settings once; with a command (a set of Settings.required_for), also check the keys
    it needs, naming `invoke {ran}` (the command line as typed, default: command) in the message. access=False:
    for commands that never touch MLflow's users (config/access.yaml is not read; see load_settings)."""
    settings = load_settings(project_root(c), access=access)
    if command:
        settings.require(command, ran=ran)
    for note in database_url.notes(settings):
        console.warn(note)
    return settings


def confirm(question: str, accepted: set[str], refusal: str) -> bool:
    """Ask on the terminal; without one, refuse with `refusal` (which names --yes) instead of failing in input()."""
    if not sys.stdin.isatty():
        raise PlatformError(f"{refusal}: there is no terminal to ask for confirmation; rerun with --yes")
    try:
        answer = input(question)
    except EOFError:
        raise PlatformError(f"{refusal}: no answer (end of input); rerun with --yes") from None
    return answer.strip() in accepted


def expected_errors(func: F) -> F:
    """Turn PlatformError (and a Kubernetes API refusal nothing explained more closely) into a clean exit: the
    message, no traceback, exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PlatformError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except Exception as exc:
            kube_errors = sys.modules.get("kubernetes.client.exceptions")  # loaded only by tasks that talk to a cluster
            if kube_errors is None or not isinstance(exc, kube_errors.ApiException):
                raise
            from mlopskit.kube.api_errors import unexpected_api_error

            raise Exit(f"error: {unexpected_api_error(exc)}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def platform_task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """@task with expected errors turned into clean exits; kwargs go to invoke's @task (help=...)."""

    def decorate(func: Callable[..., Any]) -> Task[Any]:
        return cast(Task[Any], task(**kwargs)(expected_errors(func)))

    return decorate
