"""Output without a terminal (CI logs, files, pipes): progress arrives as it happens, tables are not folded."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mlopskit.settings import ENV_KEYS

# Two steps a second apart, then the end: like a build or a rollout, in miniature.
WORK = """
import time
from mlopskit import console
with console.progress() as bar:
    task = bar.add_task("build mlopskit/mlflow: Step 1/2 : FROM base", total=2)
    time.sleep(0.6)
    bar.update(task, completed=1, description="build mlopskit/mlflow: Step 2/2 : RUN pip install")
    time.sleep(0.6)
    bar.update(task, completed=2)
time.sleep(0.6)
row = ("mlflow", "mlopskit/mlflow:" + "x" * 60, "built", "480 MB")
console.table("Images", ["service", "image", "state", "size"], [row])
"""


@pytest.fixture(scope="module")
def piped() -> tuple[list[tuple[float, str]], float]:
    """(seconds after start, line) for every line the child writes to a pipe, and when it ended."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and k != "COLUMNS"}
    start = time.monotonic()
    with subprocess.Popen([sys.executable, "-c", WORK], stdout=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdout is not None
        lines = [(time.monotonic() - start, line.rstrip("\n")) for line in child.stdout]
    return lines, time.monotonic() - start


def test_progress_lines_arrive_while_the_work_runs_not_at_the_end(piped: tuple[list[tuple[float, str]], float]) -> None:
    lines, ended = piped
    steps = [(at, text) for at, text in lines if "build mlopskit/mlflow" in text]
    assert [text.split("] ", 1)[1] for _, text in steps] == [
        "build mlopskit/mlflow: Step 1/2 : FROM base [0/2]",
        "build mlopskit/mlflow: Step 2/2 : RUN pip install [1/2]",
        "build mlopskit/mlflow: Step 2/2 : RUN pip install [2/2] (done)",
    ]
    assert steps[0][0] < ended - 1.2  # the first step was readable well before the process ended


def test_tables_are_not_folded_at_80_columns_without_a_terminal(piped: tuple[list[tuple[float, str]], float]) -> None:
    lines, _ = piped
    row = next(text for _, text in lines if "mlopskit/mlflow:xxx" in text)
    assert "x" * 60 in row and "480 MB" in row


LONG = """
from mlopskit import console
console.info("next: `invoke restore " + "/root/.local/share/mlopskit/" + "b" * 150 + ".tar.age --target local`")
console.warn("a warning " + "w" * 200 + " that ends here")
with console.progress() as bar:
    task = bar.add_task("verify", total=31634600)
    bar.update(task, completed=31634600)
    sized = bar.add_task("download", total=31634600, unit="bytes")
    bar.update(sized, completed=1000)
"""


def test_plain_lines_are_not_wrapped_and_counts_are_integers_or_sizes_without_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-c", LONG], capture_output=True, text=True, env=env, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("next: `invoke restore /root/") and lines[0].endswith(".tar.age --target local`")
    assert done.stderr.strip().endswith("that ends here") and len(done.stderr.strip().splitlines()) == 1
    assert any(line.endswith("verify [31634600/31634600] (done)") for line in lines), lines
    assert any(line.endswith("download [1.0 kB/31.6 MB]") for line in lines), lines
    assert "e+07" not in done.stdout


def test_counts_name_one_thing_in_the_singular() -> None:
    from mlopskit.console import amount, count

    assert [count(1, "runs"), count(0, "runs"), count(2, "registered models")] == [
        "1 run",
        "0 runs",
        "2 registered models",
    ]
    assert (amount(3.0), amount(2.5), amount(None)) == ("3", "2.5", "?")


@pytest.mark.parametrize("show", ["info", "ok", "warn", "step"])
def test_a_message_with_brackets_prints_as_written_not_as_markup(show: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mlopskit import console

    getattr(console, show)("platform.postgres.dsn (POSTGRES_DSN) [from .env:3]: [bold]not markup[/]")
    printed = capsys.readouterr()
    assert "(POSTGRES_DSN) [from .env:3]: [bold]not markup[/]" in printed.out + printed.err
