"""Nox sessions for every test tier; dependencies come from the pyproject.toml dependency groups."""

from __future__ import annotations

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# `nox` alone runs what CI runs; `bench` is opt-in.
nox.options.sessions = ["lint", "typecheck", "cluster", "unit", "integration"]


def _install(session: nox.Session, *groups: str) -> None:
    session.install("--upgrade", "pip")
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("-e", ".", *deps)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting checks."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy in strict mode over the package, tests, tasks.py and noxfile.py."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """Unit tests: need nothing but Python; spread over every core."""
    _install(session, "test")
    session.run("pytest", "tests/unit", "-n", "auto", *session.posargs)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Integration tests: real images and containers on a Docker engine (scripts/ensure-docker.sh)."""
    _install(session, "test")
    session.run("pytest", "tests/integration", *session.posargs)


@nox.session(python=PYTHON)
def cluster(session: nox.Session) -> None:
    """Cluster tests against whatever KUBECONFIG reaches; skipped, with the reason, when nothing does."""
    _install(session, "test")
    session.run("pytest", "tests/cluster", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (opt-in): image size, throughput, `invoke up` time, backup/restore MB/s; writes bench-results/."""
    _install(session, "test")
    session.run("python", "-m", "mlopskit.bench", *session.posargs)


@nox.session(python=PYTHON, name="bench-apply", default=False)
def bench_apply(session: nox.Session) -> None:
    """Apply benchmark (opt-in): no-op re-deploy vs `kubectl apply --server-side`; no numbers without a cluster."""
    _install(session, "test")
    session.run("python", "-m", "mlopskit.kube.bench_apply", *session.posargs)
