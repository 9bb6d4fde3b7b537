"""Terminal output: progress, tables, and errors. Everything the user reads goes through here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message)


def step(message: str) -> None:
    console.print(f"[bold cyan]==>[/] {message}")


def ok(message: str) -> None:
    console.print(f"[green]✓[/] {message}")


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print rows as a table; cells are rendered with str() and never as markup."""
    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*[_plain(cell) for cell in row])
    console.print(t)


def _plain(cell: object) -> str:
    from rich.markup import escape

    return escape(str(cell))


def progress() -> Progress:
    """A progress display for long work: `with progress() as p: task = p.add_task("...", total=n)`."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
