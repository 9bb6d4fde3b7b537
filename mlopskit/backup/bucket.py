"""The artifact bucket through boto3: every object streamed into the archive, and back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlopskit.backup.archive import BUCKET_PREFIX, ArchiveReader, ArchiveWriter, Progress
from mlopskit.errors import PlatformError
from mlopskit.object_store import s3_client
from mlopskit.settings import Settings


@dataclass(frozen=True)
class Bucket:
    client: Any  # boto3 S3 client
    name: str
    endpoint: str

    def fail(self, action: str, exc: Exception) -> PlatformError:
        return PlatformError(
            f"S3 at {self.endpoint}: {action} in bucket {self.name} failed ({exc}); "
            "check S3_ACCESS_KEY / S3_SECRET_KEY in .env and that the object store runs"
        )


def connect(settings: Settings, endpoint: str) -> Bucket:
    store = settings.platform.object_store
    if store.access_key is None or store.secret_key is None:
        raise PlatformError("S3_ACCESS_KEY and S3_SECRET_KEY must be set in .env to back up or restore the bucket")
    return Bucket(s3_client(settings, endpoint), store.bucket, endpoint)


def objects(bucket: Bucket) -> Iterator[tuple[str, int]]:
    """(key, size) of every object, in key order."""
    try:
        for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
            for item in page.get("Contents", []):
                yield str(item["Key"]), int(item["Size"])
    except (ClientError, BotoCoreError) as exc:
        raise bucket.fail("listing objects", exc) from None


def back_up(bucket: Bucket, writer: ArchiveWriter, progress: Progress) -> int:
    """Stream every object into the archive as bucket/<key>; returns the number of objects."""
    listed = list(objects(bucket))
    for index, (key, size) in enumerate(listed, 1):
        try:
            body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail(f"reading {key}", exc) from None
        with body:
            writer.add_sized(BUCKET_PREFIX + key, body, size)
        progress("objects", index, len(listed))
    return len(listed)


def restore(bucket: Bucket, reader: ArchiveReader, progress: Progress) -> tuple[int, int]:
    """Make the bucket hold exactly the archive's objects: upload each, delete others. Returns (put, deleted)."""
    parts = reader.manifest.object_parts
    wanted = {part.name.removeprefix(BUCKET_PREFIX) for part in parts}
    try:
        bucket.client.head_bucket(Bucket=bucket.name)
    except ClientError:
        try:
            bucket.client.create_bucket(Bucket=bucket.name)
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail("creating the bucket", exc) from None
    extra = [key for key, _ in objects(bucket) if key not in wanted]
    for index, part in enumerate(parts, 1):
        key = part.name.removeprefix(BUCKET_PREFIX)
        try:
            with reader.open(part.name) as handle:
                bucket.client.upload_fileobj(handle, bucket.name, key)
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail(f"writing {key}", exc) from None
        progress("objects", index, len(parts))
    for start in range(0, len(extra), 1000):
        batch = [{"Key": key} for key in extra[start : start + 1000]]
        try:
            bucket.client.delete_objects(Bucket=bucket.name, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail("deleting objects not in the archive", exc) from None
    return len(parts), len(extra)
