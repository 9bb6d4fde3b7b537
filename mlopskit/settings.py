"""The one Settings object: loaded once from .env, config/platform.yaml and config/inventory.yaml.

Nothing else in the package reads os.environ or parses .env. Every value remembers where it came from,
so an error can name the key and the file (or variable) to fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mlopskit.errors import SettingsError

ENV_FILE = ".env"
PLATFORM_FILE = "config/platform.yaml"
INVENTORY_FILE = "config/inventory.yaml"
DEFAULT_SOURCE = "default"
ENVIRONMENT_SOURCE = "environment"

# Passwords that appear in public docs and examples; a platform must not run with them.
PUBLISHED_DEFAULT_PASSWORDS = frozenset(
    {"password1234", "password", "admin", "changeme", "minioadmin", "mlflow", "postgres", "secret"}
)
MIN_ADMIN_PASSWORD_LENGTH = 12

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_K3S_VERSION = re.compile(r"^v\d+\.\d+\.\d+\+k3s\d+$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS label: lowercase letters, digits and '-', 1 to 63 characters, "
            "starting and ending with a letter or digit"
        )
    return value


def _check_host_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value) or value.replace(".", "").isdigit():
        raise ValueError("must be a host name (letters, digits, '-' and '.') or an IP address")
    return value


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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- cluster


class Host(_Model):
    """One machine of the inventory."""

    name: str
    address: str
    roles: list[Literal["server", "agent", "nfs"]] = Field(min_length=1)
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key_path: Path | None = None
    sudo_password: SecretStr | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_hostname_label(value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_host_address(value)

    @field_validator("taints")
    @classmethod
    def _taints(cls, value: list[str]) -> list[str]:
        for taint in value:
            if not re.fullmatch(r"[\w./-]+(=[\w.-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)", taint):
                raise ValueError(f"taint {taint!r} must look like key=value:NoSchedule")
        return value


def _check_hostname_label(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError("must be a host name: letters, digits, '-' and '.'")
    return value


class SSHSettings(_Model):
    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key_path: Path = Path("~/.ssh/id_ed25519")
    sudo_password: SecretStr | None = None
    connect_timeout: int = Field(default=10, ge=1)


class AirgapSettings(_Model):
    enabled: bool = False
    k3s_binary: Path | None = None
    images_tarball: Path | None = None
    install_script: Path | None = None


class ClusterSettings(_Model):
    name: str = "mlops"
    k3s_version: str = "v1.34.1+k3s1"
    token: SecretStr | None = None
    api_port: int = Field(default=6443, ge=1, le=65535)
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
        if not _K3S_VERSION.match(value):
            raise ValueError("must be a K3s release such as v1.34.1+k3s1")
        return value

    @field_validator("hosts")
    @classmethod
    def _topology(cls, hosts: list[Host]) -> list[Host]:
        names = [h.name for h in hosts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"host names must be unique; repeated: {', '.join(duplicates)}")
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


class ImageSettings(_Model):
    registry: str | None = None
    source: Literal["auto", "registry", "offline"] = "auto"
    mlflow_version: str = "3.17.2"
    tag: str | None = None
    mlflow_repository: str = "mlopskit/mlflow"
    python_base: str = "python:3.11-slim-bookworm"
    postgres: str = "postgres:15-bookworm"
    seaweedfs: str = "chrislusf/seaweedfs:3.97"
    minio: str = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
    sealed_secrets_controller: str = "docker.io/bitnami/sealed-secrets-controller:0.32.2"
    nfs_provisioner: str = "registry.k8s.io/sig-storage/nfs-subdir-external-provisioner:v4.0.2"


# -------------------------------------------------------------------------------------------- platform


class StorageSettings(_Model):
    kind: Literal["nfs", "local-path"] = "local-path"
    nfs_server: str | None = None
    nfs_path: str = "/srv/nfs/k8s"
    # Who may mount the export: addresses or CIDRs; empty means every inventory host's address.
    nfs_clients: list[str] = Field(default_factory=list)
    storage_class: str = "nfs-client"
    postgres_size: str = "10Gi"
    objectstore_size: str = "50Gi"

    @field_validator("postgres_size", "objectstore_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError("must be a Kubernetes quantity such as 10Gi")
        return value

    @field_validator("nfs_path")
    @classmethod
    def _abs(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path such as /srv/nfs/k8s")
        return value


class ObjectStoreSettings(_Model):
    kind: Literal["seaweedfs", "minio", "external"] = "seaweedfs"
    endpoint: str | None = None
    region: str = "us-east-1"
    bucket: str = "mlflow"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be a URL such as https://s3.example.com")
        return value

    @model_validator(mode="after")
    def _external(self) -> ObjectStoreSettings:
        if self.kind == "external" and not self.endpoint:
            raise ValueError("kind 'external' needs an endpoint (S3_ENDPOINT)")
        return self


class PostgresSettings(_Model):
    mode: Literal["internal", "external"] = "internal"
    dsn: SecretStr | None = None
    auth_dsn: SecretStr | None = None
    user: str = "mlflow"
    password: SecretStr | None = None
    tracking_db: str = "mlflow"
    auth_db: str = "mlflow_auth"

    @model_validator(mode="after")
    def _external(self) -> PostgresSettings:
        if self.mode == "external" and self.dsn is None:
            raise ValueError("mode 'external' needs a DSN (POSTGRES_DSN)")
        for dsn in (self.dsn, self.auth_dsn):
            if dsn is not None and not dsn.get_secret_value().startswith(("postgresql://", "postgresql+")):
                raise ValueError("a DSN must start with postgresql:// (postgresql://user:pass@host:5432/db)")
        if self.tracking_db == self.auth_db:
            raise ValueError("tracking_db and auth_db must differ: auth data lives in its own database")
        return self


class MlflowSettings(_Model):
    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    flask_secret_key: SecretStr | None = None
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "NO_PERMISSIONS"
    allowed_hosts: list[str] = Field(default_factory=list)
    auth_cache_ttl_seconds: int = Field(default=30, ge=1)
    workers: int | None = Field(default=None, ge=1)
    replicas: int = Field(default=1, ge=1)

    @field_validator("admin_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
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

    @field_validator("flask_secret_key")
    @classmethod
    def _flask(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters of random text")
        return value


class IngressSettings(_Model):
    enabled: bool = False
    host: str | None = None
    tls_secret: str | None = None
    class_name: str = "traefik"

    @model_validator(mode="after")
    def _host(self) -> IngressSettings:
        if self.enabled and not self.host:
            raise ValueError("an enabled ingress needs a host (INGRESS_HOST)")
        if self.host is not None:
            _check_host_address(self.host)
        return self


class ResourceSpec(_Model):
    cpu_request: str
    memory_request: str
    cpu_limit: str | None = None
    memory_limit: str

    @field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.match(value):
            raise ValueError("must be a Kubernetes quantity such as 500m or 1Gi")
        return value


class ResourceSettings(_Model):
    mlflow: ResourceSpec = ResourceSpec(cpu_request="250m", memory_request="512Mi", memory_limit="2Gi")
    postgres: ResourceSpec = ResourceSpec(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")
    objectstore: ResourceSpec = ResourceSpec(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")


class PlatformSettings(_Model):
    namespace: str = "mlops"
    storage: StorageSettings = StorageSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    postgres: PostgresSettings = PostgresSettings()
    mlflow: MlflowSettings = MlflowSettings()
    ingress: IngressSettings = IngressSettings()
    resources: ResourceSettings = ResourceSettings()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value)


class LocalSettings(_Model):
    """The local stack that `invoke up` runs on Docker."""

    project: str = "mlopskit"
    bind: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        return _check_dns_label(value)


class Settings(_Model):
    cluster: ClusterSettings = ClusterSettings()
    images: ImageSettings = ImageSettings()
    platform: PlatformSettings = PlatformSettings()
    local: LocalSettings = LocalSettings()

    # Filled by load_settings; not settings themselves.
    root: Path = Field(default=Path(), exclude=True)
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        storage = self.platform.storage
        if storage.kind == "nfs" and not (storage.nfs_server or self.cluster.nfs_host):
            raise ValueError(
                "storage kind 'nfs' needs an NFS server: set platform.storage.nfs_server "
                "or give one inventory host the role 'nfs'"
            )
        return self

    @property
    def nfs_server(self) -> str | None:
        host = self.cluster.nfs_host
        return self.platform.storage.nfs_server or (host.address if host else None)

    def source_of(self, path: str) -> str:
        """Where the value at a dotted path came from: a file, an environment variable or 'default'."""
        return self.sources.get(path, DEFAULT_SOURCE)

    def describe(self, path: str) -> str:
        """The key as a user would look for it, with where it came from."""
        env = ENV_BY_PATH.get(path)
        name = f"{path} ({env})" if env else path
        return f"{name} [from {self.source_of(path)}]"

    def require(self, command: str) -> None:
        """Fail unless every key that `command` needs is set; one message lists them all."""
        missing = []
        for path in required_for(self, command):
            if get_path(self, path) in (None, "", []):
                env = ENV_BY_PATH.get(path)
                where = f"set {env} in {ENV_FILE} (see .env.example)" if env else f"set it in {PLATFORM_FILE}"
                missing.append(f"{path}: required by `invoke {command}` but not set; {where}")
        if command in {"provision", "upgrade", "reset"} and not self.cluster.hosts:
            missing.append(
                f"cluster.hosts: `invoke {command}` needs hosts; copy config/inventory.example.yaml "
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
    table: dict[str, list[str]] = {
        "up": credentials,
        "deploy": credentials,
        "seal": credentials,
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
    "CLUSTER_NAME": "cluster.name",
    "K3S_VERSION": "cluster.k3s_version",
    "K3S_TOKEN": "cluster.token",
    "KUBECONFIG_PATH": "cluster.kubeconfig",
    "SSH_USER": "cluster.ssh.user",
    "SSH_PORT": "cluster.ssh.port",
    "SSH_KEY_PATH": "cluster.ssh.key_path",
    "SSH_SUDO_PASSWORD": "cluster.ssh.sudo_password",
    "AIRGAP_ENABLED": "cluster.airgap.enabled",
    "IMAGE_REGISTRY": "images.registry",
    "IMAGE_SOURCE": "images.source",
    "IMAGE_TAG": "images.tag",
    "LOCAL_PORT": "local.port",
}
ENV_BY_PATH = {path: env for env, path in ENV_KEYS.items()}
_LIST_PATHS = {"platform.mlflow.allowed_hosts"}

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
        node = self.data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.sources[path] = source


def _yaml_lines(text: str) -> dict[str, int]:
    """Line number of each key path in a YAML document (lists by index), for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}{key.value}"
                lines[path] = key.start_mark.line + 1
                walk(value, path + ".")
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                path = f"{prefix}{index}"
                lines[path] = item.start_mark.line + 1
                walk(item, path + ".")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def _read_yaml(path: Path, label: str, layers: _Layers, wrap: str | None = None) -> None:
    if not path.is_file():
        return
    text = path.read_text()
    try:
        content = yaml.safe_load(text)
        lines = _yaml_lines(text)
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
        if isinstance(node, dict) and not _is_free_mapping(settings_path):
            for key, value in node.items():
                visit(value, f"{file_path}.{key}" if file_path else str(key))
        else:
            layers.put(settings_path, node, source)
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
    if isinstance(item, dict):
        for key, value in item.items():
            line = lines.get(f"{file_path}.{key}")
            layers.sources[f"{settings_path}.{key}"] = f"{label}:{line}" if line else label
            _record_item_sources(value, f"{file_path}.{key}", f"{settings_path}.{key}", lines, label, layers)


def _is_free_mapping(path: str) -> bool:
    """Mappings whose keys are the user's own (node labels), not setting names."""
    return path.endswith(".labels")


def _env_value(path: str, raw: str) -> Any:
    if path in _LIST_PATHS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _read_env(env_file: Path, environ: Mapping[str, str], layers: _Layers) -> None:
    if env_file.is_file():
        for key, raw in dotenv_values(env_file).items():
            if key not in ENV_KEYS:
                layers.problems.append(
                    f"{key} [from {ENV_FILE}]: unknown key{_suggest(key, list(ENV_KEYS))} "
                    "(every key is listed in .env.example)"
                )
                continue
            if raw is None or raw == "":
                continue  # an empty line in .env means "not set", as in .env.example
            layers.put(ENV_KEYS[key], _env_value(ENV_KEYS[key], raw), ENV_FILE)
    for key, path in ENV_KEYS.items():
        raw = environ.get(key)
        if raw:
            layers.put(path, _env_value(path, raw), f"{ENVIRONMENT_SOURCE} ${key}")


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


def _host_label(loc: tuple[int | str, ...], layers: _Layers) -> str:
    """cluster.hosts.1.address reads better as cluster.hosts[s2].address."""
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[:2] == ["cluster", "hosts"] and isinstance(loc[2], int):
        hosts = layers.data.get("cluster", {}).get("hosts") or []
        index = loc[2]
        if index < len(hosts) and isinstance(hosts[index], dict) and hosts[index].get("name"):
            rest = "".join(f".{p}" for p in parts[3:])
            return f"cluster.hosts[{hosts[index]['name']}]{rest}"
    return ".".join(parts)


def _format_error(error: Any, layers: _Layers) -> str:
    loc = tuple(p for p in error["loc"])
    key, source = _source_for_loc(loc, layers)
    env = ENV_BY_PATH.get(key)
    label = f"{key} ({env})" if env else _host_label(loc, layers)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1])
        return f"{label} [from {source}]: unknown key{_suggest(str(loc[-1]), parent_fields)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        message = "is required"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be one of {expected}"
    elif "input" in error and not isinstance(error["input"], dict | list) and not _is_secret(key):
        message = f"{message} (got {error['input']!r})"
    return f"{label} [from {source}]: {message}"


def _is_secret(path: str) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return any(word in leaf for word in ("password", "secret", "token", "dsn", "key")) and leaf != "key_path"


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        annotation = info.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def load_settings(root: Path | str = ".", environ: Mapping[str, str] | None = None) -> Settings:
    """Read .env, config/platform.yaml, config/inventory.yaml under root; the environment overrides all.

    Raises SettingsError, naming every bad key and where it came from, before anything is touched.
    """
    root = Path(root).resolve()
    environ = os.environ if environ is None else environ
    layers = _Layers()
    _read_yaml(root / PLATFORM_FILE, PLATFORM_FILE, layers)
    _read_yaml(root / INVENTORY_FILE, INVENTORY_FILE, layers, wrap="cluster")
    _read_env(root / ENV_FILE, environ, layers)
    problems = list(layers.problems)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate({**layers.data, "root": root, "sources": layers.sources})
    except ValidationError as exc:
        problems += [_format_error(error, layers) for error in exc.errors()]
    if problems or settings is None:
        raise SettingsError(problems)
    return settings
