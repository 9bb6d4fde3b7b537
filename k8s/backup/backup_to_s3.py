"""Scheduled backup, run by the mlflow-backup CronJob's upload container with the MLflow image's Python.

Writes one archive in the format of `invoke backup`: age(tar(parts + backup.json)), encrypted to the age
public key BACKUP_RECIPIENT, so the cluster holds nothing that can decrypt it. The parts are the two dumps
the init container wrote (WORK_DIR/postgres/*.dump) and every object of the artifact bucket (bucket/<key>);
backup.json, the tar's last member, lists each with its size and SHA-256, with the versions, schema
revisions and counts the init container read (WORK_DIR/postgres/facts.txt). Nothing is staged: the tar is
written into a pipe, pyrage encrypts it into a second pipe, boto3 uploads that in parts to
DEST_PREFIX<UTC time>/archive.tar.age. Then summary.json goes next to it, last: plain, without secrets or
object names (times, counts, sizes, the archive's SHA-256 and the recipient), the mark of a finished
backup, which `invoke backup --list` and `invoke restore --scheduled` read. Then the newest RETENTION
finished backups under DEST_PREFIX are kept and every folder older than the oldest one kept is deleted.
"""

import datetime
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import sys
import tarfile
import threading
from pathlib import Path

ARCHIVE = "archive.tar.age"
SUMMARY = "summary.json"
LEGACY_MANIFEST = "backup.json"  # the finished mark of the plain folders earlier releases wrote
MANIFEST = "backup.json"  # inside the archive, as mlopskit/backup/archive.py reads it
FORMAT = 1
CHUNK = 1 << 20
PART_SIZE = 16 << 20  # S3 multipart part; raised for archives beyond 9,000 parts (S3 allows 10,000)


class Hashing:
    """A read-only stream that hashes and counts what passes; no seek, so readers take it once, in order."""

    def __init__(self, source):
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readable(self):
        return True


def now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_part(tar, name, source, size):
    """Stream `size` bytes of `source` into the tar as `name`; returns the manifest's entry for it."""
    reader = Hashing(source)
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(datetime.datetime.now(datetime.UTC).timestamp())
    tar.addfile(info, reader)  # raises when the source ends before `size` bytes
    return {"name": name, "size": size, "sha256": reader.digest.hexdigest()}


def write_archive(sink, manifest, parts):
    """The plain archive into the writable `sink`: every (name, size, open) of `parts`, backup.json last.

    `open()` gives a readable stream of the part; the manifest's `parts` and `finished` are filled in here.
    """
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = CHUNK
        for name, size, open_part in parts:
            with open_part() as source:
                manifest["parts"].append(add_part(tar, name, source, size))
            if len(manifest["parts"]) % 100 == 0:
                print(f"{len(manifest['parts'])} parts archived", flush=True)
        manifest["finished"] = now()
        data = (json.dumps(manifest, indent=2) + "\n").encode()
        add_part(tar, MANIFEST, io.BytesIO(data), len(data))
    return manifest


def encrypt_stream(produce, recipients, consume):
    """produce(plain sink) → age to `recipients` → consume(encrypted source), each end on its own thread.

    Nothing is held beyond the pipes' buffers and what `consume` buffers. A failure anywhere stops the
    others (a closed pipe) and is raised here; an archive whose producer failed is never reported done.
    """
    import pyrage

    plain_read, plain_write = os.pipe()
    sealed_read, sealed_write = os.pipe()
    errors = []

    def producer():
        try:
            with os.fdopen(plain_write, "wb") as sink:
                produce(sink)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def encrypter():
        try:
            with os.fdopen(plain_read, "rb") as source, os.fdopen(sealed_write, "wb") as sink:
                pyrage.encrypt_io(source, sink, recipients)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=producer, daemon=True), threading.Thread(target=encrypter, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        with os.fdopen(sealed_read, "rb") as sealed:
            result = consume(sealed)
    finally:
        for thread in threads:
            thread.join(timeout=60)
    if errors:
        raise errors[0]
    return result


def client(prefix):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get(f"{prefix}_ENDPOINT") or None,
        region_name=os.environ.get(f"{prefix}_REGION") or "us-east-1",
        aws_access_key_id=os.environ[f"{prefix}_ACCESS_KEY"],
        aws_secret_access_key=os.environ[f"{prefix}_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def folders(dest, bucket, prefix):
    """{folder name: finished?} of every backup under prefix (summary.json, or a plain folder's backup.json)."""
    found = {}
    for page in dest.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name, _, rest = item["Key"][len(prefix) :].partition("/")
            if rest:
                found[name] = found.get(name, False) or rest in (SUMMARY, LEGACY_MANIFEST)
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


def read_facts(path):
    """key=value lines the init container wrote: PostgreSQL's version, schema revisions, row counts."""
    facts = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        facts[key.strip()] = value.strip()
    return facts


def mlflow_release():
    """The MLflow release of this image: what the restore compares with the platform's (migrations go forward)."""
    return importlib.metadata.version("mlflow")


def new_manifest(facts, started):
    """backup.json as mlopskit/backup/archive.py's Manifest reads it (the same fields, no others)."""
    tracking_db, auth_db, bucket = os.environ["TRACKING_DB"], os.environ["AUTH_DB"], os.environ["SOURCE_BUCKET"]
    return {
        "target": "cluster",
        "cluster": os.environ["CLUSTER"],
        "project": os.environ.get("PROJECT", ""),
        "namespace": os.environ["NAMESPACE"],
        "bucket": bucket,
        "started": started,
        "finished": "",
        "format": FORMAT,
        "versions": {
            "mlflow": mlflow_release(),
            "mlflow_image": os.environ.get("MLFLOW_IMAGE") or None,
            "postgres": facts.get("postgres") or None,
            "k3s": None,
        },
        "databases": {
            "tracking": {"name": tracking_db, "revision": facts.get("tracking_revision") or None},
            "auth": {"name": auth_db, "revision": facts.get("auth_revision") or None},
        },
        "counts": {name: int(facts[name]) for name in ("experiments", "runs", "registered_models", "users")},
        "holds": [
            f"tracking database {tracking_db} (experiments, runs, metrics, params, tags, registered models)",
            f"auth database {auth_db} (users, password hashes, permissions)",
        ],
        "parts": [],
    }


def source_parts(work_dir, source, source_bucket, listed):
    """(name, size, open) of the two dumps and of every listed object, in archive order."""
    for name in ("tracking.dump", "auth.dump"):
        path = work_dir / "postgres" / name
        yield f"postgres/{name}", path.stat().st_size, functools.partial(path.open, "rb")

    for key, size in listed:

        def open_object(key=key):
            return source.get_object(Bucket=source_bucket, Key=key)["Body"]

        yield f"bucket/{key}", size, open_object


def main():
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError
    from pyrage import x25519

    started = now()
    stamp = started.replace("-", "").replace(":", "")
    bucket, prefix = os.environ["DEST_BUCKET"], os.environ["DEST_PREFIX"]
    folder = f"{prefix}{stamp}/"
    recipient = os.environ["BACKUP_RECIPIENT"]
    try:
        recipients = [x25519.Recipient.from_str(recipient)]
    except Exception as exc:  # pyrage raises its own RecipientError
        sys.exit(f"BACKUP_RECIPIENT {recipient!r}: not an age public key ({exc}); set backup.recipient and redeploy")
    source, dest = client("SOURCE"), client("DEST")
    try:
        dest.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        sys.exit(f"destination bucket {bucket}: {code}; create it and check the keys in backup-s3-credentials")
    work_dir = Path(os.environ["WORK_DIR"])
    manifest = new_manifest(read_facts(work_dir / "postgres" / "facts.txt"), started)
    source_bucket = manifest["bucket"]
    listed = [
        (item["Key"], item["Size"])
        for page in source.get_paginator("list_objects_v2").paginate(Bucket=source_bucket)
        for item in page.get("Contents", [])
    ]
    manifest["counts"]["objects"] = len(listed)
    manifest["holds"] += [
        f"{len(listed)} object(s) of bucket {source_bucket} (artifacts)",
        "no Sealed Secrets keys and no K3s datastore: a scheduled backup holds the databases and the bucket; "
        "`invoke backup --target cluster` or `invoke secrets.backup-key` keeps the sealing keys",
    ]
    parts = list(source_parts(work_dir, source, source_bucket, listed))
    plain_bytes = sum(size for _, size, _ in parts)
    # age adds 16 bytes per 64 KiB chunk; the tar 512 per member plus its PAX headers: 1% covers both.
    part_size = max(PART_SIZE, -(-int(plain_bytes * 1.01 + len(parts) * 2048) // 9000))
    transfer = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=2)
    transfer.max_in_memory_upload_chunks = 3  # bounds memory to a few parts of the stream
    key = f"{folder}{ARCHIVE}"

    def upload(sealed):
        hashing = Hashing(sealed)
        dest.upload_fileobj(hashing, bucket, key, Config=transfer)
        return hashing

    print(f"writing s3://{bucket}/{key}: {len(parts)} parts, {plain_bytes} bytes before encryption", flush=True)
    try:
        sealed = encrypt_stream(lambda sink: write_archive(sink, manifest, parts), recipients, upload)
    except BaseException:
        dest.delete_object(Bucket=bucket, Key=key)  # a partial archive must not look like one
        raise
    summary = {
        "format": FORMAT,
        "kind": "scheduled",
        "encrypted": "age",
        "recipient": recipient,
        "archive": ARCHIVE,
        "archive_size": sealed.size,
        "archive_sha256": sealed.digest.hexdigest(),
        "cluster": manifest["cluster"],
        "namespace": manifest["namespace"],
        "mlflow": manifest["versions"]["mlflow"],
        "started": manifest["started"],
        "finished": manifest["finished"],
        "objects": len(listed),
        "parts": len(manifest["parts"]),
        "bytes": plain_bytes,
    }
    dest.put_object(Bucket=bucket, Key=f"{folder}{SUMMARY}", Body=json.dumps(summary, indent=2).encode())
    print(
        f"backup written to s3://{bucket}/{key} ({sealed.size} bytes encrypted to {recipient}, "
        f"{len(manifest['parts'])} parts, {len(listed)} objects)",
        flush=True,
    )
    prune(dest, bucket, prefix, int(os.environ["RETENTION"]), stamp)


if __name__ == "__main__":
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        main()
    except (BotoCoreError, ClientError, OSError, tarfile.TarError) as exc:
        sys.exit(f"backup failed: {exc}")
