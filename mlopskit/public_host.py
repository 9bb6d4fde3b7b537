"""What MLflow's one public host name (platform.ingress.host) drives, defined once for rendering, deploy and doctor.

From the host and whether TLS is on: the Ingress's TLS Secret (yours, or the one cert-manager writes), the
public URL and origin, MLflow's allowed Host headers (--allowed-hosts), the CORS origins it accepts
(--cors-allowed-origins: the UI's own POSTs carry an Origin header, which MLflow 3.17 blocks unless listed),
its X-Frame-Options, and the ingress controller's settings for large uploads (Traefik through a K3s
HelmChartConfig, ingress-nginx through annotations). Settings add to the derived values, never silently
replace them: platform.mlflow.allowed_hosts and cors_allowed_origins, platform.mlflow.x_frame_options,
platform.ingress.upload_timeout_seconds.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlopskit.contract import MLFLOW_SERVICE
from mlopskit.settings import IngressSettings, Settings

# The Secret cert-manager's ingress-shim writes the certificate into (named after the Ingress) when
# platform.ingress.cert_manager_issuer is set.
CERT_MANAGER_SECRET = f"{MLFLOW_SERVICE}-cert-manager-tls"
CERT_MANAGER_ANNOTATION = "cert-manager.io/cluster-issuer"

# K3s installs Traefik with the helm-controller's HelmChart kube-system/traefik; a HelmChartConfig of the same
# name and namespace adds values to it (https://docs.k3s.io/helm#customizing-packaged-components-with-helmchartconfig).
HELM_CHART_CONFIG_CRD = "helmchartconfigs.helm.cattle.io"
HELM_CHART_CONFIG_API = ("helm.cattle.io/v1", "HelmChartConfig")
TRAEFIK_CHART = "traefik"
TRAEFIK_NAMESPACE = "kube-system"
# Traefik's entry points of the chart K3s ships (HTTP and HTTPS).
TRAEFIK_ENTRY_POINTS = ("web", "websecure")
TRAEFIK_TLS_ENTRY_POINT = "websecure"
# Traefik attaches an Ingress's router to every entry point unless this annotation names some: with TLS on, the
# route would also answer plain HTTP on `web` (MLflow's login in clear text). Traefik's kubernetesIngress docs.
TRAEFIK_ENTRY_POINTS_ANNOTATION = "traefik.ingress.kubernetes.io/router.entrypoints"

NGINX_CLASS = "nginx"
TRAEFIK_CLASS = "traefik"


# Where each class's usual installation runs its controller pods (K3s's packaged Traefik; the ingress-nginx
# project's chart and manifests), for the NetworkPolicy that lets them reach MLflow.
INGRESS_CONTROLLERS: dict[str, dict[str, Any]] = {
    TRAEFIK_CLASS: {"namespace": "kube-system", "pod_labels": {"app.kubernetes.io/name": "traefik"}},
    NGINX_CLASS: {"namespace": "ingress-nginx", "pod_labels": {"app.kubernetes.io/name": "ingress-nginx"}},
}


def ingress_controller(ingress: IngressSettings) -> dict[str, Any] | None:
    """The namespace and pod labels of the class's controller, None for a class mlopskit does not know."""
    return INGRESS_CONTROLLERS.get(ingress.class_name)


def tls_secret(ingress: IngressSettings) -> str | None:
    """The Secret that holds the host's certificate: tls_secret, cert-manager's, or None for plain HTTP."""
    if not ingress.enabled:
        return None
    if ingress.tls_secret:
        return ingress.tls_secret
    return CERT_MANAGER_SECRET if ingress.cert_manager_issuer else None


def scheme(ingress: IngressSettings) -> str:
    return "https" if ingress.tls else "http"


def public_origin(ingress: IngressSettings) -> str | None:
    """The browser origin of MLflow's UI at the public host (https://host or http://host), None without ingress.

    A wildcard host (*.example.com) gives MLflow's wildcard origin https://*.example.com.
    """
    if not ingress.enabled or not ingress.host:
        return None
    return f"{scheme(ingress)}://{ingress.host}"


def public_url(settings: Settings) -> str | None:
    """The URL users open, with a trailing '/'; None without an ingress or with a wildcard host."""
    ingress = settings.platform.ingress
    origin = public_origin(ingress)
    if origin is None or ingress.host is None or ingress.host.startswith("*."):
        return None
    return origin + "/"


def ingress_hosts(ingress: IngressSettings) -> list[str]:
    """Host headers the ingress delivers to MLflow: the host, bare or with any port."""
    if not ingress.enabled or not ingress.host:
        return []
    return [ingress.host, f"{ingress.host}:*"]


def cors_allowed_origins(settings: Settings) -> list[str]:
    """MLflow's --cors-allowed-origins: the public host's origin, then platform.mlflow.cors_allowed_origins."""
    origin = public_origin(settings.platform.ingress)
    derived = [origin] if origin else []
    return list(dict.fromkeys([*derived, *settings.platform.mlflow.cors_allowed_origins]))


def ingress_annotations(ingress: IngressSettings) -> dict[str, str]:
    """Annotations of the MLflow Ingress: cert-manager's issuer, ingress-nginx's limits for large uploads, and
    with TLS on Traefik's HTTPS entry point only.

    ingress-nginx refuses request bodies above 1 MiB and gives up on an upstream after 60 s by default;
    Traefik has no body limit, and its timeout is an entry point setting (traefik_values), not an annotation.
    With TLS, ingress-nginx redirects plain HTTP to HTTPS by default (ssl-redirect); Traefik instead serves the
    route on its plain `web` entry point too, unless the router is pinned to `websecure`: plain HTTP then gets
    Traefik's 404, and no login crosses the network unencrypted (a redirect would need Traefik's Middleware CRD).
    """
    annotations: dict[str, str] = {}
    if not ingress.enabled:
        return annotations
    if ingress.cert_manager_issuer:
        annotations[CERT_MANAGER_ANNOTATION] = ingress.cert_manager_issuer
    if ingress.class_name == TRAEFIK_CLASS and ingress.tls:
        annotations[TRAEFIK_ENTRY_POINTS_ANNOTATION] = TRAEFIK_TLS_ENTRY_POINT
    if ingress.class_name == NGINX_CLASS:
        timeout = str(ingress.upload_timeout_seconds)
        annotations |= {
            "nginx.ingress.kubernetes.io/proxy-body-size": "0",  # no limit: artifacts are as large as they are
            "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",  # stream uploads, no spooling to disk
            "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
            "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
        }
    return annotations


def traefik_values(ingress: IngressSettings) -> dict[str, Any] | None:
    """Values for K3s's Traefik chart that let one request take upload_timeout_seconds; None unless class traefik.

    Traefik v3 reads a whole request, body included, within its entry point's
    transport.respondingTimeouts.readTimeout, 60 s by default: a 1 GB artifact upload slower than about
    17 MB/s would be cut off. Its writeTimeout (0: none) and idleTimeout (180 s, between requests) do not
    limit a transfer, and it has no request body size limit unless a Buffering middleware sets one.
    """
    if not ingress.enabled or ingress.class_name != TRAEFIK_CLASS:
        return None
    timeout = f"{ingress.upload_timeout_seconds}s"
    ports = {name: {"transport": {"respondingTimeouts": {"readTimeout": timeout}}} for name in TRAEFIK_ENTRY_POINTS}
    return {"ports": ports}


def traefik_values_content(ingress: IngressSettings) -> str | None:
    """traefik_values as the YAML text of a HelmChartConfig's spec.valuesContent."""
    values = traefik_values(ingress)
    return None if values is None else yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
