"""Exceptions for expected failures: the task layer prints their message, never a traceback."""

from __future__ import annotations


class PlatformError(Exception):
    """An expected failure whose message says what went wrong and how to fix it."""


class SettingsError(PlatformError):
    """One or more settings are missing or invalid; each problem names its key and source."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = f"Invalid settings: {problems[0]}"
        else:
            text = "Invalid settings:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)
