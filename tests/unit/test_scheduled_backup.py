"""The scheduled backup (platform.backup): its settings, and the CronJob, ServiceAccount and NetworkPolicies
of k8s/backup/ checked against the pinned Kubernetes schema, Pod Security `restricted` and least privilege."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopskit import credentials
from mlopskit.errors import SettingsError
from mlopskit.kube.render import TEMPLATES_DIR, in_cluster_service, render_manifests
from mlopskit.kube.validate import check_objects
from mlopskit.settings import Settings
from tests.unit.conftest import SAMPLE_SECRETS, Project

IMAGE = "registry.example.com/mlopskit/mlflow:3.17.2-abc1234"
DESTINATION_KEYS = {"BACKUP_S3_ACCESS_KEY": "backupaccess5e1d", "BACKUP_S3_SECRET_KEY": "backup-sample-secret-3c9a"}
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"  # age's documentation example
IN_CLUSTER = "http://seaweedfs.mlops.svc:8333"


def enabled(endpoint: str | None = IN_CLUSTER, extra: str = "") -> str:
    where = f"endpoint: {endpoint!r}, " if endpoint else ""
    return (
        "platform:\n  backup:\n    enabled: true\n    schedule: '30 2 * * *'\n    retention: 5\n"
        f"    destination: {{{where}bucket: mlflow-backups, prefix: nightly/}}\n{extra}"
    )


@pytest.fixture
def backup_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(platform: str | None = None, **environ: str) -> Settings:
        env = dict(SAMPLE_SECRETS) | DESTINATION_KEYS | {"BACKUP_RECIPIENT": RECIPIENT} | environ
        return make_settings(platform=platform if platform is not None else enabled(), environ=env)

    return make


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def backup_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cronjob = by_kind(objects)[("CronJob", "mlflow-backup")]
    pod: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    return pod


def test_off_by_default_it_renders_nothing_and_seals_no_destination_keys(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(environ=dict(SAMPLE_SECRETS))
    objects = render_manifests(settings, IMAGE)
    assert not [o for o in objects if "mlflow-backup" in o["metadata"]["name"]]
    assert credentials.BACKUP_S3_SECRET not in {s.name for s in credentials.credential_secrets(settings, "pg")}


@pytest.mark.parametrize(
    ("store", "endpoint"), [("seaweedfs", IN_CLUSTER), ("minio", "https://s3.example.com"), ("external", None)]
)
def test_enabled_renders_objects_valid_for_the_pinned_kubernetes(
    backup_settings: Callable[..., Settings], store: str, endpoint: str | None
) -> None:
    environ = {"OBJECT_STORE": store} | ({"S3_ENDPOINT": "https://s3.example.com"} if store == "external" else {})
    objects = render_manifests(backup_settings(enabled(endpoint), **environ), IMAGE)
    kinds = by_kind(objects)
    assert {("CronJob", "mlflow-backup"), ("ServiceAccount", "mlflow-backup")} <= set(kinds)
    assert ("NetworkPolicy", "mlflow-backup-egress") in kinds
    report = check_objects(objects, "v1.34.1+k3s1")
    assert report.errors == []


def test_the_cronjob_runs_on_the_schedule_in_utc_one_at_a_time(backup_settings: Callable[..., Settings]) -> None:
    cronjob = by_kind(render_manifests(backup_settings(), IMAGE))[("CronJob", "mlflow-backup")]["spec"]
    assert (cronjob["schedule"], cronjob["timeZone"]) == ("30 2 * * *", "Etc/UTC")
    assert cronjob["concurrencyPolicy"] == "Forbid"


def test_its_pod_meets_pod_security_restricted_with_read_only_roots(backup_settings: Callable[..., Settings]) -> None:
    spec = backup_pod(render_manifests(backup_settings(), IMAGE))["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["initContainers"] + spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
    assert all("emptyDir" in volume for volume in spec["volumes"])


def test_its_account_has_no_token_and_no_permission(backup_settings: Callable[..., Settings]) -> None:
    objects = render_manifests(backup_settings(), IMAGE)
    spec = backup_pod(objects)["spec"]
    assert spec["serviceAccountName"] == "mlflow-backup" and spec["automountServiceAccountToken"] is False
    assert by_kind(objects)[("ServiceAccount", "mlflow-backup")]["automountServiceAccountToken"] is False
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert not [b for b in bindings if any(s.get("name") == "mlflow-backup" for s in b.get("subjects", []))]


def test_credentials_reach_it_only_through_secret_references(backup_settings: Callable[..., Settings]) -> None:
    settings = backup_settings()
    objects = render_manifests(settings, IMAGE)
    text = yaml.safe_dump_all(objects)
    for value in [*SAMPLE_SECRETS.values(), *DESTINATION_KEYS.values()]:
        assert value not in text
    upload = backup_pod(objects)["spec"]["containers"][0]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in upload["env"] if "valueFrom" in e}
    assert secret_refs == {
        "SOURCE_ACCESS_KEY": credentials.S3_SECRET,
        "SOURCE_SECRET_KEY": credentials.S3_SECRET,
        "DEST_ACCESS_KEY": credentials.BACKUP_S3_SECRET,
        "DEST_SECRET_KEY": credentials.BACKUP_S3_SECRET,
    }
    sealed = {s.name: s.data for s in credentials.credential_secrets(settings, "pg")}
    assert sealed[credentials.BACKUP_S3_SECRET] == {
        "AWS_ACCESS_KEY_ID": DESTINATION_KEYS["BACKUP_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": DESTINATION_KEYS["BACKUP_S3_SECRET_KEY"],
    }


def test_it_writes_under_prefix_cluster_and_namespace(backup_settings: Callable[..., Settings]) -> None:
    upload = backup_pod(render_manifests(backup_settings(CLUSTER_NAME="prod"), IMAGE))["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in upload["env"]}
    assert (env["DEST_BUCKET"], env["DEST_PREFIX"], env["RETENTION"]) == ("mlflow-backups", "nightly/prod/mlops/", "5")


def test_the_script_reads_only_variables_the_cronjob_sets(backup_settings: Callable[..., Settings]) -> None:
    source = (TEMPLATES_DIR / "backup" / "backup_to_s3.py").read_text()
    read: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            read.add(ast.unparse(node.slice).strip("'\""))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.get":
            read.add(ast.unparse(node.args[0]).strip("'\""))
    prefixed = {name for name in read if name.startswith("f")}
    read -= prefixed  # f"{prefix}_ENDPOINT": the client() helper, expanded below
    keys = ("ENDPOINT", "REGION", "ACCESS_KEY", "SECRET_KEY")
    read |= {f"{side}_{key}" for side in ("SOURCE", "DEST") for key in keys}
    upload = backup_pod(render_manifests(backup_settings(), IMAGE))["spec"]["containers"][0]
    assert read <= {e["name"] for e in upload["env"]}


def test_network_policies_let_it_reach_postgres_the_store_and_the_destination_only(
    backup_settings: Callable[..., Settings],
) -> None:
    kinds = by_kind(render_manifests(backup_settings(enabled("https://backup.example.com:9000")), IMAGE))
    egress = kinds[("NetworkPolicy", "mlflow-backup-egress")]["spec"]["egress"]
    assert [rule["ports"][0]["port"] for rule in egress] == [5432, 8333, 9000]
    assert egress[2]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert ("NetworkPolicy", "postgres-from-mlflow-backup") in kinds
    assert ("NetworkPolicy", "s3-from-mlflow-backup") in kinds
    in_cluster = by_kind(render_manifests(backup_settings(), IMAGE))[("NetworkPolicy", "mlflow-backup-egress")]
    to_destination = in_cluster["spec"]["egress"][2]["to"][0]
    assert to_destination == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlops"}}}


@pytest.mark.parametrize(
    ("url", "found"),
    [
        ("http://seaweedfs.mlops.svc:8333", ("seaweedfs", "mlops")),
        ("http://minio.backup.svc.cluster.local:9000", ("minio", "backup")),
        ("https://s3.eu-central-1.amazonaws.com", None),
        ("http://10.0.0.5:9000", None),
    ],
)
def test_a_destination_service_of_the_cluster_is_recognised_by_its_dns_name(
    url: str, found: tuple[str, str] | None
) -> None:
    assert in_cluster_service(url) == found


def test_enabled_without_a_bucket_names_the_key(backup_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"platform\.backup.*BACKUP_S3_BUCKET"):
        backup_settings("platform:\n  backup:\n    enabled: true\n")


def test_a_schedule_that_is_not_cron_names_the_key_and_the_file(backup_settings: Callable[..., Settings]) -> None:
    where = r"platform\.backup\.schedule \[from config/platform\.yaml:4\]"
    with pytest.raises(SettingsError, match=where + ".*five fields"):
        backup_settings(enabled().replace("'30 2 * * *'", "'every night'"))


def test_retention_below_one_is_refused(backup_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"platform\.backup\.retention"):
        backup_settings(enabled().replace("retention: 5", "retention: 0"))


def test_deploy_needs_the_destination_keys_when_enabled(backup_settings: Callable[..., Settings]) -> None:
    settings = backup_settings(BACKUP_S3_ACCESS_KEY="", BACKUP_S3_SECRET_KEY="")
    with pytest.raises(SettingsError, match=r"BACKUP_S3_ACCESS_KEY.*BACKUP_S3_SECRET_KEY|BACKUP_S3_SECRET_KEY"):
        settings.require("deploy")


def test_an_external_postgres_cannot_be_dumped_by_the_cronjob(backup_settings: Callable[..., Settings]) -> None:
    dsn = "postgresql://tracker:dsn-sample-password-77aa@db.example.com:6543/mlflow"
    with pytest.raises(SettingsError, match=r"backup\.enabled.*POSTGRES_MODE"):
        backup_settings(POSTGRES_MODE="external", POSTGRES_DSN=dsn)


def test_backup_list_without_the_destination_keys_names_them_and_touches_nothing(
    project: Project, sample_env: dict[str, str]
) -> None:
    project.write_env(sample_env | {"BACKUP_S3_BUCKET": "mlflow-backups"})
    result = project.invoke("backup", "--list")
    assert result.returncode == 1
    assert "BACKUP_S3_ACCESS_KEY" in result.stderr and "BACKUP_S3_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_backup_list_without_a_destination_bucket_names_the_key(project: Project, sample_env: dict[str, str]) -> None:
    project.write_env(sample_env | DESTINATION_KEYS)
    result = project.invoke("backup", "--list")
    assert result.returncode == 1
    assert "platform.backup.destination.bucket (BACKUP_S3_BUCKET)" in result.stderr and "not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_archive_is_encrypted_to_the_recipient_given_in_plain_and_no_identity_enters_the_cluster(
    backup_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ9Q7Z5K\n")
    objects = render_manifests(backup_settings(BACKUP_IDENTITY_FILE=str(identity)), IMAGE)
    upload = backup_pod(objects)["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in upload["env"]}
    assert env["BACKUP_RECIPIENT"] == RECIPIENT
    text = yaml.safe_dump_all(objects)
    assert "AGE-SECRET-KEY" not in text and str(identity) not in text


def test_the_init_container_records_versions_revisions_and_counts_for_the_manifest(
    backup_settings: Callable[..., Settings],
) -> None:
    dump = backup_pod(render_manifests(backup_settings(), IMAGE))["spec"]["initContainers"][0]
    script = dump["args"][0]
    for name in ("postgres", "tracking_revision", "auth_revision", "experiments", "runs", "registered_models", "users"):
        assert f" {name} " in script or f"{name}=$(q" in script, name
    assert "alembic_version_auth" in script and "> /work/postgres/facts.txt" in script


def test_deploy_with_backups_on_and_no_recipient_names_backup_recipient_and_how_to_make_one(
    backup_settings: Callable[..., Settings],
) -> None:
    settings = backup_settings(BACKUP_RECIPIENT="")
    with pytest.raises(SettingsError, match=r"BACKUP_RECIPIENT.*invoke backup-keygen.*age-keygen"):
        settings.require("deploy")
    with pytest.raises(SettingsError, match=r"backup\.recipient \(BACKUP_RECIPIENT\)"):
        render_manifests(settings, IMAGE)  # invoke render and invoke diff stop the same way


def test_a_recipient_that_is_not_an_age_public_key_names_the_key(backup_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"backup\.recipient.*age public key"):
        backup_settings(BACKUP_RECIPIENT="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
