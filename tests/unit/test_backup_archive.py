"""The archive format and its encryption: what backup writes and what restore accepts or refuses."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from pyrage import x25519

from mlopskit.backup import crypto
from mlopskit.backup.archive import MANIFEST, TRACKING_DUMP, ArchiveReader, ArchiveWriter, Manifest
from mlopskit.errors import PlatformError, SettingsError
from mlopskit.settings import Settings

PASSPHRASE = "unit-test-passphrase-0123"


def _manifest() -> Manifest:
    return Manifest(target="local", cluster="mlops", project="p", namespace="mlops", bucket="mlflow", started="t0")


def _archive(path: Path, parts: dict[str, bytes]) -> Path:
    writer = ArchiveWriter(path, _manifest())
    for name, data in parts.items():
        writer.add_stream(name, [data[:3], data[3:]])
    writer.close()
    return path


def _retar(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """Copy a tar, swapping the content of some members (a damaged part behind a valid manifest)."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            data = replace.get(member.name)
            if data is None:
                handle = old.extractfile(member)
                assert handle is not None
                data = handle.read()
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    return target


def test_every_part_is_listed_with_size_and_sha256(tmp_path: Path) -> None:
    reader = ArchiveReader(_archive(tmp_path / "a.tar", {TRACKING_DUMP: b"dump-bytes"}), "a.tar")
    part = reader.manifest.part(TRACKING_DUMP)
    assert part is not None and part.size == 10
    assert part.sha256 == hashlib.sha256(b"dump-bytes").hexdigest()
    reader.verify()


def test_a_part_that_differs_from_its_checksum_is_refused_by_name(tmp_path: Path) -> None:
    good = _archive(tmp_path / "a.tar", {TRACKING_DUMP: b"dump-bytes", "bucket/x": b"object"})
    bad = _retar(good, tmp_path / "b.tar", {"bucket/x": b"OBJECT"})
    with pytest.raises(PlatformError, match=r"bucket/x: 6 bytes with SHA-256 .* the manifest says 6 bytes"):
        ArchiveReader(bad, "b.tar").verify()


def test_a_part_missing_from_the_tar_is_refused(tmp_path: Path) -> None:
    good = _archive(tmp_path / "a.tar", {TRACKING_DUMP: b"dump"})
    with tarfile.open(good) as old, tarfile.open(tmp_path / "b.tar", "w") as new:
        for member in old.getmembers():
            if member.name == MANIFEST:
                new.addfile(member, old.extractfile(member))
    with pytest.raises(PlatformError, match=f"{TRACKING_DUMP}: listed in {MANIFEST} but missing"):
        ArchiveReader(tmp_path / "b.tar", "b.tar").verify()


def test_a_tar_without_a_manifest_is_not_a_backup(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "x.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("other"), io.BytesIO(b""))
    with pytest.raises(PlatformError, match=r"no backup\.json inside"):
        ArchiveReader(tmp_path / "x.tar", "x.tar")


def test_a_passphrase_archive_round_trips_and_is_written_0600(tmp_path: Path) -> None:
    plain = _archive(tmp_path / "a.tar", {TRACKING_DUMP: b"dump"})
    keys = crypto.Keys(passphrase=PASSPHRASE)
    crypto.encrypt_file(plain, tmp_path / "a.age", keys)
    assert stat.S_IMODE((tmp_path / "a.age").stat().st_mode) == 0o600
    crypto.decrypt_file(tmp_path / "a.age", tmp_path / "back.tar", keys)
    assert (tmp_path / "back.tar").read_bytes() == plain.read_bytes()


def test_a_recipient_archive_opens_with_its_identity_file(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    (tmp_path / "id.txt").write_text(f"# created: now\n{identity}\n")
    plain = _archive(tmp_path / "a.tar", {TRACKING_DUMP: b"dump"})
    crypto.encrypt_file(plain, tmp_path / "a.age", crypto.Keys(recipient=str(identity.to_public())))
    crypto.decrypt_file(tmp_path / "a.age", tmp_path / "back.tar", crypto.Keys(identity_file=tmp_path / "id.txt"))
    assert (tmp_path / "back.tar").read_bytes() == plain.read_bytes()


def test_an_existing_archive_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "a.age").write_text("keep me")
    with pytest.raises(PlatformError, match=r"the file exists"):
        crypto.encrypt_file(tmp_path / "a.age", tmp_path / "a.age", crypto.Keys(passphrase=PASSPHRASE))
    assert (tmp_path / "a.age").read_text() == "keep me"


def test_without_a_passphrase_or_recipient_backup_names_the_keys_to_set() -> None:
    with pytest.raises(
        PlatformError,
        match=r"set BACKUP_PASSPHRASE=\.\.\. \(16\+ characters\) on its line in \.env \(the line is there.*RECIP",
    ):
        crypto.check_can_encrypt(crypto.Keys())


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One passphrase archive for the refusal tests (scrypt makes each encryption cost about a second)."""
    folder = tmp_path_factory.mktemp("encrypted")
    plain = _archive(folder / "a.tar", {TRACKING_DUMP: b"dump" * 50_000})
    crypto.encrypt_file(plain, folder / "a.age", crypto.Keys(passphrase=PASSPHRASE))
    return folder / "a.age"


def test_a_wrong_passphrase_is_refused_and_writes_nothing(encrypted: Path, tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"cannot decrypt with BACKUP_PASSPHRASE.*nothing was changed"):
        crypto.decrypt_file(encrypted, tmp_path / "out.tar", crypto.Keys(passphrase="another-passphrase-123"))
    assert not (tmp_path / "out.tar").exists()


def test_a_truncated_archive_is_refused(encrypted: Path, tmp_path: Path) -> None:
    (tmp_path / "short.age").write_bytes(encrypted.read_bytes()[:-100])
    with pytest.raises(PlatformError, match=r"damaged or truncated"):
        crypto.decrypt_file(tmp_path / "short.age", tmp_path / "out.tar", crypto.Keys(passphrase=PASSPHRASE))


def test_a_flipped_byte_is_refused(encrypted: Path, tmp_path: Path) -> None:
    data = bytearray(encrypted.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "bad.age").write_bytes(bytes(data))
    with pytest.raises(PlatformError, match=r"damaged or truncated"):
        crypto.decrypt_file(tmp_path / "bad.age", tmp_path / "out.tar", crypto.Keys(passphrase=PASSPHRASE))


def test_a_file_that_is_not_age_is_refused_before_decrypting(tmp_path: Path) -> None:
    (tmp_path / "x.tar.age").write_bytes(b"PK\x03\x04 not an age file")
    with pytest.raises(PlatformError, match=r"not an mlopskit backup"):
        crypto.decrypt_file(tmp_path / "x.tar.age", tmp_path / "out.tar", crypto.Keys(passphrase=PASSPHRASE))


def test_a_short_backup_passphrase_is_refused_at_load_time(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"backup.passphrase \(BACKUP_PASSPHRASE\).*at least 16 characters"):
        make_settings(environ={"BACKUP_PASSPHRASE": "short"})


def test_a_backup_recipient_must_be_an_age_public_key(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"must be an age public key"):
        make_settings(environ={"BACKUP_RECIPIENT": "ssh-ed25519 AAAA"})
