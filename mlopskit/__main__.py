"""`mlopskit` and `python -m mlopskit`: the same commands as `invoke`, for the project in the current folder
(or the folder above it that holds tasks.py and config/, as `invoke` finds tasks.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke.program import Program

from mlopskit import __version__
from mlopskit.tasks import build_collection

# Options that need no project: they only describe the commands.
_ANYWHERE = {"-h", "--help", "-l", "--list", "-V", "--version", "--complete", "--print-completion-script"}


def find_project_root(start: Path) -> Path | None:
    """The nearest folder from `start` upwards holding tasks.py and a config/ folder, or None."""
    for folder in (start, *start.parents):
        if (folder / "tasks.py").is_file() and (folder / "config").is_dir():
            return folder
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the task collection with the project root found from the current folder (where .env and config/
    are); exit 1 with a plain message when there is none, and quietly when the reader of stdout goes away
    (`mlopskit --list | head`)."""
    args = sys.argv[1:] if argv is None else argv
    root = find_project_root(Path.cwd())
    if root is None and not (set(args) & _ANYWHERE or not args):
        sys.stderr.write(
            f"error: {Path.cwd()} is not in an mlopskit project: run this from the project root "
            "(the folder with tasks.py and config/) or a folder inside it\n"
        )
        sys.exit(1)
    namespace = build_collection()
    namespace.configure({"mlopskit": {"root": str(root or Path.cwd())}})
    try:
        Program(namespace=namespace, version=__version__, name="mlopskit", binary="mlopskit").run(["mlopskit", *args])
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's advice: point stdout at devnull so the flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
