"""What the scheduled backups (platform.backup, the mlflow-backup CronJob of k8s/backup/) left at their
destination, for `invoke backup --list`.

The CronJob writes each backup under <prefix><cluster>/<namespace>/<UTC time>/: postgres/tracking.dump,
postgres/auth.dump (pg_dump custom format), bucket/<key> for every artifact object, and backup.json last
(every part with its size and SHA-256). A folder without backup.json is an unfinished backup. A destination
that is a Service of the cluster (http://<service>.<namespace>.svc:<port>) is reached through a port-forward.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlopskit.errors import PlatformError
from mlopskit.object_store import s3_client
from mlopskit.settings import Settings

MANIFEST = "backup.json"


@dataclass
class ScheduledBackup:
    """One folder at the destination: its UTC time stamp, whether backup.json ends it, and what it holds."""

    name: str  # YYYYmmddTHHMMSSZ, the time the job started
    finished: bool
    parts: int  # objects in the folder, backup.json included
    bytes: int
    objects: int | None = None  # artifact objects copied, from backup.json
    started: str | None = None
    ended: str | None = None


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


def list_backups(settings: Settings) -> list[ScheduledBackup]:
    """Every backup under this platform's prefix at the destination, oldest first."""
    from mlopskit.kube.render import scheduled_backup_prefix

    destination = settings.platform.backup.destination
    if not destination.bucket:
        raise PlatformError(
            f"{settings.describe('platform.backup.destination.bucket')}: not set; it is the bucket the "
            "scheduled backups go to (see platform.backup in config/platform.yaml)"
        )
    prefix = scheduled_backup_prefix(settings)
    with destination_endpoint(settings) as endpoint:
        s3 = s3_client(
            settings,
            endpoint,
            access_key=settings.secrets.backup_s3_access_key,
            secret_key=settings.secrets.backup_s3_secret_key,
            region=destination.region,
        )
        where = f"s3://{destination.bucket}/{prefix} at {destination.endpoint or 'AWS S3'}"
        try:
            return _folders(s3, destination.bucket, prefix)
        except (ClientError, BotoCoreError) as exc:
            raise PlatformError(
                f"listing {where} failed ({exc}); check BACKUP_S3_ENDPOINT, BACKUP_S3_BUCKET and the "
                "BACKUP_S3_ACCESS_KEY / BACKUP_S3_SECRET_KEY pair in .env"
            ) from None


def _folders(s3: Any, bucket: str, prefix: str) -> list[ScheduledBackup]:
    found: dict[str, ScheduledBackup] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name, _, rest = str(item["Key"])[len(prefix) :].partition("/")
            if not rest:
                continue  # not inside a backup folder
            backup = found.setdefault(name, ScheduledBackup(name, False, 0, 0))
            backup.parts += 1
            backup.bytes += int(item["Size"])
            backup.finished = backup.finished or rest == MANIFEST
    for backup in found.values():
        if backup.finished:
            body = s3.get_object(Bucket=bucket, Key=f"{prefix}{backup.name}/{MANIFEST}")["Body"].read()
            try:
                manifest = json.loads(body)
            except ValueError:
                backup.finished = False  # a damaged manifest: treat the backup as unfinished
                continue
            backup.objects = manifest.get("objects")
            backup.started, backup.ended = manifest.get("started"), manifest.get("finished")
    return [found[name] for name in sorted(found)]
