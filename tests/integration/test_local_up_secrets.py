"""`invoke up` with every secret made of printable ASCII punctuation: the admin logs in, artifacts round-trip.

Each secret passes through .env, the environment, URLs (the database URIs), the auth ini (configparser),
JSON written by a shell (SeaweedFS's identities) and SQL-adjacent scripts (Postgres' init); the real
images run it all. Letters and digits are added only where a rule asks for them (length, see Settings).
"""

from __future__ import annotations

import string
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mlopskit.envfile import env_line
from mlopskit.settings import S3_ACCESS_KEY_RESERVED
from tests.integration.test_local_up import Stack, free_port, project_copy, remove_project

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PUNCTUATION = string.punctuation
SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "Aa1" + PUNCTUATION,  # at least 12 characters, not a published default
    "MLFLOW_FLASK_SECRET_KEY": "Aa1" + PUNCTUATION,
    "POSTGRES_PASSWORD": PUNCTUATION,
    # S3 signatures split the access key at '/' and ','; MinIO reserves '=' (refused when settings load).
    "S3_ACCESS_KEY": "Aa1" + "".join(ch for ch in PUNCTUATION if ch not in S3_ACCESS_KEY_RESERVED),
    "S3_SECRET_KEY": PUNCTUATION,
}


def env_with(example: str, secrets: dict[str, str]) -> str:
    """.env.example with the given secrets filled in, each line as python-dotenv reads it back."""
    lines = []
    for line in example.splitlines():
        key = line.split("=", 1)[0]
        lines.append(env_line(key, secrets[key]) if key in secrets else line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = f"mlkit-pw-{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = project_copy(tmp_path_factory.mktemp("project"), project, port)
    (root / ".env").write_text(env_with((root / ".env.example").read_text(), SECRETS))
    made = Stack(root, project, port, subprocess.CompletedProcess([], 0, "", ""))
    made.first_up = made.invoke("up")
    try:
        yield made
    finally:
        made.invoke("down", "--volumes")
        remove_project(project)


def _as_admin(stack: Stack, method: str, path: str, **kwargs: Any) -> requests.Response:
    auth = ("admin", SECRETS["MLFLOW_ADMIN_PASSWORD"])
    return requests.request(method, f"{stack.url}{path}", auth=auth, timeout=30, **kwargs)


def test_up_starts_with_punctuation_in_every_secret(stack: Stack) -> None:
    assert stack.first_up.returncode == 0, stack.first_up.stdout + stack.first_up.stderr
    assert ".env was missing" not in stack.first_up.stdout


def test_the_admin_logs_in_with_the_punctuation_password(stack: Stack) -> None:
    response = _as_admin(stack, "GET", "/api/2.0/mlflow/users/get", params={"username": "admin"})

    assert response.status_code == 200, response.text
    assert response.json()["user"]["is_admin"] is True


def test_an_artifact_round_trips_through_s3_with_punctuation_keys(stack: Stack) -> None:
    experiment = _as_admin(stack, "POST", "/api/2.0/mlflow/experiments/create", json={"name": "punctuation"})
    assert experiment.status_code == 200, experiment.text
    experiment_id = experiment.json()["experiment_id"]
    run = _as_admin(stack, "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id})
    run_id = run.json()["run"]["info"]["run_id"]
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/p.txt"

    stored = _as_admin(stack, "PUT", path, data=PUNCTUATION.encode())
    assert stored.status_code == 200, stored.text
    assert _as_admin(stack, "GET", path).content == PUNCTUATION.encode()
