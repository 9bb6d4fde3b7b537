"""Restore's checks and order, with a recording stand-in for the platform (no Docker, no cluster)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import check_password_hash

from mlopskit import access
from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup import flow
from mlopskit.backup.archive import AUTH_DUMP, TRACKING_DUMP, ArchiveReader, ArchiveWriter, Manifest
from mlopskit.backup.postgres import dump_command, query_command, restore_command
from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import RERUN_LOCAL
from mlopskit.settings import Settings
from tests.unit.conftest import SAMPLE_SECRETS

FRESH = dict(flow.EMPTY)
FILLED = {"experiments": 3, "runs": 6, "registered_models": 1, "users": 2, "objects": 9}


class RecordingShell:
    where = "fake postgres"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.sql: list[str] = []
        self.answer = "admin\n"  # what UPDATE ... RETURNING username prints when the admin is there

    def stream(self, command: list[str]) -> Iterator[bytes]:
        words = shlex.split(command[-1])
        database = next(word for word in words if word.startswith("--dbname=")).removeprefix("--dbname=")
        self.sql.append(words[-1])
        self.calls.append(f"sql {database} {words[-1].split()[0]}")
        yield self.answer.encode()

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
        self.client: Any = LoginCheckingClient()

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
        return self.client


class LoginCheckingClient:
    """What the restore asks of MLflow after it starts: whether the .env admin password logs in."""

    url = "http://127.0.0.1:5000"
    rerun = RERUN_LOCAL

    def __init__(self, accepted: bool = True) -> None:
        self.accepted = accepted

    def accepts(self, user: str, password: str) -> bool:
        return self.accepted


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
        "sql mlflow_auth UPDATE",  # the admin password from .env, before MLflow reads the users
        "start mlflow",
    ]


def test_a_platform_holding_data_is_refused_without_yes_before_anything_changes(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, found = platform
    found[0] = dict(FRESH, runs=1)
    with pytest.raises(PlatformError, match=r"holds data \(1 experiment, 1 run, .*Rerun with --yes"):
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


def test_the_restored_admin_gets_the_env_password_hashed_as_mlflow_hashes_it(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, _ = platform
    report = flow.restore(settings, target, _reader(tmp_path), yes=False)
    (update,) = target.shell.sql
    assert update.startswith("UPDATE users SET password_hash = '") and update.endswith(
        "WHERE username = 'admin' RETURNING username"
    )
    password_hash = update.split("'")[1]
    assert check_password_hash(password_hash, SAMPLE_SECRETS["MLFLOW_ADMIN_PASSWORD"])
    assert "is_admin = true" in update
    assert "admin 'admin': password set to MLFLOW_ADMIN_PASSWORD from .env" in "\n".join(report.steps)


def test_an_admin_missing_from_the_archive_is_left_for_mlflow_to_create(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, _ = platform
    target.shell.answer = ""
    report = flow.restore(settings, target, _reader(tmp_path), yes=False)
    assert "admin 'admin' is not in the archive: MLflow creates it" in "\n".join(report.steps)


def test_an_admin_password_mlflow_still_refuses_after_the_restore_says_what_to_run_for_the_target(
    settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, _ = platform
    target.client = LoginCheckingClient(accepted=False)
    with pytest.raises(PlatformError, match=r"refuses MLFLOW_ADMIN_PASSWORD of 'admin'.*`invoke up`") as error:
        flow.restore(settings, target, _reader(tmp_path), yes=False)
    assert "invoke deploy" not in str(error.value)


def test_a_quote_in_a_name_stays_inside_the_sql_literal() -> None:
    assert flow.sql_literal("o'brien") == "'o''brien'"


class CountingShell(RecordingShell):
    """Answers the count queries: the tracking row, then a user count."""

    def stream(self, command: list[str]) -> Iterator[bytes]:
        sql = shlex.split(command[-1])[-1]
        self.sql.append(sql)
        yield b"2" if "FROM users" in sql else b"1|0|0|"


ACCESS_FILE_TEXT = """\
users:
  - name: alice
    password_env: ALICE_MLFLOW_PASSWORD
  - name: bob
    password_env: BOB_MLFLOW_PASSWORD
"""


@pytest.fixture
def access_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    (tmp_path / "proj/config").mkdir(parents=True)
    (tmp_path / "proj/config/access.yaml").write_text(ACCESS_FILE_TEXT)
    users = {"ALICE_MLFLOW_PASSWORD": "alice-password-1234", "BOB_MLFLOW_PASSWORD": "bob-password-12345"}
    return make_settings(environ=dict(SAMPLE_SECRETS) | users)


def test_users_that_access_yaml_declares_are_not_counted_as_data(access_settings: Settings) -> None:
    shell = CountingShell([])
    bucket: Any = type("FakeBucket", (), {"name": "mlflow"})()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bucket_parts, "objects", lambda bucket: iter(()))
        flow.counts(access_settings, shell, bucket, without_declared=True)
        flow.counts(access_settings, shell, bucket)
    declared, every = (sql for sql in shell.sql if "FROM users" in sql)
    assert declared == "SELECT count(*) FROM users WHERE username NOT IN ('alice', 'bob')"
    assert every == "SELECT count(*) FROM users"


def test_a_restore_counts_the_platform_without_declared_users_and_then_applies_access_yaml(
    access_settings: Settings,
    tmp_path: Path,
    platform: tuple[RecordingTarget, list[dict[str, int]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, _ = platform
    asked: list[dict[str, Any]] = []
    applied: list[Any] = []

    def counts(settings: Settings, shell: Any, bucket: Any, **kwargs: Any) -> dict[str, int]:
        asked.append(kwargs)
        return dict(FILLED)

    def apply_plan(settings: Settings, client: Any, plan: Any) -> list[str]:
        applied.append(plan)
        return ["a", "b"]

    monkeypatch.setattr(flow, "counts", counts)
    monkeypatch.setattr(access, "make_plan", lambda settings, client: ["plan"])
    monkeypatch.setattr(access, "apply_plan", apply_plan)
    report = flow.restore(access_settings, target, _reader(tmp_path), yes=True)
    assert asked[0] == {"without_smoke": True, "without_declared": True}
    assert applied == [["plan"]]
    assert report.steps[-1].startswith("config/access.yaml applied (without --prune")
    assert report.steps[-1].endswith("2 change(s) applied")


def test_a_refusal_says_the_declared_users_were_not_counted(
    access_settings: Settings, tmp_path: Path, platform: tuple[RecordingTarget, list[dict[str, int]]]
) -> None:
    target, found = platform
    found[0] = dict(FRESH, runs=1)
    with pytest.raises(PlatformError, match=r"1 run,.*not counting the config/access.yaml users\); a restore"):
        flow.restore(access_settings, target, _reader(tmp_path), yes=False)


def test_a_directory_given_as_the_archive_is_named_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="is a directory, not an archive"), flow.opened(tmp_path, None):  # type: ignore[arg-type]
        pass
