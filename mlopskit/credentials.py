"""The credential Secrets of the platform and the environment contract of the MLflow container.

One place names every Secret, its keys and the environment variables they become, so the manifests,
the sealing, the local stack and the image agree. Values exist only in memory: nothing here writes
a plaintext Secret anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from mlopskit.errors import SettingsError
from mlopskit.settings import ENV_BY_PATH, ENV_FILE, Settings, get_path

# Secret names in the platform namespace.
POSTGRES_SECRET = "postgres-credentials"
S3_SECRET = "s3-credentials"
MLFLOW_SECRET = "mlflow-credentials"
# The passwords of the users in config/access.yaml, under their password_env keys.
ACCESS_SECRET = "mlflow-user-passwords"

# Environment variables the MLflow container reads (docker/mlflow/entrypoint renders the auth ini
# from them and starts the server).
ENV_BACKEND_STORE_URI = "MLFLOW_BACKEND_STORE_URI"
ENV_AUTH_DATABASE_URI = "MLFLOW_AUTH_DATABASE_URI"
ENV_ADMIN_USER = "MLFLOW_ADMIN_USER"
ENV_ADMIN_PASSWORD = "MLFLOW_ADMIN_PASSWORD"
ENV_FLASK_SECRET = "MLFLOW_FLASK_SERVER_SECRET_KEY"
ENV_AWS_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class CredentialSecret:
    """A Secret to seal: its name, and its data as plaintext strings (in memory only)."""

    name: str
    data: dict[str, str]
    description: str


def postgres_uri(user: str, password: str, host: str, port: int, database: str) -> str:
    """A SQLAlchemy URI for psycopg 3, with user and password escaped."""
    return f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


def _with_driver(dsn: str) -> str:
    """postgresql://... from a user becomes postgresql+psycopg://... (SQLAlchemy 2 + psycopg 3)."""
    if dsn.startswith("postgresql://"):
        return "postgresql+psycopg://" + dsn.removeprefix("postgresql://")
    return dsn


def _auth_dsn_from(dsn: str, auth_db: str) -> str:
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{auth_db}" + (f"?{query}" if query else "")


def database_uris(settings: Settings, host: str, port: int = 5432) -> tuple[str, str]:
    """(tracking URI, auth URI) for the internal Postgres at host:port, or from the external DSNs."""
    pg = settings.platform.postgres
    if pg.mode == "external":
        assert pg.dsn is not None  # checked by PostgresSettings
        dsn = pg.dsn.get_secret_value()
        auth = pg.auth_dsn.get_secret_value() if pg.auth_dsn else _auth_dsn_from(dsn, pg.auth_db)
        return _with_driver(dsn), _with_driver(auth)
    password = _secret(settings, "platform.postgres.password")
    return (
        postgres_uri(pg.user, password, host, port, pg.tracking_db),
        postgres_uri(pg.user, password, host, port, pg.auth_db),
    )


def _secret(settings: Settings, path: str) -> str:
    value = get_path(settings, path)
    if value is None:
        raise SettingsError([f"{path}: not set; set {ENV_BY_PATH[path]} in {ENV_FILE} (see .env.example)"])
    return str(value.get_secret_value())


def credential_secrets(settings: Settings, postgres_host: str) -> list[CredentialSecret]:
    """Every credential Secret the cluster needs, built from .env; postgres_host is the in-cluster name."""
    pg = settings.platform.postgres
    tracking, auth = database_uris(settings, postgres_host)
    postgres_data = {ENV_BACKEND_STORE_URI: tracking, ENV_AUTH_DATABASE_URI: auth}
    if pg.mode == "internal":
        postgres_data |= {
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": _secret(settings, "platform.postgres.password"),
        }
    users = {user.password_env: user.password.get_secret_value() for user in settings.access.users if user.password}
    access = [CredentialSecret(ACCESS_SECRET, users, "passwords of the MLflow users in config/access.yaml")]
    return [
        CredentialSecret(POSTGRES_SECRET, postgres_data, "PostgreSQL user, password and database URIs"),
        CredentialSecret(
            S3_SECRET,
            {
                ENV_AWS_ACCESS_KEY: _secret(settings, "platform.object_store.access_key"),
                ENV_AWS_SECRET_KEY: _secret(settings, "platform.object_store.secret_key"),
            },
            "S3 access key pair of the artifact store",
        ),
        CredentialSecret(
            MLFLOW_SECRET,
            {
                ENV_ADMIN_USER: settings.platform.mlflow.admin_user,
                ENV_ADMIN_PASSWORD: _secret(settings, "platform.mlflow.admin_password"),
                ENV_FLASK_SECRET: _secret(settings, "platform.mlflow.flask_secret_key"),
            },
            "MLflow admin login and Flask secret key",
        ),
    ] + (access if users else [])
