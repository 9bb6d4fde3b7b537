"""Rendering the k8s/ templates: what each combination of settings produces, and what it must never produce."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopskit.errors import PlatformError, SettingsError
from mlopskit.hosts.images import images_to_deliver
from mlopskit.image_names import OFFLINE_POSTGRES, OFFLINE_SEAWEEDFS
from mlopskit.kube.render import (
    MARKER_FILE,
    TEMPLATE_ANNOTATION,
    manifest_files,
    manifest_images,
    render_manifests,
    template_context,
    write_manifests,
)
from mlopskit.kube.validate import check_objects
from mlopskit.settings import Settings, load_settings
from tests.unit.conftest import SAMPLE_SECRETS, Project

IMAGE = "registry.example.com/mlopskit/mlflow:3.17.2-abc1234"
EXTERNAL_DSN = "postgresql://tracker:dsn-sample-password-77aa@db.example.com:6543/mlflow"
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
COMBINATIONS = list(
    itertools.product(
        ("seaweedfs", "minio", "external"), ("internal", "external"), (True, False), ("nfs", "local-path")
    )
)


def combo_id(combo: tuple[str, str, bool, str]) -> str:
    store, postgres, ingress, storage = combo
    return f"{store}-pg_{postgres}-{'ingress' if ingress else 'no_ingress'}-{storage}"


def environ_for(store: str, postgres: str, ingress: bool, storage: str) -> dict[str, str]:
    env = dict(SAMPLE_SECRETS) | {"OBJECT_STORE": store, "POSTGRES_MODE": postgres, "STORAGE_KIND": storage}
    if store == "external":
        env["S3_ENDPOINT"] = "https://s3.example.com"
    if postgres == "external":
        env["POSTGRES_DSN"] = EXTERNAL_DSN
    if ingress:
        env |= {"INGRESS_ENABLED": "true", "INGRESS_HOST": "mlflow.example.com", "INGRESS_TLS_SECRET": "mlflow-tls"}
    if storage == "nfs":
        env["NFS_SERVER"] = "nfs.example.com"
    return env


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    """Settings loaded the real way (empty project, options as environment variables)."""

    def make(
        store: str = "seaweedfs", postgres: str = "internal", ingress: bool = False, storage: str = "local-path"
    ) -> Settings:
        return load_settings(tmp_path, environ_for(store, postgres, ingress, storage))

    return make


@pytest.fixture(params=COMBINATIONS, ids=combo_id)
def combo_objects(request: pytest.FixtureRequest, settings_for: Callable[..., Settings]) -> list[dict[str, Any]]:
    return render_manifests(settings_for(*request.param), mlflow_image=IMAGE)


def kinds_and_names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owning object, pod template) for every workload."""
    for obj in objects:
        template = (obj.get("spec") or {}).get("template")
        if isinstance(template, dict):
            yield obj, template


def secret_values(settings: Settings) -> list[str]:
    values = [v for v in SAMPLE_SECRETS.values()]
    if settings.platform.postgres.dsn is not None:
        values += [settings.platform.postgres.dsn.get_secret_value(), "dsn-sample-password-77aa"]
    return values


def test_every_combination_renders_objects_that_are_valid_for_the_pinned_kubernetes(
    combo_objects: list[dict[str, Any]],
) -> None:
    report = check_objects(combo_objects, "v1.34.1+k3s1")

    assert report.errors == []
    assert report.validated == len(combo_objects) - len(report.skipped)


def test_every_object_and_pod_template_carries_the_recommended_labels(combo_objects: list[dict[str, Any]]) -> None:
    for obj in combo_objects:
        labels = obj["metadata"].get("labels") or {}
        assert all(key in labels for key in RECOMMENDED_LABELS), f"{obj['kind']}/{obj['metadata']['name']}: {labels}"
        assert labels["app.kubernetes.io/part-of"] == "mlopskit"
        assert labels["app.kubernetes.io/managed-by"] == "mlopskit"
    for owner, template in pod_specs(combo_objects):
        labels = template["metadata"]["labels"]
        assert all(key in labels for key in RECOMMENDED_LABELS), f"pods of {owner['kind']}/{owner['metadata']['name']}"


def test_every_pod_in_the_platform_namespace_meets_pod_security_restricted(
    combo_objects: list[dict[str, Any]],
) -> None:
    for owner, template in pod_specs(combo_objects):
        if owner["metadata"]["namespace"] != "mlops":
            continue
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, f"{where} {container['name']}"
            assert context["capabilities"]["drop"] == ["ALL"], f"{where} {container['name']}"
            assert "add" not in context["capabilities"], f"{where} {container['name']}"
        assert not any("hostPath" in v or "nfs" in v for v in spec.get("volumes", [])), where


def test_the_namespace_enforces_audits_and_warns_at_pod_security_restricted(
    settings_for: Callable[..., Settings],
) -> None:
    namespace = render_manifests(settings_for(), IMAGE)[0]

    assert namespace["kind"] == "Namespace"
    for mode in ("enforce", "audit", "warn"):
        assert namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_no_secret_value_appears_in_the_rendered_output(
    combo: tuple[str, str, bool, str], settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(*combo)
    text = yaml.safe_dump_all(render_manifests(settings, IMAGE))

    for value in secret_values(settings):
        assert value not in text


def test_credentials_reach_containers_only_through_secret_references(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for("minio", "internal", True, "nfs"), IMAGE)
    secret_keys = {
        "POSTGRES_PASSWORD",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "MINIO_ROOT_PASSWORD",
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
    }

    checked = 0
    for _, template in pod_specs(objects):
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] in secret_keys:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (
                        f"{container['name']}: {env['name']}"
                    )
                    checked += 1
    assert checked >= 8


def test_no_plaintext_secret_object_is_rendered(combo_objects: list[dict[str, Any]]) -> None:
    assert [o["metadata"]["name"] for o in combo_objects if o["kind"] == "Secret"] == []


def test_external_postgres_renders_no_database_objects(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(postgres="external"), IMAGE)
    names = kinds_and_names(objects)

    assert ("StatefulSet", "postgres") not in names
    assert ("Service", "postgres") not in names
    assert ("ConfigMap", "postgres-init") not in names
    assert ("NetworkPolicy", "postgres-from-mlflow") not in names


def test_external_postgres_is_reached_on_the_port_of_its_dsn(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(postgres="external"), IMAGE)
    policy = next(o for o in objects if o["metadata"]["name"] == "postgres-clients")

    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 6543}]


def test_internal_postgres_creates_the_auth_database_from_the_shared_init_script(
    settings_for: Callable[..., Settings],
) -> None:
    objects = render_manifests(settings_for(), IMAGE)
    init = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("ConfigMap", "postgres-init"))
    statefulset = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("StatefulSet", "postgres"))
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}

    repo_script = Path(__file__).resolve().parents[2] / "docker/postgres-init/10-mlflow-auth-db.sh"
    assert init["data"]["10-mlflow-auth-db.sh"] == repo_script.read_text()
    assert env["MLFLOW_AUTH_DB"]["value"] == "mlflow_auth"
    assert env["POSTGRES_DB"]["value"] == "mlflow"
    assert {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True} in container["volumeMounts"]
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 999


@pytest.mark.parametrize("store, absent", [("seaweedfs", "minio"), ("minio", "seaweedfs")])
def test_the_chosen_object_store_is_rendered_and_the_other_is_not(
    store: str, absent: str, settings_for: Callable[..., Settings]
) -> None:
    names = kinds_and_names(render_manifests(settings_for(store=store), IMAGE))

    assert {("StatefulSet", store), ("Service", store)} <= names
    assert not any(name == absent for _, name in names)


def test_external_s3_renders_no_object_store_but_still_the_bucket_job(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(store="external"), IMAGE)
    names = kinds_and_names(objects)
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("mlflow-bucket-"))
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert not any(name in {"seaweedfs", "minio"} for _, name in names)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.com"
    assert env["S3_BUCKET"] == "mlflow"


def test_seaweedfs_identities_are_written_from_the_environment_at_start(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(store="seaweedfs"), IMAGE)
    statefulset = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("StatefulSet", "seaweedfs"))
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][-1]

    assert '"$AWS_ACCESS_KEY_ID"' in script and '"$AWS_SECRET_ACCESS_KEY"' in script
    assert "-s3.port=8333" in script
    assert not any(o["kind"] == "ConfigMap" and "s3.json" in str(o.get("data")) for o in objects)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_ingress_is_rendered_only_when_enabled(enabled: bool, settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(ingress=enabled), IMAGE)
    ingresses = [o for o in objects if o["kind"] == "Ingress"]

    assert len(ingresses) == (1 if enabled else 0)
    if enabled:
        spec = ingresses[0]["spec"]
        assert spec["ingressClassName"] == "traefik"
        assert spec["rules"][0]["host"] == "mlflow.example.com"
        assert spec["tls"] == [{"hosts": ["mlflow.example.com"], "secretName": "mlflow-tls"}]


def test_mlflow_accepts_its_service_names_and_the_ingress_host(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(ingress=True), IMAGE)
    deployment = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", "mlflow"))
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    hosts = env["MLFLOW_ALLOWED_HOSTS"].split(",")

    assert {"mlflow", "mlflow.mlops.svc.cluster.local:5000", "mlflow.example.com"} <= set(hosts)
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow/"
    assert env["MLFLOW_AUTH_CONFIG_TEMPLATE"] == "/etc/mlflow/basic_auth.ini.template"


def test_mlflow_runs_with_a_read_only_root_and_a_writable_tmp(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(), IMAGE)
    deployment = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", "mlflow"))
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def test_mlflow_pods_wait_for_the_migration_job_of_the_same_render(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(), IMAGE)
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("mlflow-migrate-"))
    deployment = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", "mlflow"))
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}

    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert env["MIGRATION_JOB"] == f"job/{job['metadata']['name']}"
    assert init["args"] == ["python3", "/etc/mlflow/wait_for_schema.py"]


def test_a_new_image_renders_a_new_migration_job_and_the_same_image_the_same(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()

    def migrate_job(image: str) -> str:
        objects = render_manifests(settings, image)
        return next(str(o["metadata"]["name"]) for o in objects if o["metadata"]["name"].startswith("mlflow-migrate-"))

    assert migrate_job(IMAGE) == migrate_job(IMAGE)
    assert migrate_job(IMAGE) != migrate_job(IMAGE + "-next")


def test_rendering_twice_gives_the_same_objects_in_the_same_order(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for("minio", "internal", True, "nfs")

    assert render_manifests(settings, IMAGE) == render_manifests(settings, IMAGE)


@pytest.mark.parametrize("storage, expected", [("nfs", "nfs-client"), ("local-path", "local-path")])
def test_volume_claims_use_the_storage_class_of_the_storage_kind(
    storage: str, expected: str, settings_for: Callable[..., Settings]
) -> None:
    objects = render_manifests(settings_for(storage=storage), IMAGE)
    classes = {
        claim["spec"]["storageClassName"]
        for o in objects
        if o["kind"] == "StatefulSet"
        for claim in o["spec"]["volumeClaimTemplates"]
    }

    assert classes == {expected}


def test_nfs_storage_renders_the_provisioner_pointed_at_the_export(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(storage="nfs"), IMAGE)
    storage_class = next(o for o in objects if o["kind"] == "StorageClass")
    provisioner = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", "nfs-provisioner"))
    env = {e["name"]: e["value"] for e in provisioner["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert storage_class["metadata"]["name"] == "nfs-client"
    assert storage_class["provisioner"] == env["PROVISIONER_NAME"]
    assert (env["NFS_SERVER"], env["NFS_PATH"]) == ("nfs.example.com", "/srv/nfs/k8s")
    assert provisioner["metadata"]["namespace"] == "kube-system"


def test_local_path_storage_renders_no_provisioner(settings_for: Callable[..., Settings]) -> None:
    objects = render_manifests(settings_for(storage="local-path"), IMAGE)

    assert not [o for o in objects if o["kind"] == "StorageClass"]
    assert not [o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "storage"]
    assert not [o for o in objects if "nfs" in o["metadata"]["name"]]


def test_network_policies_deny_by_default_and_allow_dns(combo_objects: list[dict[str, Any]]) -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in combo_objects if o["kind"] == "NetworkPolicy"}

    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns_ports = policies["allow-dns"]["egress"][0]["ports"]
    assert {"protocol": "UDP", "port": 53} in dns_ports and {"protocol": "TCP", "port": 53} in dns_ports


def test_every_object_names_the_template_it_came_from(combo_objects: list[dict[str, Any]]) -> None:
    root = Path(__file__).resolve().parents[2]
    for obj in combo_objects:
        template = obj["metadata"]["annotations"][TEMPLATE_ANNOTATION]
        assert (root / template).is_file(), template


def test_templates_see_no_secret_values(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for("seaweedfs", "external", True, "nfs")

    text = repr(template_context(settings, IMAGE))

    for value in secret_values(settings):
        assert value not in text


# ------------------------------------------------------------------------------------ files on disk


@pytest.fixture
def files(settings_for: Callable[..., Settings]) -> dict[str, str]:
    return manifest_files(render_manifests(settings_for(), IMAGE))


def test_files_are_numbered_in_apply_order(files: dict[str, str]) -> None:
    names = list(files)

    position = {name.split("-", 1)[1]: index for index, name in enumerate(names)}

    assert (
        position["namespace-mlops.yaml"] < position["configmap-mlflow-config.yaml"] < position["deployment-mlflow.yaml"]
    )
    assert names.index(next(n for n in names if "-configmap-" in n)) < names.index(
        next(n for n in names if "-deployment-" in n)
    )
    assert names == sorted(names)


def test_writing_twice_changes_nothing_the_second_time(files: dict[str, str], tmp_path: Path) -> None:
    first = write_manifests(files, tmp_path / "out")
    second = write_manifests(files, tmp_path / "out")

    assert sorted(first.created) == sorted(files) and first.changed
    assert not second.changed and sorted(second.unchanged) == sorted(files)


def test_files_no_longer_rendered_are_removed(files: dict[str, str], tmp_path: Path) -> None:
    write_manifests(files | {"99-configmap-old.yaml": "kind: ConfigMap\n"}, tmp_path)

    result = write_manifests(files, tmp_path)

    assert result.removed == ["99-configmap-old.yaml"]
    assert not (tmp_path / "99-configmap-old.yaml").exists()


def test_a_foreign_non_empty_folder_is_refused_without_force(files: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(PlatformError, match="--force"):
        write_manifests(files, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

    write_manifests(files, tmp_path, force=True)
    assert (tmp_path / MARKER_FILE).is_file() and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_dry_run_writes_nothing(files: dict[str, str], tmp_path: Path) -> None:
    result = write_manifests(files, tmp_path / "out", dry_run=True)

    assert result.changed and not (tmp_path / "out").exists()


def test_written_files_load_back_as_the_rendered_objects(
    files: dict[str, str], tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    write_manifests(files, tmp_path)

    loaded = [yaml.safe_load((tmp_path / name).read_text()) for name in files]

    assert sorted(map(str, loaded)) == sorted(map(str, render_manifests(settings_for(), IMAGE)))


def test_invoke_render_writes_the_files_then_reports_unchanged(project: Project, sample_env: dict[str, str]) -> None:
    project.write_env(sample_env)

    first = project.invoke("render", "--out", "out", "--image", IMAGE)
    second = project.invoke("render", "--out", "out", "--image", IMAGE)

    assert first.returncode == 0, first.stderr
    assert [p for p in (project.root / "out").iterdir() if p.name.endswith("-namespace-mlops.yaml")]
    assert second.returncode == 0, second.stderr
    assert "unchanged" in second.stdout
    for value in sample_env.values():
        assert value not in first.stdout + first.stderr


def test_invoke_render_refuses_a_foreign_folder_without_a_traceback(
    project: Project, sample_env: dict[str, str]
) -> None:
    project.write_env(sample_env)
    project.write("out/keep.txt", "mine")

    result = project.invoke("render", "--out", "out", "--image", IMAGE)

    assert result.returncode == 1
    assert "--force" in result.stderr and "Traceback" not in result.stderr


def test_offline_source_renders_the_stand_in_images_that_build_images_makes(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, dict(SAMPLE_SECRETS) | {"IMAGE_SOURCE": "offline"})
    images = manifest_images(render_manifests(settings, mlflow_image=IMAGE))
    assert OFFLINE_POSTGRES in images and OFFLINE_SEAWEEDFS in images
    assert settings.images.postgres not in images and settings.images.seaweedfs not in images


def test_registry_source_renders_the_official_images(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for()
    images = manifest_images(render_manifests(settings, mlflow_image=IMAGE))
    assert {IMAGE, settings.images.postgres, settings.images.seaweedfs} <= set(images)
    assert OFFLINE_POSTGRES not in images


def test_node_delivery_sends_exactly_the_images_the_manifests_name(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, dict(SAMPLE_SECRETS) | {"IMAGE_SOURCE": "offline"})
    delivered = images_to_deliver(settings, IMAGE, present=lambda name: True)
    assert delivered == manifest_images(render_manifests(settings, mlflow_image=IMAGE))
    assert IMAGE in delivered and OFFLINE_POSTGRES in delivered


def test_node_delivery_stops_before_sending_when_a_named_image_is_not_here(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    with pytest.raises(PlatformError, match=r"postgres:15-bookworm.*IMAGE_SOURCE=offline"):
        images_to_deliver(settings, IMAGE, present=lambda name: name == IMAGE)


def scaled_objects(tmp_path: Path, mlflow_yaml: str) -> dict[tuple[str, str], dict[str, Any]]:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "platform.yaml").write_text(f"platform:\n  mlflow:\n{mlflow_yaml}")
    objects = render_manifests(load_settings(tmp_path, dict(SAMPLE_SECRETS)), mlflow_image=IMAGE)
    check_objects(objects, "1.34.1")
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


JOB_ENV = ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS")


def job_env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if e["name"] in JOB_ENV}


def test_one_replica_renders_no_disruption_budget_and_no_job_runner(tmp_path: Path) -> None:
    objects = scaled_objects(tmp_path, "    replicas: 1\n")
    assert ("PodDisruptionBudget", "mlflow") not in objects
    assert ("HorizontalPodAutoscaler", "mlflow") not in objects
    assert job_env(objects[("Deployment", "mlflow")]) == {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false",
    }


def test_several_replicas_get_a_disruption_budget_and_spread_over_nodes(tmp_path: Path) -> None:
    objects = scaled_objects(tmp_path, "    replicas: 3\n")
    deployment = objects[("Deployment", "mlflow")]
    assert deployment["spec"]["replicas"] == 3
    assert objects[("PodDisruptionBudget", "mlflow")]["spec"]["maxUnavailable"] == 1
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_autoscaling_renders_an_hpa_and_leaves_the_replica_count_to_it(tmp_path: Path) -> None:
    objects = scaled_objects(tmp_path, "    autoscaling: {min_replicas: 2, max_replicas: 6, cpu_utilization: 60}\n")
    hpa = objects[("HorizontalPodAutoscaler", "mlflow")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert "replicas" not in objects[("Deployment", "mlflow")]["spec"]


def test_with_jobs_and_replicas_periodic_tasks_run_in_exactly_one_pod_no_service_selects(tmp_path: Path) -> None:
    objects = scaled_objects(tmp_path, "    replicas: 3\n    job_execution: true\n")
    serving, periodic = objects[("Deployment", "mlflow")], objects[("Deployment", "mlflow-periodic")]
    assert job_env(serving)["MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS"] == "false"
    assert job_env(periodic) == {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
        "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "true",
    }
    assert periodic["spec"]["replicas"] == 1
    service_selector = objects[("Service", "mlflow")]["spec"]["selector"]
    periodic_labels = periodic["spec"]["template"]["metadata"]["labels"]
    assert not all(periodic_labels.get(k) == v for k, v in service_selector.items())


def test_a_single_replica_with_jobs_runs_its_periodic_tasks_itself(tmp_path: Path) -> None:
    objects = scaled_objects(tmp_path, "    job_execution: true\n")
    assert ("Deployment", "mlflow-periodic") not in objects
    assert job_env(objects[("Deployment", "mlflow")])["MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS"] == "true"


def test_autoscaling_with_max_below_min_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "platform.yaml").write_text(
        "platform:\n  mlflow:\n    autoscaling: {min_replicas: 4, max_replicas: 2}\n"
    )
    with pytest.raises(SettingsError, match=r"platform\.mlflow\.autoscaling.*max_replicas \(2\) must be at least"):
        load_settings(tmp_path, dict(SAMPLE_SECRETS))


def test_shared_cluster_components_render_the_same_for_every_platform_namespace(tmp_path: Path) -> None:
    """The controller and the NFS provisioner live in kube-system: a second platform must not relabel them."""

    def shared(namespace: str) -> list[dict[str, Any]]:
        env = environ_for("seaweedfs", "internal", False, "nfs") | {"PLATFORM_NAMESPACE": namespace}
        objects = render_manifests(load_settings(tmp_path, env), mlflow_image=IMAGE)
        return [
            o for o in objects if o["metadata"].get("namespace") == "kube-system" or o["kind"].startswith("Cluster")
        ]

    first, second = shared("team-a"), shared("team-b")
    assert {o["kind"] for o in first} >= {"Deployment", "ClusterRole", "Service"}
    assert first == second


def test_rendering_imports_neither_the_docker_sdk_nor_the_image_builder() -> None:
    """Rendering needs neither Docker nor git: the MLflow image is an argument, worked out by the task."""
    import subprocess
    import sys

    code = (
        "import sys, mlopskit.kube.render, mlopskit.kube.deploy\n"
        "loaded = [m for m in ('docker', 'mlopskit.images') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
