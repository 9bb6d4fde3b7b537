"""Scheduled backup, run by the mlflow-backup CronJob's upload container with the MLflow image's boto3.

Puts the two dumps the init container wrote (WORK_DIR/postgres/*.dump) and a copy of every object of the
artifact bucket under DEST_PREFIX<UTC time>/ at the destination, each with its size and SHA-256 in
backup.json, which is written last: a folder without it is an unfinished backup. Then keeps the newest
RETENTION finished backups under DEST_PREFIX and deletes every folder older than the oldest one kept.
"""

import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MANIFEST = "backup.json"


class Hashing:
    """A read-only stream that hashes and counts what passes; no seek, so boto3 reads it once, in order."""

    def __init__(self, source):
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def client(prefix):
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get(f"{prefix}_ENDPOINT") or None,
        region_name=os.environ.get(f"{prefix}_REGION") or "us-east-1",
        aws_access_key_id=os.environ[f"{prefix}_ACCESS_KEY"],
        aws_secret_access_key=os.environ[f"{prefix}_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def put(dest, bucket, key, stream):
    hashing = Hashing(stream)
    dest.upload_fileobj(hashing, bucket, key)
    return hashing.size, hashing.digest.hexdigest()


def folders(dest, bucket, prefix):
    """{folder name: finished?} of every backup under prefix."""
    found = {}
    for page in dest.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(prefix) :].rstrip("/")
            found[name] = False
    for name in found:
        listed = dest.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{name}/{MANIFEST}", MaxKeys=1)
        found[name] = listed.get("KeyCount", 0) > 0
    return found


def prune(dest, bucket, prefix, retention, current):
    found = folders(dest, bucket, prefix)
    finished = sorted((name for name, done in found.items() if done), reverse=True)
    if len(finished) <= retention:
        return []
    oldest_kept = finished[retention - 1]
    doomed = sorted(name for name in found if name < oldest_kept and name != current)
    for name in doomed:
        keys = []
        for page in dest.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}{name}/"):
            keys += [{"Key": item["Key"]} for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            dest.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
        print(f"removed {prefix}{name}/ ({len(keys)} objects): older than the newest {retention}", flush=True)
    return doomed


def main():
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    bucket, prefix = os.environ["DEST_BUCKET"], os.environ["DEST_PREFIX"]
    folder = f"{prefix}{stamp}/"
    source, dest = client("SOURCE"), client("DEST")
    try:
        dest.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        sys.exit(f"destination bucket {bucket}: {code}; create it and check the keys in backup-s3-credentials")
    parts = []
    for name in ("tracking.dump", "auth.dump"):
        path = Path(os.environ["WORK_DIR"]) / "postgres" / name
        with path.open("rb") as handle:
            size, digest = put(dest, bucket, f"{folder}postgres/{name}", handle)
        parts.append({"name": f"postgres/{name}", "size": size, "sha256": digest})
        print(f"postgres/{name}: {size} bytes", flush=True)
    source_bucket = os.environ["SOURCE_BUCKET"]
    objects = 0
    for page in source.get_paginator("list_objects_v2").paginate(Bucket=source_bucket):
        for item in page.get("Contents", []):
            body = source.get_object(Bucket=source_bucket, Key=item["Key"])["Body"]
            with body:
                size, digest = put(dest, bucket, f"{folder}bucket/{item['Key']}", body)
            if size != item["Size"]:
                sys.exit(f"{item['Key']}: listed with {item['Size']} bytes, read {size}; it changed during the copy")
            parts.append({"name": f"bucket/{item['Key']}", "size": size, "sha256": digest})
            objects += 1
    print(f"bucket {source_bucket}: {objects} objects copied", flush=True)
    manifest = {
        "format": 1,
        "kind": "scheduled",
        "cluster": os.environ["CLUSTER"],
        "namespace": os.environ["NAMESPACE"],
        "bucket": source_bucket,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "objects": objects,
        "bytes": sum(part["size"] for part in parts),
        "parts": parts,
    }
    dest.put_object(Bucket=bucket, Key=f"{folder}{MANIFEST}", Body=json.dumps(manifest, indent=2).encode())
    print(f"backup written to s3://{bucket}/{folder} ({manifest['bytes']} bytes, {len(parts)} parts)", flush=True)
    prune(dest, bucket, prefix, int(os.environ["RETENTION"]), stamp)


try:
    main()
except (BotoCoreError, ClientError) as exc:
    sys.exit(f"backup failed: {exc}")
