"""What the scheduled backups (platform.backup, the mlflow-backup CronJob of k8s/backup/) left at their
destination: `invoke backup --list` lists them, `invoke restore --scheduled` downloads and opens one.

The CronJob writes each backup under <prefix><cluster>/<namespace>/<UTC time>/: archive.tar.age, an archive
in the format of `invoke backup` encrypted to BACKUP_RECIPIENT, then summary.json, last (plain: times,
counts, sizes, the archive's SHA-256 and the recipient; no secrets, no object names). A folder without it is
an unfinished backup. Earlier releases wrote plain folders instead (postgres/*.dump, bucket/<key>, and
backup.json last); they are listed as plain and not restored by `invoke restore`. A destination that is a
Service of the cluster (http://<service>.<namespace>.svc:<port>) is reached through a port-forward.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlopskit.backup import crypto, flow
from mlopskit.backup.archive import CHUNK, ArchiveReader, HashingReader, Progress, no_progress
from mlopskit.errors import PlatformError
from mlopskit.object_store import s3_client
from mlopskit.settings import ENV_FILE, Settings

ARCHIVE = "archive.tar.age"
SUMMARY = "summary.json"
LEGACY_MANIFEST = "backup.json"  # the finished mark (and manifest) of the plain folders of earlier releases
STAMP = re.compile(r"\d{8}T\d{6}Z")
LATEST = "latest"


@dataclass
class ScheduledBackup:
    """One folder at the destination: its UTC time stamp, whether it is finished, and what it holds."""

    name: str  # YYYYmmddTHHMMSSZ, the time the job started
    finished: bool
    files: int  # objects in the folder
    bytes: int  # their size at the destination
    encrypted: bool = False  # an age archive (summary.json); False: a plain folder of an earlier release
    parts: int | None = None  # dumps and objects in the backup, from its summary or manifest
    objects: int | None = None  # artifact objects copied
    started: str | None = None
    ended: str | None = None
    recipient: str | None = None  # the age public key the archive is encrypted to
    archive_size: int | None = None
    archive_sha256: str | None = None


@dataclass(frozen=True)
class Destination:
    s3: Any  # boto3 S3 client
    bucket: str
    prefix: str

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@contextlib.contextmanager
def destination_endpoint(settings: Settings) -> Iterator[str | None]:
    """The destination's endpoint as this machine reaches it: a port-forward for a Service of the cluster."""
    from mlopskit.kube.render import in_cluster_service

    endpoint = settings.platform.backup.destination.endpoint
    service = in_cluster_service(endpoint) if endpoint else None
    if endpoint is None or service is None:
        yield endpoint
        return
    from urllib.parse import urlsplit

    from mlopskit.kube.client import api_client
    from mlopskit.kube.portforward import forward_service

    port = urlsplit(endpoint).port or (443 if endpoint.startswith("https://") else 80)
    with forward_service(api_client(settings), service[1], service[0], port) as local_port:
        yield f"http://127.0.0.1:{local_port}"


def _failed(settings: Settings, what: str, exc: Exception) -> PlatformError:
    destination = settings.platform.backup.destination
    return PlatformError(
        f"{what} at {destination.endpoint or 'AWS S3'} failed ({exc}); check BACKUP_S3_ENDPOINT, BACKUP_S3_BUCKET "
        f"and the BACKUP_S3_ACCESS_KEY / BACKUP_S3_SECRET_KEY pair in {ENV_FILE}"
    )


@contextlib.contextmanager
def destination(settings: Settings) -> Iterator[Destination]:
    """A client of the destination bucket, with this platform's prefix there; errors name the settings."""
    from mlopskit.kube.render import scheduled_backup_prefix

    target = settings.platform.backup.destination
    if not target.bucket:
        raise PlatformError(
            f"{settings.describe('platform.backup.destination.bucket')}: not set; it is the bucket the "
            "scheduled backups go to (see platform.backup in config/platform.yaml)"
        )
    with destination_endpoint(settings) as endpoint:
        s3 = s3_client(
            settings,
            endpoint,
            access_key=settings.secrets.backup_s3_access_key,
            secret_key=settings.secrets.backup_s3_secret_key,
            region=target.region,
        )
        yield Destination(s3, target.bucket, scheduled_backup_prefix(settings))


def list_backups(settings: Settings) -> list[ScheduledBackup]:
    """Every backup under this platform's prefix at the destination, oldest first."""
    with destination(settings) as dest:
        try:
            return _folders(dest)
        except (ClientError, BotoCoreError) as exc:
            raise _failed(settings, f"listing {dest.where}", exc) from None


def _folders(dest: Destination) -> list[ScheduledBackup]:
    found: dict[str, ScheduledBackup] = {}
    marks: dict[str, set[str]] = {}
    for page in dest.s3.get_paginator("list_objects_v2").paginate(Bucket=dest.bucket, Prefix=dest.prefix):
        for item in page.get("Contents", []):
            name, _, rest = str(item["Key"])[len(dest.prefix) :].partition("/")
            if not rest:
                continue  # not inside a backup folder
            backup = found.setdefault(name, ScheduledBackup(name, False, 0, 0))
            backup.files += 1
            backup.bytes += int(item["Size"])
            if rest in (SUMMARY, LEGACY_MANIFEST, ARCHIVE):
                marks.setdefault(name, set()).add(rest)
    for name, backup in found.items():
        held = marks.get(name, set())
        if SUMMARY in held:
            summary = _json(dest, f"{dest.prefix}{name}/{SUMMARY}")
            backup.finished = summary is not None and ARCHIVE in held
            backup.encrypted = True
            if summary is not None:
                backup.parts, backup.objects = summary.get("parts"), summary.get("objects")
                backup.started, backup.ended = summary.get("started"), summary.get("finished")
                backup.recipient = summary.get("recipient")
                backup.archive_size, backup.archive_sha256 = summary.get("archive_size"), summary.get("archive_sha256")
        elif LEGACY_MANIFEST in held:
            manifest = _json(dest, f"{dest.prefix}{name}/{LEGACY_MANIFEST}")
            backup.finished = manifest is not None  # a damaged manifest: treat the backup as unfinished
            if manifest is not None:
                backup.parts = len(manifest.get("parts", []))
                backup.objects = manifest.get("objects")
                backup.started, backup.ended = manifest.get("started"), manifest.get("finished")
        else:
            backup.encrypted = ARCHIVE in held
    return [found[name] for name in sorted(found)]


def _json(dest: Destination, key: str) -> dict[str, Any] | None:
    body = dest.s3.get_object(Bucket=dest.bucket, Key=key)["Body"].read()
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def check_choice(which: str) -> None:
    """PlatformError unless `which` is `latest` or a UTC stamp as `invoke backup --list` prints it; checked
    before anything else (settings, keys, the destination)."""
    if which != LATEST and not STAMP.fullmatch(which):
        raise PlatformError(
            f"--scheduled {which!r}: expected a UTC stamp as `invoke backup --list` prints it (such as "
            "20261130T030000Z) or `latest`"
        )


def choose(found: list[ScheduledBackup], which: str, where: str) -> ScheduledBackup:
    """The backup `which` names (a UTC stamp as `invoke backup --list` prints it, or `latest`: the newest
    finished one); refused, listing what exists, when there is none such or it is unfinished."""
    finished = [backup for backup in found if backup.finished]

    def listing() -> str:
        if not found:
            return f"there are no backups in {where}"
        names = [f"{b.name}{'' if b.finished else ' (unfinished)'}" for b in found]
        return f"backups in {where} (`invoke backup --list`): {', '.join(names)}"

    if which == LATEST:
        if not finished:
            raise PlatformError(f"--scheduled latest: no finished scheduled backup; {listing()}")
        return finished[-1]
    chosen = next((backup for backup in found if backup.name == which), None)
    if chosen is None:
        raise PlatformError(f"--scheduled {which}: no such backup; {listing()}")
    if not chosen.finished:
        raise PlatformError(
            f"--scheduled {which}: unfinished (no {SUMMARY}: its job failed or still runs); {listing()}"
        )
    return chosen


@contextlib.contextmanager
def opened(
    settings: Settings, which: str, keys: crypto.Keys, progress: Progress = no_progress
) -> Iterator[ArchiveReader]:
    """Download the scheduled backup `which` as it decrypts (never staged encrypted), check its size and
    SHA-256 against summary.json, then verify every part as for an archive file. The identity is read before
    anything is fetched; the plaintext lives in a private temporary folder, removed afterwards."""
    check_choice(which)
    identity = crypto.load_identity(keys, "a scheduled backup")
    public = str(identity.to_public())
    staging = Path(tempfile.mkdtemp(prefix="mlopskit-restore-"))
    try:
        plain = staging / "archive.tar"
        with destination(settings) as dest:
            try:
                backup = choose(_folders(dest), which, dest.where)
            except (ClientError, BotoCoreError) as exc:
                raise _failed(settings, f"listing {dest.where}", exc) from None
            source = f"{dest.where}{backup.name}/{ARCHIVE}"
            if not backup.encrypted:
                raise PlatformError(
                    f"{dest.where}{backup.name}/ is a plain backup an earlier mlopskit wrote (dumps and objects as "
                    'files); `invoke restore` reads archives only: restore it by hand (README, "Scheduled backups '
                    'in the cluster"), or choose an encrypted one from `invoke backup --list`'
                )
            if backup.recipient and backup.recipient != public:
                raise PlatformError(
                    f"{source} is encrypted to {backup.recipient}; BACKUP_IDENTITY_FILE {keys.identity_file} is "
                    f"the identity of {public}: set BACKUP_IDENTITY_FILE to the identity of {backup.recipient}; "
                    "nothing was changed"
                )
            _download(settings, dest, source, backup, plain, identity, keys, progress)
        with flow.verified(plain, source, progress) as reader:
            yield reader
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(
    settings: Settings,
    dest: Destination,
    source: str,
    backup: ScheduledBackup,
    plain: Path,
    identity: Any,
    keys: crypto.Keys,
    progress: Progress,
) -> None:
    key = f"{dest.prefix}{backup.name}/{ARCHIVE}"
    try:
        body = dest.s3.get_object(Bucket=dest.bucket, Key=key)["Body"]
        reader = HashingReader(body, "download", backup.archive_size, _every_mib(progress))
        with body:
            crypto.decrypt_stream(reader, plain, identity, source, keys.identity_file)
    except (ClientError, BotoCoreError) as exc:
        raise _failed(settings, f"downloading {source}", exc) from None
    digest = reader.digest.hexdigest()
    if (backup.archive_size, backup.archive_sha256) != (reader.size, digest):
        raise PlatformError(
            f"{source}: {reader.size} bytes with SHA-256 {digest[:16]}…, {SUMMARY} says {backup.archive_size} bytes "
            f"with {str(backup.archive_sha256)[:16]}…: the archive is not the one the backup wrote; nothing was changed"
        )


def _every_mib(progress: Progress) -> Progress:
    """Progress passed on once per MiB and at the end: age reads 8 KiB at a time, and a progress line per read
    would flood a log (a 22 MB archive made 2,700 lines)."""
    reported: dict[str, int] = {}

    def report(part: str, done: int, total: int | None) -> None:
        last = reported.get(part, -CHUNK)
        if done != last and (done - last >= CHUNK or done == total):
            reported[part] = done
            progress(part, done, total)

    return report
