"""One inventory host over SSH: commands, sudo for root and non-root users, files, and readable failures."""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric import Config, Connection
from invoke.exceptions import AuthFailure, UnexpectedExit
from paramiko.ssh_exception import AuthenticationException, NoValidConnectionsError, SSHException

from mlopskit.errors import PlatformError
from mlopskit.formats import host_port
from mlopskit.settings import Host, Settings

TAIL_LINES = 12


class HostError(PlatformError):
    """A failure on one host; `output` holds the last lines the host printed."""

    def __init__(self, host: str, message: str, output: str = "") -> None:
        self.host = host
        self.reason = message
        self.output = tail(output)
        text = f"{host}: {message}"
        if self.output:
            text += "\n  last output:\n" + "\n".join(f"    {line}" for line in self.output.splitlines())
        super().__init__(text)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Access:
    """How to reach a host, with the per-host values already merged over the ssh defaults."""

    user: str
    port: int
    key_path: Path
    sudo_password: str | None
    connect_timeout: int


def access_for(settings: Settings, host: Host) -> Access:
    ssh = settings.cluster.ssh
    key = (host.key_path or ssh.key_path).expanduser()
    if not key.is_absolute():
        key = settings.root / key
    secret = host.sudo_password or ssh.sudo_password
    return Access(
        user=host.user or ssh.user,
        port=host.port or ssh.port,
        key_path=key,
        sudo_password=secret.get_secret_value() if secret else None,
        connect_timeout=ssh.connect_timeout,
    )


def check_key(settings: Settings, host: Host, access: Access) -> None:
    """Fail before any host is touched when a private key is missing, unreadable or not a private key."""
    if host.key_path and host in settings.cluster.hosts:
        source = settings.source_of(f"cluster.hosts.{settings.cluster.hosts.index(host)}.key_path")
        setting = f"cluster.hosts[{host.name}].key_path [from {source}]"
    else:
        setting = settings.describe("cluster.ssh.key_path")
    fix = f"set {setting} to a private key file such as ~/.ssh/id_ed25519 (not its .pub half)"
    problem = private_key_problem(access.key_path)
    if problem:
        raise PlatformError(f"{host.name}: SSH key {access.key_path} {problem}; {fix}")


def private_key_problem(path: Path) -> str | None:
    """Why `path` cannot serve as an SSH private key (unreadable, a public key, something else); None when it can."""
    try:
        head = path.read_bytes()[:200]
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    first_line = head.split(b"\n", 1)[0].strip()
    if first_line.startswith(b"-----BEGIN ") and first_line.endswith(b"PRIVATE KEY-----"):
        return None
    if path.suffix == ".pub" or re.match(rb"(ssh|ecdsa|sk)-[\w@.-]+ ", first_line):
        return "is a public key"
    return "is not a private key (it has no -----BEGIN ... PRIVATE KEY----- line)"


class Remote:
    """A Fabric connection to one host. Probes never count as changes; `sudo` runs as root either way."""

    def __init__(self, host: Host, access: Access, connection: Connection | None = None) -> None:
        self.host = host
        self.access = access
        overrides: dict[str, Any] = {"run": {"in_stream": False}}
        if access.sudo_password:
            overrides["sudo"] = {"password": access.sudo_password}
        self.connection = connection or Connection(
            host.address,
            user=access.user,
            port=access.port,
            config=Config(overrides=overrides),
            connect_timeout=access.connect_timeout,
            connect_kwargs={"key_filename": [str(access.key_path)], "look_for_keys": False, "allow_agent": False},
        )

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def is_root(self) -> bool:
        return self.access.user == "root"

    def close(self) -> None:
        self.connection.close()

    # ------------------------------------------------------------------------------------- commands

    def run(self, command: str, *, warn: bool = False) -> Any:
        """Run as the SSH user; failures raise HostError naming the command unless warn=True."""
        return self._call(lambda: self.connection.run(command, hide=True, warn=warn, pty=False), command)

    def sudo(self, command: str, *, warn: bool = False) -> Any:
        """Run through a root shell: directly as root, with the configured sudo password, or `sudo -n`."""
        wrapped = f"sh -c {shlex.quote(command)}"
        if self.is_root:
            return self.run(wrapped, warn=warn)
        if self.access.sudo_password:
            return self._call(
                lambda: self.connection.sudo(wrapped, hide=True, warn=warn, pty=False), command, via_sudo=True
            )
        result = self._call(lambda: self.connection.run(f"sudo -n {wrapped}", hide=True, warn=True, pty=False), command)
        self._check_sudo(result.stderr)
        if result.failed and not warn:
            output = result.stdout + result.stderr
            raise HostError(self.name, f"command failed (exit {result.exited}): {command}", output)
        return result

    def probe(self, command: str) -> bool:
        """True when a root command succeeds; for checks only."""
        return bool(self.sudo(command, warn=True).ok)

    def _check_sudo(self, stderr: str) -> None:
        user, name = self.access.user, self.name
        if "password is required" in stderr:
            raise HostError(
                name,
                f"sudo for {user} asks for a password; set SSH_SUDO_PASSWORD in .env or hosts[].sudo_password "
                f"(or give {user} passwordless sudo, or connect as root)",
            )
        if "not in the sudoers file" in stderr or "is not allowed to run sudo" in stderr:
            raise HostError(name, f"{user} may not use sudo; add {user} to the sudo group or log in as root")

    def _call(self, action: Any, command: str, *, via_sudo: bool = False) -> Any:
        a, name = self.access, self.name
        where = f"{a.user}@{host_port(self.host.address, a.port)}"
        try:
            result = action()
        except AuthFailure:
            raise HostError(
                name, f"sudo refused the password for {a.user}; check SSH_SUDO_PASSWORD or hosts[].sudo_password"
            ) from None
        except UnexpectedExit as exc:
            result = exc.result
            if via_sudo:
                self._check_sudo(result.stderr)
            raise HostError(
                name, f"command failed (exit {result.exited}): {command}", result.stdout + result.stderr
            ) from None
        except AuthenticationException:
            raise HostError(
                name,
                f"SSH key {a.key_path} was refused for {where}; add its public key to {a.user}'s "
                "~/.ssh/authorized_keys or set key_path",
            ) from None
        except (NoValidConnectionsError, TimeoutError, socket.gaierror, ConnectionError) as exc:
            raise HostError(
                name, f"cannot reach {where} ({exc}); check the address and port, and that sshd is running"
            ) from None
        except (SSHException, OSError) as exc:
            raise HostError(name, f"SSH to {where} failed: {exc}") from None
        if via_sudo and result.failed:
            self._check_sudo(result.stderr)
        return result

    # ---------------------------------------------------------------------------------------- files

    def read(self, path: str) -> str | None:
        """A root-readable file's content, or None when it does not exist."""
        result = self.sudo(f"cat {shlex.quote(path)}", warn=True)
        return str(result.stdout) if result.ok else None

    def write(self, path: str, content: str, *, mode: str = "0644") -> bool:
        """Write a root-owned file when its content differs; True when it changed."""
        if self.read(path) == content:
            return False
        self._install(io.BytesIO(content.encode()), path, mode)
        return True

    def upload(self, local: Path, path: str, *, mode: str = "0644") -> bool:
        """Copy a local file to a root-owned path unless the same bytes are already there."""
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        found = self.sudo(f"sha256sum {shlex.quote(path)}", warn=True)
        if found.ok and found.stdout.split()[0] == digest:
            return False
        self._install(str(local), path, mode)
        return True

    def _install(self, source: io.BytesIO | str, path: str, mode: str) -> None:
        """Upload to a private temp file as the SSH user, then root installs it at path with mode."""
        staging = str(self.run("mktemp /tmp/mlopskit.XXXXXXXX").stdout.strip())
        self._call(lambda: self.connection.put(source, staging), f"upload to {staging}")
        quoted = shlex.quote(staging)
        self.sudo(
            f"mkdir -p {shlex.quote(posixpath.dirname(path))} && "
            f"install -m {mode} -o root -g root {quoted} {shlex.quote(path)} && rm -f {quoted}"
        )


def connect(settings: Settings, host: Host) -> Remote:
    return Remote(host, access_for(settings, host))
