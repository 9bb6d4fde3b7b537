"""Writes .env from .env.example, with fresh random values for the generated secrets."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from mlopskit.errors import PlatformError
from mlopskit.private_files import write_private
from mlopskit.settings import ENV_FILE, GENERATED_KEYS

EXAMPLE_FILE = ".env.example"


def generate_secret(key: str) -> str:
    if key == "S3_ACCESS_KEY":
        return "mlops" + secrets.token_hex(8)
    return secrets.token_urlsafe(32)


def env_line(key: str, value: str) -> str:
    """KEY=value as python-dotenv reads it back unchanged: plain when safe, else single-quoted and escaped."""
    if re.fullmatch(r"[A-Za-z0-9_.+/=-]*", value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def write_env_file(root: Path) -> list[str]:
    """Create root/.env (mode 0600) from the example; returns the generated keys. Never overwrites."""
    target = root / ENV_FILE
    example = root / EXAMPLE_FILE
    if target.exists():
        raise PlatformError(f"{target} already exists; edit it, or move it away to generate a new one")
    if not example.is_file():
        raise PlatformError(f"{example} is missing; restore it from git (git checkout -- {EXAMPLE_FILE})")
    generated: list[str] = []
    lines = []
    for line in example.read_text().splitlines():
        match = re.match(r"^([A-Z0-9_]+)=\s*$", line)
        if match and match.group(1) in GENERATED_KEYS:
            key = match.group(1)
            line = env_line(key, generate_secret(key))
            generated.append(key)
        lines.append(line)
    write_private(target, "\n".join(lines) + "\n", replace=False)
    return generated
