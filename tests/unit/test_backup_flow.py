"""Restore's checks and order, with a recording stand-in for the platform (no Docker, no cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup import flow
from mlopskit.backup.archive import AUTH_DUMP, TRACKING_DUMP, ArchiveReader, ArchiveWriter, Manifest
from mlopskit.backup.postgres import dump_command, query_command, restore_command
from mlopskit.errors import PlatformError
from mlopskit.settings import Settings
from tests.unit.conftest import SAMPLE_SECRETS

FRESH = dict(flow.EMPTY)
FILLED = {"experiments": 3, "runs": 6, "registered_models": 1, "users": 2, "objects": 9}


class RecordingShell:
    where = "fake postgres"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def stream(self, command: list[str]) -> Iterator[bytes]:
        yield b""

    def feed(self, command: list[str], chunks: Iterable[bytes]) -> str:
        data = b"".join(chunks)
        self.calls.append(f"restore {command[-1].split('--dbname=')[-1]} {len(data)}")
        return ""


class RecordingTarget:
    kind = "local"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.shell = RecordingShell(self.calls)
        self.bucket: Any = type("FakeBucket", (), {"name": "mlflow"})()

    def versions(self) -> dict[str, str | None]:
        return {}

    def back_up_extras(self, writer: ArchiveWriter) -> list[str]:
        return []

    def restore_extras(self, reader: ArchiveReader) -> list[str]:
        self.calls.append("keys")
        return []

    def stop_mlflow(self) -> None:
        self.calls.append("stop mlflow")

    def migrate(self) -> None:
        self.calls.append("migrate")

    def start_mlflow(self) -> Any:
        self.calls.append("start mlflow")
        return object()


def _reader(tmp_path: Path, **changes: Any) -> ArchiveReader:
    manifest = Manifest(target="local", cluster="mlops", project="p", namespace="mlops", bucket="mlflow", started="t0")
    manifest.versions = {"mlflow": "3.17.2"}
    manifest.counts = dict(FILLED)
    for key, value in changes.items():
        setattr(manifest, key, value)
    writer = ArchiveWriter(tmp_path / "a.tar", manifest)
    writer.add_bytes(TRACKING_DUMP, b"tracking")
    writer.add_bytes(AUTH_DUMP, b"auth")
    writer.close()
    return ArchiveReader(tmp_path / "a.tar", "a.tar.age")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(environ=dict(SAMPLE_SECRETS))


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RecordingTarget, list[dict[str, int]]]]:
    """A target whose counts are FRESH before the restore and FILLED after; the bucket restore is recorded."""
    target = RecordingTarget()
    found = [dict(FRESH), dict(FILLED)]
    monkeypatch.setattr(flow, "counts", lambda settings, shell, bucket, **_: found.pop(0))

    def restore_bucket(bucket: Any, reader: ArchiveReader, progress: Any) -> tuple[int, int]:
        target.calls.append("bucket")
        return 9, 0

    monkeypatch.setattr(bucket_parts, "restore", restore_bucket)
    monkeypatch.setattr(flow, "smoke_check", lambda client: type("R", (), {"steps": ["smoke"]})())
    yield target, found


def test_restore_puts_keys_first_and_migrates_before_mlflow_starts(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, _ = platform
    flow.restore(settings, target, _reader(tmp_path), yes=False)
    assert target.calls == [
        "keys",
        "stop mlflow",
        "restore mlflow 8",
        "restore mlflow_auth 4",
        "bucket",
        "migrate",
        "start mlflow",
    ]


def test_a_platform_holding_data_is_refused_without_yes_before_anything_changes(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, found = platform
    found[0] = dict(FRESH, runs=1)
    with pytest.raises(PlatformError, match=r"holds data \(1 experiments, 1 runs.*Rerun with --yes"):
        flow.restore(settings, target, _reader(tmp_path), yes=False)
    assert target.calls == []


def test_with_yes_a_platform_holding_data_is_overwritten(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, found = platform
    found[0] = dict(FILLED)
    flow.restore(settings, target, _reader(tmp_path), yes=True)
    assert "restore mlflow 8" in target.calls


def test_counts_that_differ_from_the_manifest_fail_the_restore_by_name(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, found = platform
    found[1] = dict(FILLED, runs=5)
    with pytest.raises(PlatformError, match=r"runs: 5 after the restore, 6 in the archive"):
        flow.restore(settings, target, _reader(tmp_path), yes=False)


def test_an_archive_of_another_cluster_is_refused_naming_both(settings: Settings, tmp_path: Path) -> None:
    manifest = _reader(tmp_path, cluster="edge").manifest
    with pytest.raises(PlatformError, match=r"comes from cluster 'edge', this is 'mlops'.*CLUSTER_NAME=edge"):
        flow.check_compatible(settings, manifest, "local", "a.tar.age")


def test_a_cluster_archive_is_refused_by_the_local_target(settings: Settings, tmp_path: Path) -> None:
    manifest = _reader(tmp_path, target="cluster").manifest
    with pytest.raises(PlatformError, match=r"restore it with --target cluster"):
        flow.check_compatible(settings, manifest, "local", "a.tar.age")


def test_an_archive_of_a_newer_mlflow_is_refused(settings: Settings, tmp_path: Path) -> None:
    manifest = _reader(tmp_path, versions={"mlflow": "3.18.0"}).manifest
    with pytest.raises(PlatformError, match=r"written by MLflow 3\.18\.0, this platform runs 3\.17\.2"):
        flow.check_compatible(settings, manifest, "local", "a.tar.age")


def test_an_archive_of_an_older_mlflow_is_accepted(settings: Settings, tmp_path: Path) -> None:
    flow.check_compatible(settings, _reader(tmp_path, versions={"mlflow": "3.9.1"}).manifest, "local", "a")


def test_versions_compare_by_number_not_text() -> None:
    assert flow.version_key("3.17.2") > flow.version_key("3.9.10")
    assert flow.version_key("3.17.2rc1") == (3, 17, 2)


def test_an_empty_platform_does_not_count_as_holding_data() -> None:
    assert not flow.holds_data(FRESH)
    assert flow.holds_data(dict(FRESH, users=2))


def test_the_default_archive_lives_outside_the_repository(settings: Settings) -> None:
    path = flow.default_archive(settings, "cluster")
    assert path.parent == Path.home() / ".local/share/mlopskit/backups/mlops"
    assert settings.root not in path.parents


def test_dumps_are_custom_format_and_no_password_is_on_a_command_line(settings: Settings) -> None:
    dump = dump_command("mlflow")[-1]
    assert "pg_dump --format=custom" in dump
    assert '"$POSTGRES_PASSWORD"' in dump
    password = SAMPLE_SECRETS["POSTGRES_PASSWORD"]
    for command in (dump_command("mlflow"), restore_command("mlflow", 10), query_command("mlflow", "SELECT 1")):
        assert not any(password in arg for arg in command)


def test_a_restore_reads_exactly_the_dump_size_and_cleans_first() -> None:
    command = restore_command("mlflow", 1234)[-1]
    assert "head -c 1234 | pg_restore --clean --if-exists" in command
    assert command.index("DROP SCHEMA IF EXISTS public CASCADE") < command.index("pg_restore")
