"""What the MLflow image cannot run is refused when settings load, or translated to psycopg 3 and said."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlopskit import credentials, database_url
from mlopskit.errors import SettingsError
from mlopskit.settings import load_settings

SECRET = "s3cret-pw"


def external(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"POSTGRES_MODE": "external", **env}


@pytest.mark.parametrize(
    "scheme",
    [
        "postgresql+psycopg2",
        "postgres",
        "postgresql+psycopg2cffi",
        "POSTGRESQL+PSYCOPG2",
        "postgresql",
        "postgresql+psycopg",
    ],
)
def test_libpq_urls_run_on_psycopg3_with_the_rest_unchanged(scheme: str) -> None:
    checked = database_url.check_dsn(f"{scheme}://u:{SECRET}@db.example.com:6432/mlflow?sslmode=require")

    assert checked.url == f"postgresql+psycopg://u:{SECRET}@db.example.com:6432/mlflow?sslmode=require"


def test_the_psycopg2_form_of_mlflow_guides_is_translated_and_the_command_says_so(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, external(tmp_path, POSTGRES_DSN=f"postgresql+psycopg2://u:{SECRET}@db/mlflow"))
    tracking, auth = credentials.database_uris(settings, "unused")
    [note] = database_url.notes(settings)

    assert (tracking, auth) == (
        f"postgresql+psycopg://u:{SECRET}@db/mlflow",
        f"postgresql+psycopg://u:{SECRET}@db/mlflow_auth",
    )
    assert note.startswith(
        "platform.postgres.dsn (POSTGRES_DSN) [from environment $POSTGRES_DSN]: postgresql+psycopg2://"
    )
    assert SECRET not in note


def test_a_url_for_the_image_driver_needs_no_note(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, external(tmp_path, POSTGRES_DSN=f"postgresql+psycopg://u:{SECRET}@db/mlflow"))

    assert database_url.notes(settings) == []


@pytest.mark.parametrize(
    ("key", "dsn", "message"),
    [
        (
            "POSTGRES_DSN",
            "postgresql+pg8000://u:pw@db/mlflow",
            "uses the driver 'pg8000', which the MLflow image does not have",
        ),
        ("POSTGRES_DSN", "postgresql+asyncpg://u:pw@db/mlflow", "uses the driver 'asyncpg'"),
        (
            "POSTGRES_DSN",
            "mysql+pymysql://u:pw@db/mlflow",
            "is a 'mysql' URL, but the MLflow image runs on PostgreSQL only",
        ),
        ("POSTGRES_DSN", "sqlite:///mlflow.db", "is a 'sqlite' URL"),
        ("POSTGRES_AUTH_DSN", "mssql+pyodbc://u:pw@db/auth", "is a 'mssql' URL"),
        ("POSTGRES_DSN", "db.example.com:5432/mlflow", "must be a URL such as postgresql+psycopg://"),
        ("POSTGRES_DSN", "postgresql://u:p@ss@db/mlflow", "must be percent-escaped"),
        ("POSTGRES_DSN", "postgresql://u:p#ss@db/mlflow", "must be percent-escaped"),
        ("POSTGRES_DSN", "postgresql://u:100%@db/mlflow", "must be percent-escaped"),
        ("POSTGRES_DSN", "postgresql://u:a:b/c@db/mlflow", "port that is not a number"),
        ("POSTGRES_DSN", "postgresql://u:pw@db:5432", "must name one database after the host"),
    ],
)
def test_a_dsn_the_image_cannot_run_is_refused_naming_key_and_source(
    tmp_path: Path, key: str, dsn: str, message: str
) -> None:
    env = external(tmp_path, POSTGRES_DSN="postgresql+psycopg://u:pw@db/mlflow") | {key: dsn}
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path, env)

    [problem] = caught.value.problems
    assert problem.startswith(
        f"platform.postgres.{key.removeprefix('POSTGRES_').lower()} ({key}) [from environment ${key}]"
    )
    assert message in problem
    assert dsn not in problem, "a DSN holds a password and is never printed"


def test_a_refused_dsn_in_env_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("POSTGRES_MODE=external\nPOSTGRES_DSN=mysql://u:pw@db/mlflow\n")

    expected = r"platform.postgres.dsn \(POSTGRES_DSN\) \[from .env:2\]: is a 'mysql' URL"
    with pytest.raises(SettingsError, match=expected):
        load_settings(tmp_path, {})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        # the same database through another spelling of the same server
        ({"POSTGRES_AUTH_DSN": "postgresql://other:pw@DB.example.com/mlflow"}, "POSTGRES_AUTH_DSN"),
        ({"POSTGRES_AUTH_DSN": "postgresql+psycopg://u:pw@db.example.com:5432/mlflow"}, "POSTGRES_AUTH_DSN"),
        # the derived auth database (auth_db on POSTGRES_DSN's server) is the tracking database
        ({"POSTGRES_DSN": "postgresql+psycopg://u:pw@db.example.com/mlflow_auth"}, "auth_db"),
    ],
)
def test_an_auth_database_that_is_the_tracking_database_is_refused(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    """The image's migrate puts a trigger on every table of the auth database; the tracking tables must not
    be among them."""
    base = external(tmp_path, POSTGRES_DSN="postgresql+psycopg://u:pw@db.example.com/mlflow")
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path, base | env)

    [problem] = caught.value.problems
    field = "auth_dsn (POSTGRES_AUTH_DSN) [from environment $POSTGRES_AUTH_DSN]" if key != "auth_db" else "auth_db"
    assert problem.startswith(f"platform.postgres.{field}"), problem
    assert "names the tracking database of POSTGRES_DSN (database" in problem
    assert "in a database of its own" in problem and "pw" not in problem


@pytest.mark.parametrize(
    "auth",
    [
        "postgresql+psycopg://u:pw@db.example.com/mlflow_auth",
        "postgresql+psycopg://u:pw@db.example.com:6432/mlflow",  # another server (a pooler's port)
        "postgresql+psycopg://u:pw@auth-db.example.com/mlflow",
    ],
)
def test_an_auth_database_of_its_own_is_accepted(tmp_path: Path, auth: str) -> None:
    env = external(tmp_path, POSTGRES_DSN="postgresql+psycopg://u:pw@db.example.com/mlflow", POSTGRES_AUTH_DSN=auth)

    assert credentials.database_uris(load_settings(tmp_path, env), "unused")[1] == auth
