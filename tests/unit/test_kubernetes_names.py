"""Every setting that becomes a Kubernetes name, label, quantity or host is checked at load time by Kubernetes' rule."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlopskit.settings import Settings

from .conftest import Project, refused

MakeSettings = Callable[..., Settings]


# ------------------------------------------------------------------------------------- ingress host


def test_ingress_host_with_capitals_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="INGRESS_ENABLED=true\nINGRESS_HOST=MLflow.Example.com\n")
    assert "platform.ingress.host (INGRESS_HOST) [from .env:2]: must be a lowercase DNS name" in text
    assert "use lowercase" in text


def test_ingress_host_that_is_an_ip_address_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="INGRESS_ENABLED=true\nINGRESS_HOST=192.168.1.10\n")
    assert "platform.ingress.host (INGRESS_HOST) [from .env:2]: must be a DNS name, not an IP address" in text


def test_ingress_host_that_is_an_ipv6_address_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="INGRESS_ENABLED=true\nINGRESS_HOST=fd00::10\n")
    assert "must be a DNS name, not an IP address" in text


def test_wildcard_ingress_host_is_accepted(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="INGRESS_ENABLED=true\nINGRESS_HOST=*.mlops.example.com\n")
    assert settings.platform.ingress.host == "*.mlops.example.com"


def test_ingress_tls_secret_must_be_a_secret_name(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="INGRESS_TLS_SECRET=My_Cert\n")
    assert "platform.ingress.tls_secret (INGRESS_TLS_SECRET) [from .env:1]: must be a Kubernetes Secret name" in text


def test_ingress_class_must_be_an_object_name(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  ingress:\n    class_name: Traefik Ingress\n")
    assert "platform.ingress.class_name [from config/platform.yaml:3]: must be a Kubernetes IngressClass name" in text


# ------------------------------------------------------------------------------ trailing newlines


def test_namespace_with_trailing_newline_from_the_environment_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, environ={"PLATFORM_NAMESPACE": "mlops\n"})
    assert "platform.namespace (PLATFORM_NAMESPACE) [from environment $PLATFORM_NAMESPACE]" in text
    assert "'mlops\\n'" in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("K3S_VERSION", "v1.34.1+k3s1\n"),
        ("CLUSTER_NAME", "mlops\n"),
        ("S3_BUCKET", "mlflow\n"),
        ("INGRESS_HOST", "mlflow.example.com\n"),
        ("NFS_PATH", "/srv/nfs/k8s\n"),
        ("SSH_USER", "ubuntu\n"),
        ("IMAGE_TAG", "v1\n"),
    ],
)
def test_trailing_newline_is_refused_in_every_checked_value(
    make_settings: MakeSettings, variable: str, value: str
) -> None:
    text = refused(make_settings, environ={variable: value})
    assert f"({variable}) [from environment ${variable}]" in text


def test_newline_inside_a_yaml_value_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform='platform:\n  postgres:\n    user: "mlflow\\n"\n')
    assert "platform.postgres.user [from config/platform.yaml:3]: must not contain a newline" in text


# ----------------------------------------------------------------------------------- quantities


def test_zero_volume_size_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  storage:\n    postgres_size: 0Gi\n")
    assert "platform.storage.postgres_size [from config/platform.yaml:3]: must be more than zero" in text


@pytest.mark.parametrize("size", ["-1Gi", "10 Gi", "10GB", "ten", "1.5.0Gi"])
def test_malformed_volume_size_is_refused(make_settings: MakeSettings, size: str) -> None:
    text = refused(make_settings, platform=f"platform:\n  storage:\n    objectstore_size: '{size}'\n")
    assert "platform.storage.objectstore_size [from config/platform.yaml:3]: must be a Kubernetes quantity" in text


def test_zero_cpu_request_is_refused(make_settings: MakeSettings) -> None:
    platform = "platform:\n  resources:\n    mlflow: {cpu_request: 0m, memory_request: 1Gi, memory_limit: 2Gi}\n"
    assert "platform.resources.mlflow.cpu_request" in refused(make_settings, platform=platform)


def test_request_above_limit_is_refused(make_settings: MakeSettings) -> None:
    platform = "platform:\n  resources:\n    mlflow: {cpu_request: 250m, memory_request: 3Gi, memory_limit: 2Gi}\n"
    text = refused(make_settings, platform=platform)
    assert "memory_request 3Gi is above memory_limit 2Gi" in text


def test_quantities_in_other_units_are_accepted(make_settings: MakeSettings) -> None:
    platform = "platform:\n  resources:\n    mlflow: {cpu_request: '0.5', memory_request: 500M, memory_limit: 1Gi}\n"
    assert make_settings(platform=platform).platform.resources.mlflow.memory_request == "500M"


# ------------------------------------------------------------------------- names, labels, taints


def test_host_name_with_capitals_is_refused_because_it_becomes_the_node_name(make_settings: MakeSettings) -> None:
    text = refused(make_settings, inventory="hosts:\n  - {name: K3s-Server, address: 10.0.0.1, roles: [server]}\n")
    assert "cluster.hosts[K3s-Server].name [from config/inventory.yaml:2]: must be a Kubernetes node name" in text


def test_node_label_value_that_kubernetes_refuses_is_refused(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], labels: {gpu: 'nvidia a100'}}\n"
    text = refused(make_settings, inventory=inventory)
    assert "cluster.hosts[s1].labels [from config/inventory.yaml:2]: node label gpu='nvidia a100'" in text
    assert "must be a Kubernetes label value" in text


def test_node_label_key_that_kubernetes_refuses_is_refused(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], labels: {'-gpu': 'true'}}\n"
    assert "must be a Kubernetes label key" in refused(make_settings, inventory=inventory)


def test_prefixed_node_label_is_accepted(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], labels: {example.com/gpu: a100}}\n"
    assert make_settings(inventory=inventory).cluster.hosts[0].labels == {"example.com/gpu": "a100"}


def test_taint_with_a_value_kubernetes_refuses_is_refused(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], taints: ['gpu=a b:NoSchedule']}\n"
    assert "taint 'gpu=a b:NoSchedule': must be a Kubernetes label value" in refused(make_settings, inventory=inventory)


def test_storage_class_must_be_an_object_name(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  storage:\n    storage_class: NFS_Client\n")
    assert "platform.storage.storage_class [from config/platform.yaml:3]: must be a Kubernetes StorageClass" in text


def test_mlflow_version_must_be_a_label_value(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="images:\n  mlflow_version: '3.17.2 '\n")
    assert "images.mlflow_version [from config/platform.yaml:2]: must be a Kubernetes label value" in text


def test_image_reference_must_parse(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="images:\n  postgres: 'Postgres:15'\n")
    assert "images.postgres [from config/platform.yaml:2]: must be an image reference" in text


def test_image_tag_must_be_a_docker_tag(make_settings: MakeSettings) -> None:
    assert "images.tag (IMAGE_TAG) [from .env:1]: must be an image tag" in refused(
        make_settings, env_file="IMAGE_TAG=-latest\n"
    )


# ------------------------------------------------------------------------------ hosts and URLs


def test_nfs_server_must_be_a_host(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="NFS_SERVER=nfs server\n")
    assert "platform.storage.nfs_server (NFS_SERVER) [from .env:1]: must be a host name" in text


def test_nfs_path_with_a_space_is_refused(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="NFS_PATH='/srv/nfs k8s'\n")
    assert "platform.storage.nfs_path (NFS_PATH) [from .env:1]: must be an absolute path" in text


def test_nfs_clients_must_be_addresses_or_networks(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  storage:\n    nfs_clients: ['10.0.0.0/33']\n")
    assert "must be an address, a host name or a network" in text


def test_tls_san_entries_must_be_hosts(make_settings: MakeSettings) -> None:
    assert "cluster.tls_san" in refused(make_settings, inventory="tls_san: ['api server']\n")


def test_s3_endpoint_with_an_ipv6_host_in_brackets_is_accepted(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="OBJECT_STORE=external\nS3_ENDPOINT=http://[fd00::5]:8333\n")
    assert settings.platform.object_store.endpoint == "http://[fd00::5]:8333"


@pytest.mark.parametrize("endpoint", ["http://fd00::5:8333", "ftp://s3.example.com", "https://", "https://s3:99999"])
def test_s3_endpoint_that_is_not_a_url_is_refused(make_settings: MakeSettings, endpoint: str) -> None:
    text = refused(make_settings, env_file=f"OBJECT_STORE=external\nS3_ENDPOINT={endpoint}\n")
    assert "platform.object_store.endpoint (S3_ENDPOINT) [from .env:2]: must be a URL" in text


def test_bracketed_ipv6_host_address_says_to_drop_the_brackets(make_settings: MakeSettings) -> None:
    text = refused(make_settings, inventory="hosts:\n  - {name: s1, address: '[fd00::10]', roles: [server]}\n")
    assert "must be written without brackets" in text


def test_local_bind_must_be_an_ip_address(make_settings: MakeSettings) -> None:
    assert "local.bind" in refused(make_settings, platform="local:\n  bind: localhost\n")


# ---------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("INGRESS_ENABLED=true\nINGRESS_HOST=MLflow.Example.com\n", "ingress.host (INGRESS_HOST) [from .env:2]"),
        ("INGRESS_ENABLED=true\nINGRESS_HOST=10.0.0.7\n", "must be a DNS name, not an IP address"),
    ],
    ids=["capitals", "ip-address"],
)
def test_cli_refuses_an_ingress_host_before_deploying(project: Project, env: str, expected: str) -> None:
    project.write(".env", env)
    result = project.invoke("deploy", "--dry-run")
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_refuses_a_zero_volume_size(project: Project) -> None:
    project.write("config/platform.yaml", "platform:\n  storage:\n    postgres_size: 0Gi\n")
    result = project.invoke("render", "--dry-run")
    assert result.returncode == 1
    assert "platform.storage.postgres_size [from config/platform.yaml:3]: must be more than zero" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
