"""Connections to the API server: the kubeconfig from the settings, else the client's own default."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.settings import Settings


def kubeconfig_file(settings: Settings) -> Path | None:
    """The kubeconfig `invoke provision` wrote, when it exists; None lets the client use KUBECONFIG."""
    path = settings.cluster.kubeconfig_path
    return path if path.is_file() else None


def api_client(settings: Settings) -> client.ApiClient:
    """An ApiClient for the platform's cluster; a PlatformError names the file when it cannot be read."""
    path = kubeconfig_file(settings)
    try:
        loaded: client.ApiClient = config.new_client_from_config(
            config_file=str(path) if path else None, context=settings.cluster.context
        )
    except (ConfigException, OSError) as exc:
        where = str(path) if path else "KUBECONFIG (or ~/.kube/config)"
        raise PlatformError(
            f"cannot load a kubeconfig from {where}: {exc}. Run `invoke provision` to write "
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
