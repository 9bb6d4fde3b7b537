"""Connections to the API server: the kubeconfig from the settings, else the client's own default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.config import kube_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.settings import DEFAULT_SOURCE, Settings


def kubeconfig_file(settings: Settings) -> Path | None:
    """The kubeconfig from the settings; None (the client's KUBECONFIG or ~/.kube/config) only for the default.

    A path set explicitly (KUBECONFIG_PATH, cluster.kubeconfig) must exist: falling back would talk to
    whatever cluster ~/.kube/config points at.
    """
    path = settings.cluster.kubeconfig_path
    if path.is_file():
        return path
    if settings.source_of("cluster.kubeconfig") == DEFAULT_SOURCE:
        return None
    raise PlatformError(
        f"{settings.describe('cluster.kubeconfig')}: {path} does not exist; point it at an existing kubeconfig, "
        "run `invoke provision` to write it there, or remove the setting to use KUBECONFIG or ~/.kube/config"
    )


def read_kubeconfig(path: Path) -> dict[str, Any]:
    """A kubeconfig file as a mapping; a PlatformError names the file when it is not UTF-8 YAML of a mapping."""
    fix = "point KUBECONFIG_PATH at a kubeconfig (as `invoke provision` writes) or rerun `invoke provision`"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlatformError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    return parse_kubeconfig(data, str(path), fix)


def parse_kubeconfig(data: bytes, label: str, fix: str) -> dict[str, Any]:
    """Kubeconfig bytes as a mapping; a PlatformError naming `label` (and the line) when they are not one."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PlatformError(f"{label}:{line}: is not a kubeconfig: not UTF-8 text; {fix}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = getattr(exc, "problem", None) or exc
        raise PlatformError(f"{where}: is not a kubeconfig: not valid YAML ({problem}); {fix}") from None
    if not isinstance(loaded, dict):
        raise PlatformError(f"{label}: is not a kubeconfig: expected a mapping of clusters, users, contexts; {fix}")
    return loaded


def _default_kubeconfigs() -> list[Path]:
    """The files the client reads when the settings name none (its KUBECONFIG list, else ~/.kube/config)."""
    paths = kube_config.KUBE_CONFIG_DEFAULT_LOCATION.split(os.pathsep)
    return [Path(p).expanduser() for p in paths if p and Path(p).expanduser().is_file()]


def api_client(settings: Settings) -> client.ApiClient:
    """An ApiClient for the platform's cluster; a PlatformError names the file when it cannot be read."""
    path = kubeconfig_file(settings)
    for candidate in [path] if path else _default_kubeconfigs():
        read_kubeconfig(candidate)
    try:
        loaded: client.ApiClient = config.new_client_from_config(
            config_file=str(path) if path else None, context=settings.cluster.context
        )
    except (ConfigException, OSError) as exc:
        where = str(path) if path else "KUBECONFIG (or ~/.kube/config)"
        raise PlatformError(
            f"cannot load a kubeconfig from {where}: {str(exc).rstrip('.')}. Run `invoke provision` to write "
            f"{settings.cluster.kubeconfig}, or set KUBECONFIG_PATH to an existing kubeconfig."
        ) from None
    return loaded


PROBE_TIMEOUT = 10.0


def dynamic_client(api: client.ApiClient, probe_timeout: float = PROBE_TIMEOUT) -> DynamicClient:
    """A DynamicClient; an unreachable server fails within probe_timeout, naming the server."""
    try:
        # Discovery itself has no timeout: a quick /version first keeps an unreachable server from hanging.
        client.VersionApi(api).get_code(_request_timeout=probe_timeout)
        return DynamicClient(api)
    except Exception as exc:  # discovery fails in many ways: refused, TLS, 401; all mean "can't reach"
        raise PlatformError(
            f"cannot reach the Kubernetes API server at {api.configuration.host}: {exc}. "
            "Check that the cluster is up (invoke provision) and the kubeconfig points at it."
        ) from None
