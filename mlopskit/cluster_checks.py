"""`invoke doctor --cluster`: whether the deployed platform agrees with the settings about its public host.

Each check reads the live cluster (through the DynamicClient) or the public host as a user's machine reaches
it (the system resolver, then HTTPS verified against the system's trust store, or SSL_CERT_FILE),
and gives one line: OK, FAIL or SKIP, what it found, and the fix. What is compared with what:

- the live Ingress `mlflow`: host, class, TLS Secret and cert-manager annotation against a fresh render;
- the live Deployment `mlflow`: MLFLOW_ALLOWED_HOSTS includes the host (MLflow answers 403 to other Host
  headers), and its CORS origins and frame options are the ones the settings give;
- the TLS Secret: present, a kubernetes.io/tls Secret whose certificate covers the host and is not
  expiring within CERT_MIN_DAYS days;
- through the ingress: GET /health at the public URL answers 200, and MLflow accepts the host
  (an API call without a login answers 401, not 403 "Invalid Host header").
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

from mlopskit import public_host
from mlopskit.contract import MLFLOW_SERVICE
from mlopskit.doctor import Check
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.applyset import ObjectRef, api_group
from mlopskit.settings import Settings

NEEDED_BY = "the deployed platform"
CERT_MIN_DAYS = 30
HTTP_TIMEOUT = 10.0
# MLflow 3.17.2's answer to a Host header it does not allow (mlflow/server/security_utils.py).
INVALID_HOST_MESSAGE = "Invalid Host header"
SECURITY_ENV = ("MLFLOW_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "MLFLOW_SERVER_X_FRAME_OPTIONS")


@dataclass(frozen=True)
class HttpAnswer:
    """What a GET through the public host gave: a status and the start of the body, or an error."""

    status: int | None
    body: str = ""
    error: str | None = None


Fetch = Callable[[str], HttpAnswer]
Resolve = Callable[[str, int], list[str]]


def check(name: str, ok: bool, detail: str, fix: str = "") -> Check:
    return Check(name, NEEDED_BY, ok, detail, "" if ok else fix)


def skipped(name: str, reason: str) -> Check:
    return Check(name, NEEDED_BY, True, reason, "", skipped=True)


def redeploy(settings: Settings) -> str:
    return f"run `invoke deploy` (namespace {settings.platform.namespace}) so the cluster follows the settings"


# ------------------------------------------------------------------------------------------- live objects


def read_object(dyn: Any, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """A live object as a dict; None when it does not exist."""
    try:
        found = dyn.resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise api_error(exc, "get", ObjectRef(api_group(api_version), kind, namespace, name)) from exc
    result: dict[str, Any] = found.to_dict()
    return result


def rendered(settings: Settings, kind: str, name: str) -> dict[str, Any]:
    """The object a deploy with these settings applies (the MLflow image does not matter to these checks)."""
    from mlopskit.kube.render import render_manifests

    for obj in render_manifests(settings, mlflow_image="mlopskit/mlflow:doctor"):
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise LookupError(f"{kind} {name} is not rendered")


def container_env(deployment: dict[str, Any]) -> dict[str, str | None]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    container = next((c for c in containers if c["name"] == "mlflow"), containers[0])
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def check_ingress(settings: Settings, dyn: Any) -> Check:
    """The live Ingress routes the host to MLflow with the TLS Secret and annotations the settings give."""
    namespace = settings.platform.namespace
    name = f"Ingress {namespace}/{MLFLOW_SERVICE}"
    live = read_object(dyn, "networking.k8s.io/v1", "Ingress", MLFLOW_SERVICE, namespace)
    if live is None:
        return check(name, False, "not found", redeploy(settings))
    wanted = rendered(settings, "Ingress", MLFLOW_SERVICE)
    differences = []
    for label, path in (
        ("host", ("spec", "rules", 0, "host")),
        ("class", ("spec", "ingressClassName")),
        ("TLS", ("spec", "tls")),
    ):
        have, want = _at(live, path), _at(wanted, path)
        if have != want:
            differences.append(f"{label} {have!r}, settings say {want!r}")
    live_annotations = (live.get("metadata") or {}).get("annotations") or {}
    for key, value in public_host.ingress_annotations(settings.platform.ingress).items():
        if live_annotations.get(key) != value:
            differences.append(f"annotation {key}={live_annotations.get(key)!r}, settings say {value!r}")
    if differences:
        return check(name, False, "; ".join(differences), redeploy(settings))
    tls = public_host.tls_secret(settings.platform.ingress)
    return check(name, True, f"host {settings.platform.ingress.host}, " + (f"TLS from {tls}" if tls else "plain HTTP"))


def _at(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def check_mlflow_security(settings: Settings, dyn: Any) -> list[Check]:
    """The live MLflow Deployment allows the host, and its CORS origins and frame options follow the settings."""
    namespace = settings.platform.namespace
    host = settings.platform.ingress.host
    live = read_object(dyn, "apps/v1", "Deployment", MLFLOW_SERVICE, namespace)
    if live is None:
        return [check(f"Deployment {namespace}/{MLFLOW_SERVICE}", False, "not found", redeploy(settings))]
    env = container_env(live)
    checks = []
    if host:
        allowed = [h.strip() for h in (env.get("MLFLOW_ALLOWED_HOSTS") or "").split(",") if h.strip()]
        accepted = host_allowed(allowed, host)
        checks.append(
            check(
                f"MLflow allows Host {host}",
                accepted,
                "in MLFLOW_ALLOWED_HOSTS of the live Deployment"
                if accepted
                else f"the live MLFLOW_ALLOWED_HOSTS is {','.join(allowed) or '(unset)'}: MLflow answers 403",
                redeploy(settings),
            )
        )
    wanted = container_env(rendered(settings, "Deployment", MLFLOW_SERVICE))
    differing = [
        f"{key}={env.get(key)!r}, settings say {wanted.get(key)!r}"
        for key in SECURITY_ENV[1:]
        if env.get(key) != wanted.get(key)
    ]
    origins = wanted.get("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS") or "(MLflow's default: localhost only)"
    checks.append(
        check(
            "MLflow's CORS origins and X-Frame-Options",
            not differing,
            "; ".join(differing) or f"origins {origins}; X-Frame-Options {wanted.get('MLFLOW_SERVER_X_FRAME_OPTIONS')}",
            redeploy(settings),
        )
    )
    return checks


def host_allowed(allowed: list[str], host: str) -> bool:
    """MLflow's own rule (security_utils.is_allowed_host_header): exact, or fnmatch for entries with '*'."""
    return "*" in allowed or any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed)


# -------------------------------------------------------------------------------------------- certificate


def check_tls_secret(settings: Settings, dyn: Any, now: datetime.datetime | None = None) -> list[Check]:
    """The TLS Secret exists, holds a certificate for the host, and that certificate lasts CERT_MIN_DAYS more days."""
    ingress = settings.platform.ingress
    secret_name = public_host.tls_secret(ingress)
    if secret_name is None or ingress.host is None:
        return [skipped("TLS certificate", "plain HTTP: no TLS Secret in the settings")]
    namespace = settings.platform.namespace
    name = f"TLS Secret {namespace}/{secret_name}"
    renew = _renew_fix(settings, secret_name)
    live = read_object(dyn, "v1", "Secret", secret_name, namespace)
    if live is None:
        return [check(name, False, "not found", renew)]
    data = live.get("data") or {}
    if live.get("type") != "kubernetes.io/tls" or "tls.crt" not in data:
        return [check(name, False, f"type {live.get('type')!r} without tls.crt: not a TLS Secret", renew)]
    try:
        certificate = leaf_certificate(base64.b64decode(data["tls.crt"]))
    except ValueError as exc:
        return [check(name, False, f"tls.crt is not a PEM certificate ({exc})", renew)]
    names = certificate_names(certificate)
    covers = any(name_matches(pattern, ingress.host) for pattern in names)
    first = check(
        name,
        covers,
        f"certificate for {', '.join(names) or '(no DNS names)'}",
        f"the certificate does not name {ingress.host}; {renew}",
    )
    expires = certificate.not_valid_after_utc
    left = expires - (now or datetime.datetime.now(datetime.UTC))
    days = left.total_seconds() / 86400
    lasting = days >= CERT_MIN_DAYS
    detail = f"expires {expires:%Y-%m-%d %H:%M} UTC, in {days:.0f} days" if days > 0 else f"expired {expires:%Y-%m-%d}"
    second = check(f"TLS certificate not expiring within {CERT_MIN_DAYS} days", lasting, detail, renew)
    return [first, second]


def _renew_fix(settings: Settings, secret_name: str) -> str:
    ingress = settings.platform.ingress
    namespace = settings.platform.namespace
    if ingress.cert_manager_issuer:
        return (
            f"cert-manager writes it (ClusterIssuer {ingress.cert_manager_issuer}, renewed 30 days before expiry by "
            f"default): see `kubectl -n {namespace} describe certificate {secret_name}` and the issuer's status"
        )
    return (
        f"put a current certificate for {ingress.host} in it: kubectl -n {namespace} create secret tls {secret_name} "
        "--cert=fullchain.pem --key=privkey.pem --dry-run=client -o yaml | kubectl apply -f -"
    )


def leaf_certificate(pem: bytes) -> Any:
    """The first certificate of a PEM chain (cryptography's x509.Certificate); ValueError when there is none."""
    from cryptography import x509

    certificates = x509.load_pem_x509_certificates(pem)
    if not certificates:
        raise ValueError("no certificate")
    return certificates[0]


def certificate_names(certificate: Any) -> list[str]:
    """The DNS names a certificate is valid for: its subjectAltName, else its common name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(n) for n in extension.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(pattern: str, host: str) -> bool:
    """TLS name matching (RFC 6125): exact, or '*.' standing for exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and not host.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return False


# --------------------------------------------------------------------------------------- through the host


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for host (what a user's browser would connect to)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer to report (its status), not a place to go


def http_get(url: str) -> HttpAnswer:
    """GET without credentials or redirects; TLS verified against this machine's trust store, as its browsers
    and tools do (OpenSSL's default paths: the system's CA certificates, or SSL_CERT_FILE / SSL_CERT_DIR)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    https = urllib.request.HTTPSHandler(context=ssl.create_default_context())
    opener = urllib.request.build_opener(_NoRedirects, https)
    try:
        with opener.open(urllib.request.Request(url), timeout=HTTP_TIMEOUT) as response:  # noqa: S310 - checked
            return HttpAnswer(int(response.status), response.read(200).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read(200).decode(errors="replace"))
    except urllib.error.URLError as exc:
        return HttpAnswer(None, error=_reason(exc.reason))
    except OSError as exc:  # a reset or a timeout while reading
        return HttpAnswer(None, error=_reason(exc))


def _reason(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed ({reason.verify_message})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    text = str(reason).strip()
    return text.splitlines()[0][:200] if text else type(reason).__name__


def check_reachable(settings: Settings, resolve: Resolve = resolve_host, fetch: Fetch = http_get) -> list[Check]:
    """GET /health at the public URL as a user's machine would, then whether MLflow accepts the Host header."""
    ingress = settings.platform.ingress
    url = public_host.public_url(settings)
    host = ingress.host or ""
    name = f"{url or host} reachable through the ingress"
    if url is None:
        return [skipped(name, f"wildcard host {host}: no single name to reach; check one of its names by hand")]
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        return [
            check(
                name,
                False,
                f"{host} does not resolve from this machine ({exc.strerror or exc})",
                f"create a DNS record (A/AAAA) for {host} pointing at the ingress controller's address "
                "(K3s: `kubectl -n kube-system get service traefik`, its EXTERNAL-IP)",
            )
        ]
    at = f"{host} -> {', '.join(addresses)}"
    health = fetch(url + "health")
    if health.error is not None or health.status != 200:
        problem = health.error or f"HTTP {health.status}"
        return [check(name, False, f"{at}: GET /health: {problem}", _reach_fix(settings, health, addresses, port))]
    checks = [check(name, True, f"{at}: GET /health: 200")]
    answer = fetch(url + "api/2.0/mlflow/experiments/search?max_results=1")
    rejected = answer.status == 403 and INVALID_HOST_MESSAGE in answer.body
    accepted = answer.status in (200, 401)
    checks.append(
        check(
            f"MLflow answers for Host {host} through the ingress",
            accepted,
            f"an API call without a login: HTTP {answer.status}"
            + (" (Invalid Host header)" if rejected else "")
            + (f" {answer.error}" if answer.error else ""),
            redeploy(settings) if rejected else "see the MLflow pods' logs: kubectl logs deployment/mlflow",
        )
    )
    return checks


def _reach_fix(settings: Settings, answer: HttpAnswer, addresses: list[str], port: int) -> str:
    host = settings.platform.ingress.host
    if answer.error and answer.error.startswith("TLS"):
        return (
            f"the ingress's certificate for {host} is not trusted here: use a certificate from a CA users trust "
            "(or cert-manager), or add your private CA to this machine's trust store (or SSL_CERT_FILE)"
        )
    if answer.error:
        return (
            f"nothing answers at {', '.join(addresses)} port {port}: is the ingress controller running "
            f"(class {settings.platform.ingress.class_name}) and does {host}'s DNS record point at it?"
        )
    if answer.status == 404:
        return f"the ingress controller has no route for {host}: check `kubectl get ingress -A` and the class"
    return f"MLflow's pods are not ready behind the ingress: kubectl -n {settings.platform.namespace} get pods"


# ------------------------------------------------------------------------------------------------- runner


def run_cluster_checks(
    settings: Settings, dyn: Any, resolve: Resolve = resolve_host, fetch: Fetch = http_get
) -> list[Check]:
    """Every check of the deployed platform's public host, in order; a disabled ingress checks MLflow alone."""
    checks: list[Check] = []
    if not settings.platform.ingress.enabled:
        checks.append(skipped("Ingress", "off in the settings (platform.ingress.enabled): no public host to check"))
        checks += check_mlflow_security(settings, dyn)
        return checks
    checks.append(check_ingress(settings, dyn))
    checks += check_mlflow_security(settings, dyn)
    checks += check_tls_secret(settings, dyn)
    checks += check_reachable(settings, resolve, fetch)
    return checks
