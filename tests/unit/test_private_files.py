"""The one writer of secret-holding files (.env, kubeconfig, sealing state, key backups)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlopskit.errors import PlatformError
from mlopskit.private_files import write_private


def test_a_new_file_is_only_readable_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "secret.txt"
    write_private(path, "s3cret", replace=False)
    assert path.read_text() == "s3cret"
    assert path.stat().st_mode & 0o777 == 0o600


def test_without_replace_an_existing_file_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("keep me")
    with pytest.raises(PlatformError, match="already exists"):
        write_private(path, "new", replace=False)
    assert path.read_text() == "keep me"


def test_replace_rewrites_the_content_and_restores_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"new", replace=True)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
