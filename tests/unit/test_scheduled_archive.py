"""The scheduled backup's archive: what the CronJob's script (k8s/backup/backup_to_s3.py) writes, read back by
the reader `invoke restore` uses, and how `invoke restore --scheduled` picks, downloads and checks one.

The script is loaded from its file as the CronJob runs it (`python3 -c`), so these tests exercise the code
that goes into the cluster. The destination bucket is a small in-memory stand-in of the three S3 calls the
restore side makes (list, get): the real S3 path is in tests/cluster/test_backup_restore.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pyrage import x25519

from mlopskit.backup import crypto, flow, scheduled
from mlopskit.backup.archive import AUTH_DUMP, MANIFEST, TRACKING_DUMP
from mlopskit.errors import PlatformError
from mlopskit.kube.render import TEMPLATES_DIR
from mlopskit.settings import Settings
from tests.unit.conftest import SAMPLE_SECRETS, Project

PREFIX = "mlops/mlops/"
# A destination at a closed port of this machine: a test that passes with it never reached S3.
DESTINATION = {
    "BACKUP_S3_BUCKET": "mlflow-backups",
    "BACKUP_S3_ENDPOINT": "http://127.0.0.1:9",
    "BACKUP_S3_ACCESS_KEY": "backupaccess5e1d",
    "BACKUP_S3_SECRET_KEY": "backup-sample-secret-3c9a",
}
FACTS = {
    "postgres": "15.10",
    "tracking_revision": "1b5f0d9ad7c1",
    "auth_revision": "8606fa83a998",
    "experiments": "3",
    "runs": "6",
    "registered_models": "1",
    "users": "2",
}


@functools.cache
def script_module() -> ModuleType:
    """k8s/backup/backup_to_s3.py as a module (its main() runs only as __main__, as in the CronJob)."""
    spec = importlib.util.spec_from_file_location("backup_to_s3", TEMPLATES_DIR / "backup" / "backup_to_s3.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script() -> ModuleType:
    return script_module()


@pytest.fixture
def identity(tmp_path: Path) -> tuple[Path, str]:
    """An identity file as `invoke backup-keygen` writes it, and its public key."""
    path = tmp_path / "keys" / "identity.txt"
    path.parent.mkdir()
    return path, crypto.new_identity(path)


def cronjob_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "TRACKING_DB": "mlflow",
        "AUTH_DB": "mlflow_auth",
        "SOURCE_BUCKET": "mlflow",
        "CLUSTER": "mlops",
        "NAMESPACE": "mlops",
        "PROJECT": "mlopskit",
        "MLFLOW_IMAGE": "mlopskit/mlflow:3.17.2-abc1234",
    }.items():
        monkeypatch.setenv(key, value)
    # The unit tier has no MLflow installed; in the image the script reads the release of its own MLflow.
    monkeypatch.setattr(script_module(), "mlflow_release", lambda: "3.17.2")


def parts_of(contents: dict[str, bytes]) -> list[tuple[str, int, Callable[[], Any]]]:
    return [(name, len(data), functools.partial(io.BytesIO, data)) for name, data in contents.items()]


def write_encrypted(
    script: ModuleType, out: Path, recipient: str, contents: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], Any]:
    """The CronJob's pipeline (tar → age → consumer) with a file as the consumer instead of S3."""
    cronjob_environment(monkeypatch)
    manifest = script.new_manifest(FACTS, "2026-11-30T03:00:00Z")
    manifest["counts"]["objects"] = sum(1 for name in contents if name.startswith("bucket/"))

    def to_file(sealed: Any) -> Any:
        hashing = script.Hashing(sealed)
        with out.open("wb") as sink:
            while chunk := hashing.read(1 << 16):
                sink.write(chunk)
        return hashing

    sealed = script.encrypt_stream(
        lambda sink: script.write_archive(sink, manifest, parts_of(contents)),
        [x25519.Recipient.from_str(recipient)],
        to_file,
    )
    return manifest, sealed


CONTENTS = {
    TRACKING_DUMP: b"PGDMP tracking" * 1000,
    AUTH_DUMP: b"PGDMP auth",
    "bucket/1/abc/artifacts/weights.bin": bytes(range(256)) * 4096,
    "bucket/1/abc/artifacts/empty.txt": b"",
}


def test_the_cronjob_archive_opens_with_the_reader_invoke_restore_uses(
    script: ModuleType, identity: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, public = identity
    archive = tmp_path / "archive.tar.age"
    write_encrypted(script, archive, public, CONTENTS, monkeypatch)
    assert archive.read_bytes().startswith(crypto.AGE_HEADER)
    with flow.opened(archive, crypto.Keys(identity_file=path)) as reader:  # decrypts and verifies every part
        manifest = reader.manifest
        assert [p.name for p in manifest.parts] == list(CONTENTS)
        for name, data in CONTENTS.items():
            assert reader.read(name) == data
            part = manifest.part(name)
            assert part is not None and part.sha256 == hashlib.sha256(data).hexdigest()
    assert (manifest.target, manifest.cluster, manifest.namespace) == ("cluster", "mlops", "mlops")
    assert manifest.counts == {"experiments": 3, "runs": 6, "registered_models": 1, "users": 2, "objects": 2}
    assert manifest.databases["auth"] == {"name": "mlflow_auth", "revision": "8606fa83a998"}
    assert manifest.versions["postgres"] == "15.10" and manifest.versions["mlflow"]
    assert manifest.finished >= manifest.started


def test_the_dumps_and_objects_go_in_as_bytes_in_archive_order(script: ModuleType, tmp_path: Path) -> None:
    """source_parts as main() uses it: the init container's dump files, then each listed object from S3."""
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "tracking.dump").write_bytes(b"PGDMP\xb4\x00tracking")
    (tmp_path / "postgres" / "auth.dump").write_bytes(b"PGDMP\xff")
    source = Destination()
    source.objects = {"1/a/artifacts/x.bin": b"\x00\x01\x02"}
    parts = list(script.source_parts(tmp_path, source, "mlflow", [("1/a/artifacts/x.bin", 3)]))
    assert [(name, size) for name, size, _ in parts] == [
        (TRACKING_DUMP, 15),
        (AUTH_DUMP, 6),
        ("bucket/1/a/artifacts/x.bin", 3),
    ]
    for _, _, open_part in parts:
        with open_part() as handle:
            assert isinstance(handle.read(1), bytes)


def test_the_archive_ends_with_its_manifest_and_holds_nothing_unlisted(
    script: ModuleType, identity: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, public = identity
    archive = tmp_path / "archive.tar.age"
    write_encrypted(script, archive, public, CONTENTS, monkeypatch)
    plain = tmp_path / "plain.tar"
    crypto.decrypt_file(archive, plain, crypto.Keys(identity_file=path))
    with tarfile.open(plain) as tar:
        names = tar.getnames()
        handle = tar.extractfile(MANIFEST)
        assert handle is not None
        listed = [p["name"] for p in json.loads(handle.read())["parts"]]
    assert names == [*listed, MANIFEST]


def test_the_summary_digest_is_that_of_the_encrypted_bytes(
    script: ModuleType, identity: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "archive.tar.age"
    _, sealed = write_encrypted(script, archive, identity[1], CONTENTS, monkeypatch)
    assert sealed.size == archive.stat().st_size
    assert sealed.digest.hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_a_source_that_ends_early_fails_the_backup_instead_of_a_short_archive(
    script: ModuleType, identity: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cronjob_environment(monkeypatch)
    manifest = script.new_manifest(FACTS, "2026-11-30T03:00:00Z")
    short = [("bucket/x", 100, lambda: io.BytesIO(b"only ten b"))]
    with pytest.raises(OSError, match="unexpected end of data"):
        script.encrypt_stream(
            lambda sink: script.write_archive(sink, manifest, short),
            [x25519.Recipient.from_str(identity[1])],
            lambda sealed: sealed.read(),
        )


# ------------------------------------------------------------------------------- the destination


class Destination:
    """The destination bucket in memory: list_objects_v2 pages and get_object, the calls restore makes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_objects_v2"
        objects = self.objects

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:
                keys = sorted(key for key in objects if key.startswith(Prefix))
                yield {"Contents": [{"Key": key, "Size": len(objects[key])} for key in keys]}

        return Pages()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": _Body(self.objects[Key])}

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> None:
        for item in Delete["Objects"]:
            del self.objects[item["Key"]]


class _Body(io.BytesIO):
    """A StreamingBody's surface: read() and a context manager."""


def put_backup(
    dest: Destination,
    script: ModuleType,
    stamp: str,
    public: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    finished: bool = True,
) -> None:
    archive = tmp_path / f"{stamp}.tar.age"
    manifest, sealed = write_encrypted(script, archive, public, CONTENTS, monkeypatch)
    dest.objects[f"{PREFIX}{stamp}/archive.tar.age"] = archive.read_bytes()
    if finished:
        summary = {
            "format": 1,
            "encrypted": "age",
            "recipient": public,
            "archive": "archive.tar.age",
            "archive_size": sealed.size,
            "archive_sha256": sealed.digest.hexdigest(),
            "started": manifest["started"],
            "finished": manifest["finished"],
            "objects": 2,
            "parts": len(manifest["parts"]),
        }
        dest.objects[f"{PREFIX}{stamp}/summary.json"] = json.dumps(summary).encode()


@pytest.fixture
def destination(monkeypatch: pytest.MonkeyPatch) -> Destination:
    dest = Destination()

    @contextlib.contextmanager
    def fake(settings: Settings) -> Iterator[scheduled.Destination]:
        yield scheduled.Destination(dest, "mlflow-backups", PREFIX)

    monkeypatch.setattr(scheduled, "destination", fake)
    return dest


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(environ=dict(SAMPLE_SECRETS))


@pytest.fixture
def put(
    destination: Destination,
    script: ModuleType,
    identity: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., None]:
    """put(stamp, finished=True): a backup the CronJob's script wrote, encrypted to the identity's key."""

    def put_one(stamp: str, *, finished: bool = True) -> None:
        put_backup(destination, script, stamp, identity[1], tmp_path, monkeypatch, finished=finished)

    return put_one


def test_latest_is_the_newest_finished_backup_and_restore_reads_it(
    put: Callable[..., None],
    identity: tuple[Path, str],
    settings: Settings,
) -> None:
    path, _ = identity
    put("20261129T030000Z")
    put("20261130T030000Z")
    put("20261201T030000Z", finished=False)
    with scheduled.opened(settings, "latest", crypto.Keys(identity_file=path)) as reader:
        assert reader.source == f"s3://mlflow-backups/{PREFIX}20261130T030000Z/archive.tar.age"
        assert reader.read(AUTH_DUMP) == CONTENTS[AUTH_DUMP]
        plain = Path(str(reader.tar.name))
        assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    assert not plain.exists() and not plain.parent.exists()  # the plaintext is removed afterwards


def test_the_download_reports_progress_per_mib_not_per_read(
    put: Callable[..., None],
    identity: tuple[Path, str],
    destination: Destination,
    settings: Settings,
) -> None:
    path, _ = identity
    put("20261130T030000Z")
    size = len(destination.objects[f"{PREFIX}20261130T030000Z/archive.tar.age"])
    seen: list[int] = []

    def progress(part: str, done: int, total: int | None) -> None:
        if part == "download":
            seen.append(done)

    with scheduled.opened(settings, "latest", crypto.Keys(identity_file=path), progress):
        pass
    assert seen[-1] == size and len(seen) <= size // (1 << 20) + 2, seen


def test_an_unknown_stamp_lists_what_exists(
    put: Callable[..., None],
    identity: tuple[Path, str],
    settings: Settings,
) -> None:
    path, _ = identity
    put("20261129T030000Z")
    put("20261130T030000Z", finished=False)
    keys = crypto.Keys(identity_file=path)
    with (
        pytest.raises(PlatformError, match=r"20261128T030000Z: no such backup; backups in .*: 20261129T030000Z, "),
        scheduled.opened(settings, "20261128T030000Z", keys),
    ):
        pass
    with (
        pytest.raises(PlatformError, match=r"unfinished \(no summary\.json"),
        scheduled.opened(settings, "20261130T030000Z", keys),
    ):
        pass
    with (
        pytest.raises(PlatformError, match=r"'yesterday': expected a UTC stamp .* or `latest`$"),
        scheduled.opened(settings, "yesterday", keys),
    ):
        pass


def test_without_an_identity_file_it_names_backup_identity_file_before_fetching_anything(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(settings: Settings) -> Any:
        raise AssertionError("the destination was contacted before the identity was checked")

    monkeypatch.setattr(scheduled, "destination", unreachable)
    with (
        pytest.raises(PlatformError, match="set BACKUP_IDENTITY_FILE"),
        scheduled.opened(settings, "latest", crypto.Keys()),
    ):
        pass
    missing = crypto.Keys(identity_file=Path("/nonexistent/identity.txt"))
    with (
        pytest.raises(PlatformError, match=r"BACKUP_IDENTITY_FILE /nonexistent/identity.txt: cannot be read"),
        scheduled.opened(settings, "latest", missing),
    ):
        pass


def test_an_identity_of_another_key_is_refused_before_the_download(
    put: Callable[..., None],
    identity: tuple[Path, str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    put("20261130T030000Z")
    other = tmp_path / "other.txt"
    crypto.new_identity(other)
    with (
        pytest.raises(
            PlatformError, match=rf"encrypted to {identity[1]}; BACKUP_IDENTITY_FILE {other} is the identity"
        ),
        scheduled.opened(settings, "latest", crypto.Keys(identity_file=other)),
    ):
        pass


def _swap_in_the_older_archive(objects: dict[str, bytes]) -> None:
    """A valid archive of the same key, swapped in: age accepts it, the summary's SHA-256 does not."""
    objects[f"{PREFIX}20261130T030000Z/archive.tar.age"] = objects[f"{PREFIX}20261129T030000Z/archive.tar.age"]


def _flip_a_byte(objects: dict[str, bytes]) -> None:
    key = f"{PREFIX}20261130T030000Z/archive.tar.age"
    data = bytearray(objects[key])
    data[len(data) // 2] ^= 0xFF
    objects[key] = bytes(data)


@pytest.mark.parametrize(
    ("tamper", "refusal"),
    [
        (_swap_in_the_older_archive, r"not the one the backup wrote; nothing was changed"),
        (_flip_a_byte, r"cannot decrypt with .*identity.txt.*nothing was changed"),
    ],
)
def test_a_tampered_archive_is_refused_and_nothing_is_changed(
    put: Callable[..., None],
    identity: tuple[Path, str],
    destination: Destination,
    settings: Settings,
    tamper: Callable[[dict[str, bytes]], None],
    refusal: str,
) -> None:
    put("20261129T030000Z")
    put("20261130T030000Z")
    tamper(destination.objects)
    with (
        pytest.raises(PlatformError, match=refusal),
        scheduled.opened(settings, "20261130T030000Z", crypto.Keys(identity_file=identity[0])),
    ):
        pass


def test_a_plain_folder_of_an_earlier_release_is_listed_as_plain_and_not_restored(
    identity: tuple[Path, str], destination: Destination, settings: Settings
) -> None:
    legacy = {"format": 1, "kind": "scheduled", "started": "s", "finished": "f", "objects": 1, "parts": [{}, {}, {}]}
    destination.objects[f"{PREFIX}20261101T030000Z/postgres/tracking.dump"] = b"PGDMP"
    destination.objects[f"{PREFIX}20261101T030000Z/backup.json"] = json.dumps(legacy).encode()
    [found] = scheduled._folders(scheduled.Destination(destination, "mlflow-backups", PREFIX))
    assert (found.finished, found.encrypted, found.parts, found.objects) == (True, False, 3, 1)
    with (
        pytest.raises(PlatformError, match=r"is a plain backup an earlier mlopskit wrote"),
        scheduled.opened(settings, "latest", crypto.Keys(identity_file=identity[0])),
    ):
        pass


# --------------------------------------------------------------------------------------- the tasks


def test_restore_scheduled_without_an_identity_file_names_it_and_touches_nothing(
    project: Project, sample_env: dict[str, str]
) -> None:
    """The destination's endpoint is a closed port: the refusal comes before any connection."""
    project.write_env(sample_env | DESTINATION)
    result = project.invoke("restore", "--scheduled", "latest")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BACKUP_IDENTITY_FILE" in result.stderr and "Traceback" not in result.stderr


def test_restore_scheduled_without_the_destination_keys_names_them(
    project: Project, sample_env: dict[str, str]
) -> None:
    project.write_env(sample_env | {"BACKUP_S3_BUCKET": "mlflow-backups"})
    result = project.invoke("restore", "--scheduled", "latest")
    assert result.returncode == 1
    assert "BACKUP_S3_ACCESS_KEY" in result.stderr and "BACKUP_S3_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_backup_keygen_writes_a_private_identity_whose_printed_key_round_trips(
    project: Project, sample_env: dict[str, str], tmp_path: Path
) -> None:
    project.write_env(sample_env)
    out = tmp_path / "made" / "identity.txt"
    result = project.invoke("backup-keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    public = next(word.removeprefix("BACKUP_RECIPIENT=") for word in result.stdout.split() if "RECIPIENT=age1" in word)
    plain, sealed, back = tmp_path / "p", tmp_path / "p.age", tmp_path / "p.out"
    plain.write_bytes(b"round trip")
    crypto.encrypt_file(plain, sealed, crypto.Keys(recipient=public))
    crypto.decrypt_file(sealed, back, crypto.Keys(identity_file=out))
    assert back.read_bytes() == b"round trip"
    again = project.invoke("backup-keygen", "--out", str(out))
    assert again.returncode == 1 and "the file exists" in again.stderr and "never overwritten" in again.stderr


def test_retention_keeps_the_newest_finished_backups_of_either_layout_and_drops_older_folders(
    script: ModuleType,
) -> None:
    dest = Destination()
    for key in (
        "20261101T030000Z/backup.json",  # plain, finished (an earlier release)
        "20261101T030000Z/postgres/tracking.dump",
        "20261102T030000Z/archive.tar.age",  # unfinished: no summary.json
        "20261103T030000Z/archive.tar.age",
        "20261103T030000Z/summary.json",
        "20261104T030000Z/archive.tar.age",
        "20261104T030000Z/summary.json",
    ):
        dest.objects[PREFIX + key] = b"x"
    assert script.folders(dest, "b", PREFIX) == {
        "20261101T030000Z": True,
        "20261102T030000Z": False,
        "20261103T030000Z": True,
        "20261104T030000Z": True,
    }
    removed = script.prune(dest, "b", PREFIX, 2, "20261104T030000Z")
    assert removed == ["20261101T030000Z", "20261102T030000Z"]
    kept = sorted({key[len(PREFIX) :].split("/")[0] for key in dest.objects})
    assert kept == ["20261103T030000Z", "20261104T030000Z"]


def test_backup_keygen_into_a_folder_says_it_is_a_folder(project: Project, tmp_path: Path) -> None:
    result = project.invoke("backup-keygen", "--out", str(tmp_path))
    assert result.returncode == 1
    assert f"--out {tmp_path}: is a folder; give the path of a new file in it" in result.stderr
