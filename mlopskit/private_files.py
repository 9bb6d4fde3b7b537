"""The one writer of files that hold secrets: created with mode 0600 from the start, never briefly readable."""

from __future__ import annotations

import os
from pathlib import Path

from mlopskit.errors import PlatformError


def write_private(path: Path, data: str | bytes, *, replace: bool) -> None:
    """Write data to path with mode 0600, creating its folder.

    With replace=False an existing file is never touched: PlatformError names it. With replace=True the
    content is replaced and the mode set back to 0600 if it had changed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise PlatformError(f"{path} already exists; move it away or choose another path") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


def check_new_output(path: Path, what: str, option: str = "--out") -> None:
    """Before any work: path is a file that does not exist yet, in a folder that exists or can be created
    (created here, mode 0700). PlatformError naming the option, the path and what to do otherwise; `what`
    says what the file would hold ("an archive", "a key backup", "an identity")."""
    if path.is_dir():
        raise PlatformError(f"{option} {path}: is a folder; give the path of a new file in it ({what})")
    if path.exists():
        raise PlatformError(f"{option} {path}: the file exists; choose a new path ({what} is never overwritten)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PlatformError(f"{option} {path}: cannot create the folder {path.parent} ({exc.strerror})") from None
