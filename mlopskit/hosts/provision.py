"""Provisioning runs: the plan (which steps on which host, in what order), the run, upgrade and reset."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.hosts import k3s as k3s_steps
from mlopskit.hosts.kubeconfig import check_merge_target, fetch_kubeconfig, merge_target
from mlopskit.hosts.nfs import nfs_server
from mlopskit.hosts.outcome import Outcome, Status
from mlopskit.hosts.prerequisites import prerequisites
from mlopskit.hosts.remote import HostError, Remote, access_for, check_key, connect
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


@dataclass(frozen=True)
class StepContext:
    """What the steps of one run share."""

    settings: Settings
    runner: Runner
    first: Host
    token: JoinToken
    merge_into: Path | None = None
    version: str | None = None
    ready_timeout: float = 300


def _k3s(ctx: StepContext, remote: Remote) -> Outcome:
    return k3s_steps.k3s(remote, ctx.settings, ctx.token.for_host(remote.host, ctx.first))


def _upgrade(ctx: StepContext, remote: Remote) -> Outcome:
    assert ctx.version is not None  # upgrade() always sets it
    outcome = k3s_steps.k3s(remote, ctx.settings, ctx.token.for_host(remote.host, ctx.first), ctx.version)
    if outcome.changes:
        k3s_steps.wait_ready(ctx.runner.remote(ctx.first), remote.host.name, ctx.version, timeout=ctx.ready_timeout)
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
    "k3s-server": Step("K3s server: config.yaml, install or join", _k3s),
    "k3s-agent": Step("K3s agent: config.yaml, join with the first server's token", _k3s),
    "kubeconfig": Step(
        "fetch, rewrite and save the kubeconfig",
        lambda ctx, remote: fetch_kubeconfig(remote, ctx.settings, ctx.merge_into),
    ),
    "upgrade": Step("install the new K3s version, wait until the node is Ready", _upgrade),
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
    return [[(host, "upgrade")] for host in [*cluster.servers, *cluster.agents]]


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


def validate(settings: Settings) -> None:
    """Everything checkable locally, before any host is touched: hosts, key files, air-gap files."""
    if not settings.cluster.hosts:
        raise PlatformError("cluster.hosts: no hosts; copy config/inventory.example.yaml to config/inventory.yaml")
    for host in settings.cluster.hosts:
        check_key(settings, host, access_for(settings, host))
    if settings.cluster.airgap.enabled:
        k3s_steps.check_airgap_files(settings)
    check_merge_target(merge_target(settings))


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

    def remote(self, host: Host) -> Remote:
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
) -> RunReport:
    validate(settings)
    runner = Runner(settings, connector)
    if target is not None:
        runner.probe_versions(target)
    first = k3s_steps.first_server(settings)
    token = JoinToken(settings, lambda: runner.remote(first))
    ctx = StepContext(settings, runner, first, token, merge_into, version, ready_timeout)

    def before_phase(phase: Phase) -> None:
        # Agents join in parallel: read the token once, before their phase, not from every thread.
        host, step = phase[0]
        if step in ("k3s-agent", "upgrade"):
            token.for_host(host, first)

    return runner.run(phases, lambda remote, step: STEPS[step].act(ctx, remote), before_phase)


def provision(settings: Settings, *, connector: Connector = connect, merge_into: Path | None = None) -> RunReport:
    """Run every provisioning step; raises RunFailed (with the report so far) at the first failing phase."""
    phases = provision_phases(settings)
    return _run(settings, phases, connector, target=settings.cluster.k3s_version, merge_into=merge_into)


def upgrade(
    settings: Settings, version: str, *, connector: Connector = connect, ready_timeout: float = 300
) -> RunReport:
    """Roll `version` through the servers one at a time, then the agents, each back to Ready before the next."""
    phases = upgrade_phases(settings)
    return _run(settings, phases, connector, target=version, version=version, ready_timeout=ready_timeout)


def reset(settings: Settings, *, connector: Connector = connect) -> RunReport:
    """Uninstall K3s from every host: agents first, then the servers."""
    return _run(settings, reset_phases(settings), connector, target=None)
