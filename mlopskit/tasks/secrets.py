"""Tasks for credentials: seal them for the cluster, back up the controller's sealing keys."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.kube import sealing
from mlopskit.private_files import check_new_output
from mlopskit.tasks.common import platform_task, settings_for


@platform_task(
    help={
        "cert": "seal offline with this certificate file (default: fetch it from the controller in the cluster)",
        "reencrypt": "seal every value again with the current certificate, e.g. after key renewal (default: off)",
        "scope": "strict, namespace-wide or cluster-wide (default: keep each file's scope; strict for new files)",
        "dry-run": "show what would be sealed, write nothing (default: off)",
    }
)
def seal(
    c: Context, cert: str | None = None, reencrypt: bool = False, scope: str | None = None, dry_run: bool = False
) -> None:
    """Seal the credentials from .env into config/sealed/<cluster>/ as SealedSecrets to commit."""
    chosen = sealing.check_scope(scope) if scope is not None else None
    settings = settings_for(c, "seal")
    certificate = sealing.read_certificate(Path(cert)) if cert else sealing.fetch_certificate(settings)
    console.info(
        f"certificate {certificate.source}: SHA-256 {certificate.fingerprint} "
        f"(valid until {certificate.not_after:%Y-%m-%d})"
    )
    report = sealing.seal_all(settings, certificate, reencrypt=reencrypt, scope=chosen, dry_run=dry_run)
    verb = "would seal" if dry_run else "sealed"
    rows = [(name, verb, ", ".join(report.resealed_keys.get(name, [])) or "-") for name in report.sealed]
    rows += [(name, "unchanged", "-") for name in report.unchanged]
    console.table(f"SealedSecrets in {report.directory}", ["secret", "state", "keys encrypted"], rows)
    if dry_run:
        console.info("dry run: nothing written")
    elif report.changed:
        console.ok(f"{len(report.sealed)} sealed, {len(report.unchanged)} unchanged")
        console.info(f"next: commit {report.directory} and run `invoke deploy`")
    else:
        console.ok(f"unchanged: all {len(report.unchanged)} SealedSecrets are up to date")


@platform_task(help={"out": "file to write the keys to, mode 0600; never overwritten (required, no default)"})
def backup_key(c: Context, out: str | None = None) -> None:
    """Export the Sealed Secrets controller's private sealing keys to a file for disaster recovery."""
    if not out:
        raise PlatformError("--out PATH is required: where to write the key backup (a new file)")
    settings = settings_for(c)
    target = Path(out)
    check_new_output(target, "a key backup")
    keys = sealing.fetch_sealing_keys(settings)
    sealing.write_key_backup(keys, target)
    console.ok(f"{len(keys)} sealing key(s) written to {target} (mode 0600)")
    console.warn(
        f"{target} holds the PRIVATE keys that decrypt every SealedSecret of this cluster. Keep it offline and "
        "encrypted (a password manager or an encrypted disk), never in git, and delete this copy once stored. "
        "Restore: kubectl apply -f it, then restart the controller."
    )
