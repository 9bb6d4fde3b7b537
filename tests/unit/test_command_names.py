"""Every `invoke <task>` the README, the samples and the tool's own messages tell a user to type names a task."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlopskit.tasks import build_collection
from tests.unit.conftest import REPO

# `invoke access plan` parses as two tasks, `access` (unknown) and `plan`: Invoke needs `access.plan`.
COMMAND = re.compile(r"\binvoke ([a-z][a-z0-9_.-]*)(?: ([a-z][a-z0-9_-]*))?")
NOT_COMMANDS = {"tasks"}  # prose: "the invoke tasks in mlopskit/tasks/..."


def sources() -> list[Path]:
    files = [REPO / "README.md", REPO / ".env.example", *sorted((REPO / "config").glob("*.example.yaml"))]
    return files + sorted((REPO / "mlopskit").rglob("*.py"))


def task_names() -> set[str]:
    return set(build_collection().task_names)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_invoke_command_written_in_a_file_names_a_task(path: Path) -> None:
    names = task_names()
    collections = {name.split(".")[0] for name in names if "." in name}
    wrong = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in COMMAND.finditer(line):
            task, following = match.groups()
            if task in NOT_COMMANDS:
                continue
            if task in collections:
                wrong.append(f"line {number}: `invoke {task} {following}` should be `invoke {task}.{following}`")
            elif task not in names:
                wrong.append(f"line {number}: `invoke {task}` is not a task")
    assert wrong == []


def test_a_collection_name_alone_is_not_a_task() -> None:
    assert "access" not in task_names()
    assert {"access.plan", "access.apply", "secrets.backup-key"} <= task_names()
