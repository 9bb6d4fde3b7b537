"""The image's MLflow app and the helpers its entrypoint runs.

`create_app` is registered as `mlopskit-basic-auth` in the `mlflow.app` entry point group, so
`mlflow server --app-name mlopskit-basic-auth` serves MLflow's own basic-auth app behind one guard:
a request to a protected route whose Authorization header basic-auth cannot read (another scheme such
as Bearer, an empty value, credentials that are not base64 or not UTF-8) is answered 401 with
`WWW-Authenticate: Basic`. MLflow 3.17.2 answers some of them with 500 (its Flask hook passes a
Bearer header's missing username to the user store).

It also advertises proxied artifact transfers only (see `advertise_proxied_transfers_only`): MLflow 3.17
otherwise tells clients to fetch large artifacts from presigned S3 URLs, which name the S3 endpoint as
the server sees it (a host inside the Docker network or the cluster), so a client outside hangs.

And it makes basic-auth's per-request work cheaper without changing a decision (measured with py-spy and
per-request CPU):
- the rows a decision reads (the user, the user's grants) are kept by auth database generation: triggers that
  `migrate` installs on every auth table give the database a new generation in the same transaction as any
  change, and every request reads the current generation first, so a change committed before a request is
  always seen (`keep_decision_rows_by_generation`; one single-row read instead of two ORM sessions);
- a user's row is read once per request (`share_user_lookups_within_a_request`; MLflow caches a verified
  credential, but then read the same row two to four times per request);
- the permission check of a run-scoped request reads the run's experiment id instead of the whole run, once
  per run and worker, since a run never changes experiment (`look_up_runs_by_experiment_only`);
- tracking and registry calls, which Flask authorizes, no longer pass through basic-auth's FastAPI permission
  middleware, which only hands them on (`keep_permission_layer_to_fastapi_routes`), and whether a path is one
  of FastAPI's own routes is remembered (`remember_native_route_matches`; ~80 route patterns were matched for
  every tracking request).

Sub-commands (`python3 -m mlopskit_mlflow_app ...`, called by docker/mlflow/entrypoint.sh):
    render-auth-config TEMPLATE [--mask]   the basic-auth ini with ${NAME} taken from the environment
    bootstrap                              check the Flask secret, create the admin user if missing, and
                                           empty the metrics directory (MLFLOW_EXPOSE_PROMETHEUS) when set
    serve MLFLOW-SERVER-ARGS...            bootstrap, then `mlflow server ARGS...` in the same process
    uvicorn UVICORN-ARGS...                uvicorn's CLI with TCP_NODELAY kept for its workers (serve runs it)
    migrate TRACKING-URI AUTH-URI          `mlflow db upgrade` and the auth database's upgrade, one process,
                                           then the auth database's generation triggers
    serve-metrics DIR PORT                 serve the server's Prometheus metrics, summed over its worker
                                           processes' files in DIR, on PORT without a login (a sidecar)
    gc [mlflow gc options]                 `mlflow gc` on MLFLOW_BACKEND_STORE_URI, deleting proxied
                                           artifacts straight from MLFLOW_ARTIFACTS_DESTINATION
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import re
import signal
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

APP_NAME = "mlopskit-basic-auth"
REALM = 'Basic realm="mlflow"'
# MLflow's AI gateway takes a provider's key in Authorization (and MLflow's in X-MLflow-Authorization).
GATEWAY_PREFIX = "/gateway/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# ------------------------------------------------------------------------------ Authorization guard


def readable_basic_credentials(value: bytes) -> bool:
    """True when an Authorization header value is `Basic <base64 of UTF-8 "user:password">`."""
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    scheme, _, token = text.partition(" ")
    token = token.strip()
    if scheme.lower() != "basic" or not token or " " in token:
        return False
    try:
        credentials = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    username, colon, _ = credentials.partition(":")
    return bool(colon and username)


def needs_rejection(path: str, headers: Iterable[tuple[bytes, bytes]], is_public: Callable[[str], bool]) -> bool:
    """A protected route with an Authorization header that basic-auth cannot read (or more than one)."""
    if is_public(path):
        return False
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if not values:
        return False  # no credentials at all: MLflow itself answers 401
    return len(values) > 1 or not readable_basic_credentials(values[0])


class RequireReadableBasicAuth:
    """ASGI middleware: unreadable credentials on protected routes get 401 before MLflow sees them."""

    def __init__(self, app: ASGIApp, is_public: Callable[[str], bool]) -> None:
        self.app = app
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_rejection(scope.get("path", ""), scope["headers"], self.is_public):
            body = b"Unsupported or malformed Authorization header; send HTTP Basic credentials (user:password)."
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"www-authenticate", REALM.encode()),
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


# server-info keys (mlflow.utils.server_info) by which a server invites clients to presigned S3 transfers.
PRESIGNED_TRANSFER_KEYS = ("multipart_downloads_enabled", "multipart_uploads_enabled")


def advertise_proxied_transfers_only(*modules: Any) -> None:
    """Make server-info say no to multipart (presigned) downloads and uploads; artifacts then stream
    through the server, which alone can reach the object store.

    `modules` are every module that calls build_server_info_payload by its global name at request time:
    mlflow.server.handlers (the Flask route) and mlflow.server.server_info_api (the FastAPI route uvicorn
    serves, which imported the function by name). Idempotent. Releases before 3.17 build the payload inside
    their route (no such function): they are left as they are (presigned transfers only above MLflow's
    multipart size thresholds), so an older image still starts, as the restore drill of an older release needs."""
    for module in modules:
        original = getattr(module, "build_server_info_payload", None)
        if original is None or getattr(original, "proxied_only", False):
            continue

        def build_server_info_payload(original: Any = original) -> dict[str, Any]:
            payload = dict(original())
            payload.update(dict.fromkeys(PRESIGNED_TRANSFER_KEYS, False))
            return payload

        build_server_info_payload.proxied_only = True  # type: ignore[attr-defined]
        module.build_server_info_payload = build_server_info_payload


# The auth store's methods that change what get_user returns, each called with the username first.
USER_MUTATIONS = ("update_user", "delete_user")


def share_user_lookups_within_a_request(store: Any, request_memo: Callable[[], dict[str, Any] | None]) -> None:
    """Read a user's row at most once per request: `store.get_user(username)` is answered from request_memo()
    (a dict that lives as long as the request; None outside a request, where nothing is remembered).

    MLflow's basic-auth reads the same row two to four times per request (`sender_is_admin`, the permission
    checks, the after-request filters), each a database round trip. Every request still reads it once, so
    a change to a user (password, admin flag, deletion) counts from the next request on, on every worker, as
    before. A change made within the request (`update_user`, `delete_user`) drops the remembered row; a
    missing user raises as before and is not remembered. Idempotent."""
    if getattr(store.get_user, "mlopskit_shared", False):
        return
    lookup = store.get_user

    def get_user(username: str) -> Any:
        memo = request_memo()
        if memo is None:
            return lookup(username)
        if username not in memo:
            memo[username] = lookup(username)
        return memo[username]

    get_user.mlopskit_shared = True  # type: ignore[attr-defined]
    store.get_user = get_user

    for name in USER_MUTATIONS:
        mutation = getattr(store, name)

        def mutate(username: str, *args: Any, _mutation: Any = mutation, **kwargs: Any) -> Any:
            try:
                return _mutation(username, *args, **kwargs)
            finally:
                memo = request_memo()
                if memo is not None:
                    memo.pop(username, None)

        setattr(store, name, mutate)


def bound_password_checks(store: Any, permits: int = 1) -> None:
    """Let at most `permits` password verifications (`store.authenticate_user`) run at once in this process;
    the others wait their turn.

    MLflow hashes passwords with werkzeug's default, scrypt (N=32768, r=8): each verification takes 32 MiB
    (128 x r x N bytes) and tens of ms of CPU. Verifications that MLflow's credential cache cannot answer (a
    first login per worker, every wrong password) ran side by side in each worker's thread pool: measured, 8
    clients logging in at once lifted the MLflow container from 372 to 626 MiB under the bench's load, and a
    burst of wrong passwords, which are never cached, could take a container past its memory limit. With one
    permit a worker holds one scrypt buffer at a time and still uses a core; the decision is unchanged.
    Idempotent."""
    check = store.authenticate_user
    if getattr(check, "mlopskit_bounded", False):
        return
    gate = threading.BoundedSemaphore(permits)

    def authenticate_user(*args: Any, **kwargs: Any) -> Any:
        with gate:
            return check(*args, **kwargs)

    authenticate_user.mlopskit_bounded = True  # type: ignore[attr-defined]
    store.authenticate_user = authenticate_user


# ------------------------------------------------------------ authorization rows, by auth database generation
#
# Every table of the auth database carries two triggers that give the one row of AUTH_GENERATION_TABLE a new
# random generation in the same transaction as a change (installed by `migrate`, after MLflow's own upgrade:
# install_generation_triggers): a deferred row-level constraint trigger for INSERT, UPDATE and DELETE, which
# takes the generation row's lock only at commit, after every other lock of the transaction, so concurrent auth
# writes cannot deadlock on it; and a statement-level one for TRUNCATE. A worker keeps the rows basic-auth's
# decision reads (a user, a user's grants, a verified credential) under the generation they were read at, and
# every request reads the current generation first: a change committed before the request started is always
# seen, as if nothing were kept.
AUTH_GENERATION_TABLE = "mlopskit_auth_generation"
AUTH_GENERATION_TRIGGER = "mlopskit_auth_changed"  # the function and the row-level trigger
AUTH_TRUNCATE_TRIGGER = "mlopskit_auth_truncated"

# Tables of the auth schema without both triggers enabled ('O': fires as usual, 'A': always).
TABLES_WITHOUT_TRIGGERS_SQL = f"""
    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname <> '{AUTH_GENERATION_TABLE}'
      AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgenabled IN ('O', 'A')
           AND t.tgname IN ('{AUTH_GENERATION_TRIGGER}', '{AUTH_TRUNCATE_TRIGGER}')) < 2
"""  # noqa: S608 - module constants only

INSTALL_GENERATION_SQL = f"""
CREATE TABLE IF NOT EXISTS {AUTH_GENERATION_TABLE} (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    generation uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO {AUTH_GENERATION_TABLE} DEFAULT VALUES ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION {AUTH_GENERATION_TRIGGER}() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $body$
BEGIN
    UPDATE {AUTH_GENERATION_TABLE} SET generation = gen_random_uuid();
    RETURN NULL;
END
$body$;
DO $body$
DECLARE
    target regclass;
BEGIN
    FOR target IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname <> '{AUTH_GENERATION_TABLE}'
    LOOP
        -- regclass prints the table name quoted where it needs to be; no format() placeholders, which the
        -- driver would take for its own parameters
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = '{AUTH_GENERATION_TRIGGER}') THEN
            EXECUTE 'CREATE CONSTRAINT TRIGGER {AUTH_GENERATION_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON '
                || target::text || ' DEFERRABLE INITIALLY DEFERRED FOR EACH ROW'
                || ' EXECUTE FUNCTION {AUTH_GENERATION_TRIGGER}()';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = '{AUTH_TRUNCATE_TRIGGER}') THEN
            EXECUTE 'CREATE TRIGGER {AUTH_TRUNCATE_TRIGGER} AFTER TRUNCATE ON ' || target::text
                || ' FOR EACH STATEMENT EXECUTE FUNCTION {AUTH_GENERATION_TRIGGER}()';
        END IF;
        -- triggers someone disabled are the platform's own: migrate turns them back on
        EXECUTE 'ALTER TABLE ' || target::text || ' ENABLE TRIGGER {AUTH_GENERATION_TRIGGER}';
        EXECUTE 'ALTER TABLE ' || target::text || ' ENABLE TRIGGER {AUTH_TRUNCATE_TRIGGER}';
    END LOOP;
END
$body$;
"""  # noqa: S608 - module constants only

# True when the generation row exists and every other table of the schema has both triggers enabled.
GENERATION_READY_SQL = (
    f"SELECT EXISTS (SELECT 1 FROM {AUTH_GENERATION_TABLE}) AND NOT EXISTS ({TABLES_WITHOUT_TRIGGERS_SQL})"  # noqa: S608
)
# The generation, or no row while any table lacks an enabled trigger (dropped, disabled, or a table added by
# hand since migrate): the worker then reads afresh.
READ_GENERATION_SQL = f"SELECT generation FROM {AUTH_GENERATION_TABLE} WHERE NOT EXISTS ({TABLES_WITHOUT_TRIGGERS_SQL})"  # noqa: S608
# MLflow's tracking tables: an auth database that holds them is shared with tracking, and a trigger on every
# table would then fire on every logged metric.
SHARED_WITH_TRACKING_SQL = "SELECT to_regclass('alembic_version') IS NOT NULL OR to_regclass('experiments') IS NOT NULL"


class GenerationTriggersError(Exception):
    """The generation triggers could not be installed; the message is the database's first line."""


def install_generation_triggers(auth_uri: str) -> str:
    """Create the generation table and the trigger on every table of the auth database that lacks it (one
    transaction; safe to run again, and after every MLflow upgrade, which may add tables). Returns what was
    done, as one line. PostgreSQL 13 or later (gen_random_uuid), as the owner of the auth tables, in a
    database that does not also hold the tracking tables; raises GenerationTriggersError otherwise. A
    database that is not PostgreSQL is left as it is, and its servers read the rows afresh for every
    decision, as MLflow does."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(auth_uri)
    try:
        if engine.dialect.name != "postgresql":
            return f"authorization rows are read for every request ({engine.dialect.name} auth database)"
        with engine.begin() as connection:
            if connection.exec_driver_sql(SHARED_WITH_TRACKING_SQL).scalar():
                raise GenerationTriggersError(
                    "the auth database also holds MLflow's tracking tables; give the auth data a database of its own"
                )
            connection.exec_driver_sql(INSTALL_GENERATION_SQL)
            ready = connection.exec_driver_sql(GENERATION_READY_SQL).scalar()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip()
        raise GenerationTriggersError((cause.splitlines() or [type(exc).__name__])[0]) from None
    finally:
        engine.dispose()
    if not ready:
        raise GenerationTriggersError(f"{AUTH_GENERATION_TRIGGER} triggers are missing after their installation")
    return "auth database generation triggers in place"


class GenerationReader:
    """Reads the auth database's current generation on a connection pool of its own.

    The pool is lean on purpose (autocommit, no pre-ping, no reset on return): the read is one statement,
    and any failure (a dropped connection, a restarted server) answers None, so the caller reads the rows
    through MLflow's store as it would without a generation; the failed connection is discarded."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @classmethod
    def for_store(cls, store: Any, pool_size: int = 4, max_overflow: int = 16) -> GenerationReader | None:
        """A reader on the auth store's database, or None where generations cannot be used: not PostgreSQL,
        a read replica configured (its rows could lag the primary's generation), or the generation
        triggers not (all) installed (`migrate` not run by this image, or it could not install them)."""
        import sqlalchemy

        engine = getattr(store, "engine", None)
        if engine is None or engine.dialect.name != "postgresql" or getattr(store, "read_engine", None) is not None:
            return None
        try:
            with engine.connect() as connection:
                ready = connection.exec_driver_sql(GENERATION_READY_SQL).scalar()
        except sqlalchemy.exc.SQLAlchemyError:
            return None
        if not ready:
            return None
        lean = sqlalchemy.create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=False,
            pool_reset_on_return=None,
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        return cls(lean)

    def read(self) -> str | None:
        """The current generation, or None when it cannot be read."""
        try:
            connection = self.engine.raw_connection()
        except Exception:  # any failure: no generation, and the caller reads afresh
            return None
        try:
            cursor = connection.cursor()
            cursor.execute(READ_GENERATION_SQL)
            row = cursor.fetchone()
            cursor.close()
        except Exception:  # any failure: no generation, and the caller reads afresh
            connection.invalidate()
            return None
        finally:
            connection.close()
        return None if row is None else str(row[0])


class RowsByGeneration:
    """What a worker keeps of the auth database: rows under the generation they were read at.

    `get(key, generation, read)` answers from what was kept when the generation is the current one and
    the key was read at it; otherwise it calls read() and keeps the answer only if the generation is still
    `generation` afterwards (`current()`), so rows read while a change committed are never kept. A new
    generation drops everything kept; at most max_size keys are kept (least recently used out first).
    Exceptions from read() (a user that does not exist) pass through and are not kept."""

    def __init__(self, current: Callable[[], str | None], max_size: int = 10_000) -> None:
        self.current = current
        self.kept: tuple[str | None, Recent] = (None, Recent(max_size))  # (generation, its rows), replaced as one

    @property
    def generation(self) -> str | None:
        return self.kept[0]

    @property
    def rows(self) -> OrderedDict[Any, Any]:
        return self.kept[1].entries

    def get(self, key: Any, generation: str, read: Callable[[], Any]) -> Any:
        kept_generation, rows = self.kept
        if kept_generation == generation:
            value = rows.get(key)
            if value is not MISSING:
                return value
        value = read()
        if self.current() == generation:
            kept_generation, rows = self.kept
            if kept_generation != generation:
                rows = Recent(rows.max_size)
                self.kept = (generation, rows)
            rows.put(key, value)
        return value


def keep_decision_rows_by_generation(
    store: Any, reader: GenerationReader, deciding_memo: Callable[[], dict[str, Any] | None]
) -> Callable[[], str | None]:
    """Answer the auth store's `get_user(username)` and `list_grants(user_id, workspace, resource_types)`
    from rows kept by generation (RowsByGeneration) while basic-auth decides a request, and read them
    afresh everywhere else.

    deciding_memo() is a dict for the request being decided (basic-auth's before-request hook running)
    and None otherwise: views and after-request hooks, which may change users and grants within the
    request, always read afresh. The generation is read once per decided request (one indexed single-row
    read on a lean pool) instead of MLflow's two ORM sessions (user row, grants), each with its pool
    pre-ping and commit. Returns the request's generation as a function (None outside a decision, or when it
    cannot be read), for CredentialsByGeneration. Idempotent."""
    if getattr(store.get_user, "mlopskit_by_generation", False):
        return store.get_user.mlopskit_generation  # type: ignore[no-any-return]
    rows = RowsByGeneration(reader.read)
    get_user, list_grants = store.get_user, getattr(store, "list_grants", None)

    def generation() -> str | None:
        memo = deciding_memo()
        if memo is None:
            return None
        if "generation" not in memo:
            memo["generation"] = reader.read()
        return memo["generation"]  # type: ignore[no-any-return]

    def kept_get_user(username: str) -> Any:
        current = generation()
        if current is None:
            return get_user(username)
        return rows.get(("user", username), current, lambda: get_user(username))

    def kept_list_grants(user_id: int, workspace: str, resource_types: Iterable[str]) -> list[Any]:
        assert list_grants is not None
        types = frozenset(resource_types)
        current = generation()
        if current is None:
            return list(list_grants(user_id, workspace, types))
        key = ("grants", user_id, workspace, types)
        return list(rows.get(key, current, lambda: tuple(list_grants(user_id, workspace, types))))

    kept_get_user.mlopskit_by_generation = True  # type: ignore[attr-defined]
    kept_get_user.mlopskit_generation = generation  # type: ignore[attr-defined]
    store.get_user = kept_get_user
    if list_grants is not None:  # MLflow 3.17's single grants query; earlier releases read grants otherwise
        store.list_grants = kept_list_grants
    return generation


class CredentialsByGeneration:
    """MLflow's credential cache (`auth._USER_AUTH_CACHE`, a cachetools TTLCache of verified logins) with
    each login kept under the generation of the request that verified it.

    While a request is decided (`generation()` answers), a login kept under another generation is not
    found, so the password is verified again against the current row: a password changed, a user deleted or
    an admin flag changed counts from the next decided request on every worker, where MLflow's cache kept
    the old login for `auth_cache_ttl_seconds` on every worker but the one that made the change. Elsewhere
    (FastAPI's own routes: the gateway, jobs, OTLP traces) the cache answers as MLflow's does. Implements
    what MLflow uses of the cache: get, item assignment, iteration over keys, pop."""

    def __init__(self, cache: Any, generation: Callable[[], str | None]) -> None:
        self.cache = cache
        self.generation = generation

    def get(self, key: Any, default: Any = None) -> Any:
        entry = self.cache.get(key)
        if entry is None:
            return default
        kept_at, user = entry
        now = self.generation()
        return default if now is not None and kept_at != now else user

    def __setitem__(self, key: Any, user: Any) -> None:
        self.cache[key] = (self.generation(), user)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.cache))

    def pop(self, key: Any, default: Any = None) -> Any:
        entry = self.cache.pop(key, None)
        return default if entry is None else entry[1]


def keep_credentials_by_generation(auth: Any, generation: Callable[[], str | None]) -> bool:
    """Put CredentialsByGeneration in place of basic-auth's credential cache (`auth._USER_AUTH_CACHE`, read
    by its functions at call time). False, changing nothing, when the cache is off (ttl 0) or absent.
    Idempotent."""
    cache = getattr(auth, "_USER_AUTH_CACHE", None)
    if cache is None or isinstance(cache, CredentialsByGeneration):
        return False
    auth._USER_AUTH_CACHE = CredentialsByGeneration(cache, generation)
    return True


def mark_decisions(flask_app: Any, decide: Callable[[], Any], memo: Callable[[], dict[str, Any] | None]) -> bool:
    """Replace the before-request hook `decide` (basic-auth's `_before_request`) in flask_app with one that
    runs it with memo()["deciding"] set, so `deciding_request_memo` answers while it runs. False, changing
    nothing, when flask_app does not run that hook."""
    hooks = flask_app.before_request_funcs.get(None, [])
    for index, hook in enumerate(hooks):
        if hook is decide:

            def deciding() -> Any:
                current = memo()
                if current is None:
                    return decide()
                current["deciding"] = True
                try:
                    return decide()
                finally:
                    current["deciding"] = False

            hooks[index] = deciding
            return True
    return False


def decision_state() -> dict[str, Any] | None:
    """The current request's decision state (flask_request_dict; apart from the user rows of
    flask_request_memo, which are keyed by user name); None outside a request."""
    return flask_request_dict("mlopskit_decision")


def deciding_request_memo() -> dict[str, Any] | None:
    """decision_state() while basic-auth's before-request hook decides the request; None otherwise."""
    state = decision_state()
    return state if state is not None and state.get("deciding") else None


def flask_request_dict(name: str) -> dict[str, Any] | None:
    """The dict `name` on flask.g for the current request; None outside one (e.g. FastAPI's own routes)."""
    from flask import g, has_request_context

    if not has_request_context():
        return None
    found: dict[str, Any] = g.setdefault(name, {})
    return found


def flask_request_memo() -> dict[str, Any] | None:
    """The current request's user rows by user name (flask_request_dict); None outside a request."""
    return flask_request_dict("mlopskit_users")


MISSING = object()


class Recent:
    """A thread-safe map of at most max_size keys; the least recently used key goes first."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.entries: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value kept under key (now the most recently used), or MISSING."""
        with self.lock:
            if key not in self.entries:
                return MISSING
            self.entries.move_to_end(key)
            return self.entries[key]

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            if len(self.entries) > self.max_size:
                self.entries.popitem(last=False)


# Paths longer than this are matched every time instead of remembered: the memo is filled before any login,
# and 4096 paths of a header's 16 KiB would hold 64 MiB.
MAX_REMEMBERED_PATH = 256


def remember_native_route_matches(auth: Any, max_size: int = 4096) -> None:
    """Remember MLflow's answer to "is this request one of FastAPI's own routes?" per request kind and path.

    auth.fastapi_permission_middleware asks `_scope_matches_native_route(routes, scope)` for every request
    without a FastAPI validator (every tracking and registry call: Flask serves them) when fail-closed is on
    (MLflow 3.17's default): each of ~80 route patterns is matched in turn, 0.1-0.7 ms of CPU per request
    here. Route matching reads the scope's type, method, root_path and path only, and the routes are fixed
    once the app exists, so the answer is remembered under those (least recently used first out past
    max_size; paths longer than MAX_REMEMBERED_PATH are matched every time). Idempotent."""
    original = getattr(auth, "_scope_matches_native_route", None)
    if original is None or getattr(original, "mlopskit_cached", False):
        return
    answers = Recent(max_size)

    def matches(native_routes: Any, scope: Mapping[str, Any]) -> bool:
        path = scope.get("path") or ""
        if len(path) + len(scope.get("root_path", "")) > MAX_REMEMBERED_PATH:
            return bool(original(native_routes, scope))
        key = (id(native_routes), scope.get("type"), scope.get("method"), scope.get("root_path", ""), path)
        answer = answers.get(key)
        if answer is MISSING:
            answer = bool(original(native_routes, scope))
            answers.put(key, answer)
        return bool(answer)

    matches.mlopskit_cached = True  # type: ignore[attr-defined]
    auth._scope_matches_native_route = matches


class RunExperimentOnly:
    """What auth's permission checks read of a run, `run.info.experiment_id`, without loading the run.

    Any other attribute loads the whole run (`full()`) and answers from it, so a caller that reads more
    still gets the real run."""

    def __init__(self, experiment_id: str, full: Callable[[], Any]) -> None:
        self._experiment_id = experiment_id
        self._full = full
        self._run: Any = None

    def _loaded(self) -> Any:
        if self._run is None:
            self._run = self._full()
        return self._run

    @property
    def info(self) -> Any:
        return RunInfoExperimentOnly(self._experiment_id, self._loaded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loaded(), name)


class RunInfoExperimentOnly:
    """`run.info` with experiment_id at hand; any other attribute from the loaded run's info."""

    def __init__(self, experiment_id: str, loaded: Callable[[], Any]) -> None:
        self.experiment_id = experiment_id
        self._loaded = loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loaded().info, name)


class RunLookupsByExperiment:
    """The tracking store as basic-auth's permission checks see it: `get_run(run_id)` reads only the run's
    experiment id (one indexed query on `runs`) instead of the whole run (its latest metrics, params, tags,
    inputs and outputs: several queries), and every other attribute is the store's own.

    MLflow 3.17's basic-auth loads the whole run for every run-scoped request of a user who is not an
    admin (log_metric, get_run, log_batch...; `_run_requirement`), only to read `run.info.experiment_id`.
    The decision is the same: a run's experiment never changes (MLflow has no call that moves a run), so
    the experiment ids of runs found are kept in `known` (a Recent map shared by the worker), as MLflow
    keeps a resource's workspace; a run that does not exist raises RESOURCE_DOES_NOT_EXIST as `get_run`
    does and is asked again every time (deleted runs are found, as by `get_run`). The one difference: a run
    removed for good (`mlflow gc`) after its experiment was kept is decided by its experiment's grants, and
    a user allowed there then gets get_run's 404 instead of 403. A store without `ManagedSessionMaker` (not
    SQL) is used as it is."""

    def __init__(self, store: Any, known: Recent | None = None) -> None:
        self._store = store
        self._known = known if known is not None else Recent(1)

    def get_run(self, run_id: str) -> Any:
        experiment_id = self._known.get(run_id)
        if experiment_id is MISSING:
            experiment_id = run_experiment_id(self._store, run_id)
            self._known.put(run_id, experiment_id)
        return RunExperimentOnly(str(experiment_id), lambda: self._store.get_run(run_id))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def run_experiment_id(store: Any, run_id: str) -> str:
    """The experiment id (as a string, as `run.info.experiment_id`) of run_id in a SqlAlchemyStore.

    Raises MlflowException(RESOURCE_DOES_NOT_EXIST) for an unknown run, with get_run's message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.store.tracking.dbmodels.models import SqlRun

    with store.ManagedSessionMaker() as session:
        row = session.query(SqlRun.experiment_id).filter(SqlRun.run_uuid == run_id).one_or_none()
    if row is None:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    return str(row[0])


def look_up_runs_by_experiment_only(auth: Any, max_runs: int = 10_000) -> None:
    """Give basic-auth's module RunLookupsByExperiment in place of the tracking store it asks for
    (`auth._get_tracking_store`, which its permission checks call); SQL stores only. The worker keeps the
    experiment ids of up to max_runs runs (about 250 bytes each). Idempotent."""
    original = getattr(auth, "_get_tracking_store", None)
    if original is None or getattr(original, "mlopskit_runs_by_experiment", False):
        return
    known = Recent(max_runs)

    def tracking_store() -> Any:
        store = original()
        return RunLookupsByExperiment(store, known) if hasattr(store, "ManagedSessionMaker") else store

    tracking_store.mlopskit_runs_by_experiment = True  # type: ignore[attr-defined]
    auth._get_tracking_store = tracking_store


# The name of basic-auth's FastAPI middleware function (mlflow.server.auth.add_fastapi_permission_middleware).
PERMISSION_MIDDLEWARE = "fastapi_permission_middleware"


class PermissionLayerForFastAPIRoutesOnly:
    """ASGI middleware in place of basic-auth's permission middleware: a request that MLflow's middleware
    would only hand on (`await call_next(request)` and nothing else) goes straight to the app; every other
    request goes through MLflow's own middleware, unchanged.

    MLflow's middleware is a Starlette `BaseHTTPMiddleware` (`@app.middleware("http")`): for every request
    it starts a task and streams the response through memory channels, including every tracking and
    registry call, which Flask serves and authorizes in its own before-request hook (where basic-auth's
    decisions for those routes are made). `hands_on(scope)` says which requests those are; when it cannot
    tell (it raises), MLflow's middleware decides."""

    def __init__(self, app: ASGIApp, layer: ASGIApp, hands_on: Callable[[Scope], bool]) -> None:
        self.app = app
        self.layer = layer
        self.hands_on = hands_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                direct = self.hands_on(scope)
            except Exception:  # MLflow's own middleware then decides, as it always did
                direct = False
            if direct:
                await self.app(scope, receive, send)
                return
        await self.layer(scope, receive, send)


def flask_route_predicate(auth: Any, native_routes: Any) -> Callable[[Scope], bool] | None:
    """`hands_on(scope)` for PermissionLayerForFastAPIRoutesOnly, from basic-auth's own functions, or None
    when this MLflow release lacks one of them.

    MLflow 3.17.2's middleware hands a request on untouched when its path is unprotected (login-free), or
    when no FastAPI validator covers it and it is not one of FastAPI's own routes (a native route without
    a validator is denied when fail-closed is on). Only those two kinds are answered True here; the path is
    the scope's, as `get_routed_asgi_path` reads it."""
    needed = ("is_unprotected_route", "_find_fastapi_validator", "_scope_matches_native_route")
    if not all(callable(getattr(auth, name, None)) for name in needed):
        return None

    def hands_on(scope: Scope) -> bool:
        path = scope.get("path")
        if not isinstance(path, str) or not path:
            return False
        if auth.is_unprotected_route(path):
            return True
        if auth._find_fastapi_validator(path, scope["method"]) is not None:
            return False
        return not auth._scope_matches_native_route(native_routes, scope)

    return hands_on


def keep_permission_layer_to_fastapi_routes(app: Any, auth: Any) -> bool:
    """Put PermissionLayerForFastAPIRoutesOnly in place of basic-auth's permission middleware in app (a
    FastAPI app whose middleware stack is not built yet). Returns False, changing nothing, when the app has
    no such middleware or this release lacks the functions the predicate needs. Idempotent."""
    from starlette.middleware import Middleware

    native = getattr(auth, "_native_fastapi_routes", None)
    if native is None:
        return False
    for index, entry in enumerate(app.user_middleware):
        dispatch = entry.kwargs.get("dispatch")
        if getattr(dispatch, "__name__", "") != PERMISSION_MIDDLEWARE:
            continue
        hands_on = flask_route_predicate(auth, native(app))
        if hands_on is None:
            return False

        def layer_over(
            inner: ASGIApp,
            _cls: Any = entry.cls,
            _args: Any = entry.args,
            _kwargs: Any = entry.kwargs,
            _hands_on: Callable[[Scope], bool] = hands_on,
        ) -> PermissionLayerForFastAPIRoutesOnly:
            return PermissionLayerForFastAPIRoutesOnly(inner, _cls(inner, *_args, **_kwargs), _hands_on)

        layer_over.__name__ = PERMISSION_MIDDLEWARE + "_for_fastapi_routes"
        app.user_middleware[index] = Middleware(layer_over)
        return True
    return False


def workspaces_enabled() -> bool:
    """MLflow's MLFLOW_ENABLE_WORKSPACES (3.17); False for releases without workspaces."""
    from mlflow import environment_variables

    flag = getattr(environment_variables, "MLFLOW_ENABLE_WORKSPACES", None)
    return bool(flag is not None and flag.get())


def _server_info_modules() -> list[Any]:
    from mlflow.server import handlers

    modules: list[Any] = [handlers]
    try:
        from mlflow.server import server_info_api
    except ImportError:  # releases without the native FastAPI route
        return modules
    return [*modules, server_info_api]


def create_app() -> RequireReadableBasicAuth:
    """MLflow's basic-auth app (FastAPI under uvicorn, MLflow's default server) behind the guard."""
    from mlflow.server import auth
    from mlflow.server.auth import create_app as create_basic_auth_app
    from mlflow.server.auth import is_unprotected_route

    advertise_proxied_transfers_only(*_server_info_modules())

    if os.environ.get("_MLFLOW_SGI_NAME", "uvicorn") != "uvicorn":
        raise SystemExit(f"{APP_NAME} is an ASGI app: run `mlflow server` with uvicorn (its default)")
    prefix = os.environ.get("_MLFLOW_STATIC_PREFIX", "").rstrip("/")

    def is_public(path: str) -> bool:
        routed = path[len(prefix) :] if prefix and path.startswith(prefix + "/") else path
        return bool(is_unprotected_route(path)) or routed.startswith(GATEWAY_PREFIX)

    app = create_basic_auth_app()
    reader = GenerationReader.for_store(auth.store)
    if reader is not None and mark_decisions(auth.app, auth._before_request, decision_state):
        generation = keep_decision_rows_by_generation(auth.store, reader, deciding_request_memo)
        keep_credentials_by_generation(auth, generation)
    share_user_lookups_within_a_request(auth.store, flask_request_memo)
    bound_password_checks(auth.store)
    remember_native_route_matches(auth)
    if not workspaces_enabled():  # the experiment-id lookup reads runs across workspaces
        look_up_runs_by_experiment_only(auth)
    keep_permission_layer_to_fastapi_routes(app, auth)
    return RequireReadableBasicAuth(app, is_public)


# ------------------------------------------------------------------------------------ auth ini render

_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


class RenderError(Exception):
    """The template cannot be rendered from this environment; the message says which variable."""


def ini_value(name: str, value: str) -> str:
    """A value as configparser reads it back unchanged: '%' doubled (interpolation), no line breaks."""
    if "\n" in value or "\r" in value:
        raise RenderError(f"{name} contains a line break, which an ini value cannot hold")
    if value != value.strip():
        raise RenderError(f"{name} starts or ends with whitespace, which the ini format drops")
    return value.replace("%", "%%")


def render_auth_config(template: str, environ: Mapping[str, str]) -> str:
    """The ini from a template: ${NAME} placeholders from environ; comment lines are left out."""
    lines = [line for line in template.splitlines() if not line.lstrip().startswith(("#", ";"))]
    missing = sorted({n for line in lines for n in _PLACEHOLDER.findall(line) if not environ.get(n)})
    if missing:
        raise RenderError(f"the template needs {', '.join(missing)}; set them in the container's environment")
    rendered = [_PLACEHOLDER.sub(lambda m: ini_value(m.group(1), environ[m.group(1)]), line) for line in lines]
    return "\n".join(rendered) + "\n"


def mask_uri_password(uri: str) -> str:
    """The URI with its password replaced by ****, for printing."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def mask_rendered(text: str) -> str:
    """The rendered ini with the database password masked (the escaped '%%' left as written)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().endswith("database_uri"):
            line = f"{key}= {mask_uri_password(value.strip().replace('%%', '%')).replace('%', '%%')}"
        out.append(line)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ metrics

# `mlflow server --expose-prometheus DIR` runs prometheus_client in multiprocess mode: every worker process
# writes its samples to files of its own in DIR (counter_<pid>.db, histogram_<pid>.db, ...), and a scrape
# sums them. Files left by an earlier start (a restarted container keeps its emptyDir) would be summed into
# the new server's counters for good, so bootstrap removes them before any worker starts.
METRICS_DIR_ENV = "MLFLOW_EXPOSE_PROMETHEUS"
METRICS_FILE_PATTERN = "*.db"


class MetricsDirError(Exception):
    """The metrics directory cannot be used; the message names the variable and the fix."""


def prepare_metrics_dir(directory: str) -> int:
    """Create the multiprocess directory if missing and remove prometheus_client's files from it (only
    `*.db` files, so a mistyped path never loses anything else). Returns how many files were removed;
    raises MetricsDirError when it is not a writable directory."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetricsDirError(
            f"{METRICS_DIR_ENV}={directory} cannot be created ({exc.strerror}); mount a writable "
            "volume there (an emptyDir in the cluster)"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MetricsDirError(
            f"{METRICS_DIR_ENV}={directory} is not writable by uid {os.getuid()}; mount a "
            "writable volume there (an emptyDir in the cluster)"
        )
    removed = 0
    for stale in path.glob(METRICS_FILE_PATTERN):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def serve_metrics(directory: str, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 -- a pod's port
    """Serve the sum of every worker's metrics files in directory at http://host:port/metrics until killed.

    Runs beside the server (the pod's `metrics` container): no MLflow import and no login, so Prometheus
    scrapes it on its own port, which a NetworkPolicy opens to the monitoring namespace only."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    # PID 1 of its container: without a handler of its own, SIGTERM would be ignored and every pod deletion
    # would wait out the grace period. The server thread is a daemon: leaving the main thread ends it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _, thread = start_http_server(port, addr=host, registry=registry)
    thread.join()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


# --------------------------------------------------------------------------------------------- gc


def proxied_artifact_destination(destination: str, artifact_uri: str) -> str:
    """Where the server keeps a proxied artifact: `mlflow-artifacts:/1/abc/artifacts` under destination
    `s3://mlflow/` is `s3://mlflow/1/abc/artifacts` (the path of the URI, as MLflow 3.17.2's
    mlflow.server.handlers._get_proxied_run_artifact_destination_path resolves it). Raises ValueError for
    a path that climbs out of the destination."""
    path = urlsplit(artifact_uri).path.lstrip("/")
    if ".." in path.split("/"):
        raise ValueError(f"artifact URI {artifact_uri!r} climbs out of the artifacts destination")
    return posixpath.join(destination.rstrip("/") + "/", path) if path else destination


def resolve_proxied_artifacts_locally(destination: str) -> None:
    """Make `mlflow-artifacts:` URIs open the artifacts destination itself instead of the tracking server's
    HTTP proxy, in this process only (MLflow's artifact repository registry, by scheme)."""
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry,
        get_artifact_repository,
    )

    def repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> Any:
        return get_artifact_repository(proxied_artifact_destination(destination, artifact_uri))

    _artifact_repository_registry.register("mlflow-artifacts", repository)


def run_gc(args: list[str], environ: Mapping[str, str]) -> None:
    """`mlflow gc ARGS` on the tracking database: runs in the `deleted` stage (and their artifacts) go for good.

    MLflow's gc deletes a run's artifacts through its artifact URI; with proxied artifacts that is an
    `mlflow-artifacts:` URI, which MLflow would send to a tracking server over HTTP with an admin's login.
    Here it opens the artifacts destination (S3) directly with the server's own S3 credentials, so the job
    needs the database and the bucket, and nothing else. Exits with gc's status."""
    backend, destination = environ["MLFLOW_BACKEND_STORE_URI"], environ["MLFLOW_ARTIFACTS_DESTINATION"]
    resolve_proxied_artifacts_locally(destination)
    from mlflow.cli import cli

    # The store URI is passed in-process, never on a command line where `ps` would show its password.
    # gc insists on a tracking URI; the database is one, and nothing here resolves artifacts through it.
    cli.main(
        args=[
            "gc",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            destination,
            "--tracking-uri",
            backend,
            *args,
        ],
        prog_name="mlflow",
    )


# ---------------------------------------------------------------------------------------------- main


def bootstrap() -> None:
    """What `mlflow server --app-name basic-auth` checks before it starts workers, for our app name too,
    and an empty metrics directory when the server will expose Prometheus metrics.

    MLflow 3.17 has both checks as functions; 3.16 checks the Flask secret only inside create_app (each
    worker), and releases before it also create the admin there: what a release lacks, its workers do.
    """
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    if metrics_dir:
        try:
            removed = prepare_metrics_dir(metrics_dir)
        except MetricsDirError as exc:
            raise SystemExit(f"mlflow-entrypoint: error: {exc}") from None
        print(
            f"mlflow-entrypoint: metrics directory {metrics_dir} ready ({removed} file(s) of an earlier start removed)",
            file=sys.stderr,
        )
    from mlflow.server import auth

    for name in ("get_flask_server_secret_key", "bootstrap_admin_user"):
        check = getattr(auth, name, None)
        if check is not None:
            check()


def keep_tcp_nodelay(config_class: Any) -> None:
    """Make uvicorn's pre-bound listening socket say it is TCP, so its workers' connections get TCP_NODELAY.

    uvicorn (0.54) binds the socket itself when it runs several workers, with `socket.socket(family)`, whose
    `proto` is 0; accepted connections inherit it, and asyncio turns Nagle's algorithm off only for sockets
    whose proto is IPPROTO_TCP. Every response on a kept-alive connection after the first then waited for the
    client's delayed ACK: +40 ms per request (measured: 44 ms against 0.3 ms with one worker;
    encode/uvicorn#3149, fix not released). The same socket is re-wrapped with proto IPPROTO_TCP. Idempotent."""
    bind = config_class.bind_socket
    if getattr(bind, "mlopskit_tcp", False):
        return

    def bind_socket(self: Any) -> socket.socket:
        sock: socket.socket = bind(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and not sock.proto:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        return sock

    bind_socket.mlopskit_tcp = True  # type: ignore[attr-defined]
    config_class.bind_socket = bind_socket


def run_uvicorn(args: list[str]) -> NoReturn:
    """uvicorn's own command line (`python -m uvicorn ARGS`), with keep_tcp_nodelay applied first."""
    from uvicorn import config
    from uvicorn.main import main as uvicorn_main

    keep_tcp_nodelay(config.Config)
    uvicorn_main.main(args=args, prog_name="uvicorn")
    raise SystemExit(0)


def server_command(cmd: Any) -> list[str] | None:
    """The uvicorn command `mlflow server` starts (`python -m uvicorn ARGS`) as this module's `uvicorn ARGS`
    (see keep_tcp_nodelay); None for any other command."""
    argv = [str(part) for part in cmd] if isinstance(cmd, list | tuple) else []
    if argv[1:3] != ["-m", "uvicorn"]:
        return None
    return [argv[0], "-m", "mlopskit_mlflow_app", "uvicorn", *argv[3:]]


def exec_server(cmd: Any, *, extra_env: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """Replace this process with the server command `mlflow server` would start as its child.

    Stands in for mlflow.utils.process._exec_cmd in mlflow.server (the one call there starts uvicorn with
    the server's environment in extra_env). The child's environment is the same; only the parent that
    would wait for it (a Python process holding all of MLflow, about 200 MB) is gone, and signals reach
    uvicorn directly. Any other command is passed to MLflow's own function."""
    argv = server_command(cmd)
    if argv is None:
        from mlflow.utils.process import _exec_cmd

        return _exec_cmd(cmd, extra_env=extra_env, **kwargs)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, {**os.environ, **(extra_env or {})})  # noqa: S606 - MLflow's own server command


def spawn_server(cmd: Any, **kwargs: Any) -> Any:
    """mlflow.utils.process._exec_cmd, with the uvicorn command run through keep_tcp_nodelay (job runner on:
    MLflow keeps its parent process, which starts and watches the job runner)."""
    from mlflow.utils.process import _exec_cmd

    return _exec_cmd(server_command(cmd) or cmd, **kwargs)


def serve(args: list[str]) -> NoReturn:
    """MLflow's own `mlflow server ARGS` (its CLI, checks and environment) in this process; with `--app-name`
    (the image's basic-auth app), bootstrap() first.

    One Python start and one import of MLflow before the workers instead of two (bootstrap, then the
    CLI), and the workers skip the bootstrap it did. uvicorn runs with keep_tcp_nodelay. With MLflow's job
    runner off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION, the platform's default), uvicorn then replaces this
    process (exec_server); with it on, MLflow keeps its parent process, which starts and watches the job
    runner."""
    from mlflow import environment_variables, server
    from mlflow.cli import cli

    if "--app-name" in args:
        bootstrap()
        # What `mlflow server --app-name basic-auth` tells its workers after the same bootstrap: they then
        # only open the store instead of repeating it (two password-hash checks each, ~1 s of CPU at start).
        bootstrapped = getattr(environment_variables, "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED", None)
        if bootstrapped is not None:
            os.environ[bootstrapped.name] = "true"
    job_runner = environment_variables.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get()
    server._exec_cmd = spawn_server if job_runner else exec_server  # type: ignore[attr-defined]
    cli.main(args=["server", *args], prog_name="mlflow")
    raise SystemExit(0)


def migrate(tracking_uri: str, auth_uri: str) -> None:
    """MLflow's own `mlflow db upgrade TRACKING-URI` then `python -m mlflow.server.auth db upgrade --url
    AUTH-URI`, as one process: MLflow is imported once (the two commands imported it twice). The tracking
    upgrade waits for the database as MLflow does (it retries the connection); click errors exit as the
    commands would."""
    from mlflow.db import commands as tracking_db
    from mlflow.server.auth.db.cli import commands as auth_db

    _say("upgrading the tracking database schema")
    tracking_db.main(args=["upgrade", tracking_uri], prog_name="mlflow db", standalone_mode=False)
    _say("upgrading the auth database schema")
    auth_db.main(args=["upgrade", "--url", auth_uri], prog_name="mlflow.server.auth db", standalone_mode=False)
    _say("schemas are up to date")
    try:
        _say(install_generation_triggers(auth_uri))
    except GenerationTriggersError as exc:
        _say(
            f"note: the auth database generation triggers could not be installed ({exc}); the servers "
            "read users and grants afresh for every request (slower, same decisions). They need PostgreSQL 13 "
            "or later and the database user owning the auth tables."
        )


def _say(text: str) -> None:
    print(f"mlflow-entrypoint: {text}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    command, *args = argv or ["help"]
    if command == "render-auth-config" and args:
        template = Path(args[0]).read_text(encoding="utf-8")
        try:
            text = render_auth_config(template, os.environ)
        except RenderError as exc:
            print(f"mlflow-entrypoint: error: {args[0]}: {exc}", file=sys.stderr)
            return 1
        sys.stdout.write(mask_rendered(text) if "--mask" in args[1:] else text)
        return 0
    if command == "bootstrap":
        bootstrap()
        return 0
    if command == "serve":
        serve(args)
    if command == "uvicorn":
        run_uvicorn(args)
    if command == "migrate" and len(args) == 2:
        migrate(*args)
        return 0
    if command == "serve-metrics" and len(args) == 2 and args[1].isdigit():
        serve_metrics(args[0], int(args[1]))
        return 0
    if command == "gc":
        run_gc(args, os.environ)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
