"""One inventory host over SSH: commands, sudo for root and non-root users, files, and readable failures.

SSH goes the way the user's own `ssh` would: the OpenSSH client config (~/.ssh/config, /etc/ssh/ssh_config,
or cluster.ssh.config_path alone) supplies Host aliases, HostName, User, Port, IdentityFile, ConnectTimeout
and ProxyJump/ProxyCommand; a value set in the inventory (or .env) wins over it. The keys a running
ssh-agent holds (SSH_AUTH_SOCK) are offered too unless cluster.ssh.use_agent is false.
"""

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
from paramiko.agent import Agent
from paramiko.config import SSHConfig, SSHConfigDict
from paramiko.ssh_exception import AuthenticationException, ConfigParseError, NoValidConnectionsError, SSHException

from mlopskit.errors import PlatformError
from mlopskit.formats import host_port
from mlopskit.settings import Host, Settings

TAIL_LINES = 12
# The files OpenSSH's client reads when no -F is given, the user's first (its values win).
DEFAULT_SSH_CONFIGS = (Path("~/.ssh/config"), Path("/etc/ssh/ssh_config"))


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
    """How to reach a host: the inventory's values merged over the SSH config's, over the defaults."""

    user: str
    port: int
    key_paths: tuple[Path, ...]
    sudo_password: str | None
    connect_timeout: int
    target: str = ""  # what SSH connects to: the host's ssh_host (an alias) or its address
    hostname: str = ""  # the SSH config's HostName for target, else target itself
    jump: str | None = None  # ProxyJump (or ProxyCommand) from the SSH config, for messages
    key_setting: str = ""  # where the keys were chosen, for messages
    ssh_config: SSHConfig | None = None
    agent_keys: int = 0  # keys a running ssh-agent offers (0: no agent, or cluster.ssh.use_agent is false)

    @property
    def key_files(self) -> list[str]:
        """The key files that exist, for paramiko's key_filename (a missing one is passed over with an agent)."""
        return [str(key) for key in self.key_paths if key.is_file()]

    @property
    def credentials(self) -> str:
        """The keys offered, for messages: the files, and the agent's keys when there are any."""
        files = ", ".join(str(key) for key in self.key_paths)
        return f"{files} and the ssh-agent's {self.agent_keys} key(s)" if self.agent_keys else files

    @property
    def where(self) -> str:
        """user@host:port, and the jump host when there is one: for messages."""
        text = f"{self.user}@{host_port(self.hostname, self.port)}"
        return f"{text} via {self.jump}" if self.jump else text


def agent_key_count() -> int:
    """How many keys the ssh-agent at SSH_AUTH_SOCK offers (paramiko reads the variable); 0 without one."""
    agent = Agent()
    try:
        return len(agent.get_keys())
    except SSHException:  # a socket that answers wrongly is treated as no agent, as OpenSSH's client does
        return 0
    finally:
        agent.close()


def ssh_config_files(settings: Settings) -> list[Path]:
    """The OpenSSH client config files to read: cluster.ssh.config_path alone (like `ssh -F`), else those of
    ~/.ssh/config and /etc/ssh/ssh_config that exist."""
    configured = settings.cluster.ssh.config_path
    if configured is not None:
        path = configured.expanduser()
        return [path if path.is_absolute() else settings.root / path]
    return [path.expanduser() for path in DEFAULT_SSH_CONFIGS if path.expanduser().is_file()]


def load_ssh_config(settings: Settings) -> SSHConfig:
    """The SSH config, parsed; PlatformError naming the file (and the setting) when it cannot be read."""
    config = SSHConfig()
    for path in ssh_config_files(settings):
        setting = settings.describe("cluster.ssh.config_path")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise PlatformError(
                f"SSH config {path} cannot be read ({reason}); fix the file or point {setting} at another one"
            ) from None
        try:
            config.parse(io.StringIO(text))
        except ConfigParseError as exc:
            raise PlatformError(f"SSH config {path}: {exc}; fix the line (see `man ssh_config`)") from None
    return config


def _lookup(config: SSHConfig, target: str, host: Host, settings: Settings) -> SSHConfigDict:
    try:
        return config.lookup(target)
    except (ConfigParseError, SSHException) as exc:
        files = ", ".join(str(path) for path in ssh_config_files(settings))
        raise PlatformError(f"{host.name}: the SSH config ({files}) cannot be applied to {target}: {exc}") from None


def access_for(settings: Settings, host: Host, config: SSHConfig | None = None) -> Access:
    """The host's entry, else a value set in the ssh section, else the SSH config's, else the default."""
    ssh = settings.cluster.ssh
    explicit = ssh.model_fields_set
    config = config if config is not None else load_ssh_config(settings)
    target = host.ssh_host or host.address
    entry = _lookup(config, target, host, settings)
    secret = host.sudo_password or ssh.sudo_password

    def number(key: str, default: int) -> int:
        try:
            return int(entry.get(key, default))
        except ValueError:
            files = ", ".join(str(path) for path in ssh_config_files(settings))
            raise PlatformError(
                f"{host.name}: the SSH config ({files}) gives {key} {entry[key]!r} for {target}; it must be a number"
            ) from None

    user = host.user or (ssh.user if "user" in explicit else entry.get("user", ssh.user))
    port = host.port or (ssh.port if "port" in explicit else number("port", ssh.port))
    timeout = ssh.connect_timeout if "connect_timeout" in explicit else number("connecttimeout", ssh.connect_timeout)

    def local(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else settings.root / path

    if host.key_path is not None:
        index = settings.cluster.hosts.index(host) if host in settings.cluster.hosts else None
        source = settings.source_of(f"cluster.hosts.{index}.key_path") if index is not None else "the inventory"
        keys, key_setting = [local(host.key_path)], f"set cluster.hosts[{host.name}].key_path [from {source}]"
    elif "key_path" in explicit or "identityfile" not in entry:
        keys, key_setting = [local(ssh.key_path)], f"set {settings.describe('cluster.ssh.key_path')}"
    else:
        # As OpenSSH does, IdentityFile lines naming no file are passed over; all missing is an error.
        named = [local(Path(name)) for name in entry["identityfile"]]
        keys = [path for path in named if path.exists()] or named
        files = ", ".join(str(path) for path in ssh_config_files(settings))
        key_setting = f"fix IdentityFile for Host {target} in {files} (or set cluster.ssh.key_path)"
    jump = entry.get("proxyjump") or (f"ProxyCommand {entry['proxycommand']}" if "proxycommand" in entry else None)
    return Access(
        user=user,
        port=port,
        key_paths=tuple(keys),
        sudo_password=secret.get_secret_value() if secret else None,
        connect_timeout=timeout,
        target=target,
        hostname=entry.get("hostname", target),
        jump=jump,
        key_setting=key_setting,
        ssh_config=config,
        agent_keys=agent_key_count() if ssh.use_agent else 0,
    )


def check_key(settings: Settings, host: Host, access: Access) -> None:
    """Fail before any host is touched when a private key is unreadable or not a private key, or is missing
    while no ssh-agent offers keys instead."""
    fix = f"{access.key_setting or 'set cluster.ssh.key_path'} to a private key file such as ~/.ssh/id_ed25519 "
    fix += "(not its .pub half)"
    for key in access.key_paths:
        problem = private_key_problem(key)
        if problem and not (access.agent_keys and not key.exists()):
            agent = "" if settings.cluster.ssh.use_agent else " (cluster.ssh.use_agent is false: no ssh-agent keys)"
            raise PlatformError(f"{host.name}: SSH key {key} {problem}{agent}; {fix}")


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


def _jump_keys(connection: Connection, fallback: list[str]) -> None:
    """Each jump host (ProxyJump) authenticates with its own IdentityFile lines, as OpenSSH's client does;
    one without any uses the target's keys, as OpenSSH would use the default identities."""
    gateway = connection.gateway
    while isinstance(gateway, Connection):
        own = [str(Path(name).expanduser()) for name in gateway.ssh_config.get("identityfile", [])]
        gateway.connect_kwargs["key_filename"] = [name for name in own if Path(name).is_file()] or fallback
        gateway = gateway.gateway


class Remote:
    """A Fabric connection to one host. Probes never count as changes; `sudo` runs as root either way."""

    def __init__(self, host: Host, access: Access, connection: Connection | None = None) -> None:
        self.host = host
        self.access = access
        overrides: dict[str, Any] = {
            "run": {"in_stream": False},
            "timeouts": {"connect": access.connect_timeout},
            # What a jump host (ProxyJump) starts from; its own IdentityFile lines are added to these.
            "connect_kwargs": {
                "key_filename": access.key_files,
                "look_for_keys": False,
                "allow_agent": access.agent_keys > 0,
            },
        }
        if access.sudo_password:
            overrides["sudo"] = {"password": access.sudo_password}
        if connection is None:
            # An explicit SSHConfig: Fabric reads no file itself, so the one parsed and checked is the one used.
            config = Config(overrides=overrides, ssh_config=access.ssh_config or SSHConfig())
            connection = Connection(
                access.target or host.address,
                user=access.user,
                port=access.port,
                config=config,
                connect_timeout=access.connect_timeout,
                connect_kwargs={"look_for_keys": False, "allow_agent": access.agent_keys > 0},
            )
            # Exactly the keys chosen above: Fabric would also append the SSH config's IdentityFile lines.
            connection.connect_kwargs["key_filename"] = access.key_files
            _jump_keys(connection, access.key_files)
        self.connection = connection

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
                f"sudo for {user} asks for a password; set SSH_SUDO_PASSWORD in .env or hosts[].sudo_password_env "
                f"(or give {user} passwordless sudo, or connect as root)",
            )
        if "not in the sudoers file" in stderr or "is not allowed to run sudo" in stderr:
            raise HostError(name, f"{user} may not use sudo; add {user} to the sudo group or log in as root")

    def _call(self, action: Any, command: str, *, via_sudo: bool = False) -> Any:
        a, name = self.access, self.name
        where = a.where if a.hostname else f"{a.user}@{host_port(self.host.address, a.port)}"
        try:
            result = action()
        except AuthFailure:
            raise HostError(
                name, f"sudo refused the password for {a.user}; check SSH_SUDO_PASSWORD or hosts[].sudo_password_env"
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
                f"SSH key {a.credentials} was refused for {where}; add its public "
                f"key to {a.user}'s ~/.ssh/authorized_keys or set key_path"
                + (
                    f" (or the jump host {a.jump} refused its key: check its User and IdentityFile in the SSH config)"
                    if a.jump
                    else ""
                ),
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
    """A Remote for host, reached as the SSH config and the inventory say (see access_for)."""
    return Remote(host, access_for(settings, host))
