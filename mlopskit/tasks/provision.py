"""`invoke provision`, `invoke upgrade`, `invoke reset`: K3s and NFS on the inventory's hosts, over SSH."""

from __future__ import annotations

from collections.abc import Callable

from invoke.context import Context

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.k3s import endpoint_warning, join_address
from mlopskit.hosts.kubeconfig import merge_target
from mlopskit.settings import Settings, check_flag, check_k3s_version, check_seconds
from mlopskit.tasks.common import confirm, platform_task, settings_for


def _show_plan(settings: Settings, phases: list[runs.Phase], title: str) -> None:
    console.table(title, ["order", "host", "step", "what it does"], runs.plan_rows(phases))


def _finish(report: runs.RunReport, settings: Settings, title: str) -> None:
    report.show(title, [host.name for host in settings.cluster.hosts])
    for (host, step), outcome in report.details.items():
        for note in outcome.notes:
            console.warn(f"{host} {step}: {note}")


def _run(settings: Settings, title: str, action: Callable[[], runs.RunReport]) -> runs.RunReport:
    try:
        report = action()
    except runs.RunFailed as failed:
        _finish(failed.report, settings, f"{title} (stopped)")
        raise PlatformError(
            f"{failed}\nSteps marked changed/unchanged above completed; fix the cause and rerun."
        ) from None
    _finish(report, settings, title)
    return report


@platform_task(help={"dry_run": "print the plan per host (steps, order) and touch nothing (default: off)"})
def provision(c: Context, dry_run: bool = False) -> None:
    """Turn the inventory's hosts into a K3s cluster with NFS storage; a rerun changes nothing."""
    settings = settings_for(c, "provision")
    runs.validate(settings, installs=True)
    warning = endpoint_warning(settings)
    if warning:
        console.warn(warning)
    phases = runs.provision_phases(settings)
    _show_plan(settings, phases, "provision plan")
    console.info(f"nodes join and the kubeconfig reaches the API at {join_address(settings)}")
    if dry_run:
        console.info("dry run: no host was touched")
        return
    merge_into = merge_target(settings)
    report = _run(settings, "provision", lambda: runs.provision(settings, merge_into=merge_into))
    path = settings.cluster.kubeconfig_path
    console.ok("cluster " + ("provisioned" if report.changed else "unchanged: every step was already done"))
    console.info(f"next: export KUBECONFIG={path} && kubectl get nodes; then `invoke deploy`")


@platform_task(
    help={
        "version": "K3s release to roll out, e.g. v1.34.2+k3s1 (default: cluster.k3s_version from the settings)",
        "dry_run": "print the order of the rollout and touch nothing (default: off)",
        "no_drain": "do not cordon and drain each node before replacing its K3s; for single-node clusters "
        "(default: drain)",
        "drain_timeout": "seconds `kubectl drain` may take per node before the upgrade stops (default: 300)",
    }
)
def upgrade(
    c: Context, version: str | None = None, dry_run: bool = False, no_drain: bool = False, drain_timeout: str = "300"
) -> None:
    """Roll a K3s version through the cluster: etcd snapshot, then node by node drain, upgrade, Ready, uncordon."""
    if version is not None:
        check_flag("--version", version, check_k3s_version, "K3S_VERSION")
    timeout = check_flag("--drain-timeout", drain_timeout, check_seconds)
    settings = settings_for(c, "upgrade")
    target = version or settings.cluster.k3s_version
    runs.validate(settings, installs=True)
    runs.check_drain(settings, not no_drain)
    _show_plan(settings, runs.upgrade_phases(settings), f"upgrade to {target}")
    if dry_run:
        console.info("dry run: no host was touched")
        return
    report = _run(
        settings,
        f"upgrade to {target}",
        lambda: runs.upgrade(settings, target, drain=not no_drain, drain_timeout=timeout),
    )
    for (_, step), outcome in report.details.items():
        if step == "pre-upgrade":
            for change in outcome.changes:
                console.info(f"{change}; restore with `k3s server --cluster-reset --cluster-reset-restore-path=...`")
    console.ok(f"K3s {target} " + ("rolled out" if report.changed else "already running everywhere"))
    if version and version != settings.cluster.k3s_version:
        console.warn(f"set K3S_VERSION={version} in .env so `invoke provision` keeps this version")


@platform_task(
    help={
        "yes": "do not ask for confirmation (default: ask)",
        "dry_run": "print what would be uninstalled and touch nothing (default: off)",
    }
)
def reset(c: Context, yes: bool = False, dry_run: bool = False) -> None:
    """Uninstall K3s from every host (agents first); data on the nodes is lost."""
    settings = settings_for(c, "reset")
    runs.validate(settings)
    _show_plan(settings, runs.reset_phases(settings), "reset plan")
    if dry_run:
        console.info("dry run: no host was touched")
        return
    if not yes:
        names = ", ".join(host.name for host in settings.cluster.hosts)
        question = f"Uninstall K3s from {names}? Workloads and their local data are deleted. [y/N] "
        if not confirm(question, {"y", "Y", "yes", "YES", "Yes"}, f"refusing to uninstall K3s from {names}"):
            raise PlatformError("reset cancelled; nothing was changed")
    report = _run(settings, "reset", lambda: runs.reset(settings))
    console.ok("K3s uninstalled" if report.changed else "unchanged: K3s was not installed on any host")
