"""`mlopskit` and `python -m mlopskit`: the same commands as `invoke`, for the project in the current folder."""

from __future__ import annotations

from pathlib import Path

from invoke.program import Program

from mlopskit import __version__
from mlopskit.tasks import build_collection


def main() -> None:
    """Run the task collection with the current folder as the project root (where .env and config/ are)."""
    namespace = build_collection()
    namespace.configure({"mlopskit": {"root": str(Path.cwd())}})
    Program(namespace=namespace, version=__version__, name="mlopskit", binary="mlopskit").run()


if __name__ == "__main__":
    main()
