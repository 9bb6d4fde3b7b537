"""The image's app answers unreadable Authorization headers on protected routes with 401, before MLflow."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "docker" / "mlflow" / "app"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlopskit_mlflow_app", APP_DIR / "mlopskit_mlflow_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mlopskit_mlflow_app", module)
    spec.loader.exec_module(module)
    return module


app_module = _load()


def basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


UNREADABLE = {
    "bearer": b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
    "empty": b"",
    "scheme only": b"Basic",
    "not base64": b"Basic not*base64!",
    "not utf-8": basic(b"admin:\xff\xfe"),
    "no colon": basic(b"admin"),
    "no user": basic(b":password"),
    "not ascii": "Basic é".encode("latin-1"),
}


@pytest.mark.parametrize("header", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_credentials_are_recognised(header: bytes) -> None:
    assert not app_module.readable_basic_credentials(header)


@pytest.mark.parametrize("header", [basic(b"admin:p@ss:w%rd"), b"basic " + base64.b64encode(b"u:p")])
def test_basic_credentials_are_readable(header: bytes) -> None:
    assert app_module.readable_basic_credentials(header)


class Recorder:
    """An ASGI app standing in for MLflow: records whether it was called."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[Recorder, list[MutableMapping[str, Any]]]:
    inner = Recorder()
    guard = app_module.RequireReadableBasicAuth(inner, lambda p: p.startswith("/health"))
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard({"type": "http", "path": path, "headers": headers}, receive, send))
    return inner, sent


@pytest.mark.parametrize("header", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_protected_route_with_unreadable_credentials_gets_401_with_a_basic_challenge(header: bytes) -> None:
    inner, sent = call("/api/2.0/mlflow/experiments/search", [(b"authorization", header)])

    assert not inner.called
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b'Basic realm="mlflow"') in sent[0]["headers"]


def test_two_authorization_headers_get_401() -> None:
    inner, sent = call("/", [(b"authorization", basic(b"a:b")), (b"Authorization", basic(b"c:d"))])

    assert not inner.called and sent[0]["status"] == 401


def test_readable_credentials_reach_mlflow() -> None:
    inner, _ = call("/ajax-api/2.0/mlflow/experiments/search", [(b"authorization", basic(b"admin:secret"))])

    assert inner.called


def test_no_credentials_reach_mlflow_which_asks_for_them() -> None:
    inner, _ = call("/", [])

    assert inner.called


def test_public_routes_ignore_the_authorization_header() -> None:
    inner, _ = call("/health", [(b"authorization", UNREADABLE["bearer"])])

    assert inner.called


def test_the_app_is_registered_under_the_name_the_entrypoint_runs() -> None:
    pyproject = (APP_DIR / "pyproject.toml").read_text()
    entrypoint = (REPO / "docker" / "mlflow" / "entrypoint.sh").read_text()

    assert 'mlopskit-basic-auth = "mlopskit_mlflow_app:create_app"' in pyproject
    assert f"MLFLOW_APP_NAME={app_module.APP_NAME}" in entrypoint
    assert '--app-name "$MLFLOW_APP_NAME"' in entrypoint


def test_server_info_no_longer_invites_clients_to_presigned_s3_transfers() -> None:
    """Both routes are rewritten: Flask's (handlers) and the FastAPI one uvicorn serves, which imported the
    payload builder by name."""

    def payload() -> dict[str, Any]:
        return {"store_type": "SqlStore", "multipart_downloads_enabled": True, "multipart_uploads_enabled": True}

    handlers = SimpleNamespace(build_server_info_payload=payload)
    server_info_api = SimpleNamespace(build_server_info_payload=payload)
    app_module.advertise_proxied_transfers_only(handlers, server_info_api)
    app_module.advertise_proxied_transfers_only(handlers, server_info_api)  # a second app: no double wrap
    expected = {"store_type": "SqlStore", "multipart_downloads_enabled": False, "multipart_uploads_enabled": False}
    assert handlers.build_server_info_payload() == expected
    assert server_info_api.build_server_info_payload() == expected


# ------------------------------------------------------------------------------------- user lookups


class RecordingUserStore:
    """Stands in for MLflow's auth SqlAlchemyStore (which needs Flask and a database, absent from the unit
    tier; the integration tier runs the real one): users in a dict, every lookup counted."""

    def __init__(self) -> None:
        self.users: dict[str, SimpleNamespace] = {"alice": SimpleNamespace(username="alice", is_admin=True)}
        self.lookups = 0

    def get_user(self, username: str) -> SimpleNamespace:
        self.lookups += 1
        if username not in self.users:
            raise LookupError(f"User with username={username} not found")
        return self.users[username]

    def update_user(self, username: str, password: str | None = None, is_admin: bool | None = None) -> None:
        old = self.users[username]
        self.users[username] = SimpleNamespace(
            username=username, is_admin=old.is_admin if is_admin is None else is_admin
        )

    def delete_user(self, username: str) -> None:
        del self.users[username]


class Requests:
    """The memo a request carries (flask.g in the image); `new()` starts the next request."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = {}

    def new(self) -> None:
        self.current = {}

    def memo(self) -> dict[str, Any] | None:
        return self.current


def shared(store: RecordingUserStore) -> Requests:
    requests = Requests()
    app_module.share_user_lookups_within_a_request(store, requests.memo)
    return requests


def test_a_request_reads_a_user_once_however_often_it_asks() -> None:
    store = RecordingUserStore()
    shared(store)

    admin_flags = [store.get_user("alice").is_admin for _ in range(4)]

    assert admin_flags == [True] * 4 and store.lookups == 1


def test_every_request_reads_the_user_again_so_a_change_elsewhere_counts_at_once() -> None:
    store = RecordingUserStore()
    requests = shared(store)
    assert store.get_user("alice").is_admin
    store.users["alice"] = SimpleNamespace(username="alice", is_admin=False)  # changed by another worker

    requests.new()

    assert store.get_user("alice").is_admin is False and store.lookups == 2


def test_a_change_within_the_request_is_seen_by_the_same_request() -> None:
    store = RecordingUserStore()
    shared(store)
    assert store.get_user("alice").is_admin

    store.update_user("alice", is_admin=False)

    assert store.get_user("alice").is_admin is False


def test_a_user_deleted_within_the_request_is_not_found_afterwards() -> None:
    store = RecordingUserStore()
    shared(store)
    store.get_user("alice")

    store.delete_user("alice")

    with pytest.raises(LookupError, match="alice"):
        store.get_user("alice")


def test_a_missing_user_is_asked_again_not_remembered() -> None:
    store = RecordingUserStore()
    shared(store)
    for _ in range(2):
        with pytest.raises(LookupError):
            store.get_user("bob")

    assert store.lookups == 2


def test_outside_a_request_every_lookup_reaches_the_store() -> None:
    store = RecordingUserStore()
    requests = shared(store)
    requests.current = None
    store.get_user("alice")
    store.get_user("alice")

    assert store.lookups == 2


def test_sharing_twice_wraps_once() -> None:
    store = RecordingUserStore()
    shared(store)
    wrapped = store.get_user
    shared(store)

    assert store.get_user is wrapped


# ------------------------------------------------------------------------------------------ serving


def test_only_the_uvicorn_server_command_replaces_the_process_through_the_nodelay_launcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replaced: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(app_module.os, "execvpe", lambda path, argv, env: replaced.append((argv, env)))

    app_module.exec_server(["/opt/venv/bin/python3", "-m", "uvicorn", "--workers", "2", "app"], extra_env={"X": "1"})

    argv, env = replaced[0]
    assert argv == ["/opt/venv/bin/python3", "-m", "mlopskit_mlflow_app", "uvicorn", "--workers", "2", "app"]
    assert env["X"] == "1"


def test_other_commands_are_not_rewritten() -> None:
    assert app_module.server_command(["/opt/venv/bin/python3", "-m", "huey_consumer", "x"]) is None
    assert app_module.server_command("python -m uvicorn app") is None


def test_uvicorns_workers_get_connections_without_nagles_algorithm() -> None:
    """A real uvicorn Config binds the socket its workers share; a real asyncio server accepts on it."""
    from uvicorn.config import Config

    class PatchedConfig(Config):
        pass

    app_module.keep_tcp_nodelay(PatchedConfig)
    listener = PatchedConfig(app="none:app", host="127.0.0.1", port=0).bind_socket()
    nodelay: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nodelay.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        while not nodelay:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())

    assert listener.proto == socket.IPPROTO_TCP and nodelay == [1]


def test_uvicorn_unpatched_leaves_nagles_algorithm_on_which_is_what_the_patch_is_for() -> None:
    from uvicorn.config import Config

    listener = Config(app="none:app", host="127.0.0.1", port=0).bind_socket()
    try:
        assert listener.proto == 0  # uvicorn 0.54; when this fails, uvicorn fixed #3149 and the patch can go
    finally:
        listener.close()


class CountingRouteMatcher:
    """Stands in for mlflow.server.auth (the module needs Flask, absent from the unit tier): its
    `_scope_matches_native_route`, here a path-prefix match that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

        def match(native_routes: list[str], scope: dict[str, Any]) -> bool:
            self.calls += 1
            return any(scope["path"].startswith(prefix) and scope["method"] == "GET" for prefix in native_routes)

        self._scope_matches_native_route = match


def scope_of(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_native_route_answers_are_remembered_per_method_and_path() -> None:
    auth = CountingRouteMatcher()
    app_module.remember_native_route_matches(auth)
    routes = ["/gateway/"]

    answers = [
        auth._scope_matches_native_route(routes, scope_of(method, path))
        for method, path in [
            ("GET", "/gateway/x"),
            ("GET", "/gateway/x"),
            ("POST", "/gateway/x"),
            ("GET", "/api/2.0/x"),
        ]
    ]

    assert answers == [True, True, False, False]
    assert auth.calls == 3  # the repeated request was answered from memory


def test_remembered_native_route_answers_are_bounded() -> None:
    auth = CountingRouteMatcher()
    app_module.remember_native_route_matches(auth, max_size=2)
    routes = ["/gateway/"]
    for path in ("/a", "/b", "/c", "/a"):  # /a was pushed out by /c
        auth._scope_matches_native_route(routes, scope_of("GET", path))

    assert auth.calls == 4


def test_long_paths_are_matched_every_time_not_remembered() -> None:
    """The memo fills before any login: a flood of long distinct paths must not grow it."""
    auth = CountingRouteMatcher()
    app_module.remember_native_route_matches(auth)
    long_path = "/api/" + "x" * app_module.MAX_REMEMBERED_PATH
    for _ in range(2):
        auth._scope_matches_native_route(["/gateway/"], scope_of("GET", long_path))

    assert auth.calls == 2


def test_remembering_native_route_answers_twice_wraps_once() -> None:
    auth = CountingRouteMatcher()
    app_module.remember_native_route_matches(auth)
    wrapped = auth._scope_matches_native_route
    app_module.remember_native_route_matches(auth)

    assert auth._scope_matches_native_route is wrapped


# ------------------------------------------------------------------ run lookups of the permission checks
# (the lookup against MLflow's SQL store is tested in the image: tests/integration/test_auth.py)


class FakeSqlStore:
    """Looks like a SqlAlchemyStore to the wrapper (it has ManagedSessionMaker); counts full get_run calls."""

    ManagedSessionMaker = None

    def __init__(self) -> None:
        self.full_runs = 0

    def get_run(self, run_id: str) -> Any:
        self.full_runs += 1
        return SimpleNamespace(info=SimpleNamespace(experiment_id="7", run_name="r"), data="data")


def test_reading_more_than_the_experiment_loads_the_whole_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "run_experiment_id", lambda store, run_id: "7")
    store = FakeSqlStore()
    run = app_module.RunLookupsByExperiment(store).get_run("r1")

    assert run.info.experiment_id == "7" and store.full_runs == 0
    assert run.info.run_name == "r" and run.data == "data" and store.full_runs == 1


def test_only_sql_stores_get_the_experiment_lookup_and_wrapping_twice_wraps_once() -> None:
    sql_store, not_sql = FakeSqlStore(), SimpleNamespace(get_run=lambda run_id: run_id)
    auth = SimpleNamespace(_get_tracking_store=lambda: sql_store)
    app_module.look_up_runs_by_experiment_only(auth)
    wrapped = auth._get_tracking_store
    app_module.look_up_runs_by_experiment_only(auth)
    other = SimpleNamespace(_get_tracking_store=lambda: not_sql)
    app_module.look_up_runs_by_experiment_only(other)

    assert auth._get_tracking_store is wrapped
    assert isinstance(auth._get_tracking_store(), app_module.RunLookupsByExperiment)
    assert other._get_tracking_store() is not_sql


# ---------------------------------------------------------------------------- password verifications


class SlowPasswordStore:
    """authenticate_user takes a while and records how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def authenticate_user(self, username: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return password == "right"


def test_password_verifications_run_one_at_a_time_and_decide_as_before() -> None:
    store = SlowPasswordStore()
    app_module.bound_password_checks(store)
    app_module.bound_password_checks(store)  # idempotent: one gate
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(store.authenticate_user("alice", p)))
        for p in ["right", "wrong"] * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.most == 1
    assert sorted(results) == [False] * 4 + [True] * 4


def test_unbounded_verifications_do_run_side_by_side() -> None:
    """What the gate is for: without it the same threads overlap (the test above could not fail otherwise)."""
    store = SlowPasswordStore()
    threads = [threading.Thread(target=store.authenticate_user, args=("alice", "right")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.most > 1
