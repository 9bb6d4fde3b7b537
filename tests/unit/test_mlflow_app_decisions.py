"""The image's app keeps the rows basic-auth decides from by auth database generation, and lets tracking
calls past MLflow's FastAPI permission layer; against PostgreSQL and MLflow in tests/integration/test_auth.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.test_mlflow_app_guard import app_module

# ------------------------------------------------------------------------------ rows by generation


class Generations:
    """The auth database's generation as the reader sees it; `reads` counts the reads."""

    def __init__(self, value: str | None = "g1") -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> str | None:
        self.reads += 1
        return self.value


class Rows:
    """Stands in for a store read: returns the current row, counts the reads, can change the generation
    while it reads (a change committed during the read)."""

    def __init__(self, generations: Generations, value: Any = "row-1", moves_to: str | None = None) -> None:
        self.generations = generations
        self.value = value
        self.moves_to = moves_to
        self.reads = 0

    def __call__(self) -> Any:
        self.reads += 1
        if self.moves_to is not None:
            self.generations.value = self.moves_to
        return self.value


def test_rows_read_at_the_current_generation_are_answered_from_what_was_kept() -> None:
    generations = Generations()
    rows = app_module.RowsByGeneration(generations)
    read = Rows(generations)

    answers = [rows.get("k", "g1", read) for _ in range(3)]

    assert answers == ["row-1"] * 3 and read.reads == 1


def test_a_new_generation_reads_again_and_drops_the_rows_of_the_old_one() -> None:
    generations = Generations()
    rows = app_module.RowsByGeneration(generations)
    rows.get("a", "g1", Rows(generations, "a-1"))
    rows.get("b", "g1", Rows(generations, "b-1"))

    generations.value = "g2"
    again = Rows(generations, "a-2")

    assert rows.get("a", "g2", again) == "a-2" and again.reads == 1
    assert set(rows.rows) == {"a"}  # b belonged to g1


def test_rows_read_while_the_generation_moved_are_not_kept() -> None:
    """A change committed during the read: the row may be from either side of it, so it is not kept."""
    generations = Generations()
    rows = app_module.RowsByGeneration(generations)

    assert rows.get("k", "g1", Rows(generations, "maybe-stale", moves_to="g2")) == "maybe-stale"
    fresh = Rows(generations, "row-2")
    assert rows.get("k", "g1", fresh) == "row-2" and fresh.reads == 1
    assert "k" not in rows.rows


def test_a_request_of_an_older_generation_never_replaces_newer_rows() -> None:
    generations = Generations("g2")
    rows = app_module.RowsByGeneration(generations)
    rows.get("k", "g2", Rows(generations, "new"))

    late = Rows(generations, "old")  # a request that read g1 before the change and decides only now
    assert rows.get("k", "g1", late) == "old" and late.reads == 1
    assert rows.generation == "g2" and rows.rows["k"] == "new"


def test_a_failed_read_raises_and_nothing_is_kept() -> None:
    generations = Generations()
    rows = app_module.RowsByGeneration(generations)

    def missing() -> Any:
        raise LookupError("no such user")

    with pytest.raises(LookupError):
        rows.get("k", "g1", missing)
    assert "k" not in rows.rows


def test_rows_kept_are_bounded_least_recently_used_first_out() -> None:
    generations = Generations()
    rows = app_module.RowsByGeneration(generations, max_size=2)
    for key in ("a", "b"):
        rows.get(key, "g1", Rows(generations, key))
    rows.get("a", "g1", Rows(generations))  # a used again: b is now the oldest
    rows.get("c", "g1", Rows(generations, "c"))

    assert list(rows.rows) == ["a", "c"]


# --------------------------------------------------------------------- the store as decisions see it


class FakeAuthStore:
    """Counts the reads of basic-auth's two decision reads; `admin` and `grants` are the database."""

    def __init__(self) -> None:
        self.admin = False
        self.grants: list[tuple[str, str, str]] = [("experiment", "1", "READ")]
        self.user_reads = 0
        self.grant_reads = 0

    def get_user(self, username: str) -> Any:
        self.user_reads += 1
        if username == "ghost":
            raise LookupError(username)
        return SimpleNamespace(id=7, username=username, is_admin=self.admin)

    def list_grants(self, user_id: int, workspace: str, resource_types: Any) -> list[Any]:
        self.grant_reads += 1
        return list(self.grants)


class Request:
    """One request's decision state, as decision_state() keeps it on flask.g; deciding or not."""

    def __init__(self, deciding: bool) -> None:
        self.state: dict[str, Any] | None = {"deciding": deciding}

    def memo(self) -> dict[str, Any] | None:
        return self.state if self.state is not None and self.state.get("deciding") else None


@pytest.fixture
def kept() -> Iterator[tuple[FakeAuthStore, Generations, list[Request]]]:
    store, generations = FakeAuthStore(), Generations()
    requests: list[Request] = []
    reader = SimpleNamespace(read=generations)
    app_module.keep_decision_rows_by_generation(store, reader, lambda: requests[-1].memo())
    yield store, generations, requests


def decide(requests: list[Request], store: FakeAuthStore, deciding: bool = True) -> tuple[bool, list[Any]]:
    requests.append(Request(deciding))
    return store.get_user("alice").is_admin, store.list_grants(7, "default", {"experiment"})


def test_decisions_at_one_generation_read_the_rows_once_and_the_generation_once_per_request(
    kept: tuple[FakeAuthStore, Generations, list[Request]],
) -> None:
    store, generations, requests = kept
    answers = [decide(requests, store) for _ in range(5)]

    assert answers == [(False, [("experiment", "1", "READ")])] * 5
    assert (store.user_reads, store.grant_reads) == (1, 1)
    # one read per request, and one after each of the two first reads (was the generation still g1?)
    assert generations.reads == 5 + 2


def test_a_change_in_the_database_counts_from_the_next_request(
    kept: tuple[FakeAuthStore, Generations, list[Request]],
) -> None:
    store, generations, requests = kept
    decide(requests, store)

    store.admin, store.grants, generations.value = True, [], "g2"  # what the triggers do in one transaction

    assert decide(requests, store) == (True, [])


def test_outside_the_decision_every_read_reaches_the_store(
    kept: tuple[FakeAuthStore, Generations, list[Request]],
) -> None:
    """Views and after-request hooks (which may change users and grants) always read afresh."""
    store, generations, requests = kept
    for _ in range(3):
        decide(requests, store, deciding=False)

    assert (store.user_reads, store.grant_reads, generations.reads) == (3, 3, 0)


def test_without_a_generation_every_decision_reads_afresh(
    kept: tuple[FakeAuthStore, Generations, list[Request]],
) -> None:
    store, generations, requests = kept
    generations.value = None  # the generation could not be read (a dropped connection)
    for _ in range(3):
        decide(requests, store)

    assert (store.user_reads, store.grant_reads) == (3, 3)


def test_a_missing_user_is_read_again_every_time(kept: tuple[FakeAuthStore, Generations, list[Request]]) -> None:
    store, _, requests = kept
    for _ in range(2):
        requests.append(Request(deciding=True))
        with pytest.raises(LookupError):
            store.get_user("ghost")

    assert store.user_reads == 2


def test_kept_grants_are_copies_a_caller_cannot_change(
    kept: tuple[FakeAuthStore, Generations, list[Request]],
) -> None:
    store, _, requests = kept
    _, first = decide(requests, store)
    first.clear()

    assert decide(requests, store)[1] == [("experiment", "1", "READ")]


def test_keeping_twice_wraps_once(kept: tuple[FakeAuthStore, Generations, list[Request]]) -> None:
    store, generations, _ = kept
    wrapped = store.get_user
    app_module.keep_decision_rows_by_generation(store, SimpleNamespace(read=generations), lambda: None)

    assert store.get_user is wrapped


# ------------------------------------------------------------------------ the decision hook, marked


def test_the_decision_hook_runs_with_deciding_set_and_cleared_after_even_on_error() -> None:
    seen: list[Any] = []
    state: dict[str, Any] = {}

    def before_request() -> Any:
        seen.append(state.get("deciding"))
        raise RuntimeError("denied by an exception")

    def other_hook() -> None:
        return None

    flask_app = SimpleNamespace(before_request_funcs={None: [other_hook, before_request]})

    assert app_module.mark_decisions(flask_app, before_request, lambda: state)
    hooks = flask_app.before_request_funcs[None]
    assert hooks[0] is other_hook and hooks[1] is not before_request
    with pytest.raises(RuntimeError):
        hooks[1]()
    assert seen == [True] and state["deciding"] is False


def test_an_app_without_the_decision_hook_is_left_as_it_is() -> None:
    def hook() -> None:
        return None

    flask_app = SimpleNamespace(before_request_funcs={None: [hook]})

    assert not app_module.mark_decisions(flask_app, lambda: None, lambda: {})
    assert flask_app.before_request_funcs[None] == [hook]


# ---------------------------------------------------------------------------- generation reader


class FakeConnection:
    def __init__(self, row: Any = ("3f2a",), fails: bool = False) -> None:
        self.row, self.fails = row, fails
        self.closed = self.invalidated = False

    def cursor(self) -> Any:
        def execute(sql: str) -> None:
            if self.fails:
                raise OSError("server closed the connection unexpectedly")
            assert sql == app_module.READ_GENERATION_SQL

        return SimpleNamespace(execute=execute, fetchone=lambda: self.row, close=lambda: None)

    def invalidate(self) -> None:
        self.invalidated = True

    def close(self) -> None:
        self.closed = True


def reader_over(connect: Callable[[], FakeConnection]) -> Any:
    return app_module.GenerationReader(SimpleNamespace(raw_connection=connect))


def test_the_generation_is_read_and_the_connection_returned() -> None:
    connection = FakeConnection()

    assert reader_over(lambda: connection).read() == "3f2a"
    assert connection.closed and not connection.invalidated


def test_a_failed_read_answers_none_and_discards_the_connection() -> None:
    connection = FakeConnection(fails=True)

    assert reader_over(lambda: connection).read() is None
    assert connection.invalidated and connection.closed


def test_no_connection_answers_none() -> None:
    def refused() -> FakeConnection:
        raise OSError("connection refused")

    assert reader_over(refused).read() is None


def test_the_triggers_installed_are_the_ones_every_generation_read_requires_enabled() -> None:
    install, missing = app_module.INSTALL_GENERATION_SQL, app_module.TABLES_WITHOUT_TRIGGERS_SQL
    changed, truncated = app_module.AUTH_GENERATION_TRIGGER, app_module.AUTH_TRUNCATE_TRIGGER
    for sql in (install, missing):
        assert f"c.relname <> '{app_module.AUTH_GENERATION_TABLE}'" in sql
    assert f"t.tgname IN ('{changed}', '{truncated}')) < 2" in missing and "tgenabled IN ('O', 'A')" in missing
    assert f"CREATE CONSTRAINT TRIGGER {changed} AFTER INSERT OR UPDATE OR DELETE" in install
    assert "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW" in install
    assert f"CREATE TRIGGER {truncated} AFTER TRUNCATE" in install
    for sql in (app_module.READ_GENERATION_SQL, app_module.GENERATION_READY_SQL):
        assert missing in sql


# --------------------------------------------------------------- the FastAPI permission layer, kept


def permission_app(dispatched: list[str]) -> Any:
    """A FastAPI app shaped as MLflow's: a native route, a mounted app (Flask's place) and basic-auth's
    permission middleware, here one that records what it dispatched and denies /gateway/ without login."""
    from fastapi import FastAPI
    from starlette.responses import PlainTextResponse

    async def mounted(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("flask")(scope, receive, send)

    app = FastAPI()

    @app.get("/gateway/chat")
    def chat() -> str:
        return "gateway"

    app.mount("/", mounted)

    @app.middleware("http")
    async def fastapi_permission_middleware(request: Any, call_next: Any) -> Any:
        dispatched.append(request.url.path)
        if request.url.path.startswith("/gateway/"):
            return PlainTextResponse("denied", status_code=403)
        return await call_next(request)

    return app


def fake_auth(native: Callable[[Any], list[Any]], fails_on: str = "") -> Any:
    def validator(path: str, method: str) -> Any:
        if fails_on and path.startswith(fails_on):
            raise ValueError("malformed")
        return (lambda: True) if path.startswith("/gateway/") else None

    def matches(routes: list[Any], scope: Any) -> bool:
        from starlette.routing import Match

        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    return SimpleNamespace(
        is_unprotected_route=lambda path: path.startswith("/health"),
        _find_fastapi_validator=validator,
        _scope_matches_native_route=matches,
        _native_fastapi_routes=native,
    )


def get(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def native_routes(app: Any) -> list[Any]:
    from starlette.routing import Mount

    return [route for route in app.routes if not isinstance(route, Mount)]


def test_tracking_calls_go_past_the_permission_layer_and_native_routes_through_it() -> None:
    dispatched: list[str] = []
    app = permission_app(dispatched)

    assert app_module.keep_permission_layer_to_fastapi_routes(app, fake_auth(native_routes))

    assert get(app, "/api/2.0/mlflow/runs/get") == (200, b"flask")
    assert get(app, "/health") == (200, b"flask")
    assert dispatched == []  # both were handed on by MLflow's middleware: it is not run for them
    assert get(app, "/gateway/chat") == (403, b"denied")  # a native route: MLflow's middleware decides
    assert dispatched == ["/gateway/chat"]


def test_a_native_route_without_a_validator_still_goes_through_the_permission_layer() -> None:
    """Fail-closed (MLflow 3.17's default) denies such a route in MLflow's middleware: it must see it."""
    dispatched: list[str] = []
    app = permission_app(dispatched)
    auth = fake_auth(native_routes)
    auth._find_fastapi_validator = lambda path, method: None
    app_module.keep_permission_layer_to_fastapi_routes(app, auth)

    get(app, "/gateway/chat")

    assert dispatched == ["/gateway/chat"]


def test_when_the_route_cannot_be_told_the_permission_layer_decides() -> None:
    dispatched: list[str] = []
    app = permission_app(dispatched)
    app_module.keep_permission_layer_to_fastapi_routes(app, fake_auth(native_routes, fails_on="/api/"))

    assert get(app, "/api/2.0/mlflow/runs/get") == (200, b"flask")
    assert dispatched == ["/api/2.0/mlflow/runs/get"]


def test_without_the_permission_middleware_or_mlflows_functions_nothing_changes() -> None:
    dispatched: list[str] = []
    app = permission_app(dispatched)
    before = list(app.user_middleware)
    auth = fake_auth(native_routes)
    del auth._find_fastapi_validator  # a release without it

    assert not app_module.keep_permission_layer_to_fastapi_routes(app, auth)
    assert app.user_middleware == before
    get(app, "/api/2.0/mlflow/runs/get")
    assert dispatched == ["/api/2.0/mlflow/runs/get"]


def test_keeping_the_permission_layer_twice_replaces_it_once() -> None:
    app = permission_app([])
    auth = fake_auth(native_routes)

    assert app_module.keep_permission_layer_to_fastapi_routes(app, auth)
    replaced = list(app.user_middleware)
    assert not app_module.keep_permission_layer_to_fastapi_routes(app, auth)
    assert app.user_middleware == replaced


# ------------------------------------------------------------------------ runs' experiments, kept


def test_a_runs_experiment_is_read_once_per_worker_and_a_missing_run_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []

    def run_experiment_id(store: Any, run_id: str) -> str:
        reads.append(run_id)
        if run_id == "gone":
            raise LookupError(run_id)
        return "7"

    monkeypatch.setattr(app_module, "run_experiment_id", run_experiment_id)
    store = SimpleNamespace(ManagedSessionMaker=None, get_run=lambda run_id: None)
    auth = SimpleNamespace(_get_tracking_store=lambda: store)
    app_module.look_up_runs_by_experiment_only(auth, max_runs=2)

    # every request asks basic-auth's module for the store anew: what is kept outlives one request
    seen = [auth._get_tracking_store().get_run("r1").info.experiment_id for _ in range(3)]
    for _ in range(2):
        with pytest.raises(LookupError):
            auth._get_tracking_store().get_run("gone")

    assert seen == ["7"] * 3
    assert reads == ["r1", "gone", "gone"]


def test_kept_run_experiments_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    def run_experiment_id(store: Any, run_id: str) -> str:
        reads.append(run_id)
        return "7"

    monkeypatch.setattr(app_module, "run_experiment_id", run_experiment_id)
    store = SimpleNamespace(ManagedSessionMaker=None)
    auth = SimpleNamespace(_get_tracking_store=lambda: store)
    app_module.look_up_runs_by_experiment_only(auth, max_runs=2)

    for run_id in ("a", "b", "c", "a"):  # a was pushed out by c
        auth._get_tracking_store().get_run(run_id)

    assert reads == ["a", "b", "c", "a"]


# ------------------------------------------------------------------------ credentials by generation


class TTLCacheLike(dict[Any, Any]):
    """What MLflow's credential cache offers (a cachetools TTLCache is a mapping with get and pop)."""


def credentials(now: list[str | None]) -> Any:
    return app_module.CredentialsByGeneration(TTLCacheLike(), lambda: now[0])


def test_a_login_is_found_at_the_generation_it_was_verified_at() -> None:
    now: list[str | None] = ["g1"]
    cache = credentials(now)
    cache[("alice", b"digest")] = "alice's row"

    assert cache.get(("alice", b"digest")) == "alice's row"
    assert cache.get(("bob", b"digest")) is None


def test_after_any_change_a_login_is_verified_again() -> None:
    """A password change, a deletion or an admin flag change moves the generation: the kept login is not
    found, so MLflow verifies the password against the current row (and keeps it again if it still holds)."""
    now: list[str | None] = ["g1"]
    cache = credentials(now)
    cache[("alice", b"digest")] = "row at g1"

    now[0] = "g2"
    assert cache.get(("alice", b"digest")) is None
    cache[("alice", b"digest")] = "row at g2"
    assert cache.get(("alice", b"digest")) == "row at g2"


def test_outside_a_decision_logins_are_found_as_mlflow_finds_them() -> None:
    """FastAPI's own routes (gateway, jobs, OTLP) have no generation: MLflow's time-to-live rules there."""
    now: list[str | None] = ["g1"]
    cache = credentials(now)
    cache[("alice", b"digest")] = "row"

    now[0] = None
    assert cache.get(("alice", b"digest")) == "row"


def test_mlflows_invalidation_of_a_user_still_works() -> None:
    """`_invalidate_user_auth_cache` iterates the keys and pops a user's."""
    cache = credentials(["g1"])
    cache[("alice", b"1")] = "a"
    cache[("bob", b"2")] = "b"
    for key in [k for k in cache if k[0] == "alice"]:
        assert cache.pop(key, None) == "a"

    assert list(cache) == [("bob", b"2")] and cache.pop(("alice", b"1"), None) is None


def test_the_credential_cache_is_replaced_once_and_only_when_mlflow_has_one() -> None:
    auth = SimpleNamespace(_USER_AUTH_CACHE=TTLCacheLike())
    assert app_module.keep_credentials_by_generation(auth, lambda: "g1")
    replaced = auth._USER_AUTH_CACHE
    assert not app_module.keep_credentials_by_generation(auth, lambda: "g1")
    assert auth._USER_AUTH_CACHE is replaced

    off = SimpleNamespace(_USER_AUTH_CACHE=None)  # auth_cache_ttl_seconds = 0
    assert not app_module.keep_credentials_by_generation(off, lambda: "g1") and off._USER_AUTH_CACHE is None
