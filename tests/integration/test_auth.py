"""Basic-auth is enforced: anonymous and wrong credentials get 401; other users see nothing by default."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping

import pytest
import requests

from mlopskit.backup.postgres import query_command
from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

TIMEOUT = 30


@pytest.fixture
def admin(stack: Stack) -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = (stack.admin_user, stack.admin_password)
    yield session
    session.close()


@pytest.fixture
def admin_experiment(stack: Stack, admin: requests.Session) -> str:
    """An experiment the admin creates."""
    response = admin.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/create",
        json={"name": f"admin-only-{uuid.uuid4().hex[:8]}"},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return str(response.json()["experiment_id"])


def _as_admin(stack: Stack, admin: requests.Session, method: str, path: str, body: Mapping[str, object]) -> None:
    """One call of MLflow's REST API as the admin, which must succeed."""
    response = admin.request(method, f"{stack.tracking_uri}{path}", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


@pytest.fixture
def other_user(stack: Stack, admin: requests.Session) -> Iterator[requests.Session]:
    """A second user, created by the admin through the auth API, with no permission granted."""
    username = f"user-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    _as_admin(stack, admin, "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
    session = requests.Session()
    session.auth = (username, password)
    yield session
    session.close()


def _search(stack: Stack, session: requests.Session | None = None) -> requests.Response:
    url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search"
    return (session or requests).get(url, params={"max_results": 1}, timeout=TIMEOUT)


def _get_experiment(stack: Stack, session: requests.Session, experiment_id: str) -> requests.Response:
    return session.get(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment_id},
        timeout=TIMEOUT,
    )


def test_request_without_credentials_gets_401(stack: Stack) -> None:
    assert _search(stack).status_code == 401


def test_request_with_wrong_password_gets_401(stack: Stack) -> None:
    session = requests.Session()
    session.auth = (stack.admin_user, stack.admin_password + "-wrong")
    assert _search(stack, session).status_code == 401


def test_admin_reads_its_experiment(stack: Stack, admin: requests.Session, admin_experiment: str) -> None:
    response = _get_experiment(stack, admin, admin_experiment)
    assert response.status_code == 200
    assert response.json()["experiment"]["experiment_id"] == admin_experiment


def test_other_user_cannot_read_the_admins_experiment(
    stack: Stack, other_user: requests.Session, admin_experiment: str
) -> None:
    response = _get_experiment(stack, other_user, admin_experiment)
    assert response.status_code == 403


def test_other_user_cannot_rename_the_admins_experiment(
    stack: Stack, other_user: requests.Session, admin: requests.Session, admin_experiment: str
) -> None:
    response = other_user.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/update",
        json={"experiment_id": admin_experiment, "new_name": f"taken-{uuid.uuid4().hex[:6]}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 403
    unchanged = _get_experiment(stack, admin, admin_experiment)
    assert unchanged.json()["experiment"]["name"].startswith("admin-only-")


def test_other_user_cannot_log_to_the_admins_experiment(
    stack: Stack, other_user: requests.Session, admin_experiment: str
) -> None:
    response = other_user.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/runs/create",
        json={"experiment_id": admin_experiment},
        timeout=TIMEOUT,
    )
    assert response.status_code == 403


@pytest.fixture
def admin_run(stack: Stack, admin: requests.Session, admin_experiment: str) -> str:
    response = admin.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/runs/create", json={"experiment_id": admin_experiment}, timeout=TIMEOUT
    )
    response.raise_for_status()
    return str(response.json()["run"]["info"]["run_id"])


def _grant(stack: Stack, admin: requests.Session, user: requests.Session, experiment: str, permission: str) -> None:
    """Give user `permission` on the experiment, replacing a grant it has (MLflow 3's per-user grant API)."""
    assert isinstance(user.auth, tuple)
    target = {"username": user.auth[0], "resource_type": "experiment", "resource_id": experiment}
    revoked = admin.post(f"{stack.tracking_uri}/api/3.0/mlflow/users/permissions/revoke", json=target, timeout=TIMEOUT)
    assert revoked.status_code in {200, 404}, revoked.text
    response = admin.post(
        f"{stack.tracking_uri}/api/3.0/mlflow/users/permissions/grant",
        json={**target, "permission": permission},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text


def _run_calls(stack: Stack, user: requests.Session, run_id: str) -> tuple[int, int]:
    """(status of get_run, status of log_metric) on run_id as user."""
    read = user.get(f"{stack.tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=TIMEOUT)
    write = user.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0, "step": 0},
        timeout=TIMEOUT,
    )
    return read.status_code, write.status_code


def test_run_scoped_calls_of_a_user_follow_the_grant_on_the_runs_experiment(
    stack: Stack, admin: requests.Session, other_user: requests.Session, admin_experiment: str, admin_run: str
) -> None:
    """The permission check of a run-scoped call reads only the run's experiment (the image's app): the same
    decisions as MLflow's, for each permission, and a run that does not exist is denied, not reported missing."""
    assert _run_calls(stack, other_user, admin_run) == (403, 403)
    assert _run_calls(stack, other_user, "0" * 32) == (403, 403)

    _grant(stack, admin, other_user, admin_experiment, "READ")
    assert _run_calls(stack, other_user, admin_run) == (200, 403)

    _grant(stack, admin, other_user, admin_experiment, "EDIT")
    assert _run_calls(stack, other_user, admin_run) == (200, 200)

    delete_url = f"{stack.tracking_uri}/api/2.0/mlflow/runs/delete"
    deleted = admin.post(delete_url, json={"run_id": admin_run}, timeout=TIMEOUT)
    assert deleted.status_code == 200, deleted.text
    assert _run_calls(stack, other_user, admin_run)[0] == 200  # a deleted run is still found, as MLflow finds it


LOOKUP_IN_IMAGE = """
import json, os, sys
from mlflow.server.handlers import _get_tracking_store
from mlflow.exceptions import MlflowException
import mlopskit_mlflow_app as app

store = _get_tracking_store(os.environ["MLFLOW_BACKEND_STORE_URI"], "/tmp")
full = []
class Counting:
    ManagedSessionMaker = store.ManagedSessionMaker
    def get_run(self, run_id):
        full.append(run_id)
        return store.get_run(run_id)
light = app.RunLookupsByExperiment(Counting())
run_id = sys.argv[1]
try:
    light.get_run("0" * 32)
    missing = None
except MlflowException as exc:
    missing = exc.error_code
print(json.dumps({
    "light": light.get_run(run_id).info.experiment_id,
    "full": store.get_run(run_id).info.experiment_id,
    "full_loads": len(full),
    "missing": missing,
}))
"""


def test_the_image_reads_a_runs_experiment_from_postgresql_as_get_run_does(stack: Stack, admin_run: str) -> None:
    """In the real image, against the stack's PostgreSQL: the experiment id the permission check reads equals
    `get_run(...).info.experiment_id`, without loading the run, and an unknown run raises get_run's error."""
    container = stack.mlflow.get_wrapped_container()
    code, out = container.exec_run(["python3", "-c", LOOKUP_IN_IMAGE, admin_run])
    assert isinstance(out, bytes), out
    text = out.decode()
    assert code == 0, text
    result = json.loads(text.strip().splitlines()[-1])

    assert result["light"] == result["full"] and result["full_loads"] == 0
    assert result["missing"] == "RESOURCE_DOES_NOT_EXIST"


def _auth_sql(stack: Stack, sql: str) -> str:
    """Run sql with psql in the auth database (as the platform's PostgreSQL user); its bare output."""
    container = stack.postgres.get_wrapped_container()
    code, out = container.exec_run(query_command(stack.settings.platform.postgres.auth_db, sql))
    assert isinstance(out, bytes), out
    assert code == 0, out.decode()
    return out.decode().strip()


def _reads(stack: Stack, user: requests.Session, experiment: str, times: int = 6) -> set[int]:
    """The statuses of `times` reads of the experiment as user, each on a new connection (so the server's
    workers answer them in turn)."""
    assert isinstance(user.auth, tuple)
    url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get"
    return {
        requests.get(url, params={"experiment_id": experiment}, auth=user.auth, timeout=TIMEOUT).status_code
        for _ in range(times)
    }


def test_admin_rights_granted_and_withdrawn_count_from_the_next_request_on_every_worker(
    stack: Stack, admin: requests.Session, other_user: requests.Session, admin_experiment: str
) -> None:
    """The image's app reads a user's row once per request (not once per check): a change still counts from
    the next request, whichever worker answers it (new connections spread over the workers)."""
    assert isinstance(other_user.auth, tuple)
    username = other_user.auth[0]
    update = "/api/2.0/mlflow/users/update-admin"

    assert _reads(stack, other_user, admin_experiment) == {403}  # every worker has seen the user as a plain user
    _as_admin(stack, admin, "PATCH", update, {"username": username, "is_admin": True})
    assert _reads(stack, other_user, admin_experiment) == {200}

    _as_admin(stack, admin, "PATCH", update, {"username": username, "is_admin": False})
    assert _reads(stack, other_user, admin_experiment) == {403}


# Protected routes of each kind MLflow serves, and Authorization headers basic-auth cannot read.
PROTECTED_ROUTES = {
    "rest api": "/api/2.0/mlflow/experiments/search?max_results=1",
    "ajax api": "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
    "artifacts": "/api/2.0/mlflow-artifacts/artifacts",
    "ui": "/",
}
MALFORMED_AUTHORIZATION = {
    "bearer": b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
    "empty": b"",
    "not base64": b"Basic %%%not-base64%%%",
    "not utf-8": b"Basic " + base64.b64encode(b"admin:\xff\xfe\xfd"),
}


@pytest.mark.parametrize("route", PROTECTED_ROUTES.values(), ids=PROTECTED_ROUTES.keys())
@pytest.mark.parametrize("header", MALFORMED_AUTHORIZATION.values(), ids=MALFORMED_AUTHORIZATION.keys())
def test_unreadable_authorization_gets_401_with_a_basic_challenge(stack: Stack, route: str, header: bytes) -> None:
    response = requests.get(f"{stack.tracking_uri}{route}", headers={"Authorization": header}, timeout=TIMEOUT)

    assert response.status_code == 401, response.text[:500]
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_health_stays_public_with_a_bearer_header(stack: Stack) -> None:
    headers = {"Authorization": MALFORMED_AUTHORIZATION["bearer"]}
    assert requests.get(f"{stack.tracking_uri}/health", headers=headers, timeout=TIMEOUT).status_code == 200


# ------------------------------------------------------------- decisions from rows kept by generation


TRIGGERS = "t.tgname IN ('mlopskit_auth_changed', 'mlopskit_auth_truncated')"


def test_every_auth_table_carries_the_generation_trigger_and_the_workers_read_the_generation(
    stack: Stack, other_user: requests.Session, admin_experiment: str
) -> None:
    """`migrate` installed the trigger on every table of the auth database, so the server's workers decide
    from kept rows: their lean pool's last statement is the generation read."""
    without = _auth_sql(
        stack,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "  # noqa: S608 - constants
        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'mlopskit_auth_generation' "
        f"AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgenabled = 'O' AND {TRIGGERS}) <> 2",
    )
    tables = _auth_sql(stack, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
    assert without == "" and int(tables) > 5  # users, roles, role_permissions, user_role_assignments, ...

    assert _reads(stack, other_user, admin_experiment) == {403}
    statements = _auth_sql(
        stack,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT generation FROM mlopskit_auth_generation%'",
    )
    assert int(statements) >= 1


def test_changes_made_in_the_database_itself_count_from_the_next_request_on_every_worker(
    stack: Stack, admin: requests.Session, other_user: requests.Session, admin_experiment: str
) -> None:
    """No MLflow call tells the workers anything here: the admin flag and the grants are changed with SQL, and
    the next requests, on every worker, decide from the new rows (the triggers moved the generation)."""
    assert isinstance(other_user.auth, tuple)
    user = f"(SELECT id FROM users WHERE username = '{other_user.auth[0]}')"  # noqa: S608 - a generated name
    grant = (
        "UPDATE role_permissions SET permission = '{}' WHERE resource_type = 'experiment' "  # noqa: S608
        f"AND resource_pattern = '{admin_experiment}' "
        f"AND role_id IN (SELECT role_id FROM user_role_assignments WHERE user_id = {user})"
    )
    _grant(stack, admin, other_user, admin_experiment, "READ")
    assert _auth_sql(stack, grant.format("READ")) == "UPDATE 1"  # the grant is the one row it changes

    for _ in range(3):
        assert _reads(stack, other_user, admin_experiment) == {200}
        _auth_sql(stack, grant.format("NO_PERMISSIONS"))
        assert _reads(stack, other_user, admin_experiment) == {403}

        _auth_sql(stack, f"UPDATE users SET is_admin = true WHERE id = {user}")  # noqa: S608 - test constants
        assert _reads(stack, other_user, admin_experiment) == {200}
        _auth_sql(stack, f"UPDATE users SET is_admin = false WHERE id = {user}")  # noqa: S608 - test constants
        assert _reads(stack, other_user, admin_experiment) == {403}

        _auth_sql(stack, grant.format("READ"))


INSTALL_IN_IMAGE = """
import os, sys
import mlopskit_mlflow_app as app
try:
    app.install_generation_triggers(os.environ["MLFLOW_BACKEND_STORE_URI"])
except app.GenerationTriggersError as exc:
    print("tracking:", exc)
print(app.install_generation_triggers(os.environ["MLFLOW_AUTH_DATABASE_URI"]))
print(app.install_generation_triggers("sqlite:////tmp/auth.db"))
"""


def test_installing_the_triggers_again_covers_a_new_table_and_changes_nothing_else(stack: Stack) -> None:
    """What `migrate` runs after every upgrade: a table MLflow adds gets the trigger, the others keep theirs
    (one each); a database holding the tracking tables is refused, and an auth database that is not
    PostgreSQL is left as it is."""
    _auth_sql(stack, "CREATE TABLE mlopskit_test_added (id integer)")
    try:
        container = stack.mlflow.get_wrapped_container()
        code, out = container.exec_run(["python3", "-c", INSTALL_IN_IMAGE])
        assert isinstance(out, bytes), out
        assert code == 0, out.decode()
        assert out.decode().strip().splitlines()[-3:] == [
            "tracking: the auth database also holds MLflow's tracking tables; give the auth data a database of its own",
            "auth database generation triggers in place",
            "authorization rows are read for every request (sqlite auth database)",
        ]
        triggers = _auth_sql(stack, f"SELECT count(*), count(DISTINCT tgrelid) FROM pg_trigger t WHERE {TRIGGERS}")  # noqa: S608
        tables = int(_auth_sql(stack, "SELECT count(*) - 1 FROM pg_tables WHERE schemaname = current_schema()"))
        assert triggers == f"{2 * tables}|{tables}"  # every table but the generation's, both triggers once

        before = _auth_sql(stack, "SELECT generation FROM mlopskit_auth_generation")
        _auth_sql(stack, "INSERT INTO mlopskit_test_added VALUES (1)")
        assert _auth_sql(stack, "SELECT generation FROM mlopskit_auth_generation") != before
    finally:
        _auth_sql(stack, "DROP TABLE mlopskit_test_added")


def test_with_a_trigger_disabled_the_workers_read_afresh_and_migrate_turns_it_back_on(
    stack: Stack, other_user: requests.Session, admin_experiment: str
) -> None:
    """A change made while a trigger is disabled (`ALTER TABLE ... DISABLE TRIGGER`, a data-only restore with
    --disable-triggers) does not move the generation; the workers then read no generation and decide from
    fresh rows, so the change still counts from the next request. Installing again re-enables the trigger."""
    assert isinstance(other_user.auth, tuple)
    user = f"(SELECT id FROM users WHERE username = '{other_user.auth[0]}')"  # noqa: S608 - a generated name
    assert _reads(stack, other_user, admin_experiment) == {403}
    _auth_sql(stack, "ALTER TABLE users DISABLE TRIGGER mlopskit_auth_changed")
    try:
        before = _auth_sql(stack, "SELECT generation FROM mlopskit_auth_generation")
        _auth_sql(stack, f"UPDATE users SET is_admin = true WHERE id = {user}")  # noqa: S608 - test constants
        assert _auth_sql(stack, "SELECT generation FROM mlopskit_auth_generation") == before
        assert _reads(stack, other_user, admin_experiment) == {200}
        _auth_sql(stack, f"UPDATE users SET is_admin = false WHERE id = {user}")  # noqa: S608 - test constants
        assert _reads(stack, other_user, admin_experiment) == {403}
    finally:
        container = stack.mlflow.get_wrapped_container()
        code, out = container.exec_run(["python3", "-c", INSTALL_IN_IMAGE])
        assert code == 0, out
    enabled = _auth_sql(
        stack, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'mlopskit_auth_changed' AND tgrelid = 'users'::regclass"
    )
    assert enabled == "O"


def test_a_changed_password_is_refused_from_the_next_request_on_every_worker(
    stack: Stack, admin: requests.Session, other_user: requests.Session, admin_experiment: str
) -> None:
    """MLflow keeps a verified login per worker for auth_cache_ttl_seconds (30 s here) and forgets it only on
    the worker that made the change; the image's app keeps it under the auth database's generation, so the old
    password fails at once everywhere, and the new one works."""
    assert isinstance(other_user.auth, tuple)
    username, old_password = other_user.auth
    assert _reads(stack, other_user, admin_experiment) == {403}  # logged in (not 401) on every worker

    new_password = secrets.token_urlsafe(16)
    body = {"username": username, "password": new_password}
    _as_admin(stack, admin, "PATCH", "/api/2.0/mlflow/users/update-password", body)

    assert _reads(stack, other_user, admin_experiment) == {401}
    other_user.auth = (username, new_password)
    assert _reads(stack, other_user, admin_experiment) == {403}
    assert old_password != new_password
