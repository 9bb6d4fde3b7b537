"""The archive's encryption: age (through pyrage), with a passphrase or to a recipient's public key.

A passphrase archive opens with `age -d` and the passphrase; a recipient archive with `age -d -i identity`.
Passphrase encryption in pyrage works on bytes in memory, so a passphrase archive needs its size in free
memory once while it is written or read; recipient archives are streamed.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import pyrage
from pyrage import passphrase as age_passphrase
from pyrage import x25519

from mlopskit.errors import PlatformError
from mlopskit.settings import ENV_FILE, Settings

AGE_HEADER = b"age-encryption.org/v1\n"
SCRYPT_STANZA = b"-> scrypt "


@dataclass(frozen=True)
class Keys:
    """How to encrypt (passphrase or recipient) and decrypt (passphrase or identity file)."""

    passphrase: str | None = None
    recipient: str | None = None
    identity_file: Path | None = None


def keys_from(settings: Settings) -> Keys:
    backup = settings.backup
    identity = backup.identity_file.expanduser() if backup.identity_file else None
    if identity is not None and not identity.is_absolute():
        identity = settings.root / identity
    return Keys(
        passphrase=backup.passphrase.get_secret_value() if backup.passphrase else None,
        recipient=backup.recipient,
        identity_file=identity,
    )


def create_private(path: Path) -> int:
    """Open a new file with mode 0600; an existing file is never overwritten."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PlatformError(f"{path}: the file exists; choose a new path (an archive is never overwritten)") from None


def check_can_encrypt(keys: Keys) -> None:
    if not keys.passphrase and not keys.recipient:
        raise PlatformError(
            f"backups are encrypted and no key is set: set BACKUP_PASSPHRASE=... (16+ characters) on its line in "
            f"{ENV_FILE} (the line is there, empty; a second BACKUP_PASSPHRASE line is refused), or BACKUP_RECIPIENT "
            "to an age public key; keep a copy of the passphrase or identity off this machine"
        )


def encrypt_file(plain: Path, out: Path, keys: Keys) -> None:
    """Encrypt `plain` into the new file `out` (mode 0600): to the recipient if set, else with the passphrase."""
    check_can_encrypt(keys)
    fd = create_private(out)
    try:
        with os.fdopen(fd, "wb") as sink:
            if keys.recipient:
                with plain.open("rb") as source:
                    pyrage.encrypt_io(source, sink, [x25519.Recipient.from_str(keys.recipient)])
            else:
                assert keys.passphrase is not None
                sink.write(age_passphrase.encrypt(plain.read_bytes(), keys.passphrase))
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def uses_passphrase(archive: Path) -> bool:
    """Whether the age header names a passphrase (scrypt) stanza; refuses what is not an age file."""
    with archive.open("rb") as handle:
        head = handle.read(4096)
    if not head.startswith(AGE_HEADER):
        raise PlatformError(f"{archive}: not an mlopskit backup (an archive starts with an age header); check the path")
    return SCRYPT_STANZA in head.split(b"\n---", 1)[0]


def decrypt_file(archive: Path, out: Path, keys: Keys) -> None:
    """Decrypt `archive` into the new file `out` (mode 0600); wrong keys, corruption and truncation are refused."""
    if uses_passphrase(archive):
        if not keys.passphrase:
            raise PlatformError(
                f"{archive} is encrypted with a passphrase: set BACKUP_PASSPHRASE=<the backup's passphrase> on "
                f"its line in {ENV_FILE} (the line is there, empty)"
            )
        try:
            plain = age_passphrase.decrypt(archive.read_bytes(), keys.passphrase)
        except pyrage.DecryptError as exc:
            raise PlatformError(
                f"{archive}: cannot decrypt with BACKUP_PASSPHRASE ({exc}): the passphrase is wrong, or the file "
                "is damaged or truncated; nothing was changed"
            ) from None
        fd = create_private(out)
        with os.fdopen(fd, "wb") as sink:
            sink.write(plain)
        return
    identity = load_identity(keys, str(archive))
    with archive.open("rb") as source:
        decrypt_stream(source, out, identity, str(archive), keys.identity_file)


def load_identity(keys: Keys, what: str) -> x25519.Identity:
    """The age identity of BACKUP_IDENTITY_FILE; refused, naming the key, when unset, unreadable or not one."""
    if keys.identity_file is None:
        raise PlatformError(
            f"{what} is encrypted to an age recipient: set BACKUP_IDENTITY_FILE in {ENV_FILE} to its identity file "
            "(the file `invoke backup-keygen` or `age-keygen` wrote, whose public key is BACKUP_RECIPIENT)"
        )
    try:
        return x25519.Identity.from_str(_identity_line(keys.identity_file))
    except pyrage.IdentityError as exc:
        raise PlatformError(f"BACKUP_IDENTITY_FILE {keys.identity_file}: not an age identity ({exc})") from None


def decrypt_stream(
    source: io.RawIOBase | IO[bytes], out: Path, identity: x25519.Identity, what: str, identity_file: Path | None = None
) -> None:
    """Decrypt the readable age stream `source` (a file, an S3 body) into the new file `out` (mode 0600), as it
    arrives; wrong identity, corruption and truncation are refused and leave no `out` behind."""
    fd = create_private(out)
    try:
        with os.fdopen(fd, "wb") as sink:
            # pyrage reads anything with read(); its stubs ask for a buffered file
            pyrage.decrypt_io(cast(io.BufferedIOBase, source), sink, [identity])
    except (pyrage.DecryptError, OSError) as exc:
        out.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise PlatformError(f"{out}: cannot write the decrypted archive ({exc.strerror})") from None
        # A damaged chunk met while streaming comes out of pyrage as a plain OSError("decryption error").
        raise PlatformError(
            f"{what}: cannot decrypt with {identity_file or 'BACKUP_IDENTITY_FILE'} ({exc}): the identity does not "
            "match, or the file is damaged or truncated; nothing was changed"
        ) from None
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def new_identity(out: Path) -> str:
    """Write a new age identity to the new file `out` (mode 0600, as age-keygen writes it); returns its
    public key (age1...), the BACKUP_RECIPIENT that archives are encrypted to."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fd = create_private(out)
    with os.fdopen(fd, "w") as sink:
        sink.write(f"# created: {created}\n# public key: {public}\n{identity}\n")
    return public


def _identity_line(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PlatformError(f"BACKUP_IDENTITY_FILE {path}: cannot be read ({exc.strerror})") from None
    for line in lines:
        if line.startswith("AGE-SECRET-KEY-"):
            return line.strip()
    raise PlatformError(f"BACKUP_IDENTITY_FILE {path}: holds no AGE-SECRET-KEY- line (age-keygen writes one)")
