"""The one S3 client of the platform's bucket: path-style addressing (SeaweedFS, MinIO and most S3-compatible
stores need it), the region and credentials from the settings, retries on transient errors."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from mlopskit.settings import Settings


def s3_client(
    settings: Settings,
    endpoint: str | None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> Any:
    """A boto3 S3 client for `endpoint` (a URL; None is AWS S3) with the platform's S3 credentials, or the
    key pair and region given (the scheduled backups' destination).

    Raises SettingsError naming S3_ACCESS_KEY / S3_SECRET_KEY when either is needed and not set."""
    store = settings.platform.object_store
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or store.region,
        aws_access_key_id=access_key or settings.secrets.s3_access_key,
        aws_secret_access_key=secret_key or settings.secrets.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )
