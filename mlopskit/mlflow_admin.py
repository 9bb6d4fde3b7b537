"""MLflow through its REST API: health, login, and the smoke check that proves a platform works.

Plain requests against MLflow's documented endpoints, so the same check runs against a port-forward,
an ingress URL or the local stack.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

from mlopskit.errors import PlatformError

TIMEOUT = 30
RETRIES = 4


# What to run when MLflow refuses the admin's login: each rotates a changed MLFLOW_ADMIN_PASSWORD while the
# platform still holds the previous one (the MLflow container's environment, the deployed Secret).
RERUN_LOCAL = "`invoke up` makes MLflow's admin password the one in .env"
RERUN_CLUSTER = "`invoke deploy` makes MLflow's admin password the one in .env"
RERUN_ANY = "`invoke up` (local stack) or `invoke deploy` (cluster) makes MLflow's admin password the one in .env"

# Where to look when MLflow does not answer at all, by the same key.
UNREACHABLE_HINTS = {
    RERUN_LOCAL: "is the local stack running? `invoke status` shows it, `invoke up` starts it",
    RERUN_CLUSTER: "`invoke doctor --cluster` checks the deployed platform and the way to it",
    RERUN_ANY: "for the local stack, `invoke status` shows it and `invoke up` starts it; for the cluster, "
    "`invoke doctor --cluster` checks it",
}


def unreachable(url: str, exc: requests.RequestException, rerun: str = RERUN_ANY) -> PlatformError:
    """ "cannot reach MLflow": the cause in a few words (refused, timed out, TLS, name) instead of urllib3's
    retry text, and where to look next (UNREACHABLE_HINTS[rerun])."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        reason = f"the TLS handshake failed ({text.rsplit(':', 1)[-1].strip(' )(')[:120]})"
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = f"no answer within {TIMEOUT} s"
    elif "Connection refused" in text:
        reason = "connection refused: nothing listens there"
    elif "Name or service not known" in text or "Failed to resolve" in text or "NameResolutionError" in text:
        reason = "its host name does not resolve"
    elif isinstance(exc, requests.ConnectionError):
        reason = "the connection failed or was dropped"
    else:
        reason = type(exc).__name__
    return PlatformError(
        f"cannot reach MLflow at {url}: {reason}; {UNREACHABLE_HINTS.get(rerun, UNREACHABLE_HINTS[RERUN_ANY])}"
    )


# The smoke check's experiment names start with this; it deletes the experiment when done.
SMOKE_PREFIX = "mlopskit-smoke-"


@dataclass
class SmokeReport:
    """What the smoke check did, step by step, for the final summary."""

    url: str
    steps: list[str] = field(default_factory=list)


class MlflowClient:
    """A small authenticated client for the endpoints the platform checks use."""

    def __init__(
        self, url: str, user: str, password: str, *, verify: bool | str = True, rerun: str = RERUN_ANY
    ) -> None:
        """`rerun`: what to run when MLflow refuses the login (RERUN_LOCAL, RERUN_CLUSTER, RERUN_ANY)."""
        self.url = url.rstrip("/")
        self.rerun = rerun
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.session.verify = verify
        self.user = user

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request; a dropped connection is retried when repeating the request is harmless (GET, PATCH)."""
        attempts = RETRIES if method in {"GET", "PATCH"} else 1
        for attempt in range(1, attempts + 1):
            try:
                return self.session.request(method, url, timeout=TIMEOUT, **kwargs)
            except requests.ConnectionError as exc:
                # A server worker that restarts drops its connections; the next one answers.
                if attempt == attempts:
                    raise unreachable(self.url, exc, self.rerun) from None
                time.sleep(attempt)
            except requests.RequestException as exc:
                raise unreachable(self.url, exc, self.rerun) from None
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._send(method, f"{self.url}{path}", **kwargs)
        if response.status_code == 401:
            raise PlatformError(
                f"MLflow at {self.url} refused the credentials of {self.user!r} (401) on {path}: check "
                f"MLFLOW_ADMIN_USER/MLFLOW_ADMIN_PASSWORD in .env; {self.rerun}"
            )
        if response.status_code >= 400:
            raise PlatformError(f"MLflow {method} {path} failed: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def api(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._call(method, f"/api/2.0/mlflow/{endpoint}", **kwargs).json()
        return body

    def api3(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        """MLflow's 3.0 endpoints: the per-user grants of the auth API live there."""
        response = self._call(method, f"/api/3.0/mlflow/{endpoint}", **kwargs)
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def accepts(self, user: str, password: str) -> bool:
        """Whether MLflow accepts this login: True on 200, False on 401, an error otherwise."""
        response = self._send("GET", f"{self.url}/api/2.0/mlflow/users/current", auth=(user, password))
        if response.status_code in {200, 401}:
            return response.status_code == 200
        raise PlatformError(f"MLflow at {self.url} answered a login check with HTTP {response.status_code}")

    def health(self) -> str:
        try:
            response = requests.get(f"{self.url}/health", timeout=TIMEOUT, verify=self.session.verify)
        except requests.RequestException as exc:
            raise unreachable(f"{self.url}/health", exc, self.rerun) from None
        if response.status_code != 200:
            raise PlatformError(f"MLflow at {self.url}/health answered HTTP {response.status_code}")
        return response.text.strip()

    def anonymous_status(self) -> int:
        """The status an unauthenticated API call gets: 401 when basic-auth is on."""
        try:
            response = requests.get(
                f"{self.url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                timeout=TIMEOUT,
                verify=self.session.verify,
            )
        except requests.RequestException as exc:
            raise unreachable(self.url, exc, self.rerun) from None
        return response.status_code

    def upload_artifact(self, path: str, content: bytes) -> None:
        self._call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", data=content)

    def download_artifact(self, path: str) -> bytes:
        return self._call("GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}").content


def wait_healthy(client: MlflowClient, timeout: float = 120.0) -> None:
    """Poll /health until it answers OK: a fresh pod may need a moment after its Service is ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.health()
            return
        except PlatformError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def smoke_check(client: MlflowClient) -> SmokeReport:
    """Health, auth enforced, log in, create an experiment and a run, round-trip an artifact, clean up."""
    report = SmokeReport(client.url)
    report.steps.append(f"/health: {client.health()}")
    anonymous = client.anonymous_status()
    if anonymous != 401:
        raise PlatformError(
            f"MLflow at {client.url} answered an unauthenticated request with HTTP {anonymous}, not 401: "
            "basic-auth is not enforced (the server must run with --app-name basic-auth)"
        )
    report.steps.append("anonymous request refused (401)")
    user = client.api("GET", "users/get", params={"username": client.user})
    report.steps.append(f"logged in as {user.get('user', {}).get('username', client.user)}")

    name = f"{SMOKE_PREFIX}{uuid.uuid4().hex[:10]}"
    experiment_id = str(client.api("POST", "experiments/create", json={"name": name})["experiment_id"])
    try:
        run = client.api(
            "POST", "runs/create", json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)}
        )["run"]["info"]
        run_id = str(run["run_id"])
        client.api(
            "POST",
            "runs/log-metric",
            json={"run_id": run_id, "key": "smoke", "value": 1.0, "timestamp": int(time.time() * 1000)},
        )
        report.steps.append(f"experiment {name} and run {run_id} created, metric logged")
        artifact_uri = str(run.get("artifact_uri", ""))
        if not artifact_uri.startswith("mlflow-artifacts:/"):
            raise PlatformError(
                f"run artifact URI is {artifact_uri!r}; expected mlflow-artifacts:/ (the server must proxy "
                "artifacts with --serve-artifacts so clients need no S3 credentials)"
            )
        path = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/") + "/smoke.txt"
        payload = f"mlopskit smoke {uuid.uuid4()}".encode()
        client.upload_artifact(path, payload)
        if client.download_artifact(path) != payload:
            raise PlatformError(f"artifact {path} came back different from what was uploaded")
        report.steps.append("artifact uploaded and downloaded intact")
        client.api("POST", "runs/update", json={"run_id": run_id, "status": "FINISHED"})
    finally:
        client.api("POST", "experiments/delete", json={"experiment_id": experiment_id})
    return report
