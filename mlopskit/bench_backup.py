"""Backup and restore throughput against the same work done by hand, on the bench stack, in the same run.

Data: `objects` S3 objects of `object_kb` KB each (written with boto3) and `runs` runs with 10 metrics and
2 params each (through MLflow's REST API). Defaults (200 objects of 256 KB, 2,000 runs) are sized for a
2-core machine; the issue's 1,000 objects / 10,000 runs are `--objects 1000 --runs 10000`.

By hand: pg_dump of both databases through `docker exec` into files, and every object downloaded with boto3
(what `aws s3 sync` does); back: pg_restore of both files through `docker exec`, every object uploaded.
Ours: `invoke backup` (dumps, objects, SHA-256 of each part, tar, age encryption) and `invoke restore --yes`
(decrypt, verify, restore, migrations, MLflow restart, count comparison, smoke check).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

import docker
from mlopskit import console, local
from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup import crypto, flow
from mlopskit.backup.local_target import LocalTarget
from mlopskit.backup.postgres import dump_command, restore_command
from mlopskit.settings import Settings

# Measurement(name, value, unit, target, met, detail) and Report.add, from mlopskit.bench.
AddMeasurement = Callable[[str, float, str, str], None]


def fill(settings: Settings, runs: int, objects: int, object_kb: int, workers: int = 4) -> None:
    """Write the bench data: objects straight into the bucket, runs through MLflow's API."""
    target = LocalTarget(settings, docker.from_env())
    payload = os.urandom(object_kb * 1024)
    for index in range(objects):
        target.bucket.client.put_object(Bucket=target.bucket.name, Key=f"bench/{index:05d}.bin", Body=payload)
    password = settings.platform.mlflow.admin_password
    assert password is not None
    url = f"{local.mlflow_url(settings)}/api/2.0/mlflow"
    auth = (settings.platform.mlflow.admin_user, password.get_secret_value())
    experiment = requests.post(
        f"{url}/experiments/create", json={"name": f"bench-backup-{uuid.uuid4().hex[:6]}"}, auth=auth, timeout=30
    )
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]

    def work(count: int) -> None:
        session = requests.Session()
        session.auth = auth
        for _ in range(count):
            run = session.post(f"{url}/runs/create", json={"experiment_id": experiment_id}, timeout=30)
            run.raise_for_status()
            run_id = run.json()["run"]["info"]["run_id"]
            now = int(time.time() * 1000)
            batch = {
                "run_id": run_id,
                "metrics": [{"key": f"m{i}", "value": i * 0.5, "timestamp": now, "step": 0} for i in range(10)],
                "params": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
            }
            session.post(f"{url}/runs/log-batch", json=batch, timeout=30).raise_for_status()

    threads = [threading.Thread(target=work, args=(runs // workers + (i < runs % workers),)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def by_hand_backup(settings: Settings, folder: Path) -> int:
    """pg_dump of both databases and a boto3 copy of every object; returns the bytes copied."""
    target = LocalTarget(settings, docker.from_env())
    total = 0
    for database in (settings.platform.postgres.tracking_db, settings.platform.postgres.auth_db):
        with (folder / f"{database}.dump").open("wb") as out:
            for chunk in target.shell.stream(dump_command(database)):
                out.write(chunk)
                total += len(chunk)
    for key, size in bucket_parts.objects(target.bucket):
        path = folder / "bucket" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        target.bucket.client.download_file(target.bucket.name, key, str(path))
        total += size
    return total


def by_hand_restore(settings: Settings, folder: Path) -> None:
    """pg_restore of both dumps and a boto3 upload of every object."""
    target = LocalTarget(settings, docker.from_env())
    for database in (settings.platform.postgres.tracking_db, settings.platform.postgres.auth_db):
        dump = folder / f"{database}.dump"
        with dump.open("rb") as handle:
            target.shell.feed(restore_command(database, dump.stat().st_size), iter(lambda: handle.read(1 << 20), b""))
    for path in sorted((folder / "bucket").rglob("*")):
        if path.is_file():
            key = str(path.relative_to(folder / "bucket"))
            target.bucket.client.upload_file(str(path), target.bucket.name, key)


def measure(settings: Settings, runs: int, objects: int, object_kb: int, add: AddMeasurement) -> dict[str, Any]:
    """Fill the stack, then time ours and by hand, backup and restore; returns the raw numbers."""
    console.step(f"backup bench: filling {runs} runs and {objects} objects of {object_kb} KB")
    fill(settings, runs, objects, object_kb)
    keys = crypto.Keys(passphrase=secrets.token_urlsafe(24))
    raw: dict[str, Any] = {"runs": runs, "objects": objects, "object_kb": object_kb}
    with tempfile.TemporaryDirectory(prefix="mlopskit-bench-backup-") as tmp:
        folder = Path(tmp)
        archive = folder / "bench.tar.age"
        started = time.perf_counter()
        manifest = flow.back_up(settings, LocalTarget(settings, docker.from_env()), archive, keys)
        ours_backup = time.perf_counter() - started
        size = manifest.total_bytes

        (folder / "hand").mkdir()
        started = time.perf_counter()
        hand_bytes = by_hand_backup(settings, folder / "hand")
        hand_backup = time.perf_counter() - started

        started = time.perf_counter()
        with flow.opened(archive, keys) as reader:
            flow.restore(settings, LocalTarget(settings, docker.from_env()), reader, yes=True)
        ours_restore = time.perf_counter() - started

        started = time.perf_counter()
        by_hand_restore(settings, folder / "hand")
        hand_restore = time.perf_counter() - started
    mb = size / 1e6
    raw |= {
        "archive_parts_bytes": size,
        "by_hand_bytes": hand_bytes,
        "seconds": {
            "backup": round(ours_backup, 2),
            "backup_by_hand": round(hand_backup, 2),
            "restore": round(ours_restore, 2),
            "restore_by_hand": round(hand_restore, 2),
        },
    }
    add("backup throughput", round(mb / ours_backup, 1), "MB/s", f"{mb:.1f} MB in {ours_backup:.1f}s")
    add("backup by hand (pg_dump + boto3)", round(hand_bytes / 1e6 / hand_backup, 1), "MB/s", f"{hand_backup:.1f}s")
    add("restore throughput", round(mb / ours_restore, 1), "MB/s", f"{ours_restore:.1f}s incl. migrations, restart")
    add(
        "restore by hand (pg_restore + boto3)",
        round(hand_bytes / 1e6 / hand_restore, 1),
        "MB/s",
        f"{hand_restore:.1f}s",
    )
    return raw
