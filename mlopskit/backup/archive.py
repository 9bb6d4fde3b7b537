"""The archive inside the encryption: a tar of parts and `backup.json`, the manifest that lists each part.

Parts: `postgres/tracking.dump` and `postgres/auth.dump` (pg_dump custom format), `bucket/<key>` for every
object, and on a cluster `cluster/sealing-keys.yaml`, `cluster/k3s-datastore` and `cluster/k3s-token`.
Every part has its size and SHA-256 in the manifest; `verify` checks all of them before a restore acts.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mlopskit.errors import PlatformError

MANIFEST = "backup.json"
FORMAT = 1
CHUNK = 1 << 20
TRACKING_DUMP = "postgres/tracking.dump"
AUTH_DUMP = "postgres/auth.dump"
BUCKET_PREFIX = "bucket/"
SEALING_KEYS = "cluster/sealing-keys.yaml"
K3S_DATASTORE = "cluster/k3s-datastore"
K3S_TOKEN = "cluster/k3s-token"

# (part, bytes done, bytes total or None): the task turns these into progress bars.
Progress = Callable[[str, int, int | None], None]


def no_progress(part: str, done: int, total: int | None) -> None:
    return None


@dataclass
class Part:
    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """backup.json: what the archive holds and where it came from."""

    target: str  # local | cluster
    cluster: str
    project: str
    namespace: str
    bucket: str
    started: str
    finished: str = ""
    format: int = FORMAT
    versions: dict[str, str | None] = field(default_factory=dict)  # mlflow, mlflow_image, postgres, k3s
    databases: dict[str, dict[str, str | None]] = field(default_factory=dict)  # tracking/auth: name, revision
    counts: dict[str, int] = field(default_factory=dict)  # experiments, runs, registered_models, users, objects
    holds: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        try:
            raw: dict[str, Any] = json.loads(data)
            if raw.get("format") != FORMAT:
                raise PlatformError(
                    f"{source}: archive format {raw.get('format')!r}, this mlopskit reads format {FORMAT}; "
                    "restore with the mlopskit release that wrote it"
                )
            raw["parts"] = [Part(**p) for p in raw.get("parts", [])]
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise PlatformError(f"{source}: {MANIFEST} is not a valid manifest ({exc})") from None

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)

    @property
    def object_parts(self) -> list[Part]:
        return [p for p in self.parts if p.name.startswith(BUCKET_PREFIX)]

    @property
    def total_bytes(self) -> int:
        return sum(p.size for p in self.parts)


class HashingReader(io.RawIOBase):
    """Reads through `source`, hashing and counting what passes, reporting progress."""

    def __init__(self, source: IO[bytes], name: str, total: int | None, progress: Progress) -> None:
        self.source, self.name, self.total, self.progress = source, name, total, progress
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        self.progress(self.name, self.size, self.total)
        return data


class ArchiveWriter:
    """Writes parts into a plain tar; the manifest goes in last, on close."""

    def __init__(self, path: Path, manifest: Manifest, progress: Progress = no_progress) -> None:
        self.path = path
        self.manifest = manifest
        self.progress = progress
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed in close()

    def add_sized(self, name: str, source: IO[bytes], size: int) -> Part:
        """A part whose size is known up front (an S3 object): streamed straight into the tar."""
        reader = HashingReader(source, name, size, self.progress)
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o600
        self.tar.addfile(info, reader)
        if reader.size != size:
            raise PlatformError(f"{name}: expected {size} bytes, read {reader.size}; the source changed during backup")
        part = Part(name, size, reader.digest.hexdigest())
        self.manifest.parts.append(part)
        return part

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> Part:
        """A part of unknown size (a pg_dump stream): spooled to a private temporary file, then added."""
        with tempfile.TemporaryFile(dir=self.path.parent) as spool:
            done = 0
            for chunk in chunks:
                spool.write(chunk)
                done += len(chunk)
                self.progress(name, done, None)
            spool.seek(0)
            return self.add_sized(name, spool, done)

    def add_bytes(self, name: str, data: bytes) -> Part:
        return self.add_sized(name, io.BytesIO(data), len(data))

    def close(self) -> None:
        data = self.manifest.to_json()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mode = 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.tar.close()

    def abort(self) -> None:
        self.tar.close()


class ArchiveReader:
    """A decrypted archive: its manifest, verification of every part, and each part as a stream."""

    def __init__(self, path: Path, source: str) -> None:
        self.source = source
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed in close()
            self.members = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError) as exc:
            raise PlatformError(f"{source}: the decrypted archive is not a readable tar ({exc})") from None
        if MANIFEST not in self.members:
            raise PlatformError(f"{source}: no {MANIFEST} inside; this is not an mlopskit backup")
        self.manifest = Manifest.from_json(self.read(MANIFEST), source)

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    def open(self, name: str) -> IO[bytes]:
        handle = self.tar.extractfile(self.members[name])
        assert handle is not None  # members holds regular files only
        return handle

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def verify(self, progress: Progress = no_progress) -> None:
        """Every part listed, present, of its size and SHA-256; nothing unlisted. Raises with all problems."""
        problems = []
        listed = {p.name for p in self.manifest.parts}
        for extra in sorted(set(self.members) - listed - {MANIFEST}):
            problems.append(f"{extra}: in the archive but not in {MANIFEST}")
        done = 0
        for part in self.manifest.parts:
            member = self.members.get(part.name)
            if member is None:
                problems.append(f"{part.name}: listed in {MANIFEST} but missing")
                continue
            digest = hashlib.sha256()
            size = 0
            for chunk in self.chunks(part.name):
                digest.update(chunk)
                size += len(chunk)
            done += size
            progress("verify", done, self.manifest.total_bytes)
            if size != part.size or digest.hexdigest() != part.sha256:
                problems.append(
                    f"{part.name}: {size} bytes with SHA-256 {digest.hexdigest()[:16]}…, the manifest says "
                    f"{part.size} bytes with {part.sha256[:16]}…"
                )
        if problems:
            raise PlatformError(
                f"{self.source} failed verification; nothing was changed:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    def close(self) -> None:
        self.tar.close()
