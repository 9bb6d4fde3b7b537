"""The effective settings as rows of (key, value, source), with every secret masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mlopskit.settings import ENV_BY_PATH, Settings

MASK = "********"


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return MASK
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items()) if value else "{}"
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return _show({k: getattr(value, k) for k in type(value).model_fields})
    return str(value)


def settings_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """One row per setting; a secret shows as a mask whatever its length, so nothing leaks."""
    rows = []
    for path, value in settings.leaves():
        if path in {"cluster.hosts", "access.users", "access.groups", "access.permissions"}:
            # One row per item, named like errors name it: cluster.hosts[k3s-1], access.users[alice].
            for index, item in enumerate(value):
                name = getattr(item, "name", index)
                rows.append((f"{path}[{name}]", _show(item), settings.source_of(f"{path}.{index}")))
            if not value:
                rows.append((path, "[]", settings.source_of(path)))
            continue
        env = ENV_BY_PATH.get(path)
        key = f"{path} ({env})" if env else path
        rows.append((key, _show(value), settings.source_of(path)))
    return rows
