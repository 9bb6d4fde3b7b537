"""Database URLs as the MLflow image needs them: SQLAlchemy URLs for psycopg 3, with credentials escaped.

The image has one database driver, psycopg 3 (`postgresql+psycopg://`). A user's DSN written for another
libpq-based driver (psycopg2, the `postgres://` alias) means the same connection, so it is translated and
the command says so; a DSN for a driver or database the image cannot run is refused when settings load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from mlopskit.settings import Settings

IMAGE_SCHEME = "postgresql+psycopg"
EXAMPLE = "postgresql+psycopg://user:password@host:5432/mlflow"
# Schemes whose URLs psycopg 3 reads the same way: libpq's host, port, database and query parameters.
LIBPQ_SCHEMES = frozenset(
    {
        "postgresql",
        "postgres",
        IMAGE_SCHEME,
        "postgresql+psycopg2",
        "postgresql+psycopg2cffi",
        "postgres+psycopg",
        "postgres+psycopg2",
    }
)
ESCAPING = (
    "a user name or password in a URL must be percent-escaped: '@' as %40, ':' as %3A, '/' as %2F, "
    "'#' as %23, '?' as %3F, '%' as %25 (python3 -c 'import sys, urllib.parse; "
    "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD')"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class CheckedUrl:
    """A user's DSN as the image runs it, and what was changed, if anything."""

    url: str
    translated_from: str | None = None  # the scheme the user wrote, when it was not the image's


def postgres_url(user: str, password: str, host: str, port: int, database: str) -> str:
    """A psycopg 3 URL with user, password and database escaped, so any character survives."""
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"{IMAGE_SCHEME}://{credentials}@{host}:{port}/{quote(database, safe='')}"


def check_dsn(dsn: str) -> CheckedUrl:
    """The DSN for psycopg 3, or ValueError saying what is wrong (never quoting the DSN: it holds a password)."""
    scheme, sep, _ = dsn.partition("://")
    if not sep:
        raise ValueError(f"must be a URL such as {EXAMPLE}")
    scheme = scheme.lower()
    if scheme not in LIBPQ_SCHEMES:
        dialect, _, driver = scheme.partition("+")
        if dialect in {"postgresql", "postgres"}:
            raise ValueError(
                f"uses the driver {driver!r}, which the MLflow image does not have (it has psycopg 3 only); "
                f"write the URL for psycopg 3: {IMAGE_SCHEME}://..., with libpq query parameters such as sslmode"
            )
        raise ValueError(
            f"is a {dialect!r} URL, but the MLflow image runs on PostgreSQL only (psycopg 3); "
            f"give a PostgreSQL URL such as {EXAMPLE}"
        )
    parts = urlsplit(dsn)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if parts.fragment or "@" in userinfo or (at and _BAD_PERCENT.search(userinfo)):
        raise ValueError(f"is not a valid URL: {ESCAPING}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"has a port that is not a number; if the password contains ':' or '/', {ESCAPING}") from None
    database = parts.path.removeprefix("/")
    if not database or "/" in database or "@" in database:
        raise ValueError(f"must name one database after the host, as in {EXAMPLE}; {ESCAPING}")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"must name a host, as in {EXAMPLE}")
    url = urlunsplit(parts._replace(scheme=IMAGE_SCHEME))
    return CheckedUrl(url, None if scheme in {"postgresql", IMAGE_SCHEME} else scheme)


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database (MLflow's auth data lives in its own)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(database, safe="")))


def database_identity(url: str) -> tuple[str, int, str]:
    """(host, port, database) of a PostgreSQL URL, as libpq resolves them: the host lower-cased (or the
    `host=` query parameter), port 5432 unless given, the database name unescaped."""
    parts = urlsplit(url)
    query_host = next((value for key, value in parse_qsl(parts.query) if key == "host"), "")
    host = (parts.hostname or query_host).lower()
    return host, parts.port or 5432, unquote(parts.path.removeprefix("/"))


def same_database(first: str, second: str) -> bool:
    """True when two PostgreSQL URLs name the same database on the same server (credentials aside)."""
    return database_identity(first) == database_identity(second)


def notes(settings: Settings) -> list[str]:
    """What the commands should say about translated DSNs: the key, its source and the translation."""
    from mlopskit.settings import get_path

    found = []
    for path in ("platform.postgres.dsn", "platform.postgres.auth_dsn"):
        value = get_path(settings, path)
        if value is None:
            continue
        checked = check_dsn(value.get_secret_value())
        if checked.translated_from:
            found.append(
                f"{settings.describe(path)}: {checked.translated_from}:// is run as {IMAGE_SCHEME}:// "
                "(the MLflow image has psycopg 3 only; the rest of the URL is unchanged); "
                f"write {IMAGE_SCHEME}:// to silence this"
            )
    return found
