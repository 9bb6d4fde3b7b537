"""Provisioning runs: the plan (which steps on which host, in what order), the run, upgrade and reset."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.hosts import k3s as k3s_steps
from mlopskit.hosts import kube_vip, registries
from mlopskit.hosts.kubeconfig import check_merge_target, fetch_kubeconfig, merge_target
from mlopskit.hosts.nfs import nfs_server
from mlopskit.hosts.outcome import Outcome, Status
from mlopskit.hosts.prerequisites import prerequisites
from mlopskit.hosts.remote import HostError, Remote, access_for, check_key, connect, load_ssh_config
from mlopskit.settings import Host, Settings

Connector = Callable[[Settings, Host], Remote]

Phase = list[tuple[Host, str]]


class JoinToken:
    """The token further servers and agents join with: the configured one, else read once from the first server."""

    def __init__(self, settings: Settings, first: Callable[[], Remote]) -> None:
        self._configured = settings.cluster.token.get_secret_value() if settings.cluster.token else None
        self._first = first
        self._read: str | None = None

    def for_host(self, host: Host, first: Host) -> str | None:
        """None for the first server when no token is configured: it creates the cluster and the token."""
        if self._configured is not None:
            return self._configured
        if host == first:
            return None
        if self._read is None:
            self._read = k3s_steps.read_token(self._first())
        return self._read


class Restarts:
    """K3s restarts during a run, one node at a time (etcd keeps quorum, workloads keep most nodes): each
    restart waits until its node is Ready again, asked on the first server, before the next may begin."""

    def __init__(self, runner: Runner, first: Host, timeout: float) -> None:
        self._runner = runner
        self._first = first
        self._timeout = timeout
        self._lock = threading.Lock()

    def __call__(self, remote: Remote, unit: str, why: str) -> None:
        with self._lock:
            console.step(f"{remote.name}: restarting {unit} because {why} (one node at a time)")
            remote.sudo(f"systemctl restart {unit}")
            version = k3s_steps.installed_version(remote)
            if version is None:
                raise HostError(remote.name, f"after restarting {unit}, k3s --version reports nothing")
            first = self._runner.remote(self._first)
            k3s_steps.wait_ready(first, remote.name, version, timeout=self._timeout)


@dataclass(frozen=True)
class StepContext:
    """What the steps of one run share."""

    settings: Settings
    runner: Runner
    first: Host
    token: JoinToken
    restarts: Restarts
    merge_into: Path | None = None
    version: str | None = None
    ready_timeout: float = 300
    drain: bool = True
    drain_timeout: float = 300


def _k3s(ctx: StepContext, remote: Remote) -> Outcome:
    return k3s_steps.k3s(remote, ctx.settings, ctx.token.for_host(remote.host, ctx.first), restart=ctx.restarts)


def _pre_upgrade(ctx: StepContext, remote: Remote) -> Outcome:
    """On the first server, before any node changes: every node Ready, then an etcd snapshot."""
    assert ctx.version is not None  # upgrade() always sets it
    outcome = Outcome()
    installed = ctx.runner.installed
    if all(installed.get(host.name) == ctx.version for host in ctx.settings.cluster.hosts):
        return outcome  # nothing to upgrade: no snapshot, no drain
    k3s_steps.check_all_ready(remote, ctx.settings)
    current = installed.get(remote.host.name) or "unknown"
    name = k3s_steps.etcd_snapshot(remote, current, ctx.version)
    if name is None:
        outcome.notes.append(
            "no etcd snapshot: a single server keeps its datastore in SQLite, not embedded etcd; "
            "`invoke backup --target cluster` saves it"
        )
    else:
        outcome.changes.append(f"etcd snapshot {name} saved in {k3s_steps.SNAPSHOT_DIR} on {remote.name}")
    return outcome


def _upgrade(ctx: StepContext, remote: Remote) -> Outcome:
    """Cordon and drain the node, replace its K3s, wait until it is Ready on the new version, uncordon it."""
    assert ctx.version is not None  # upgrade() always sets it
    first = ctx.runner.remote(ctx.first)
    node = remote.host.name
    outcome = Outcome()
    drained = ctx.drain and k3s_steps.installed_version(remote) != ctx.version
    if drained:
        k3s_steps.cordon(first, node)
        try:
            k3s_steps.drain(first, node, ctx.drain_timeout)
        except HostError as exc:
            k3s_steps.uncordon(first, node)
            reason = f"{exc.reason}. The node was uncordoned again; its K3s was not replaced"
            raise HostError(node, reason, exc.output) from None
        outcome.changes.append("cordoned and drained")
    try:
        replaced = k3s_steps.k3s(
            remote, ctx.settings, ctx.token.for_host(remote.host, ctx.first), ctx.version, restart=ctx.restarts
        )
        if replaced.changes:
            k3s_steps.wait_ready(first, node, ctx.version, timeout=ctx.ready_timeout)
    except PlatformError as exc:
        if not drained:
            raise
        reason, output = (exc.reason, exc.output) if isinstance(exc, HostError) else (str(exc), "")
        raise HostError(
            node, f"{reason}. The node stays cordoned: fix the cause and rerun `invoke upgrade`", output
        ) from None
    outcome.changes += replaced.changes
    outcome.notes += replaced.notes
    if drained:
        k3s_steps.uncordon(first, node)
        outcome.changes.append("uncordoned")
    return outcome


@dataclass(frozen=True)
class Step:
    description: str
    act: Callable[[StepContext, Remote], Outcome]


# Every step a run can make, what it does, and how. Each phase of a run finishes on every host before the
# next starts; the hosts of one phase run in parallel unless the phase is a single host (servers join
# embedded etcd one at a time).
STEPS: dict[str, Step] = {
    "prerequisites": Step(
        "packages (NFS client, curl), kernel modules and sysctl", lambda ctx, remote: prerequisites(remote)
    ),
    "nfs-server": Step(
        "NFS server package, export directory, /etc/exports", lambda ctx, remote: nfs_server(remote, ctx.settings)
    ),
    "k3s-server": Step(
        "K3s server: registries.yaml, config.yaml, install or join (K3s restarts, one node at a time, when a "
        "file differs); kube-vip manifest when cluster.vip is set",
        _k3s,
    ),
    "k3s-agent": Step(
        "K3s agent: registries.yaml, config.yaml, join with the first server's token (K3s restarts, one node "
        "at a time, when a file differs)",
        _k3s,
    ),
    "kubeconfig": Step(
        "fetch, rewrite and save the kubeconfig",
        lambda ctx, remote: fetch_kubeconfig(remote, ctx.settings, ctx.merge_into),
    ),
    "pre-upgrade": Step(
        "check that every node is Ready, then `k3s etcd-snapshot save` (named after both versions)", _pre_upgrade
    ),
    "upgrade": Step(
        "cordon and drain (unless --no-drain), install the new K3s, wait until Ready on it, uncordon", _upgrade
    ),
    "uninstall": Step("run the K3s uninstall script", lambda ctx, remote: k3s_steps.uninstall(remote)),
}


def provision_phases(settings: Settings) -> list[Phase]:
    cluster = settings.cluster
    first = k3s_steps.first_server(settings)
    phases: list[Phase] = [[(host, "prerequisites") for host in cluster.hosts]]
    if cluster.nfs_host is not None:
        phases.append([(cluster.nfs_host, "nfs-server")])
    phases += [[(server, "k3s-server")] for server in cluster.servers]
    if cluster.agents:
        phases.append([(agent, "k3s-agent") for agent in cluster.agents])
    phases.append([(first, "kubeconfig")])
    return phases


def upgrade_phases(settings: Settings) -> list[Phase]:
    cluster = settings.cluster
    first = k3s_steps.first_server(settings)
    return [[(first, "pre-upgrade")], *([(host, "upgrade")] for host in [*cluster.servers, *cluster.agents])]


def reset_phases(settings: Settings) -> list[Phase]:
    cluster = settings.cluster
    phases: list[Phase] = []
    if cluster.agents:
        phases.append([(agent, "uninstall") for agent in cluster.agents])
    # Servers leave last, the first server very last, so etcd keeps quorum while others leave.
    phases += [[(server, "uninstall")] for server in reversed(cluster.servers)]
    return phases


def plan_rows(phases: list[Phase]) -> list[tuple[str, str, str, str]]:
    """(order, host, step, what it does) for every step of a run."""
    rows = []
    for number, phase in enumerate(phases, start=1):
        mode = "parallel" if len(phase) > 1 else ""
        for host, step in phase:
            rows.append((f"{number}{' ' + mode if mode else ''}", host.name, step, STEPS[step].description))
    return rows


def validate(settings: Settings, *, installs: bool = False, image_present: Callable[[str], bool] | None = None) -> None:
    """Everything checkable locally, before any host is touched: hosts, the SSH config and key files, air-gap
    and registry TLS files; with installs (provision, upgrade), a kube-vip image to deliver must be here."""
    if not settings.cluster.hosts:
        raise PlatformError("cluster.hosts: no hosts; copy config/inventory.example.yaml to config/inventory.yaml")
    ssh_config = load_ssh_config(settings)
    for host in settings.cluster.hosts:
        check_key(settings, host, access_for(settings, host, ssh_config))
    if settings.cluster.airgap.enabled:
        k3s_steps.check_airgap_files(settings)
    registries.tls_files(settings)
    if installs and kube_vip.delivered_over_ssh(settings):
        kube_vip.check_image_here(settings, image_present or _local_image_present)
    check_merge_target(merge_target(settings))


def _local_image_present(image: str) -> bool:
    from mlopskit.images import docker_client, image_present

    return image_present(docker_client(), image)


@dataclass
class RunReport:
    """Host × step → status, in the order steps ran; the failure messages."""

    steps: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, Status]] = field(default_factory=dict)
    details: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def set(self, host: str, step: str, status: Status) -> None:
        if step not in self.steps:
            self.steps.append(step)
        self.cells.setdefault(host, {})[step] = status

    def rows(self, hosts: list[str]) -> list[list[str]]:
        return [[name, *(self.cells.get(name, {}).get(step, "") for step in self.steps)] for name in hosts]

    def show(self, title: str, hosts: list[str]) -> None:
        console.table(title, ["host", *self.steps], self.rows(hosts))

    @property
    def changed(self) -> bool:
        return any(status == "changed" for row in self.cells.values() for status in row.values())


class RunFailed(PlatformError):
    def __init__(self, report: RunReport) -> None:
        self.report = report
        super().__init__("\n".join(report.failures))


class Runner:
    """Runs phases over connections kept open for the whole run, recording each step in a RunReport."""

    def __init__(self, settings: Settings, connector: Connector = connect) -> None:
        self.settings = settings
        self.connector = connector
        self.remotes: dict[str, Remote] = {}
        self.report = RunReport()
        self.installed: dict[str, str | None] = {}  # host name -> K3s version, filled by probe_versions
        self._lock = threading.Lock()

    def remote(self, host: Host) -> Remote:
        with self._lock:  # steps on other hosts ask for the first server's connection from their threads
            if host.name not in self.remotes:
                self.remotes[host.name] = self.connector(self.settings, host)
            return self.remotes[host.name]

    def run(
        self,
        phases: list[Phase],
        act: Callable[[Remote, str], Outcome],
        before_phase: Callable[[Phase], None] | None = None,
    ) -> RunReport:
        total = sum(len(phase) for phase in phases)
        for phase in phases:
            for host, step in phase:
                self.report.set(host.name, step, "skipped")
        try:
            with console.progress() as bar:
                task = bar.add_task("provisioning", total=total)
                for phase in phases:
                    if before_phase is not None:
                        self._guard(phase, before_phase)
                    if self.report.failures:
                        raise RunFailed(self.report)
                    with ThreadPoolExecutor(max_workers=max(1, len(phase))) as pool:
                        futures = [(host, step, pool.submit(self._one, host, step, act)) for host, step in phase]
                        for host, step, future in futures:
                            bar.update(task, advance=1, description=f"{host.name}: {step}")
                            future.result()
                    if self.report.failures:
                        raise RunFailed(self.report)
        finally:
            for remote in self.remotes.values():
                remote.close()
        return self.report

    def probe_versions(self, target: str) -> None:
        """Before any step: refuse a K3s downgrade on any host, warn when a minor version is skipped."""
        hosts = self.settings.cluster.hosts

        def probe(host: Host) -> str | None:
            try:
                return k3s_steps.installed_version(self.remote(host))
            except HostError:
                return None  # unreachable or refused: the run reports it in its table, with the step

        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            installed = list(pool.map(probe, hosts))
        self.installed = {host.name: version for host, version in zip(hosts, installed, strict=True)}
        refusals = []
        for host, current in zip(hosts, installed, strict=True):
            try:
                warning = k3s_steps.check_upgrade(host.name, current, target)
            except HostError as exc:
                refusals.append(str(exc))
                continue
            if warning:
                console.warn(f"{host.name}: {warning}")
        if refusals:
            for remote in self.remotes.values():
                remote.close()
            raise PlatformError("\n".join(refusals) + "\nNo host was changed.")

    def _guard(self, phase: Phase, before_phase: Callable[[Phase], None]) -> None:
        host, step = phase[0]
        try:
            before_phase(phase)
        except PlatformError as exc:
            self.report.set(host.name, step, "failed")
            self.report.failures.append(f"step {step} (before it ran): {exc}")

    def _one(self, host: Host, step: str, act: Callable[[Remote, str], Outcome]) -> None:
        try:
            outcome = act(self.remote(host), step)
        except PlatformError as exc:
            self.report.set(host.name, step, "failed")
            reason = str(exc) if isinstance(exc, HostError) else f"{host.name}: {exc}"
            self.report.failures.append(f"step {step} on {reason}")
            return
        self.report.set(host.name, step, outcome.status)
        self.report.details[(host.name, step)] = outcome


def _run(
    settings: Settings,
    phases: list[Phase],
    connector: Connector,
    *,
    target: str | None,
    merge_into: Path | None = None,
    version: str | None = None,
    ready_timeout: float = 300,
    drain: bool = True,
    drain_timeout: float = 300,
    image_present: Callable[[str], bool] | None = None,
) -> RunReport:
    validate(settings, installs=target is not None, image_present=image_present)
    runner = Runner(settings, connector)
    if target is not None:
        runner.probe_versions(target)
    first = k3s_steps.first_server(settings)
    token = JoinToken(settings, lambda: runner.remote(first))
    restarts = Restarts(runner, first, ready_timeout)
    ctx = StepContext(
        settings, runner, first, token, restarts, merge_into, version, ready_timeout, drain, drain_timeout
    )
    endpoint_answered: list[bool] = []

    def before_phase(phase: Phase) -> None:
        host, step = phase[0]
        # The first node to join through the fixed endpoint waits until it answers (kube-vip has the VIP).
        joins = step in ("k3s-server", "k3s-agent") and host != first
        if joins and settings.cluster.endpoint is not None and not endpoint_answered:
            k3s_steps.wait_endpoint(runner.remote(first), settings, timeout=ready_timeout)
            endpoint_answered.append(True)
        # Agents join in parallel: read the token once, before their phase, not from every thread.
        if step in ("k3s-agent", "upgrade"):
            token.for_host(host, first)

    return runner.run(phases, lambda remote, step: STEPS[step].act(ctx, remote), before_phase)


def provision(
    settings: Settings,
    *,
    connector: Connector = connect,
    merge_into: Path | None = None,
    ready_timeout: float = 300,
    image_present: Callable[[str], bool] | None = None,
) -> RunReport:
    """Run every provisioning step; raises RunFailed (with the report so far) at the first failing phase.

    ready_timeout (seconds) bounds each wait: for the fixed endpoint to answer, for a restarted node to be
    Ready. image_present(image) says whether the local Docker engine has an image (default: asks it).
    """
    phases = provision_phases(settings)
    return _run(
        settings,
        phases,
        connector,
        target=settings.cluster.k3s_version,
        merge_into=merge_into,
        ready_timeout=ready_timeout,
        image_present=image_present,
    )


def check_drain(settings: Settings, drain: bool) -> None:
    """A single-node cluster cannot be drained (its pods have nowhere to go): refused unless drain is off."""
    if drain and len(settings.cluster.hosts) == 1:
        raise PlatformError(
            f"{settings.cluster.hosts[0].name} is the only node: draining it would evict every pod with nowhere to "
            "go, so the drain could never finish. Rerun with --no-drain: the pods restart with K3s instead"
        )


def upgrade(
    settings: Settings,
    version: str,
    *,
    connector: Connector = connect,
    ready_timeout: float = 300,
    drain: bool = True,
    drain_timeout: float = 300,
    image_present: Callable[[str], bool] | None = None,
) -> RunReport:
    """Roll `version` through the servers one at a time, then the agents, each back to Ready before the next.

    First every node must be Ready and an etcd snapshot is saved on the first server; each node is cordoned
    and drained (kubectl drain --timeout=drain_timeout seconds) before its K3s is replaced and uncordoned once
    Ready on `version` (within ready_timeout seconds). drain=False skips cordon, drain and uncordon.
    Raises PlatformError before any host changes for a single node with drain on, RunFailed on a failed step.
    """
    check_drain(settings, drain)
    phases = upgrade_phases(settings)
    return _run(
        settings,
        phases,
        connector,
        target=version,
        version=version,
        ready_timeout=ready_timeout,
        drain=drain,
        drain_timeout=drain_timeout,
        image_present=image_present,
    )


def reset(settings: Settings, *, connector: Connector = connect) -> RunReport:
    """Uninstall K3s from every host: agents first, then the servers."""
    return _run(settings, reset_phases(settings), connector, target=None)
