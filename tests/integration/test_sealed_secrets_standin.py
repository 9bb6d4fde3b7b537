"""The stand-in Sealed Secrets controller image: it builds offline, its module imports, and it serves HTTP.

No API server runs here, so the container gets its key from a directory (SEALED_SECRETS_KEY_DIR, the layout of a
mounted kubernetes.io/tls Secret) and only serves /healthz, /v1/cert.pem and /v1/verify. It runs the way the
Deployment runs it: uid 1001, read-only root filesystem, a writable /tmp only, every capability dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import sealed_secrets_standin as standin
from testcontainers.core.container import DockerContainer

import docker
from mlopskit import images
from mlopskit.credentials import CredentialSecret
from mlopskit.image_names import OFFLINE_SEALED_SECRETS
from mlopskit.kube import sealing
from mlopskit.settings import load_settings
from tests.integration.conftest import LOOPBACK, ServiceReady, free_loopback_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY_MOUNT = "/keys"


@pytest.fixture(scope="module")
def controller_image() -> str:
    """The stand-in, built the way `invoke build-images` builds it with IMAGE_SOURCE=offline."""
    settings = load_settings(REPO, environ={"IMAGE_SOURCE": "offline"})
    builder = images.ImageBuilder(settings, images.docker_client())
    image = builder.sealed_secrets_controller()
    assert image == OFFLINE_SEALED_SECRETS
    return image


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tls.key and tls.crt as a mounted key Secret holds them, readable by the container's uid 1001."""
    directory = tmp_path_factory.mktemp("sealing-key")
    key_pem, cert_pem = standin.generate_key(datetime.now(UTC), bits=2048)
    (directory / "tls.key").write_bytes(key_pem)
    (directory / "tls.crt").write_bytes(cert_pem)
    for path in (directory / "tls.key", directory / "tls.crt"):
        path.chmod(0o644)  # a throwaway test key
    directory.chmod(0o755)
    return directory


class SealedSecretsControllerContainer(DockerContainer):
    """The controller image in key-directory mode, hardened as the Deployment runs it, on 127.0.0.1 only."""

    def __init__(self, image: str, key_dir: Path) -> None:
        super().__init__(image)
        self.host_port = free_loopback_port()
        self.with_volume_mapping(str(key_dir), KEY_MOUNT, mode="ro")
        self.with_env("SEALED_SECRETS_KEY_DIR", KEY_MOUNT)
        self.with_tmpfs_mount("/tmp")
        self.with_kwargs(read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"])
        self.ports["8080/tcp"] = (LOOPBACK, self.host_port)  # type: ignore[assignment]
        self.waiting_for(ServiceReady(self._healthz))

    def _healthz(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.host_port}"


@pytest.fixture(scope="module")
def controller(controller_image: str, key_dir: Path) -> Iterator[SealedSecretsControllerContainer]:
    with SealedSecretsControllerContainer(controller_image, key_dir) as container:
        yield container


def run_python(image: str, code: str) -> str:
    client = docker.from_env()
    try:
        output: bytes = client.containers.run(
            image, entrypoint=["/opt/venv/bin/python", "-c", code], remove=True, read_only=True, network_mode="none"
        )
    finally:
        client.close()
    return output.decode()


def test_the_image_runs_as_uid_1001_with_the_controller_command(controller_image: str) -> None:
    config = docker.from_env().images.get(controller_image).attrs["Config"]
    assert config["User"] == "1001:1001"
    assert config["Entrypoint"] == ["controller"]


def test_the_controller_module_and_its_libraries_import_in_the_image(controller_image: str) -> None:
    code = "import os, kubernetes, cryptography, sealed_secrets_standin as m; print(os.getuid(), m.KEY_BITS)"
    assert run_python(controller_image, code).split() == ["1001", "4096"]


def test_healthz_answers_200_on_a_read_only_root(controller: SealedSecretsControllerContainer) -> None:
    assert requests.get(f"{controller.url}/healthz", timeout=5).status_code == 200


def test_cert_pem_serves_the_mounted_certificate(controller: SealedSecretsControllerContainer, key_dir: Path) -> None:
    response = requests.get(f"{controller.url}/v1/cert.pem", timeout=5)
    assert response.status_code == 200
    assert response.content == (key_dir / "tls.crt").read_bytes()


def test_verify_accepts_a_secret_sealed_by_mlopskit_for_that_certificate(
    controller: SealedSecretsControllerContainer,
) -> None:
    pem = requests.get(f"{controller.url}/v1/cert.pem", timeout=5).content
    certificate = sealing.load_certificate(pem, "the container's /v1/cert.pem")
    secret = CredentialSecret("db", {"PASSWORD": "s3cr3t"}, "test")
    encrypted = {"PASSWORD": sealing.encrypt_value(certificate.public_key, "s3cr3t", "mlops", "db", "strict")}
    sealed = sealing.build_sealed_secret(secret, "mlops", {}, encrypted, "strict")
    assert requests.post(f"{controller.url}/v1/verify", data=json.dumps(sealed), timeout=10).status_code == 200
    sealed["metadata"]["name"] = "renamed"
    assert requests.post(f"{controller.url}/v1/verify", data=json.dumps(sealed), timeout=10).status_code == 409
