"""Fixtures for unit tests: a throwaway project directory with its own tasks.py, config and .env."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

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
        """Run the real invoke CLI in the project, as a user would; never raises on failure."""
        invoke = Path(sys.executable).with_name("invoke")
        return subprocess.run(
            [str(invoke), *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,  # no terminal, as in CI: a task that asks must refuse, not crash
            capture_output=True,
            text=True,
            timeout=120,
            env=_clean_env(),
            check=False,
        )


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
