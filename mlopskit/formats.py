"""The rules a value must follow where it ends up: Kubernetes names, labels and quantities, hosts, images.

Each check raises ValueError with what was expected, so pydantic validators and command-line flags
report a bad value the same way. Every pattern is matched whole (`fullmatch`): `$` in a regular
expression also matches before a final newline, and a value read from the environment may end in one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

# Kubernetes' own patterns (k8s.io/apimachinery/pkg/util/validation).
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
LABEL_VALUE_MAX = 63

# The image reference grammar of distribution/reference (what Docker and containerd accept).
_REGISTRY = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"  # noqa: E501
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(rf"(?:{_REGISTRY}/)?{_REPOSITORY}(?::{_TAG})?(?:@{_DIGEST})?")
# A registry's host[:port] as the first component of an image name (docker.io, registry.example.com:5000).
REGISTRY_HOST = _REGISTRY

# Kubernetes quantities (k8s.io/apimachinery/pkg/api/resource): a number, then a binary or decimal suffix
# or an exponent.
_QUANTITY = re.compile(r"(?P<number>\+?(\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?\d+)?")
_SUFFIX_FACTOR = {
    "": Decimal(1),
    **{suffix: Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
    **{"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3")},
    **{suffix: Decimal(1000) ** power for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), start=1)},
}


def check_dns_label(value: str) -> str:
    """A DNS-1123 label: namespaces, Service names, and anything else that must fit in one DNS label."""
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            "must be a DNS label: lowercase letters, digits and '-', 1 to 63 characters, "
            "starting and ending with a letter or digit"
        )
    return value


def check_dns_subdomain(value: str, what: str = "name") -> str:
    """A DNS-1123 subdomain: most Kubernetes object names (Secrets, StorageClasses, Nodes, IngressClasses)."""
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"must be a Kubernetes {what}: lowercase letters, digits, '-' and '.', at most 253 characters, "
            "starting and ending with a letter or digit"
        )
    return value


def check_ingress_host(value: str) -> str:
    """An Ingress rule's host: a lowercase DNS name, optionally with a leading '*.', never an IP address."""
    if _is_ip(value):
        raise ValueError("must be a DNS name, not an IP address: Kubernetes refuses IP addresses as Ingress hosts")
    name = value.removeprefix("*.")
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        hint = "; use lowercase (DNS names are case-insensitive)" if _DNS1123_SUBDOMAIN.fullmatch(name.lower()) else ""
        raise ValueError(
            "must be a lowercase DNS name such as mlflow.example.com (a leading '*.' is allowed): "
            f"letters a-z, digits, '-' and '.'{hint}"
        )
    return value


def check_label_value(value: str) -> str:
    """A label value: at most 63 characters of letters, digits, '-', '_' and '.', alphanumeric at both ends."""
    if len(value) > LABEL_VALUE_MAX or (value and not _QUALIFIED_NAME.fullmatch(value)):
        raise ValueError(
            "must be a Kubernetes label value: at most 63 characters of letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_key(value: str) -> str:
    """A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters."""
    prefix, _, name = value.rpartition("/")
    if prefix:
        check_dns_subdomain(prefix, "label prefix")
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        raise ValueError(
            "must be a Kubernetes label key such as gpu or example.com/gpu: at most 63 characters of letters, "
            "digits, '-', '_' and '.' after an optional prefix/, starting and ending with a letter or digit"
        )
    return value


def label_value(text: str) -> str | None:
    """`text` cut down to a valid label value (derived values such as image tags); None when nothing is left."""
    cut = text[:LABEL_VALUE_MAX]
    cut = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cut)
    return cut if cut and _QUALIFIED_NAME.fullmatch(cut) else None


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity such as 500m, 1Gi or 10G as a number."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError("must be a Kubernetes quantity such as 500m, 1Gi or 10Gi")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        factor = _SUFFIX_FACTOR[suffix] if suffix in _SUFFIX_FACTOR else Decimal(10) ** int(suffix[1:])
    except (InvalidOperation, ValueError):
        raise ValueError("must be a Kubernetes quantity such as 500m, 1Gi or 10Gi") from None
    return number * factor


def check_positive_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError("must be more than zero, such as 500m or 10Gi")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address (no brackets), False for a host name or anything else."""
    return _is_ip(value)


def check_host(value: str) -> str:
    """A machine's address: an IPv4 or IPv6 address, or a DNS host name."""
    if _is_ip(value):
        return value
    if value.startswith("[") and value.endswith("]") and _is_ip(value[1:-1]):
        raise ValueError("must be written without brackets: brackets belong in URLs, which mlopskit builds itself")
    if len(value) > 253 or not _HOSTNAME.fullmatch(value) or value.replace(".", "").isdigit():
        raise ValueError("must be a host name (letters, digits, '-' and '.') or an IP address")
    return value


def check_host_or_network(value: str) -> str:
    """A host, an IP address or a network in CIDR notation (who may mount an NFS export)."""
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("must be an address, a host name or a network such as 192.168.1.0/24") from None
        return value
    return check_host(value)


def check_url(value: str, schemes: Iterable[str]) -> str:
    """A URL with one of `schemes`; with a host (IPv6 in brackets) and a valid port unless it is file://."""
    allowed = tuple(schemes)
    example = "https://s3.example.com or http://[fd00::5]:8333"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"must be a URL such as {example}; IPv6 addresses go in brackets") from None
    if parts.scheme not in allowed:
        raise ValueError(f"must be a URL starting with {' or '.join(f'{s}://' for s in allowed)}, such as {example}")
    if any(char.isspace() for char in value):
        raise ValueError("must be a URL without spaces")
    if parts.scheme != "file":
        host = parts.hostname or ""
        try:
            check_host(host)
        except ValueError:
            raise ValueError(f"must be a URL with a host, such as {example}; IPv6 addresses go in brackets") from None
        if port == 0:
            raise ValueError("must be a URL with a port from 1 to 65535")
    return value


_WEB_ORIGIN = re.compile(
    r"https?://(\*\.)?[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?(:[0-9]{1,5})?|https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?"
)


def check_web_origin(value: str) -> str:
    """A browser origin as MLflow's --cors-allowed-origins compares it: scheme://host[:port], no path, lowercase;
    '*' inside the host is MLflow's wildcard (https://*.example.com). A lone '*' (every site) is refused."""
    if value == "*":
        raise ValueError(
            "'*' would let every web site call MLflow (without credentials); list the origins instead, "
            "such as https://app.example.com"
        )
    if not _WEB_ORIGIN.fullmatch(value):
        raise ValueError(
            f"{value!r} must be a web origin: http:// or https://, a lowercase host and an optional port, nothing "
            "after it (no path or trailing '/'), such as https://notebook.example.com or https://*.example.com"
        )
    return value


def check_image(value: str) -> str:
    """An image reference as Docker and containerd parse it: [registry/]repository[:tag][@digest]."""
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise ValueError(
            "must be an image reference such as registry.example.com/team/mlflow:3.17.2 "
            "(lowercase repository, tag of letters, digits, '_', '.' and '-')"
        )
    return value


def check_image_tag(value: str) -> str:
    if not re.fullmatch(_TAG, value):
        raise ValueError("must be an image tag: up to 128 letters, digits, '_', '.' and '-', not starting with . or -")
    return value


def check_repository(value: str) -> str:
    if not re.fullmatch(_REPOSITORY, value):
        raise ValueError("must be an image repository such as team/mlflow: lowercase letters, digits, '.', '_', '-'")
    return value


def check_registry(value: str) -> str:
    """Where images are pushed: host[:port], optionally with a path (registry.example.com:5000/team)."""
    if not re.fullmatch(rf"{_REGISTRY}(?:/{_REPOSITORY})?/?", value):
        raise ValueError("must be a registry such as registry.example.com:5000 or ghcr.io/team (no scheme)")
    return value


# PostgreSQL identifiers the platform can use unquoted in URLs, shell variables and psql: what PostgreSQL folds
# an unquoted name to, at most NAMEDATALEN-1 = 63 bytes.
_POSTGRES_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_postgres_name(value: str) -> str:
    """A PostgreSQL user or database name: lowercase letters, digits and '_', not starting with a digit,
    at most 63 characters; not pg_* (reserved for roles) nor template0/template1."""
    if not _POSTGRES_NAME.fullmatch(value):
        raise ValueError(
            "must be a PostgreSQL name of lowercase letters, digits and '_', not starting with a digit, at most "
            "63 characters, such as mlflow or mlflow_auth (PostgreSQL folds unquoted names to lowercase)"
        )
    if value.startswith("pg_") or value in ("template0", "template1"):
        raise ValueError("must not start with pg_ or be template0/template1: PostgreSQL reserves them; pick another")
    return value


def check_s3_region(value: str) -> str:
    """An S3 region name as botocore accepts it (botocore.utils.validate_region_name: a host label of letters,
    digits and '-', at most 63, not all digits). Empty is refused: AWS then builds https://s3..amazonaws.com,
    and stores that ignore the region (SeaweedFS, MinIO) take us-east-1 as well."""
    from botocore.exceptions import InvalidRegionError
    from botocore.utils import validate_region_name

    try:
        validate_region_name(value)
        valid = bool(value)
    except InvalidRegionError:
        valid = False
    if not valid:
        raise ValueError(
            "must be an S3 region name such as us-east-1 or eu-west-3 (letters, digits and '-', at most 63 "
            "characters, not starting or ending with '-'); a store that ignores regions (SeaweedFS, MinIO) "
            "takes us-east-1"
        )
    return value


def check_no_control_characters(value: str) -> str:
    """Text that ends up in files, labels and command lines holds no newline, tab or other control character."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(
            "must not contain a newline or other control character (a trailing newline often comes from "
            "`echo` or a file read into a variable)"
        )
    return value


def check_printable_ascii(value: str) -> str:
    """A secret or a user name that travels in HTTP Basic auth (latin-1 at most in requests, ASCII in
    MLflow's client), a URL or a config file: printable ASCII only (letters, digits, punctuation, space).
    The message never quotes the value."""
    if not all(32 <= ord(char) < 127 for char in value):
        raise ValueError(
            "must be printable ASCII (letters, digits, punctuation and spaces; no accented letters, other "
            "alphabets or emoji): HTTP Basic auth and the other places it goes cannot carry other characters "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return value


def check_basic_auth_user(value: str) -> str:
    """A user name sent in HTTP Basic auth: printable ASCII without ':' (which separates name and password)."""
    if not all(32 < ord(char) < 127 for char in value) or ":" in value:
        raise ValueError(
            "must be printable ASCII without spaces or ':' (HTTP Basic auth separates user name and password "
            "with ':' and carries ASCII only)"
        )
    return value


def host_port(host: str, port: int | None = None) -> str:
    """host:port for URLs and messages; an IPv6 address in brackets, as RFC 3986 requires."""
    bracketed = f"[{host}]" if _is_ip(host) and ":" in host else host
    return f"{bracketed}:{port}" if port is not None else bracketed


def url(scheme: str, host: str, port: int | None = None, path: str = "") -> str:
    """The one way mlopskit builds a URL from a host and a port: https://[fd00::10]:6443 for IPv6."""
    return f"{scheme}://{host_port(host, port)}{path}"
