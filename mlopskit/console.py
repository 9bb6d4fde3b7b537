"""Terminal output: progress, tables, and errors. Everything the user reads goes through here."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

# Output that is not a terminal (a CI log, a file, a pipe) gets no live display, and a table would be folded
# at rich's default of 80 columns: give it room, unless COLUMNS says otherwise. Plain lines are never wrapped
# there (soft wrap): a message or a command to copy stays on one line however long it is.
_WIDTH = None if os.environ.get("COLUMNS") else 160
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
for _output in (console, err_console):
    if not _output.is_terminal:
        _output.soft_wrap = True
        if _WIDTH:
            _output.width = _WIDTH


# Messages are text, never markup: "[from .env:3]" in a message must print as written, not vanish as a tag.
def info(message: str) -> None:
    console.print(message, markup=False)


def step(message: str) -> None:
    console.print(f"[bold cyan]==>[/] {escape(message)}")


def ok(message: str) -> None:
    console.print(f"[green]✓[/] {escape(message)}")


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print rows as a table; cells are rendered with str() and never as markup."""
    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*[_plain(cell) for cell in row])
    console.print(t)


def count(number: int, plural: str) -> str:
    """ "1 run", "2 runs", "1 registered model": `plural` is the noun's plural with a final s."""
    return f"{number} {plural.removesuffix('s') if number == 1 else plural}"


def amount(value: float | None, unit: str = "") -> str:
    """A progress count for people: a whole number as an integer ("31634600", never "3.16346e+07"), with
    unit="bytes" a decimal size ("31.6 MB")."""
    if value is None:
        return "?"
    if unit == "bytes":
        from rich.filesize import decimal

        return decimal(int(value))
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _plain(cell: object) -> str:
    from rich.markup import escape

    return escape(str(cell))


class LineProgress(Progress):
    """Progress for output that is not a terminal: one plain line, with the elapsed time, whenever a task
    starts, moves on (a new description or count) or finishes, printed as it happens (rich's live display
    would print nothing until the end)."""

    def __init__(self, target: Console) -> None:
        super().__init__(console=target, disable=True)
        self._target = target
        self._said: dict[TaskID, tuple[str, float, bool]] = {}

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        self._say(task_id)
        return task_id

    def update(
        self,
        task_id: TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        refresh: bool = False,
        **fields: Any,
    ) -> None:
        super().update(
            task_id,
            total=total,
            completed=completed,
            advance=advance,
            description=description,
            visible=visible,
            refresh=refresh,
            **fields,
        )
        self._say(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)

    def _say(self, task_id: TaskID) -> None:
        task = next(t for t in self.tasks if t.id == task_id)
        state = (task.description, task.completed, task.finished)
        if self._said.get(task_id) == state:
            return
        self._said[task_id] = state
        unit = str(task.fields.get("unit", ""))
        count = f" [{amount(task.completed, unit)}/{amount(task.total, unit)}]" if task.total else ""
        end = " (done)" if task.finished else ""
        self._target.print(f"[{task.elapsed or 0:6.1f}s] {task.description}{count}{end}", markup=False)


class _CountColumn(ProgressColumn):
    """done/total as amount() writes them (a task with the field unit="bytes" in sizes)."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields.get("unit", ""))
        return Text(f"{amount(task.completed, unit)}/{amount(task.total, unit)}" if task.total else "")


def progress() -> Progress:
    """A progress display for long work: `with progress() as p: task = p.add_task("...", total=n)`;
    add_task(..., unit="bytes") shows sizes.

    Bars on a terminal; plain timestamped lines as things happen otherwise (see LineProgress).
    """
    if not console.is_terminal:
        return LineProgress(console)
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def quiet_on_closed_output() -> None:
    """Make output into a pipe that closed early (`invoke --list | head`) end the program quietly (exit status
    1, atexit handlers run) instead of with a BrokenPipeError traceback. Everything else still goes to the
    previous sys.excepthook. Idempotent.

    The way Python's documentation gives ("Note on SIGPIPE", module signal): standard output is pointed at
    os.devnull so the interpreter's final flush does not fail again. SIGPIPE itself stays ignored, as Python
    sets it: restoring its default would kill a task silently when an SSH or HTTP peer closes a socket."""
    previous = sys.excepthook
    if getattr(previous, "mlopskit_quiet_pipe", False):
        return

    def excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if not issubclass(kind, BrokenPipeError):
            previous(kind, value, traceback)
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())

    excepthook.mlopskit_quiet_pipe = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook
