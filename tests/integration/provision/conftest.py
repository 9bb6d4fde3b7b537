"""Test hosts for provisioning: sshd containers on a Docker network of their own, reached over real SSH.

The containers cannot run a kernel NFS server, K3s or systemd; the image (sshd/Dockerfile) provides
stand-ins for exportfs, systemctl, the K3s install script and the k3s binary (with its kubectl, ctr and
etcd-snapshot) that record their arguments, with timestamps in a timeline. Everything before those calls
(SSH, ProxyJump, sudo, apt, files, tokens, kubeconfig, image streams) is real.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _content_tag() -> str:
    """The test-host image's tag: a hash of sshd/, so checkouts with other stand-ins never share an image."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "sshd").iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"mlopskit/test-sshd:{digest.hexdigest()[:12]}"


IMAGE = _content_tag()
# A stand-in for the kube-vip image (ghcr.io cannot be reached here): a tiny local image to deliver over SSH.
KUBE_VIP_STANDIN = "mlopskit/test-kube-vip:standin"
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
    name: str = ""
    networks: dict[str, str] = field(default_factory=dict)  # network name -> this host's address there

    def sh(self, command: str) -> tuple[int, str]:
        """Run a command as root inside the host, outside SSH: for checking what provisioning did."""
        code, output = self.container.exec_run(["sh", "-c", command])
        assert isinstance(output, bytes) and code is not None
        return code, output.decode()

    def read(self, path: str) -> str:
        code, output = self.sh(f"cat {path}")
        assert code == 0, output
        return output

    def write(self, path: str, text: str) -> None:
        """Put a file into the host, outside SSH: for steering a stand-in."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(Path(path).name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
        self.sh(f"mkdir -p {Path(path).parent}")
        assert self.container.put_archive(str(Path(path).parent), archive.getvalue())

    def log(self) -> str:
        return self.sh("cat /var/log/standin.log 2>/dev/null")[1]

    def timeline(self) -> list[tuple[float, str, str]]:
        """(time, host, event) of every stand-in call, as the stand-ins stamped them."""
        events = []
        for line in self.sh("cat /var/log/standin-timeline.log 2>/dev/null")[1].splitlines():
            stamp, host, event = line.split(" ", 2)
            events.append((float(stamp), host, event))
        return events

    def published_port(self) -> int:
        """The port on 127.0.0.1 that reaches this host's sshd (only for hosts started with publish=True)."""
        self.container.reload()
        return int(self.container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])


def timeline(*hosts: SshHost) -> list[tuple[float, str, str]]:
    """The stand-in calls of several hosts in the order they happened (one clock: the same kernel)."""
    return sorted(event for host in hosts for event in host.timeline())


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


StartHost = Callable[..., SshHost]


@pytest.fixture(scope="session")
def start_host(
    docker_client: docker.DockerClient, sshd_image: str, network: Network, ssh_key: KeyPair
) -> Iterator[StartHost]:
    """Start test hosts by name; all are removed at the end of the session.

    on: the network to start on (default: the session's); also_on: further networks to join; publish: publish
    sshd on a random port of 127.0.0.1; allow_from: the one address the host accepts logins from.
    """
    started: list[Container] = []

    def start(
        name: str,
        *,
        on: Network | None = None,
        also_on: tuple[Network, ...] = (),
        publish: bool = False,
        allow_from: str | None = None,
    ) -> SshHost:
        first = on or network
        environment = {"AUTHORIZED_KEY": ssh_key.public, **({"ALLOW_FROM": allow_from} if allow_from else {})}
        published: dict[str, Any] = {"22/tcp": ("127.0.0.1", None)} if publish else {}
        container = docker_client.containers.run(
            sshd_image,
            detach=True,
            name=f"{network.name}-{name}-{uuid.uuid4().hex[:4]}",
            hostname=name,
            network=str(first.name),
            environment=environment,
            ports=published,
        )
        started.append(container)
        for extra in also_on:
            extra.connect(container)
        container.reload()
        networks = {
            net: settings["IPAddress"] for net, settings in container.attrs["NetworkSettings"]["Networks"].items()
        }
        host = SshHost(container, networks[first.name], name, networks)
        # The banner is sent before any login check, so this also works where allow_from refuses logins.
        _wait_for_sshd(container, host.address)
        return host

    yield start
    for container in started:
        container.remove(force=True)


@pytest.fixture(scope="session")
def internal_network(docker_client: docker.DockerClient) -> Iterator[Network]:
    """A network without a route out; the hosts on it are reached through a bastion."""
    net = docker_client.networks.create(f"mlopskit-prov-int-{uuid.uuid4().hex[:8]}", driver="bridge", internal=True)
    yield net
    net.reload()  # its hosts are removed later, by start_host: let them go first
    for container in net.containers:
        net.disconnect(container, force=True)
    net.remove()


@pytest.fixture(scope="session")
def kube_vip_image(docker_client: docker.DockerClient) -> str:
    """A stand-in for the kube-vip image (ghcr.io is out of reach here): a few bytes, built from scratch."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {
            "Dockerfile": b"FROM scratch\nCOPY standin.txt /standin.txt\n",
            "standin.txt": b"kube-vip\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=KUBE_VIP_STANDIN, rm=True)
    return KUBE_VIP_STANDIN


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings loaded the normal way from config/inventory.yaml and config/platform.yaml in a fresh project.

    The SSH config is an empty file unless environ names one: the machine's ~/.ssh/config stays out of tests.
    """

    def make(inventory: str, platform: str = "", environ: dict[str, str] | None = None, env_file: str = "") -> Settings:
        root = tmp_path / "project"
        (root / "config").mkdir(parents=True, exist_ok=True)
        (root / "config/inventory.yaml").write_text(inventory)
        (root / "config/platform.yaml").write_text(platform)
        (root / ".env").write_text(env_file)
        (root / "no-ssh-config").write_text("")
        # Never the user's ~/.kube: a provision run writes its kubeconfig inside the test's own directory.
        variables = {"KUBECONFIG_PATH": str(root / "kubeconfig.yaml"), "SSH_CONFIG_PATH": str(root / "no-ssh-config")}
        return load_settings(root, {**variables, **(environ or {})})

    return make


@pytest.fixture(autouse=True)
def _no_ssh_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own ssh-agent stays out of tests; a test that wants one starts it (tests/ssh_agent.py)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
