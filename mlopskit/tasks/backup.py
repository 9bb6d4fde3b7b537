"""Tasks for backup and restore of the local stack or the cluster: `invoke backup`, `invoke restore`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from invoke.context import Context
from rich.progress import Progress as RichProgress
from rich.progress import TaskID

from mlopskit import console, images
from mlopskit.backup import crypto, flow
from mlopskit.backup.archive import BUCKET_PREFIX, ArchiveReader, Progress
from mlopskit.errors import PlatformError
from mlopskit.private_files import check_new_output
from mlopskit.settings import ENV_FILE, Settings
from mlopskit.tasks.common import platform_task, settings_for

TARGETS = ("local", "cluster")
DEFAULT_IDENTITY = "~/.config/mlopskit/backup-identity.txt"


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise PlatformError(f"--target {target!r} [from the command line]: must be local or cluster")
    return target


@contextlib.contextmanager
def open_target(settings: Settings, target: str) -> Iterator[flow.Target]:
    if target == "local":
        from mlopskit.backup.local_target import LocalTarget

        yield LocalTarget(settings, images.docker_client())
    else:
        from mlopskit.backup.cluster_target import cluster_target

        with cluster_target(settings) as made:
            yield made


def progress_reporter(progress: RichProgress) -> Progress:
    """One bar per part (bytes), one for the bucket's bytes, one for its objects."""
    bars: dict[str, TaskID] = {}

    def report(part: str, done: int, total: int | None) -> None:
        if part.startswith(BUCKET_PREFIX):
            return  # counted by the "objects" bar; a bar per object would flood the terminal
        if part not in bars:
            bars[part] = progress.add_task(part, total=total)
        progress.update(bars[part], completed=done, total=total)

    return report


def list_scheduled(settings: Settings) -> None:
    """The table of `invoke backup --list`."""
    from mlopskit.backup.scheduled import list_backups
    from mlopskit.kube.render import scheduled_backup_prefix

    destination = settings.platform.backup.destination
    where = f"s3://{destination.bucket}/{scheduled_backup_prefix(settings)} at {destination.endpoint or 'AWS S3'}"
    found = list_backups(settings)
    if not found:
        console.info(f"no scheduled backups in {where}")
        return
    rows = [
        (
            backup.name,
            "finished" if backup.finished else "unfinished (no summary.json)",
            ("age" if backup.encrypted else "no (plain files)"),
            f"{backup.started or '-'} → {backup.ended or '-'}",
            "-" if backup.parts is None else str(backup.parts),
            "-" if backup.objects is None else str(backup.objects),
            f"{backup.bytes / 1e6:.1f} MB",
        )
        for backup in found
    ]
    columns = ["backup", "status", "encrypted", "UTC", "parts", "objects", "size"]
    console.table(f"Scheduled backups in {where}", columns, rows)
    finished = sum(1 for backup in found if backup.finished)
    console.info(f"{finished} finished, {len(found) - finished} unfinished; newest last")


@platform_task(
    help={
        "out": "archive file to write, mode 0600, never overwritten "
        "[default: BACKUP_DIR/<project or cluster>/<target>-<UTC time>.tar.age]",
        "target": "local (the `invoke up` stack) or cluster (the deployed platform) [default: local]",
        "dry-run": "print what the archive would hold and where; write nothing [default: off]",
        "list": "list the scheduled backups (platform.backup) at their S3 destination instead: time, whether "
        "encrypted, parts, objects, size [default: off]",
    }
)
def backup(
    c: Context, out: str | None = None, target: str = "local", dry_run: bool = False, list_: bool = False
) -> None:
    """Write one encrypted archive of both databases, the bucket and (cluster) the sealing keys and K3s state."""
    _check_target(target)
    if list_:
        list_scheduled(settings_for(c, "backup-list", ran="backup --list"))
        return
    settings = settings_for(c)
    keys = crypto.keys_from(settings)
    crypto.check_can_encrypt(keys)
    path = Path(out).expanduser() if out else flow.default_archive(settings, target)
    check_new_output(path, "an archive")
    with open_target(settings, target) as platform:
        if dry_run:
            found = flow.counts(settings, platform.shell, platform.bucket)
            console.table(f"Would back up ({target})", ["what", "count"], list(found.items()))
            console.info(f"would write {path} (mode 0600, encrypted)")
            return
        with console.progress() as bars:
            manifest = flow.back_up(settings, platform, path, keys, progress_reporter(bars))
    console.table(f"Archive {path}", ["holds"], [(line,) for line in manifest.holds])
    size = path.stat().st_size
    console.ok(f"backup written: {path} ({size / 1e6:.1f} MB, mode 0600, {manifest.started} → {manifest.finished})")
    console.info(
        "keep it: copy it off this machine, and keep BACKUP_PASSPHRASE (or the age identity) somewhere else; "
        f"next: `invoke restore {path} --target {target}`"
    )


@platform_task(
    help={
        "path": "the archive file to restore; with --scheduled, which scheduled backup: its UTC stamp as "
        "`invoke backup --list` prints it, or `latest` (required)",
        "scheduled": "restore a scheduled backup (platform.backup), downloaded from its S3 destination, instead of "
        "a file [default: off]",
        "target": "local (the `invoke up` stack) or cluster (the deployed platform) [default: local; cluster with "
        "--scheduled]",
        "yes": "overwrite a platform that already holds data [default: off: refuse]",
        "dry-run": "decrypt and verify the archive and check it fits this platform; change nothing [default: off]",
    }
)
def restore(
    c: Context, path: str, scheduled: bool = False, target: str | None = None, yes: bool = False, dry_run: bool = False
) -> None:
    """Verify an archive (a file or a scheduled backup); restore databases, bucket, keys; migrate, admin, access."""
    target = _check_target(target or ("cluster" if scheduled else "local"))
    if scheduled:
        from mlopskit.backup.scheduled import check_choice

        check_choice(path)
        settings = settings_for(c, "restore-scheduled", ran="restore --scheduled")
    else:
        settings = settings_for(c, "up" if target == "local" else "deploy", ran=f"restore --target {target}")
    keys = crypto.keys_from(settings)
    with console.progress() as bars:
        if scheduled:
            from mlopskit.backup import scheduled as scheduled_backups

            opened = scheduled_backups.opened(settings, path, keys, progress_reporter(bars))
        else:
            opened = flow.opened(Path(path).expanduser(), keys, progress_reporter(bars))
        with opened as reader:
            report = _restore(settings, reader, target, yes, dry_run, bars, path if scheduled else None)
            source = reader.source
    if report is not None:  # printed once the progress bars are gone, as the steps of a finished restore
        for step in report.steps:
            console.ok(step)
        console.ok(f"restored {source} into the {target} platform")


def _restore(
    settings: Settings,
    reader: ArchiveReader,
    target: str,
    yes: bool,
    dry_run: bool,
    bars: RichProgress,
    scheduled: str | None,
) -> flow.RestoreReport | None:
    """The restore of a verified archive, whichever its source; `scheduled`: the stamp given with --scheduled.
    None when it stopped early (a dry run, or only the sealing keys restored onto a cluster without the platform)."""
    out = bars.console
    manifest = reader.manifest
    source = reader.source
    again = f"invoke restore --scheduled {scheduled}" if scheduled else f"invoke restore {source} --target cluster"
    flow.check_compatible(settings, manifest, target, source)
    out.print(
        f"✓ {source}: {len(manifest.parts)} parts verified (SHA-256), written {manifest.finished} "
        f"by MLflow {manifest.versions.get('mlflow')} for cluster {manifest.cluster}",
        markup=False,
    )
    if dry_run:
        out.print("\n".join(f"would restore: {line}" for line in manifest.holds), markup=False)
        out.print("dry run: nothing changed")
        return None
    if target == "cluster":
        from mlopskit.backup.cluster_target import restore_keys_without_platform

        done = restore_keys_without_platform(settings, reader)
        if done is not None:
            out.print(f"✓ {done}", markup=False)
            out.print(
                f"the platform is not deployed yet: run `invoke deploy` (the controller starts with these keys), "
                f"then `{again}` again for the data",
                markup=False,
            )
            return None
    with open_target(settings, target) as platform:
        return flow.restore(settings, platform, reader, yes=yes, progress=progress_reporter(bars))


@platform_task(
    help={
        "out": "the identity file to write, mode 0600, never overwritten [default: "
        "~/.config/mlopskit/backup-identity.txt]",
    }
)
def backup_keygen(c: Context, out: str | None = None) -> None:
    """Make an age key pair for encrypted backups: the identity to a private file, the public key printed."""
    path = Path(out or DEFAULT_IDENTITY).expanduser()
    check_new_output(path, "an identity")
    public = crypto.new_identity(path)
    console.ok(f"identity written: {path} (mode 0600; it decrypts every backup encrypted to its public key)")
    console.info(
        f"set in {ENV_FILE}: BACKUP_RECIPIENT={public}  (public: `invoke backup` and the scheduled backups encrypt "
        f"to it)\nand, on the machine that restores: BACKUP_IDENTITY_FILE={path}\nkeep a copy of the identity file "
        "off this machine and away from the backups: without it no backup encrypted to this key can be opened"
    )
