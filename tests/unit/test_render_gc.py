"""Housekeeping (platform.gc): the `mlflow gc` CronJob, its permissions and network paths, and its settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlopskit.errors import SettingsError
from mlopskit.kube.render import render_manifests
from mlopskit.kube.validate import check_objects
from mlopskit.settings import Settings, load_settings
from tests.unit.conftest import SAMPLE_SECRETS
from tests.unit.test_render import IMAGE
from tests.unit.test_render_metrics import by_name, selects

GC_ON = "platform:\n  gc: {enabled: true, schedule: '15 4 * * *', older_than: 14d}\n"


@pytest.fixture
def settings_with(tmp_path: Path) -> Callable[..., Settings]:
    def make(platform_yaml: str = "", **environ: str) -> Settings:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "platform.yaml").write_text(platform_yaml)
        return load_settings(tmp_path, dict(SAMPLE_SECRETS) | environ)

    return make


def gc_pod(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    template: dict[str, Any] = objects[("CronJob", "mlflow-gc")]["spec"]["jobTemplate"]["spec"]["template"]
    return template


def test_gc_is_off_by_default_and_renders_nothing(settings_with: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_with(), IMAGE)
    assert not [o for o in objects if o["kind"] == "CronJob"]
    gc_labels = {"metadata": {"labels": {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/component": "gc"}}}
    gc_labels["metadata"]["labels"]["app.kubernetes.io/instance"] = "mlops"
    peers = [
        peer["podSelector"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
        for rule in o["spec"].get("ingress", [])
        for peer in rule["from"]
        if "podSelector" in peer
    ]
    assert peers and not any(selects(peer, gc_labels) for peer in peers)


def test_gc_cronjob_runs_mlflow_gc_on_the_schedule_with_the_age_limit(settings_with: Callable[..., Settings]) -> None:
    objects = by_name(render_manifests(settings_with(GC_ON), IMAGE))
    report = check_objects(list(objects.values()), "1.34.1")
    assert report.errors == [] and report.skipped == []
    cronjob = objects[("CronJob", "mlflow-gc")]["spec"]
    assert cronjob["schedule"] == "15 4 * * *"
    assert cronjob["concurrencyPolicy"] == "Forbid"
    (container,) = gc_pod(objects)["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["gc", "--older-than", "14d"]


def test_gc_pod_takes_the_servers_store_credentials_from_the_same_secrets_and_nothing_else(
    settings_with: Callable[..., Settings],
) -> None:
    objects = by_name(render_manifests(settings_with(GC_ON), IMAGE))
    (gc,) = gc_pod(objects)["spec"]["containers"]
    server = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    server_env = {e["name"]: e for e in server["env"]}
    gc_env = {e["name"]: e for e in gc["env"]}
    secret_sourced = {name for name, e in gc_env.items() if "valueFrom" in e}
    assert secret_sourced == {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name in secret_sourced | {"MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_ARTIFACTS_DESTINATION"}:
        assert gc_env[name] == server_env[name], name
    # No MLflow login, no auth database, no Flask secret: gc needs the tracking database and the bucket only.
    assert not {"MLFLOW_ADMIN_PASSWORD", "MLFLOW_AUTH_DATABASE_URI", "MLFLOW_FLASK_SERVER_SECRET_KEY"} & set(gc_env)


def test_gc_pod_meets_pod_security_restricted_without_a_service_account_token(
    settings_with: Callable[..., Settings],
) -> None:
    pod = gc_pod(by_name(render_manifests(settings_with(GC_ON), IMAGE)))["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("postgres", ["internal", "external"])
@pytest.mark.parametrize("store", ["seaweedfs", "minio", "external"])
def test_gc_pods_may_reach_exactly_the_database_and_the_object_store(
    settings_with: Callable[..., Settings], postgres: str, store: str
) -> None:
    env = {"POSTGRES_MODE": postgres, "OBJECT_STORE": store}
    if postgres == "external":
        env["POSTGRES_DSN"] = "postgresql://u:dsn-sample-password-77aa@db.example.com:5432/mlflow"
    if store == "external":
        env["S3_ENDPOINT"] = "https://s3.example.com"
    objects = by_name(render_manifests(settings_with(GC_ON, **env), IMAGE))
    gc_labels = {"metadata": gc_pod(objects)["metadata"]}
    policies = {name: o["spec"] for (kind, name), o in objects.items() if kind == "NetworkPolicy"}
    egress = {
        name
        for name, spec in policies.items()
        if "Egress" in spec["policyTypes"] and selects(spec["podSelector"], gc_labels)
    }
    assert egress == {"default-deny", "allow-dns", "postgres-clients", "s3-clients"}
    ingress_from_gc = {
        name
        for name, spec in policies.items()
        for rule in spec.get("ingress", [])
        for peer in rule["from"]
        if "podSelector" in peer and selects(peer["podSelector"], gc_labels)
    }
    expected = ({"postgres-from-mlflow"} if postgres == "internal" else set()) | (
        {"s3-from-mlflow"} if store != "external" else set()
    )
    assert ingress_from_gc == expected


@pytest.mark.parametrize(
    "yaml,message",
    [
        ("schedule: every night", "platform.gc.schedule [from config/platform.yaml:3]: must be a cron schedule"),
        ("schedule: '0 3 * *'", "platform.gc.schedule [from config/platform.yaml:3]: must be a cron schedule"),
        ("older_than: 3 days", "platform.gc.older_than [from config/platform.yaml:3]: must be a duration"),
        ("older_than: 2h1d", "platform.gc.older_than [from config/platform.yaml:3]: must be a duration"),
        ("older_than: ''", "platform.gc.older_than [from config/platform.yaml:3]: must be a duration"),
    ],
)
def test_gc_settings_errors_name_the_key_and_the_line(
    settings_with: Callable[..., Settings], yaml: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace(".", r"\.").replace("*", r"\*")):
        settings_with(f"platform:\n  gc:\n    {yaml}\n")


@pytest.mark.parametrize("schedule", ["@daily", "*/15 * * * *", "0 3 * * 1-5", "0 0 1 JAN,JUL *", "30 2 ? * SUN"])
def test_gc_accepts_the_schedules_a_cronjob_accepts(settings_with: Callable[..., Settings], schedule: str) -> None:
    settings = settings_with(f"platform:\n  gc:\n    enabled: true\n    schedule: '{schedule}'\n")
    objects = by_name(render_manifests(settings, IMAGE))
    assert objects[("CronJob", "mlflow-gc")]["spec"]["schedule"] == schedule
