"""Advice about .env keys fits the .env `invoke init` writes: it lists every key of .env.example, most of them empty."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.conftest import REPO


def listed_keys() -> list[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def sources() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "config").glob("*.example.yaml")),
        *sorted((REPO / "mlopskit").rglob("*.py")),
    ]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_advice_appends_a_key_that_the_generated_env_already_lists(path: Path) -> None:
    # Appending `KEY=...` after the empty `KEY=` line is refused as "given twice": the advice must be to set it.
    text = path.read_text(encoding="utf-8")
    wrong = [key for key in listed_keys() if re.search(rf"echo '?{key}=|\badd {key}=|{key}=[^\s`]*'? >> ?\.env", text)]
    assert wrong == []


def test_the_sample_env_lists_the_keys_the_advice_is_about() -> None:
    assert {"SSH_SUDO_PASSWORD", "BACKUP_PASSPHRASE", "MLFLOW_ADMIN_PASSWORD"} <= set(listed_keys())
