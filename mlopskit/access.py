"""config/access.yaml applied to MLflow like a manifest: plan what differs, apply it, rotate passwords.

Everything goes through MLflow's auth REST API as the platform admin. MLflow 3.17 stores a user's
grants on a per-user role (`__user_<id>__`): experiments are keyed by experiment id, registered
models by name, `*` means every one of its kind. A prefix (`team-a/*`) has no MLflow equivalent, so
it is expanded to the experiments and models that exist when the plan is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import MlflowClient
from mlopskit.settings import ENV_FILE, AccessGrant, AccessSettings, Settings

KIND_LABELS = {"experiment": "experiment", "registered_model": "registered model"}
# MLflow 3.17 refuses an explicit NO_PERMISSIONS grant on a resource; DENY is the same intent.
TO_MLFLOW = {"NO_PERMISSIONS": "DENY"}
FROM_MLFLOW = {"DENY": "NO_PERMISSIONS"}
# When several grants reach one user on one resource, the highest level wins, as MLflow folds roles.
PRIORITY = {"NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
PAGE = 1000


@dataclass(frozen=True, order=True)
class Target:
    """One grantable thing: an experiment by id, a registered model by name, or `*` for all of a kind."""

    kind: str
    key: str


@dataclass(frozen=True)
class Change:
    """One step of a plan, as the table shows it."""

    action: str  # create user, set admin, unset admin, rotate password, grant, change level, revoke, delete user
    user: str
    target: Target | None = None
    before: str | None = None
    after: str | None = None


@dataclass
class LiveState:
    """What MLflow holds now."""

    users: dict[str, tuple[int, bool]]  # name -> (id, is_admin)
    grants: dict[tuple[str, Target], str]  # (user, target) -> level, in the file's words
    experiments: dict[str, str]  # name -> id (active experiments)
    models: set[str]


@dataclass
class Plan:
    """What `apply` changes; `undeclared` is what only `--prune` removes."""

    changes: list[Change] = field(default_factory=list)
    undeclared: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: dict[Target, str] = field(default_factory=dict)
    prune: bool = False

    @property
    def effective(self) -> list[Change]:
        return self.changes + (self.undeclared if self.prune else [])

    def label(self, target: Target | None) -> str:
        if target is None:
            return "-"
        return self.labels.get(target) or f"{KIND_LABELS.get(target.kind, target.kind)} {target.key}"

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(action, user, resource, level) for the table; the level as before → after."""
        rows = []
        for change in self.effective:
            level = "-"
            if change.before and change.after:
                level = f"{change.before} → {change.after}"
            elif change.after or change.before:
                level = change.after or f"{change.before} → -"
            rows.append((change.action, change.user, self.label(change.target), level))
        return rows


# ------------------------------------------------------------------------------------------ reading


def _experiments(client: MlflowClient) -> dict[str, str]:
    found: dict[str, str] = {}
    token: str | None = None
    while True:
        body: dict[str, Any] = {"max_results": PAGE, "view_type": "ACTIVE_ONLY"}
        if token:
            body["page_token"] = token
        page = client.api("POST", "experiments/search", json=body)
        for experiment in page.get("experiments", []):
            found[str(experiment["name"])] = str(experiment["experiment_id"])
        token = page.get("next_page_token")
        if not token:
            return found


def _models(client: MlflowClient) -> set[str]:
    found: set[str] = set()
    token: str | None = None
    while True:
        params: dict[str, Any] = {"max_results": PAGE}
        if token:
            params["page_token"] = token
        page = client.api("GET", "registered-models/search", params=params)
        found |= {str(model["name"]) for model in page.get("registered_models", [])}
        token = page.get("next_page_token")
        if not token:
            return found


def read_live(client: MlflowClient, skip_grants_of: str) -> LiveState:
    """Users, their direct grants on experiments and models, and the experiments and models that exist."""
    users = {
        str(user["username"]): (int(user["id"]), bool(user.get("is_admin")))
        for user in client.api("GET", "users/list").get("users", [])
    }
    grants: dict[tuple[str, Target], str] = {}
    for name, (user_id, _) in users.items():
        if name == skip_grants_of:
            continue
        rows = client.api3("GET", "users/permissions/list", params={"username": name}).get("permissions", [])
        for row in rows:
            # Only the user's own role: roles made by hand in MLflow's UI are not ours to manage.
            if row.get("role_name") != f"__user_{user_id}__" or row.get("resource_type") not in KIND_LABELS:
                continue
            level = str(row["permission"])
            grants[(name, Target(str(row["resource_type"]), str(row["resource_pattern"])))] = FROM_MLFLOW.get(
                level, level
            )
    return LiveState(users, grants, _experiments(client), _models(client))


# ----------------------------------------------------------------------------------------- planning


def _expand(grant: AccessGrant, live: LiveState, plan: Plan) -> list[Target]:
    """The targets a grant's name, prefix or `*` reaches now."""
    kind, pattern = grant.kind, grant.pattern
    noun = KIND_LABELS[kind]
    if pattern == "*":
        target = Target(kind, "*")
        plan.labels[target] = f"every {noun} (*)"
        return [target]
    if kind == "experiment":
        names = {name: key for name, key in live.experiments.items()}
    else:
        names = {name: name for name in live.models}
    if pattern.endswith("*"):
        chosen = sorted(name for name in names if name.startswith(pattern[:-1]))
    elif pattern in names:
        chosen = [pattern]
    else:
        plan.notes.append(
            f"{noun} {pattern!r} does not exist yet: its grant is made by the first `invoke access.apply` after "
            "it is created"
        )
        chosen = []
    targets = []
    for name in chosen:
        target = Target(kind, names[name])
        plan.labels[target] = f"{noun} {name}" + (f" (id {names[name]})" if kind == "experiment" else "")
        targets.append(target)
    return targets


def desired_grants(access: AccessSettings, live: LiveState, plan: Plan) -> dict[tuple[str, Target], str]:
    """(user, target) -> level the file declares, prefixes expanded; the highest level wins a tie."""
    wanted: dict[tuple[str, Target], str] = {}
    for grant in access.permissions:
        targets = _expand(grant, live, plan)
        for user in access.members(grant):
            for target in targets:
                current = wanted.get((user, target))
                if current is None or PRIORITY[grant.level] > PRIORITY[current]:
                    wanted[(user, target)] = grant.level
    return wanted


def make_plan(settings: Settings, client: MlflowClient, *, prune: bool = False) -> Plan:
    """Compare config/access.yaml with MLflow; the running admin is never changed or removed."""
    access = settings.access
    admin = settings.platform.mlflow.admin_user
    live = read_live(client, skip_grants_of=admin)
    plan = Plan(prune=prune)
    for target in {target for _, target in live.grants}:
        _label_live(target, live, plan)
    declared = {user.name: user for user in access.users}
    for declared_user in access.users:
        name = declared_user.name
        if name not in live.users:
            plan.changes.append(Change("create user", name, after="admin" if declared_user.admin else None))
            continue
        _, is_admin = live.users[name]
        if is_admin != declared_user.admin:
            plan.changes.append(Change("set admin" if declared_user.admin else "unset admin", name))
        password = declared_user.password
        if password is not None and not client.accepts(name, password.get_secret_value()):
            plan.changes.append(Change("rotate password", name))
    wanted = desired_grants(access, live, plan)
    for (user, target), level in sorted(wanted.items()):
        before = live.grants.get((user, target))
        if before is None:
            plan.changes.append(Change("grant", user, target, after=level))
        elif before != level:
            plan.changes.append(Change("change level", user, target, before=before, after=level))
    for (user, target), level in sorted(live.grants.items()):
        if user in declared and (user, target) not in wanted:
            plan.undeclared.append(Change("revoke", user, target, before=level))
    for name in sorted(live.users):
        if name not in declared and name != admin:
            plan.undeclared.append(Change("delete user", name))
    return plan


def _label_live(target: Target, live: LiveState, plan: Plan) -> None:
    noun = KIND_LABELS.get(target.kind, target.kind)
    if target.key == "*":
        plan.labels[target] = f"every {noun} (*)"
    elif target.kind == "experiment":
        names = {key: name for name, key in live.experiments.items()}
        name = names.get(target.key)
        plan.labels[target] = f"{noun} {name} (id {target.key})" if name else f"{noun} id {target.key} (deleted)"


# ----------------------------------------------------------------------------------------- applying


def _grant(client: MlflowClient, user: str, target: Target, level: str) -> None:
    client.api3(
        "POST",
        "users/permissions/grant",
        json={
            "username": user,
            "resource_type": target.kind,
            "resource_id": target.key,
            "permission": TO_MLFLOW.get(level, level),
        },
    )


def _revoke(client: MlflowClient, user: str, target: Target) -> None:
    client.api3(
        "POST",
        "users/permissions/revoke",
        json={"username": user, "resource_type": target.kind, "resource_id": target.key},
    )


def apply_plan(settings: Settings, client: MlflowClient, plan: Plan) -> list[Change]:
    """Make each change of the plan, in order (users first, removals last); returns what was done."""
    passwords = {user.name: user.password for user in settings.access.users}
    done = []
    for change in plan.effective:
        if change.action in {"create user", "rotate password"}:
            password = passwords.get(change.user)
            if password is None:  # settings.require("access") refuses this earlier
                raise PlatformError(f"access.users[{change.user}]: no password in {ENV_FILE}")
            if change.action == "create user":
                client.api(
                    "POST", "users/create", json={"username": change.user, "password": password.get_secret_value()}
                )
                if change.after == "admin":
                    client.api("PATCH", "users/update-admin", json={"username": change.user, "is_admin": True})
            else:
                client.api(
                    "PATCH",
                    "users/update-password",
                    json={"username": change.user, "password": password.get_secret_value()},
                )
        elif change.action in {"set admin", "unset admin"}:
            client.api(
                "PATCH", "users/update-admin", json={"username": change.user, "is_admin": change.action == "set admin"}
            )
        elif change.action == "grant" and change.target and change.after:
            _grant(client, change.user, change.target, change.after)
        elif change.action == "change level" and change.target and change.after:
            # The grant API has no update: revoke, then grant at the new level.
            _revoke(client, change.user, change.target)
            _grant(client, change.user, change.target, change.after)
        elif change.action == "revoke" and change.target:
            _revoke(client, change.user, change.target)
        elif change.action == "delete user":
            client.api("DELETE", "users/delete", json={"username": change.user})
        done.append(change)
    return done


# ------------------------------------------------------------------------------------------ rotation


@dataclass(frozen=True)
class PreviousPassword:
    """A password the admin may still have in MLflow, and where it was found (never the value in messages)."""

    password: str
    source: str


def ensure_admin_password(
    settings: Settings, client_url: str, previous: Sequence[PreviousPassword], *, dry_run: bool = False
) -> str:
    """Make MLflow's admin password the one in .env: 'unchanged', 'rotated' (or 'would rotate').

    MLflow reads MLFLOW_ADMIN_PASSWORD only to create the admin in an empty auth database, so a changed
    value is rotated here through the API, logging in with the previous one. Without a previous password
    that works, nothing is changed and the error says what to do.
    """
    mlflow = settings.platform.mlflow
    if mlflow.admin_password is None:
        raise PlatformError("platform.mlflow.admin_password (MLFLOW_ADMIN_PASSWORD) is not set; cannot log in")
    user, wanted = mlflow.admin_user, mlflow.admin_password.get_secret_value()
    probe = MlflowClient(client_url, user, wanted)
    if probe.accepts(user, wanted):
        return "unchanged"
    for old in previous:
        if old.password == wanted or not probe.accepts(user, old.password):
            continue
        if dry_run:
            return f"would rotate (previous password from {old.source})"
        # MLflow asks for the current password when a user changes its own.
        MlflowClient(client_url, user, old.password).api(
            "PATCH",
            "users/update-password",
            json={"username": user, "password": wanted, "current_password": old.password},
        )
        if not probe.accepts(user, wanted):
            raise PlatformError(f"MLflow at {client_url} still refuses the new admin password after rotating it")
        return "rotated"
    tried = ", ".join(old.source for old in previous) or "none known"
    raise PlatformError(
        f"MLflow at {client_url} refuses the password of {user!r} in {ENV_FILE} (MLFLOW_ADMIN_PASSWORD), and no "
        f"previous password works (tried: {tried}), so it cannot be rotated; nothing in MLflow was changed. "
        f"Put the password MLflow accepts back into {ENV_FILE} as MLFLOW_ADMIN_PASSWORD and rerun the command; "
        "then set the new one and rerun it, which rotates it. If nobody knows the current password, another "
        "MLflow admin can set it in the UI or with PATCH /api/2.0/mlflow/users/update-password."
    )


def admin_client(settings: Settings, url: str, previous: Sequence[PreviousPassword]) -> MlflowClient:
    """The admin, logged in with the password in .env, or with a previous one while a rotation is only planned."""
    mlflow = settings.platform.mlflow
    assert mlflow.admin_password is not None  # settings.require("access")
    user, wanted = mlflow.admin_user, mlflow.admin_password.get_secret_value()
    client = MlflowClient(url, user, wanted)
    if not previous or client.accepts(user, wanted):
        return client
    working = next((old.password for old in previous if client.accepts(user, old.password)), wanted)
    return MlflowClient(url, user, working)


# ------------------------------------------------------------------------------------------ reaching


@contextlib.contextmanager
def mlflow_endpoint(settings: Settings, *, cluster: bool) -> Iterator[tuple[str, list[PreviousPassword]]]:
    """MLflow's URL and the admin's previous password: the local stack's, or the cluster's through a port-forward."""
    if not cluster:
        from mlopskit import images, local

        previous = local.previous_admin_password(images.docker_client(), settings)
        yield local.mlflow_url(settings), previous
        return
    from kubernetes import client

    from mlopskit.contract import MLFLOW_SERVICE
    from mlopskit.kube.deploy import connect, live_admin_password
    from mlopskit.kube.portforward import forward_service

    api, dyn = connect(settings)
    namespace = settings.platform.namespace
    try:
        service = client.CoreV1Api(api).read_namespaced_service(MLFLOW_SERVICE, namespace)
    except client.exceptions.ApiException as exc:
        raise PlatformError(
            f"cannot read Service {namespace}/{MLFLOW_SERVICE} (HTTP {exc.status}); deploy the platform first "
            "(`invoke deploy`)"
        ) from None
    ports = (service.spec.ports if service.spec else None) or []
    if not ports:
        raise PlatformError(f"Service {namespace}/{MLFLOW_SERVICE} has no port to forward")
    previous = live_admin_password(settings, dyn)
    with forward_service(api, namespace, MLFLOW_SERVICE, int(ports[0].port)) as local_port:
        yield f"http://127.0.0.1:{local_port}", previous
