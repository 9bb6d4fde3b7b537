"""Backup and restore, the same steps for the local stack and the cluster; a Target supplies the access.

Backup: versions, schema revisions and counts → both dumps → every object → (cluster) keys and K3s →
manifest → encrypt. Restore: decrypt → verify every checksum → check cluster name, target and MLflow
version → refuse a platform holding data without --yes → (cluster) keys → stop MLflow → both databases →
bucket → migrations → the admin password from .env → start MLflow → counts compared with the manifest →
the smoke check → config/access.yaml applied (no prune).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from werkzeug.security import generate_password_hash

from mlopskit import access
from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup import crypto
from mlopskit.backup.archive import (
    AUTH_DUMP,
    TRACKING_DUMP,
    ArchiveReader,
    ArchiveWriter,
    Manifest,
    Progress,
    no_progress,
)
from mlopskit.backup.bucket import Bucket
from mlopskit.backup.postgres import Shell, dump_command, query_command, restore_command, run
from mlopskit.console import count
from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import SMOKE_PREFIX, MlflowClient, smoke_check
from mlopskit.private_files import check_new_output
from mlopskit.settings import ACCESS_FILE, Settings

TRACKING_VERSION_TABLE = "alembic_version"
AUTH_VERSION_TABLE = "alembic_version_auth"
COUNTED = ("experiments", "runs", "registered_models", "users", "objects")
# What `invoke up` or `deploy` leaves in an empty platform: MLflow's Default experiment and the admin user
# (and deploy's smoke check its deleted experiment, which `counts(without_smoke=True)` leaves out).
EMPTY = {"experiments": 1, "runs": 0, "registered_models": 0, "users": 1, "objects": 0}


class Target(Protocol):
    """The platform a backup reads and a restore writes: the local stack or the cluster."""

    kind: str  # local | cluster

    @property
    def shell(self) -> Shell: ...

    @property
    def bucket(self) -> Bucket: ...

    def versions(self) -> dict[str, str | None]: ...

    def back_up_extras(self, writer: ArchiveWriter) -> list[str]: ...

    def restore_extras(self, reader: ArchiveReader) -> list[str]: ...

    def stop_mlflow(self) -> None: ...

    def migrate(self) -> None: ...

    def start_mlflow(self) -> MlflowClient: ...


@dataclass
class RestoreReport:
    manifest: Manifest
    steps: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def version_key(version: str) -> tuple[int, ...]:
    """3.17.2 → (3, 17, 2); a suffix after the numbers (rc1, +local) is ignored."""
    numbers = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def default_archive(settings: Settings, target: str) -> Path:
    """~/.local/share/mlopskit/backups/<cluster or project>/<target>-<UTC time>.tar.age"""
    folder = settings.cluster.name if target == "cluster" else settings.local.project
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return backup_dir(settings) / folder / f"{target}-{stamp}.tar.age"


def backup_dir(settings: Settings) -> Path:
    base = settings.backup.dir.expanduser()
    return base if base.is_absolute() else settings.root / base


# ------------------------------------------------------------------------------------------ facts


def _value(shell: Shell, database: str, sql: str) -> str:
    return run(shell, query_command(database, sql)).strip()


def revision(shell: Shell, database: str, table: str) -> str | None:
    # table is one of the two constants above, never input.
    return _value(shell, database, f"SELECT version_num FROM {table}") or None  # noqa: S608


# What `invoke deploy`'s smoke check leaves behind: a deleted experiment, its run and its artifact.
SMOKE_EXPERIMENTS = f"name LIKE '{SMOKE_PREFIX}%' AND lifecycle_stage = 'deleted'"


def sql_literal(text: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings, the default since 9.1): quotes doubled."""
    return "'" + text.replace("'", "''") + "'"


def counts(
    settings: Settings, shell: Shell, bucket: Bucket, *, without_smoke: bool = False, without_declared: bool = False
) -> dict[str, int]:
    """Experiments, runs, registered models, users and objects; `without_smoke` leaves out what the smoke
    check of `invoke deploy` leaves (its deleted experiments, their runs and their artifacts);
    `without_declared` leaves out the users config/access.yaml declares (`invoke up` and `deploy` create them)."""
    # Every piece of SQL below is a constant of this module; nothing comes from input.
    pg = settings.platform.postgres
    experiments = f"WHERE NOT ({SMOKE_EXPERIMENTS})" if without_smoke else ""
    runs = (
        f"WHERE experiment_id NOT IN (SELECT experiment_id FROM experiments WHERE {SMOKE_EXPERIMENTS})"  # noqa: S608
        if without_smoke
        else ""
    )
    row = _value(
        shell,
        pg.tracking_db,
        f"SELECT (SELECT count(*) FROM experiments {experiments}), (SELECT count(*) FROM runs {runs}), "  # noqa: S608
        "(SELECT count(*) FROM registered_models), "
        f"(SELECT coalesce(string_agg(experiment_id::text, ','), '') FROM experiments WHERE {SMOKE_EXPERIMENTS})",
    ).split("|")
    # Proxied artifacts live under <experiment id>/ in the bucket (artifact location mlflow-artifacts:/<id>).
    skipped = tuple(f"{identifier}/" for identifier in row[3].split(",") if identifier) if without_smoke else ()
    declared = [user.name for user in settings.access.users] if without_declared else []
    # The names are quoted literals; nothing else in the SQL comes from input.
    skip_users = f" WHERE username NOT IN ({', '.join(map(sql_literal, declared))})" if declared else ""
    users = _value(shell, pg.auth_db, f"SELECT count(*) FROM users{skip_users}")  # noqa: S608
    objects = sum(1 for key, _ in bucket_parts.objects(bucket) if not (skipped and key.startswith(skipped)))
    return {
        "experiments": int(row[0]),
        "runs": int(row[1]),
        "registered_models": int(row[2]),
        "users": int(users),
        "objects": objects,
    }


def holds_data(found: dict[str, int]) -> bool:
    return any(found.get(name, 0) > EMPTY[name] for name in COUNTED)


# ------------------------------------------------------------------------------------------ backup


def check_output(out: Path) -> None:
    check_new_output(out, "an archive")


def back_up(
    settings: Settings, target: Target, out: Path, keys: crypto.Keys, progress: Progress = no_progress
) -> Manifest:
    """Write the encrypted archive `out` (mode 0600) of `target`; returns its manifest."""
    crypto.check_can_encrypt(keys)
    check_output(out)
    pg = settings.platform.postgres
    shell = target.shell
    manifest = Manifest(
        target=target.kind,
        cluster=settings.cluster.name,
        project=settings.local.project,
        namespace=settings.platform.namespace,
        bucket=target.bucket.name,
        started=now(),
    )
    versions: dict[str, str | None] = {
        "mlflow": settings.images.mlflow_version,  # the image is built from this pin, unless the target knows
        "postgres": _value(shell, pg.tracking_db, "SHOW server_version"),
    }
    found = target.versions()
    manifest.versions = versions | {key: value for key, value in found.items() if value or key not in versions}
    manifest.databases = {
        "tracking": {"name": pg.tracking_db, "revision": revision(shell, pg.tracking_db, TRACKING_VERSION_TABLE)},
        "auth": {"name": pg.auth_db, "revision": revision(shell, pg.auth_db, AUTH_VERSION_TABLE)},
    }
    manifest.counts = counts(settings, shell, target.bucket)
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=out.parent))  # mode 0700
    try:
        plain = staging / "archive.tar"
        writer = ArchiveWriter(plain, manifest, progress)
        try:
            writer.add_stream(TRACKING_DUMP, shell.stream(dump_command(pg.tracking_db)))
            writer.add_stream(AUTH_DUMP, shell.stream(dump_command(pg.auth_db)))
            objects = bucket_parts.back_up(target.bucket, writer, progress)
            manifest.holds = [
                f"tracking database {pg.tracking_db} (experiments, runs, metrics, params, tags, registered models)",
                f"auth database {pg.auth_db} (users, password hashes, permissions)",
                f"{objects} object(s) of bucket {target.bucket.name} (artifacts)",
            ]
            manifest.holds += target.back_up_extras(writer)
            manifest.finished = now()
        except BaseException:
            writer.abort()
            raise
        writer.close()
        progress("encrypt", 0, 1)
        crypto.encrypt_file(plain, out, keys)
        progress("encrypt", 1, 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


# ------------------------------------------------------------------------------------------ restore


@contextlib.contextmanager
def opened(archive: Path, keys: crypto.Keys, progress: Progress = no_progress) -> Iterator[ArchiveReader]:
    """Decrypt into a private temporary folder and verify every part; the plaintext is removed afterwards."""
    if not archive.is_file():
        what = "is a directory, not an archive" if archive.is_dir() else "no such archive"
        raise PlatformError(f"{archive}: {what}; `invoke backup` prints where it wrote one")
    staging = Path(tempfile.mkdtemp(prefix="mlopskit-restore-"))
    try:
        plain = staging / "archive.tar"
        progress("decrypt", 0, 1)
        crypto.decrypt_file(archive, plain, keys)
        progress("decrypt", 1, 1)
        with verified(plain, str(archive), progress) as reader:
            yield reader
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def verified(plain: Path, source: str, progress: Progress = no_progress) -> Iterator[ArchiveReader]:
    """The decrypted archive `plain` (named `source` in messages), every part's size and SHA-256 checked."""
    reader = ArchiveReader(plain, source)
    try:
        reader.verify(progress)
        yield reader
    finally:
        reader.close()


def check_compatible(
    settings: Settings, manifest: Manifest, target: str, source: str, running: str | None = None
) -> None:
    """The archive belongs here: same target kind, same cluster name, an MLflow as new or newer.

    `running` is the MLflow release the platform runs (read from its image or pod); without it, the
    release the settings build (images.mlflow_version).
    """
    problems = []
    if manifest.target != target:
        problems.append(
            f"it is a backup of the {manifest.target} platform, not the {target} one; "
            f"restore it with --target {manifest.target}"
        )
    if manifest.cluster != settings.cluster.name:
        problems.append(
            f"it comes from cluster {manifest.cluster!r}, this is {settings.cluster.name!r} "
            f"({settings.describe('cluster.name')}); set CLUSTER_NAME={manifest.cluster} to restore it here"
        )
    archived = str(manifest.versions.get("mlflow") or "")
    here = running or settings.images.mlflow_version
    if version_key(here) < version_key(archived):
        problems.append(
            f"it was written by MLflow {archived}, this platform runs {here}: MLflow's migrations only go "
            f"forward; restore onto MLflow {archived} or newer ({settings.describe('images.mlflow_version')}, "
            "then `invoke build-images` and `invoke up` or `invoke deploy`)"
        )
    if problems:
        raise PlatformError(
            f"{source} cannot be restored here; nothing was changed:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def compare_counts(expected: dict[str, int], found: dict[str, int]) -> list[str]:
    return [
        f"{name}: {found.get(name)} after the restore, {expected.get(name)} in the archive"
        for name in COUNTED
        if name in expected and expected.get(name) != found.get(name)
    ]


def restore(
    settings: Settings,
    target: Target,
    reader: ArchiveReader,
    *,
    yes: bool,
    progress: Progress = no_progress,
) -> RestoreReport:
    """Restore a verified archive into `target`; refuses a platform that holds data unless `yes`."""
    manifest = reader.manifest
    check_compatible(settings, manifest, target.kind, reader.source, target.versions().get("mlflow"))
    pg = settings.platform.postgres
    # What `invoke up` or `deploy` made (the admin, config/access.yaml's users, the smoke check's leftovers)
    # is not data: it is recreated from the configuration.
    before = counts(settings, target.shell, target.bucket, without_smoke=True, without_declared=True)
    if holds_data(before) and not yes:
        held = ", ".join(count(before[name], name.replace("_", " ")) for name in COUNTED)
        declared = f", not counting the {ACCESS_FILE} users" if settings.access.users else ""
        raise PlatformError(
            f"the {target.kind} platform holds data ({held}{declared}); a restore replaces all of it. "
            "Rerun with --yes to overwrite it; nothing was changed"
        )
    report = RestoreReport(manifest)
    report.steps += target.restore_extras(reader)
    target.stop_mlflow()
    for name, database in ((TRACKING_DUMP, pg.tracking_db), (AUTH_DUMP, pg.auth_db)):
        part = manifest.part(name)
        if part is None:
            raise PlatformError(f"{reader.source}: {name} is missing from the manifest")
        progress(name, 0, part.size)
        target.shell.feed(restore_command(database, part.size), _counted(reader, name, part.size, progress))
        report.steps.append(f"database {database} restored from {name} ({part.size} bytes)")
    put, deleted = bucket_parts.restore(target.bucket, reader, progress)
    report.steps.append(f"bucket {target.bucket.name}: {put} object(s) restored, {deleted} not in the archive removed")
    target.migrate()
    report.steps.append("migrations run (tracking and auth schemas current)")
    report.steps.append(reset_admin_password(settings, target.shell))
    client = target.start_mlflow()
    mlflow = settings.platform.mlflow
    assert mlflow.admin_password is not None  # reset_admin_password refuses without it
    if not client.accepts(mlflow.admin_user, mlflow.admin_password.get_secret_value()):
        raise PlatformError(
            f"the data is restored, but MLflow at {client.url} refuses MLFLOW_ADMIN_PASSWORD of "
            f"{mlflow.admin_user!r} from .env: the admin was not in the archive and MLflow created it with the "
            f"password its {target.kind} platform was started with; {client.rerun}"
        )
    report.counts = counts(settings, target.shell, target.bucket)
    differences = compare_counts(manifest.counts, report.counts)
    if differences:
        raise PlatformError(
            "the restored platform does not match the archive's manifest:\n"
            + "\n".join(f"  - {d}" for d in differences)
            + "\n(writes during the backup can cause this; check the platform, or restore again)"
        )
    report.steps.append("counts match the manifest: " + ", ".join(f"{report.counts[n]} {n}" for n in COUNTED))
    report.steps += smoke_check(client).steps
    if settings.access.declared:
        # As `invoke up` and `deploy` do: the archive's users and grants are those of the day of the backup.
        done = access.apply_plan(settings, client, access.make_plan(settings, client))
        applied = f"{len(done)} change(s) applied" if done else "MLflow already matched it"
        report.steps.append(f"{ACCESS_FILE} applied (without --prune: users it does not declare are kept): {applied}")
    return report


def reset_admin_password(settings: Settings, shell: Shell) -> str:
    """Make the .env admin password true in the restored auth database, before MLflow starts.

    The archive holds the admin's password hash of the day of the backup; a password rotated since then
    would be refused. The hash is made as MLflow's auth store makes it (werkzeug's generate_password_hash,
    mlflow/server/auth/sqlalchemy_store.py) and written with the admin flag. An admin missing from the
    archive is created by MLflow when it starts, from MLFLOW_ADMIN_USER/MLFLOW_ADMIN_PASSWORD.
    """
    mlflow = settings.platform.mlflow
    if mlflow.admin_password is None:
        raise PlatformError(
            "platform.mlflow.admin_password (MLFLOW_ADMIN_PASSWORD) is not set in .env; the restore sets the "
            "admin's password to it"
        )
    password_hash = generate_password_hash(mlflow.admin_password.get_secret_value())
    # Both values are quoted literals: the hash's alphabet is fixed, the user name is validated by settings.
    sql = (
        f"UPDATE users SET password_hash = {sql_literal(password_hash)}, is_admin = true "  # noqa: S608
        f"WHERE username = {sql_literal(mlflow.admin_user)} RETURNING username"
    )
    updated = run(shell, query_command(settings.platform.postgres.auth_db, sql)).strip()
    user = mlflow.admin_user
    if not updated:
        return f"admin {user!r} is not in the archive: MLflow creates it at start with MLFLOW_ADMIN_PASSWORD"
    return f"admin {user!r}: password set to MLFLOW_ADMIN_PASSWORD from .env (the archive holds the one of its day)"


def _counted(reader: ArchiveReader, name: str, size: int, progress: Progress) -> Iterator[bytes]:
    done = 0
    for chunk in reader.chunks(name):
        done += len(chunk)
        progress(name, done, size)
        yield chunk
