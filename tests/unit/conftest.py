"""Fixtures for unit tests: a throwaway project directory with its own tasks.py, config and .env."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mlopskit.errors import SettingsError
from mlopskit.settings import ENV_KEYS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]

# Secret values of the sample .env: tests check that none of them leaks into output or files.
SAMPLE_SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "Adm1n-Sample-Passw0rd-7f3a",
    "MLFLOW_FLASK_SECRET_KEY": "flask-sample-secret-9c1e2b7d44",
    "POSTGRES_PASSWORD": "pg-sample-password-51d0a3",
    "S3_ACCESS_KEY": "sampleaccess8b2f",
    "S3_SECRET_KEY": "s3-sample-secret-key-e4a91c",
    "SSH_SUDO_PASSWORD": "sudo-sample-password-22f1",
    "K3S_TOKEN": "k3s-sample-token-0b7e55aa",
}


@dataclass
class Project:
    """A project checkout in a temp dir: tasks.py copied from the repo, so `invoke` runs against it."""

    root: Path

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_env(self, values: dict[str, str]) -> Path:
        return self.write(".env", "".join(f"{k}={v}\n" for k, v in values.items()))

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real `invoke` program on the project's task collection, as a user would, in this process:
        a clean environment, no terminal and no stdin (a task that asks must refuse, not crash), output
        captured. An exception that escapes the program lands in stderr as the traceback a user would see.
        Never raises on failure. (In-process because a fresh interpreter per call made the unit tier slow.)"""
        from invoke.program import Program

        from mlopskit import console
        from mlopskit.tasks import build_collection

        namespace = build_collection()
        namespace.configure({"mlopskit": {"root": str(self.root)}})
        out, err = io.StringIO(), io.StringIO()
        code = 0
        cwd = Path.cwd()
        widths = (console.console.width, console.err_console.width)
        try:
            os.chdir(self.root)
            console.console.width = console.err_console.width = 250  # wide tables: rows are not folded
            with (
                mock.patch.dict(os.environ, _clean_env(), clear=True),
                mock.patch("sys.stdin", io.StringIO()),
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                try:
                    Program(namespace=namespace, name="invoke", binary="invoke").run(["invoke", *args])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except Exception:
                    traceback.print_exc(file=err)
                    code = 1
        finally:
            os.chdir(cwd)
            console.console.width, console.err_console.width = widths
        return subprocess.CompletedProcess(["invoke", *args], code, out.getvalue(), err.getvalue())


def _clean_env() -> dict[str, str]:
    """The test process environment without any settings variable, so only the project's files count."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["COLUMNS"] = "250"  # wide tables: rows are not folded in captured output
    return env


@pytest.fixture
def project(tmp_path: Path) -> Project:
    shutil.copy(REPO / "tasks.py", tmp_path / "tasks.py")
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    (tmp_path / "config").mkdir()
    return Project(tmp_path)


def private_key_text() -> str:
    """A fresh ed25519 private key in OpenSSH format: what SSH_KEY_PATH must point at."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return pem.decode()


def public_key_text() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + "\n"


@pytest.fixture
def sample_env() -> dict[str, str]:
    return dict(SAMPLE_SECRETS)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Load settings from files written into a fresh directory, with a given environment."""

    def make(
        platform: str | None = None,
        inventory: str | None = None,
        env_file: str | None = None,
        environ: dict[str, str] | None = None,
        *,
        platform_bytes: bytes | None = None,
        inventory_bytes: bytes | None = None,
        env_file_bytes: bytes | None = None,
    ) -> Settings:
        root = tmp_path / "proj"
        (root / "config").mkdir(parents=True, exist_ok=True)
        for rel, text, data in (
            ("config/platform.yaml", platform, platform_bytes),
            ("config/inventory.yaml", inventory, inventory_bytes),
            (".env", env_file, env_file_bytes),
        ):
            if text is not None:
                (root / rel).write_text(text)
            if data is not None:
                (root / rel).write_bytes(data)
        return load_settings(root, environ or {})

    return make


@pytest.fixture(autouse=True)
def _no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own ssh-agent stays out of tests; a test that wants one starts it (tests/ssh_agent.py)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def problems(exc_info: pytest.ExceptionInfo[SettingsError]) -> str:
    """Every problem a SettingsError lists, one per line."""
    return "\n".join(exc_info.value.problems)


def refused(make_settings: Callable[..., Settings], **kwargs: Any) -> str:
    """The problems loading settings from these files (make_settings' arguments) is refused with."""
    with pytest.raises(SettingsError) as exc_info:
        make_settings(**kwargs)
    return problems(exc_info)
