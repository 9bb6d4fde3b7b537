"""The restore drill on a real cluster, through the commands a user runs: `invoke deploy`, data,
`invoke backup --target cluster`, `invoke destroy --purge-data` (every claim gone), `invoke deploy` again,
`invoke restore --target cluster`, and everything is back. Then the refusals.

The project, images and namespace are made as for tests/cluster/test_platform.py (tests/cluster/project.py):
IMAGE_SOURCE=offline images put into the node's containerd, STORAGE_KIND=local-path, a fresh namespace with
Pod Security `restricted`. The API server, the node, PostgreSQL, SeaweedFS, MLflow, the exec and
port-forward streams the backup goes through are the real thing.

Stand-ins and what is missing here:
- The Sealed Secrets controller is the offline image mlopskit/sealed-secrets-controller:0.32.2, built from
  docker/offline/sealed-secrets-controller, because the upstream image cannot be pulled here. Its key
  Secrets are the ones the backup archives (label sealedsecrets.bitnami.com/sealed-secrets-key).
- There is no K3s here (the node is a kubelet built from source) and no inventory: the K3s datastore and
  token cannot be fetched over SSH, so the test asserts that the archive's `holds` says why they are missing.

The tests of this module share one deployment and run in file order, as a user's session would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client

from mlopskit.backup import crypto, flow
from mlopskit.backup.archive import SEALING_KEYS, Manifest
from mlopskit.contract import CONTROLLER_NAMESPACE
from mlopskit.kube.portforward import forward_service
from mlopskit.kube.sealing import SEALING_KEY_LABEL
from mlopskit.object_store import s3_client
from tests.cluster.project import SECRETS, Platform, make_project
from tests.drill_data import fill

pytestmark = pytest.mark.slow

ARTIFACT_BYTES = 21 * 1024 * 1024
PASSPHRASE = "drill-" + secrets.token_urlsafe(18)
ALICE = ("alice", "alice-" + PASSPHRASE)
DEPLOY_TIMEOUT = "1200"


@dataclass
class Drill:
    platform: Platform
    archive: Path
    identity: Path  # the age identity of the scheduled backups (`invoke backup-keygen`), outside the project
    data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, label: str, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
        """`invoke ARGS`, its wall time kept under `label` for the drill's numbers (printed at the end)."""
        start = time.monotonic()
        done = self.platform.invoke(*args, **environ)
        self.timings[label] = time.monotonic() - start
        return done

    def manifest(self) -> tuple[Manifest, bytes | None]:
        """The archive's manifest and its sealing-keys part, decrypted with the drill's passphrase."""
        with flow.opened(self.archive, crypto.Keys(passphrase=PASSPHRASE)) as reader:
            keys = reader.read(SEALING_KEYS) if reader.manifest.part(SEALING_KEYS) else None
            return reader.manifest, keys


@pytest.fixture(scope="module")
def drill(
    api: client.ApiClient, node_images: Callable[[list[str]], None], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Drill]:
    platform = make_project(
        tmp_path_factory.mktemp("project"), api, node_images, "mlopskit-br", BACKUP_PASSPHRASE=PASSPHRASE
    )
    keys = tmp_path_factory.mktemp("backups")
    made = Drill(platform, keys / "cluster.tar.age", keys / "identity.txt")
    try:
        yield made
    finally:
        print("drill timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in made.timings.items()))
        platform.destroy()


@pytest.fixture
def mlflow_client(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real MLflow client, as the admin, through a port-forward to the deployed MLflow."""
    from mlflow import MlflowClient

    with drill.platform.mlflow() as admin:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", drill.platform.settings().secrets.admin_password)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        yield MlflowClient(tracking_uri=admin.url)


def test_the_platform_deploys(drill: Drill) -> None:
    deployed = drill.timed("first deploy", "deploy", "--timeout", DEPLOY_TIMEOUT)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr


def test_the_platform_is_filled_with_runs_an_artifact_a_model_and_a_second_user(
    drill: Drill, mlflow_client: Any, tmp_path: Path
) -> None:
    start = time.monotonic()
    filled = fill(mlflow_client, tmp_path, ARTIFACT_BYTES)
    experiments = filled["experiments"]
    with drill.platform.mlflow() as admin:
        admin.api("POST", "users/create", json={"username": ALICE[0], "password": ALICE[1]})
        grant = {"username": ALICE[0], "resource_type": "experiment", "resource_id": experiments[0]}
        admin.api3("POST", "users/permissions/grant", json=grant | {"permission": "EDIT"})
    drill.timings["filling"] = time.monotonic() - start
    drill.data = filled


def test_backup_writes_an_archive_only_its_owner_can_read(drill: Drill) -> None:
    backup = drill.timed("backup", "backup", "--target", "cluster", "--out", str(drill.archive))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert stat.S_IMODE(drill.archive.stat().st_mode) == 0o600
    assert drill.archive.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert PASSPHRASE not in backup.stdout + backup.stderr
    assert "Traceback" not in backup.stderr


def test_the_archive_holds_the_sealing_keys_of_the_cluster(drill: Drill) -> None:
    manifest, keys = drill.manifest()
    assert manifest.target == "cluster" and manifest.namespace == drill.platform.namespace
    assert keys is not None, manifest.holds
    archived = {item["metadata"]["name"]: item["data"] for item in yaml.safe_load(keys)["items"]}
    live = client.CoreV1Api(drill.platform.api).list_namespaced_secret(
        CONTROLLER_NAMESPACE, label_selector=SEALING_KEY_LABEL
    )
    items: list[Any] = live.items
    assert archived == {item.metadata.name: item.data for item in items}
    assert any("Sealed Secrets sealing key(s)" in line for line in manifest.holds)


def test_the_archive_says_why_the_k3s_datastore_and_token_are_missing(drill: Drill) -> None:
    manifest, _ = drill.manifest()
    assert manifest.part("cluster/k3s-datastore") is None and manifest.part("cluster/k3s-token") is None
    assert any(
        line.startswith("no K3s datastore or token: no K3s server in config/inventory.yaml") for line in manifest.holds
    ), manifest.holds


def test_the_manifest_records_the_running_versions_and_what_was_there(drill: Drill) -> None:
    manifest, _ = drill.manifest()
    node: Any = client.CoreV1Api(drill.platform.api).list_node().items[0]
    assert manifest.versions["mlflow"] == "3.17.2"  # asked of the MLflow pod, not taken from settings
    assert manifest.versions["k3s"] == node.status.node_info.kubelet_version
    assert manifest.databases["tracking"]["revision"] and manifest.databases["auth"]["revision"]
    assert manifest.counts["runs"] >= 6 and manifest.counts["registered_models"] == 1
    assert manifest.counts["users"] == 2


def test_destroy_with_purge_data_removes_every_claim(drill: Drill) -> None:
    purged = drill.timed("destroy --purge-data", "destroy", "--yes", "--purge-data")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    deadline = time.monotonic() + 300  # claims go once their pods are gone (pvc-protection)
    while drill.platform.claims():
        assert time.monotonic() < deadline, f"claims left after --purge-data: {drill.platform.claims()}"
        time.sleep(2)


def test_restore_onto_a_cluster_without_the_platform_puts_the_keys_in_place_and_says_deploy_next(
    drill: Drill,
) -> None:
    """Step 1 of a restore onto a fresh cluster. The keys are already there (the controller of this shared
    cluster kept them: replacing them would break every other platform on it), so they are `unchanged`."""
    keys_only = drill.timed("restore, keys only", "restore", str(drill.archive), "--target", "cluster")
    assert keys_only.returncode == 0, keys_only.stdout + keys_only.stderr
    assert "sealing keys unchanged (1 already in kube-system)" in keys_only.stdout
    assert "the platform is not deployed yet: run `invoke deploy`" in keys_only.stdout
    assert drill.platform.claims() == []


def test_deploy_after_the_purge_gives_an_empty_platform(drill: Drill) -> None:
    again = drill.timed("second deploy", "deploy", "--timeout", DEPLOY_TIMEOUT)
    assert again.returncode == 0, again.stdout + again.stderr
    with drill.platform.mlflow() as admin:
        missing = admin.session.get(
            f"{admin.url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "drill-0"}, timeout=30
        )
        assert missing.status_code == 404
        assert not admin.accepts(*ALICE)


def test_an_archive_of_another_cluster_name_is_refused_with_nothing_changed(drill: Drill) -> None:
    refused = drill.platform.invoke(
        "restore", str(drill.archive), "--target", "cluster", "--yes", CLUSTER_NAME="other-cluster"
    )
    assert refused.returncode == 1
    assert "comes from cluster 'mlops', this is 'other-cluster'" in refused.stderr, refused.stderr
    assert "nothing was changed" in refused.stderr and "Traceback" not in refused.stderr
    with drill.platform.mlflow() as admin:
        assert not admin.accepts(*ALICE)


def test_restore_onto_the_fresh_platform_succeeds_without_yes(drill: Drill) -> None:
    """deploy's smoke check leaves a deleted experiment, a run and an artifact: that is not data to protect."""
    restored = drill.timed("restore", "restore", str(drill.archive), "--target", "cluster")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    out = restored.stdout
    assert "sealing keys unchanged" in out
    assert "migrations run" in out and "counts match the manifest" in out
    assert "artifact uploaded and downloaded intact" in out  # the smoke check, after the restore


def test_every_run_with_params_tags_and_metric_history_is_back(drill: Drill, mlflow_client: Any) -> None:
    for n, run_id in enumerate(drill.data["runs"]):
        run = mlflow_client.get_run(run_id)
        assert run.data.params["lr"] == str(0.1 * (n % 3 + 1))
        assert run.data.tags["drill"] == "yes"
        history = [m.value for m in mlflow_client.get_metric_history(run_id, "loss")]
        assert history == [1.0 / (step + 1 + n % 3) for step in range(5)]


def test_the_21_mb_artifact_is_byte_equal(drill: Drill, mlflow_client: Any, tmp_path: Path) -> None:
    path = mlflow_client.download_artifacts(drill.data["runs"][0], "weights.bin", str(tmp_path))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == drill.data["artifact_sha256"]


def test_the_model_alias_is_back(drill: Drill, mlflow_client: Any) -> None:
    version = mlflow_client.get_model_version_by_alias("drill-model", "champion")
    assert version.version == drill.data["model_version"]


def test_both_users_log_in_and_the_second_keeps_its_permission(drill: Drill) -> None:
    experiment = drill.data["experiments"][0]
    with drill.platform.mlflow() as admin:
        assert admin.accepts("admin", drill.platform.settings().secrets.admin_password)
        assert admin.accepts(*ALICE)
        seen = requests.get(
            f"{admin.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment}, auth=ALICE, timeout=30
        )
        assert seen.status_code == 200, seen.text
        wanted = {"username": ALICE[0], "resource_type": "experiment", "resource_id": experiment}
        assert admin.api3("GET", "users/permissions/get", params=wanted)["permission"] == "EDIT"


def test_a_platform_holding_data_is_not_overwritten_without_yes(drill: Drill) -> None:
    refused = drill.platform.invoke("restore", str(drill.archive), "--target", "cluster")
    assert refused.returncode == 1
    assert "holds data" in refused.stderr and "--yes" in refused.stderr and "Traceback" not in refused.stderr
    with drill.platform.mlflow() as admin:
        assert admin.accepts(*ALICE)


# ------------------------------------------------------------------------------------- scheduled backup

DESTINATION_BUCKET = "mlflow-backups"


def job_from_cronjob(api: client.ApiClient, namespace: str, cronjob: str, name: str) -> None:
    """What `kubectl create job --from=cronjob/NAME` does: a Job from the CronJob's template, owned by it."""
    batch: Any = client.BatchV1Api(api)
    source = batch.read_namespaced_cron_job(cronjob, namespace)
    template = api.sanitize_for_serialization(source.spec.job_template)
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob, "uid": source.metadata.uid}
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": template.get("metadata", {}).get("labels", {}),
        "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
        "ownerReferences": [owner],
    }
    batch.create_namespaced_job(
        namespace, {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata} | {"spec": template["spec"]}
    )


def wait_for_job(api: client.ApiClient, namespace: str, name: str, timeout: float = 900) -> None:
    batch: Any = client.BatchV1Api(api)
    core: Any = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
        done = {c.type for c in conditions if c.status == "True"}
        if done & {"Complete", "Failed"}:
            break
        assert time.monotonic() < deadline, f"Job {name} did not finish in {timeout:.0f}s"
        time.sleep(3)
    logs = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items:
        for container in ("dump", "upload"):
            with contextlib.suppress(client.exceptions.ApiException):
                logs.append(
                    f"{pod.metadata.name}/{container}:\n"
                    + core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container)
                )
    print("\n".join(logs))
    assert "Complete" in done, "\n".join(logs)


def listed_backups(drill: Drill) -> list[list[str]]:
    """The rows `invoke backup --list` prints, as cells: stamp, status, UTC times, parts, objects, size."""
    listed = drill.platform.invoke("backup", "--list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.startswith("│ 20")]
    return [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]


def test_a_job_from_the_backup_cronjob_writes_to_the_second_bucket_and_backup_list_shows_it(drill: Drill) -> None:
    """The destination is a second bucket of the platform's own SeaweedFS, reached as a Service of the cluster
    (a stand-in for another provider's S3, which this machine cannot reach); retention 1 keeps the newest."""
    platform = drill.platform
    settings = platform.settings()
    with forward_service(platform.api, platform.namespace, "seaweedfs", 8333) as port:
        s3_client(settings, f"http://127.0.0.1:{port}").create_bucket(Bucket=DESTINATION_BUCKET)
    (platform.root / "config" / "platform.yaml").write_text(
        "platform:\n  backup:\n    enabled: true\n    retention: 1\n    destination:\n"
        f"      endpoint: http://seaweedfs.{platform.namespace}.svc:8333\n      bucket: {DESTINATION_BUCKET}\n"
    )
    platform.set_env("BACKUP_S3_ACCESS_KEY", SECRETS["S3_ACCESS_KEY"])
    platform.set_env("BACKUP_S3_SECRET_KEY", SECRETS["S3_SECRET_KEY"])
    # The operator's key pair, made as a user makes it; only the public half goes into the cluster.
    made = platform.invoke("backup-keygen", "--out", str(drill.identity))
    assert made.returncode == 0, made.stdout + made.stderr
    recipient = next(w.removeprefix("BACKUP_RECIPIENT=") for w in made.stdout.split() if "RECIPIENT=age1" in w)
    platform.set_env("BACKUP_RECIPIENT", recipient)
    platform.set_env("BACKUP_IDENTITY_FILE", str(drill.identity))
    deployed = drill.timed("deploy with platform.backup", "deploy", "--timeout", DEPLOY_TIMEOUT)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert listed_backups(drill) == []

    start = time.monotonic()
    job_from_cronjob(platform.api, platform.namespace, "mlflow-backup", "mlflow-backup-manual-1")
    wait_for_job(platform.api, platform.namespace, "mlflow-backup-manual-1")
    drill.timings["scheduled backup job"] = time.monotonic() - start
    first = listed_backups(drill)
    assert len(first) == 1 and first[0][1:3] == ["finished", "age"], first
    objects = bucket_objects(settings, platform)
    assert first[0][5] == str(len(objects)) and first[0][4] == str(len(objects) + 2), (objects, first)

    job_from_cronjob(platform.api, platform.namespace, "mlflow-backup", "mlflow-backup-manual-2")
    wait_for_job(platform.api, platform.namespace, "mlflow-backup-manual-2")
    second = listed_backups(drill)
    assert len(second) == 1 and second[0][1] == "finished" and second[0][0] > first[0][0], (first, second)


def test_the_destination_holds_one_age_archive_per_backup_and_no_plaintext(drill: Drill) -> None:
    """The dumps hold the auth database's password hashes: at the destination they exist only encrypted."""
    held = destination_objects(drill)
    assert sorted(key.rsplit("/", 1)[1] for key in held) == ["archive.tar.age", "summary.json"], sorted(held)
    archive = next(data for key, data in held.items() if key.endswith("/archive.tar.age"))
    assert archive.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert b"PGDMP" not in archive and b"postgres/tracking.dump" not in archive
    summary = json.loads(next(data for key, data in held.items() if key.endswith("/summary.json")))
    assert summary["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    assert "parts" not in summary or isinstance(summary["parts"], int)  # counts only: no object names in plain


def test_restore_scheduled_latest_brings_everything_back_after_a_purge(drill: Drill, tmp_path: Path) -> None:
    """destroy --purge-data, deploy, `invoke restore --scheduled latest`. The destination is a bucket of the
    platform's own SeaweedFS (the stand-in above), which the purge deletes with everything else; a real second
    provider outlives the platform, so the test keeps the destination's objects aside and puts them back after
    the redeploy, byte for byte."""
    platform = drill.platform
    kept = destination_objects(drill)
    purged = drill.timed("destroy --purge-data (2)", "destroy", "--yes", "--purge-data")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    deadline = time.monotonic() + 300
    while platform.claims():
        assert time.monotonic() < deadline, f"claims left after --purge-data: {platform.claims()}"
        time.sleep(2)
    deployed = drill.timed("deploy after purge (2)", "deploy", "--timeout", DEPLOY_TIMEOUT)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with forward_service(platform.api, platform.namespace, "seaweedfs", 8333) as port:
        s3 = s3_client(platform.settings(), f"http://127.0.0.1:{port}")
        s3.create_bucket(Bucket=DESTINATION_BUCKET)
        for key, data in kept.items():
            s3.put_object(Bucket=DESTINATION_BUCKET, Key=key, Body=data)
    with platform.mlflow() as admin:
        assert not admin.accepts(*ALICE)  # the platform is empty again

    restored = drill.timed("restore --scheduled latest", "restore", "--scheduled", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "migrations run" in restored.stdout and "counts match the manifest" in restored.stdout
    assert "parts verified (SHA-256)" in restored.stdout and "archive.tar.age" in restored.stdout


def test_after_the_scheduled_restore_runs_the_artifact_and_users_are_back(
    drill: Drill, mlflow_client: Any, tmp_path: Path
) -> None:
    for n, run_id in enumerate(drill.data["runs"]):
        run = mlflow_client.get_run(run_id)
        assert run.data.params["lr"] == str(0.1 * (n % 3 + 1))
        history = [m.value for m in mlflow_client.get_metric_history(run_id, "loss")]
        assert history == [1.0 / (step + 1 + n % 3) for step in range(5)]
    path = mlflow_client.download_artifacts(drill.data["runs"][0], "weights.bin", str(tmp_path))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == drill.data["artifact_sha256"]
    assert mlflow_client.get_model_version_by_alias("drill-model", "champion").version == drill.data["model_version"]
    with drill.platform.mlflow() as admin:
        assert admin.accepts("admin", drill.platform.settings().secrets.admin_password)
        assert admin.accepts(*ALICE)


def destination_objects(drill: Drill) -> dict[str, bytes]:
    """Every object of the destination bucket, through a port-forward."""
    platform = drill.platform
    with forward_service(platform.api, platform.namespace, "seaweedfs", 8333) as port:
        s3 = s3_client(platform.settings(), f"http://127.0.0.1:{port}")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=DESTINATION_BUCKET)
        keys = [str(item["Key"]) for page in pages for item in page.get("Contents", [])]
        return {key: s3.get_object(Bucket=DESTINATION_BUCKET, Key=key)["Body"].read() for key in keys}


def bucket_objects(settings: Any, platform: Platform) -> list[str]:
    """The artifact bucket's keys, through a port-forward."""
    with forward_service(platform.api, platform.namespace, "seaweedfs", 8333) as port:
        s3 = s3_client(settings, f"http://127.0.0.1:{port}")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.platform.object_store.bucket)
        return [str(item["Key"]) for page in pages for item in page.get("Contents", [])]
