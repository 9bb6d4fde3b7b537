"""Test hosts for provisioning: sshd containers on a Docker network of their own, reached over real SSH.

The containers cannot run a kernel NFS server, K3s or systemd; the image (sshd/Dockerfile) provides
stand-ins for exportfs, systemctl, the K3s install script and the k3s binary that record their arguments.
Everything before those calls (SSH, sudo, apt, files, tokens, kubeconfig) is real.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from docker.errors import DockerException
from docker.models.containers import Container
from docker.models.networks import Network

import docker
from mlopskit.image_names import DEBIAN_BASE
from mlopskit.images import ensure_debian_base
from mlopskit.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
IMAGE = "mlopskit/test-sshd:dev"
BASE_IMAGE = DEBIAN_BASE
SUDO_PASSWORD = "sudo-pass-4711"
STANDIN_INSTALL_URL = "file:///opt/standin/install.sh"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        pytest.skip(f"no Docker engine reachable ({exc}); start one with scripts/ensure-docker.sh")
    return client


@pytest.fixture(scope="session")
def sshd_image(docker_client: docker.DockerClient) -> str:
    """The test-host image, built from the offline Debian base (built first when missing)."""
    ensure_debian_base(docker_client, REPO)
    # Always built: layers are cached, and a changed stand-in script must reach the image.
    docker_client.images.build(path=str(HERE / "sshd"), tag=IMAGE, buildargs={"BASE_IMAGE": BASE_IMAGE}, rm=True)
    return IMAGE


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: str


def _key_pair(directory: Path, name: str) -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = directory / name
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private, public.decode())


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """The key pair of this test session; every test host authorizes its public half."""
    return _key_pair(tmp_path_factory.mktemp("ssh"), "id_ed25519")


@pytest.fixture(scope="session")
def stranger_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key no test host authorizes."""
    return _key_pair(tmp_path_factory.mktemp("ssh-stranger"), "id_ed25519")


@pytest.fixture(scope="session")
def network(docker_client: docker.DockerClient) -> Iterator[Network]:
    net = docker_client.networks.create(f"mlopskit-prov-{uuid.uuid4().hex[:8]}", driver="bridge")
    yield net
    net.remove()


@dataclass
class SshHost:
    container: Container
    address: str

    def sh(self, command: str) -> tuple[int, str]:
        """Run a command as root inside the host, outside SSH: for checking what provisioning did."""
        code, output = self.container.exec_run(["sh", "-c", command])
        assert isinstance(output, bytes) and code is not None
        return code, output.decode()

    def read(self, path: str) -> str:
        code, output = self.sh(f"cat {path}")
        assert code == 0, output
        return output

    def log(self) -> str:
        return self.sh("cat /var/log/standin.log 2>/dev/null")[1]


def _wait_for_sshd(container: Container, address: str, timeout: float = 30) -> None:
    """Ready when sshd sends its banner; fail early when the container exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise RuntimeError(f"test host exited: {container.logs().decode()[-2000:]}")
        try:
            with socket.create_connection((address, 22), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"sshd on {address} not ready after {timeout}s")


@pytest.fixture(scope="session")
def start_host(
    docker_client: docker.DockerClient, sshd_image: str, network: Network, ssh_key: KeyPair
) -> Iterator[Callable[[str], SshHost]]:
    """Start test hosts by name; all are removed at the end of the session."""
    started: list[Container] = []

    def start(name: str) -> SshHost:
        container = docker_client.containers.run(
            sshd_image,
            detach=True,
            name=f"{network.name}-{name}-{uuid.uuid4().hex[:4]}",
            hostname=name,
            network=network.name,
            environment={"AUTHORIZED_KEY": ssh_key.public},
        )
        started.append(container)
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        _wait_for_sshd(container, address)
        return SshHost(container, address)

    yield start
    for container in started:
        container.remove(force=True)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[[str, str], Settings]:
    """Settings loaded the normal way from config/inventory.yaml and config/platform.yaml in a fresh project."""

    def make(inventory: str, platform: str = "") -> Settings:
        root = tmp_path / "project"
        (root / "config").mkdir(parents=True, exist_ok=True)
        (root / "config/inventory.yaml").write_text(inventory)
        (root / "config/platform.yaml").write_text(platform)
        # Never the user's ~/.kube: a provision run writes its kubeconfig inside the test's own directory.
        return load_settings(root, {"KUBECONFIG_PATH": str(root / "kubeconfig.yaml")})

    return make
