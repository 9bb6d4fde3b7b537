"""Basic-auth is enforced: anonymous and wrong credentials get 401; other users see nothing by default."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator

import pytest
import requests

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


@pytest.fixture
def other_user(stack: Stack, admin: requests.Session) -> Iterator[requests.Session]:
    """A second user, created by the admin through the auth API, with no permission granted."""
    username = f"user-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    response = admin.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
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


def test_admin_rights_granted_and_withdrawn_count_from_the_next_request_on_every_worker(
    stack: Stack, admin: requests.Session, other_user: requests.Session, admin_experiment: str
) -> None:
    """The image's app reads a user's row once per request (not once per check): a change still counts from
    the next request, whichever worker answers it (new connections spread over the workers)."""
    assert isinstance(other_user.auth, tuple)
    username, password = other_user.auth
    update = f"{stack.tracking_uri}/api/2.0/mlflow/users/update-admin"

    def reads() -> list[int]:
        url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get"
        params = {"experiment_id": admin_experiment}
        return [
            requests.get(url, params=params, auth=(username, password), timeout=TIMEOUT).status_code for _ in range(6)
        ]

    assert set(reads()) == {403}  # every worker has authenticated the user as a plain user
    granted = admin.patch(update, json={"username": username, "is_admin": True}, timeout=TIMEOUT)
    assert granted.status_code == 200, granted.text
    assert set(reads()) == {200}

    withdrawn = admin.patch(update, json={"username": username, "is_admin": False}, timeout=TIMEOUT)
    assert withdrawn.status_code == 200, withdrawn.text
    assert set(reads()) == {403}


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
