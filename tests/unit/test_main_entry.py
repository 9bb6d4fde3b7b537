"""`mlopskit` / `python -m mlopskit`: the project root found from a subfolder, a plain error outside one, and
a quiet end when the reader of its output goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlopskit.__main__ import find_project_root
from mlopskit.settings import ENV_KEYS

REPO = Path(__file__).resolve().parents[2]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "mlopskit", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )


def test_the_root_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("")
    (tmp_path / "config" / "deep").mkdir(parents=True)

    assert find_project_root(tmp_path / "config" / "deep") == tmp_path
    assert find_project_root(tmp_path) == tmp_path


def test_a_folder_outside_any_project_gets_a_plain_error(tmp_path: Path) -> None:
    assert find_project_root(tmp_path) is None
    done = run(tmp_path, "up", "--dry-run")

    assert done.returncode == 1
    assert "run this from the project root (the folder with tasks.py and config/)" in done.stderr
    assert "Traceback" not in done.stderr and ".env.example" not in done.stderr


def test_listing_the_commands_works_anywhere(tmp_path: Path) -> None:
    done = run(tmp_path, "--list")

    assert done.returncode == 0, done.stderr
    assert "up" in done.stdout.split()


def test_a_reader_that_goes_away_ends_the_program_quietly(tmp_path: Path) -> None:
    """`mlopskit --list | head -0`: the pipe is closed before the program writes to it."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["PYTHONPATH"] = str(REPO)
    with subprocess.Popen(
        [sys.executable, "-m", "mlopskit", "--list"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()
        errors = child.stderr.read().decode()
    assert "BrokenPipeError" not in errors and "Traceback" not in errors
    assert errors == ""
