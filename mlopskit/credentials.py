"""The credential Secrets of the platform and the environment contract of the MLflow container.

One place names every Secret, its keys and the environment variables they become, so the manifests,
the sealing, the local stack and the image agree. Values exist only in memory: nothing here writes
a plaintext Secret anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlopskit import database_url
from mlopskit.settings import Settings

# Secret names in the platform namespace.
POSTGRES_SECRET = "postgres-credentials"
S3_SECRET = "s3-credentials"
MLFLOW_SECRET = "mlflow-credentials"
# The passwords of the users in config/access.yaml, under their password_env keys.
ACCESS_SECRET = "mlflow-user-passwords"
# The key pair of the scheduled backup's destination (platform.backup), when it is enabled.
BACKUP_S3_SECRET = "backup-s3-credentials"

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
    return database_url.postgres_url(user, password, host, port, database)


def database_uris(settings: Settings, host: str, port: int = 5432) -> tuple[str, str]:
    """(tracking URI, auth URI) for the internal Postgres at host:port, or from the external DSNs."""
    pg = settings.platform.postgres
    if pg.mode == "external":
        assert pg.dsn is not None  # checked by PostgresSettings
        # Checked when settings load; here translated to the image's driver (psycopg 3).
        tracking = database_url.check_dsn(pg.dsn.get_secret_value()).url
        if pg.auth_dsn is not None:
            return tracking, database_url.check_dsn(pg.auth_dsn.get_secret_value()).url
        return tracking, database_url.with_database(tracking, pg.auth_db)
    password = settings.secrets.postgres_password
    return (
        postgres_uri(pg.user, password, host, port, pg.tracking_db),
        postgres_uri(pg.user, password, host, port, pg.auth_db),
    )


def credential_secrets(settings: Settings, postgres_host: str) -> list[CredentialSecret]:
    """Every credential Secret the cluster needs, built from .env; postgres_host is the in-cluster name."""
    pg = settings.platform.postgres
    tracking, auth = database_uris(settings, postgres_host)
    postgres_data = {ENV_BACKEND_STORE_URI: tracking, ENV_AUTH_DATABASE_URI: auth}
    if pg.mode == "internal":
        postgres_data |= {
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": settings.secrets.postgres_password,
        }
    users = {user.password_env: user.password.get_secret_value() for user in settings.access.users if user.password}
    access = [CredentialSecret(ACCESS_SECRET, users, "passwords of the MLflow users in config/access.yaml")]
    return (
        [
            CredentialSecret(POSTGRES_SECRET, postgres_data, "PostgreSQL user, password and database URIs"),
            CredentialSecret(
                S3_SECRET,
                {
                    ENV_AWS_ACCESS_KEY: settings.secrets.s3_access_key,
                    ENV_AWS_SECRET_KEY: settings.secrets.s3_secret_key,
                },
                "S3 access key pair of the artifact store",
            ),
            CredentialSecret(
                MLFLOW_SECRET,
                {
                    ENV_ADMIN_USER: settings.platform.mlflow.admin_user,
                    ENV_ADMIN_PASSWORD: settings.secrets.admin_password,
                    ENV_FLASK_SECRET: settings.secrets.flask_secret_key,
                },
                "MLflow admin login and Flask secret key",
            ),
        ]
        + (access if users else [])
        + _scheduled_backup(settings)
    )


def _scheduled_backup(settings: Settings) -> list[CredentialSecret]:
    if not settings.platform.backup.enabled:
        return []
    data = {
        ENV_AWS_ACCESS_KEY: settings.secrets.backup_s3_access_key,
        ENV_AWS_SECRET_KEY: settings.secrets.backup_s3_secret_key,
    }
    return [CredentialSecret(BACKUP_S3_SECRET, data, "S3 access key pair of the scheduled backups' destination")]
