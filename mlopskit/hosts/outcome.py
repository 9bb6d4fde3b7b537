"""What a step reports: changed or unchanged, with notes for the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["changed", "unchanged", "failed", "skipped"]


@dataclass
class Outcome:
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return "changed" if self.changes else "unchanged"

    def record(self, changed: bool, what: str) -> None:
        if changed:
            self.changes.append(what)
