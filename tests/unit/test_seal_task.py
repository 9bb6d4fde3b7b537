"""`invoke seal` as a user runs it: the real CLI in a temp project with a sample .env and a generated certificate."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from mlopskit.credentials import credential_secrets
from mlopskit.kube import sealing
from mlopskit.kube.render import postgres_host, render_manifests
from mlopskit.settings import load_settings
from tests.unit.conftest import REPO, Project
from tests.unit.test_sealing import make_certificate, unseal

SCOPES = ["strict", "namespace-wide", "cluster-wide"]


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_file(private_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cert") / "cert.pem"
    path.write_bytes(make_certificate(private_key))
    return path


@pytest.fixture
def env_project(project: Project, sample_env: dict[str, str]) -> Project:
    project.write_env(sample_env)
    shutil.copy(REPO / ".gitignore", project.root / ".gitignore")
    return project


def git(project: Project, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def seal(project: Project, cert_file: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    result = project.invoke("seal", "--cert", str(cert_file), *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def sealed_dir(project: Project) -> Path:
    return project.root / "config" / "sealed" / "mlops"


def sealed_files(project: Project) -> dict[str, dict[str, Any]]:
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(sealed_dir(project).glob("*.yaml"))}


def expected_secrets(project: Project) -> dict[str, dict[str, str]]:
    settings = load_settings(project.root, {})
    return {secret.name: secret.data for secret in credential_secrets(settings, postgres_host(settings))}


@pytest.mark.parametrize("scope", SCOPES)
def test_seal_writes_sealed_secrets_that_decrypt_to_the_env_values(
    scope: str, env_project: Project, cert_file: Path, private_key: rsa.RSAPrivateKey
) -> None:
    seal(env_project, cert_file, "--scope", scope)
    files = sealed_files(env_project)
    assert {name: unseal(private_key, obj) for name, obj in files.items()} == expected_secrets(env_project)
    assert {sealing.scope_of(obj) for obj in files.values()} == {scope}


def test_seal_prints_the_certificate_fingerprint(env_project: Project, cert_file: Path) -> None:
    fingerprint = sealing.read_certificate(cert_file).fingerprint
    assert fingerprint in seal(env_project, cert_file).stdout


def test_second_seal_leaves_git_clean(env_project: Project, cert_file: Path) -> None:
    git(env_project, "init", "-q")
    seal(env_project, cert_file)
    git(env_project, "add", "-A")
    git(env_project, "commit", "-q", "-m", "sealed")
    second = seal(env_project, cert_file)
    assert git(env_project, "status", "--porcelain") == ""
    assert "unchanged" in second.stdout


def test_state_file_is_ignored_by_git(env_project: Project, cert_file: Path) -> None:
    git(env_project, "init", "-q")
    seal(env_project, cert_file)
    tracked = git(env_project, "status", "--porcelain", "--untracked-files=all")
    assert ".state/" not in tracked
    assert "config/sealed/mlops/" in tracked


def test_changed_value_reseals_only_that_key(
    env_project: Project, sample_env: dict[str, str], cert_file: Path, private_key: rsa.RSAPrivateKey
) -> None:
    seal(env_project, cert_file)
    before = {path.name: path.read_text() for path in sealed_dir(env_project).glob("*.yaml")}
    old = sealed_files(env_project)["s3-credentials"]
    env_project.write_env(sample_env | {"S3_SECRET_KEY": "rotated-secret-key-77aa"})
    seal(env_project, cert_file)
    after = {path.name: path.read_text() for path in sealed_dir(env_project).glob("*.yaml")}
    new = sealed_files(env_project)["s3-credentials"]
    assert {name for name in before if before[name] != after[name]} == {"s3-credentials.yaml"}
    old_data, new_data = old["spec"]["encryptedData"], new["spec"]["encryptedData"]
    assert new_data["AWS_ACCESS_KEY_ID"] == old_data["AWS_ACCESS_KEY_ID"]
    assert new_data["AWS_SECRET_ACCESS_KEY"] != old_data["AWS_SECRET_ACCESS_KEY"]
    assert unseal(private_key, new)["AWS_SECRET_ACCESS_KEY"] == "rotated-secret-key-77aa"


def _without_ciphertexts(obj: dict[str, Any]) -> dict[str, Any]:
    spec = dict(obj["spec"])
    spec["encryptedData"] = sorted(spec["encryptedData"])
    return obj | {"spec": spec}


def test_reencrypt_changes_every_ciphertext_and_nothing_else(
    env_project: Project, cert_file: Path, private_key: rsa.RSAPrivateKey
) -> None:
    seal(env_project, cert_file, "--scope", "namespace-wide")
    before = sealed_files(env_project)
    seal(env_project, cert_file, "--reencrypt")
    after = sealed_files(env_project)
    assert {name: _without_ciphertexts(obj) for name, obj in after.items()} == {
        name: _without_ciphertexts(obj) for name, obj in before.items()
    }
    for name, obj in after.items():
        old = before[name]["spec"]["encryptedData"]
        assert all(value != old[key] for key, value in obj["spec"]["encryptedData"].items()), name
    assert {name: unseal(private_key, obj) for name, obj in after.items()} == expected_secrets(env_project)


def test_dry_run_writes_nothing(env_project: Project, cert_file: Path) -> None:
    result = seal(env_project, cert_file, "--dry-run")
    assert "would seal" in result.stdout
    assert not (env_project.root / "config" / "sealed").exists()
    assert not (env_project.root / ".state").exists()


def test_state_file_is_readable_only_by_its_owner(env_project: Project, cert_file: Path) -> None:
    seal(env_project, cert_file)
    state = env_project.root / ".state" / "sealed-mlops.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_no_env_value_appears_in_any_file_the_project_writes(
    env_project: Project, sample_env: dict[str, str], cert_file: Path
) -> None:
    seal(env_project, cert_file)
    written = [*sealed_dir(env_project).glob("*.yaml"), env_project.root / ".state" / "sealed-mlops.json"]
    settings = load_settings(env_project.root, {})
    texts = {str(path): path.read_text() for path in written}
    texts["rendered manifests"] = yaml.safe_dump_all(render_manifests(settings, "mlopskit/mlflow:test"))
    leaks = [(where, key) for where, text in texts.items() for key, value in sample_env.items() if value in text]
    assert leaks == []


def test_load_sealed_returns_what_seal_wrote(env_project: Project, cert_file: Path) -> None:
    seal(env_project, cert_file)
    loaded = sealing.load_sealed(load_settings(env_project.root, {}))
    assert [obj["metadata"]["name"] for obj in loaded] == sorted(expected_secrets(env_project))
    assert all(obj["kind"] == "SealedSecret" for obj in loaded)


def test_unreadable_certificate_fails_with_the_path_and_no_traceback(env_project: Project, tmp_path: Path) -> None:
    result = env_project.invoke("seal", "--cert", str(tmp_path / "nope.pem"))
    assert result.returncode == 1
    assert "nope.pem: cannot read it" in result.stderr
    assert "Traceback" not in result.stderr


def test_sealed_files_are_plain_yaml_without_anchors(env_project: Project, cert_file: Path) -> None:
    seal(env_project, cert_file)
    texts = [path.read_text() for path in sealed_dir(env_project).glob("*.yaml")]
    assert texts
    assert not [text for text in texts if "&id" in text or "*id" in text]


def test_backup_key_refuses_to_overwrite_an_existing_file(env_project: Project) -> None:
    existing = env_project.write("keys.yaml", "precious")
    result = env_project.invoke("secrets.backup-key", "--out", str(existing))
    assert result.returncode == 1
    assert "exists" in result.stderr and "Traceback" not in result.stderr
    assert existing.read_text() == "precious"


def test_backup_key_without_out_says_it_is_required(env_project: Project) -> None:
    result = env_project.invoke("secrets.backup-key")
    assert result.returncode == 1
    assert "--out PATH is required" in result.stderr


def test_changing_the_scope_reseals_every_value_for_the_new_scope(
    env_project: Project, cert_file: Path, private_key: rsa.RSAPrivateKey
) -> None:
    seal(env_project, cert_file)
    seal(env_project, cert_file, "--scope", "cluster-wide")
    files = sealed_files(env_project)
    assert {sealing.scope_of(obj) for obj in files.values()} == {"cluster-wide"}
    assert {name: unseal(private_key, obj) for name, obj in files.items()} == expected_secrets(env_project)


def test_seal_covers_the_passwords_of_the_users_in_access_yaml(
    env_project: Project, cert_file: Path, private_key: rsa.RSAPrivateKey
) -> None:
    env_project.write("config/access.yaml", "users:\n  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}\n")
    with (env_project.root / ".env").open("a") as env:
        env.write("ALICE_MLFLOW_PASSWORD=alice-sample-password-1\n")
    seal(env_project, cert_file)
    sealed = sealed_files(env_project)["mlflow-user-passwords"]
    assert unseal(private_key, sealed) == {"ALICE_MLFLOW_PASSWORD": "alice-sample-password-1"}


def test_seal_refuses_a_user_without_a_password_before_sealing(env_project: Project, cert_file: Path) -> None:
    env_project.write("config/access.yaml", "users:\n  - {name: alice, password_env: ALICE_MLFLOW_PASSWORD}\n")
    result = env_project.invoke("seal", "--cert", str(cert_file))
    assert result.returncode == 1
    assert "access.users[alice].password_env [from config/access.yaml:2]: ALICE_MLFLOW_PASSWORD is not set" in (
        result.stderr
    )
    assert not sealed_dir(env_project).exists()
