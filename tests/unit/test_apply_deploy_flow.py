"""The deploy flow with the real rendered manifests: a dry run changes nothing, diff is empty after apply.

No API server can run on this machine: the cluster is the in-memory DynamicClient stand-in of
tests/unit/kube_fake.py, which models only what the engine's decisions depend on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mlopskit.contract import CONTROLLER_NAMESPACE
from mlopskit.kube import deploy as flow
from mlopskit.kube import sealing
from mlopskit.kube.apply import Engine
from mlopskit.kube.applyset import ObjectRef
from mlopskit.settings import Settings
from tests.unit.kube_fake import FakeCluster

IMAGE = "mlopskit/mlflow:3.17.2-test"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sample_env: dict[str, str]) -> Settings:
    return make_settings(environ=sample_env)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    # Every real cluster has kube-system; the Sealed Secrets controller and the NFS provisioner live there.
    fake.objects[("v1", "Namespace", "", "kube-system")] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "kube-system"},
    }
    monkeypatch.setattr(flow, "connect", lambda settings: (None, fake))
    yield fake


def test_dry_run_deploy_reports_every_rendered_object_as_created_and_writes_nothing(
    cluster: FakeCluster, settings: Settings
) -> None:
    rendered = flow.rendered_objects(settings, IMAGE)
    outcome = flow.deploy(settings, dry_run=True, verify=False, mlflow_image=IMAGE)
    expected = {ObjectRef.of(o) for o in rendered if not flow.is_controller_object(o)}
    assert {r for r in outcome.result.created if r.kind != "SealedSecret"} == expected
    assert list(cluster.objects) == [("v1", "Namespace", "", "kube-system")]


def test_controller_phase_holds_exactly_the_sealed_secrets_objects(settings: Settings) -> None:
    controller = [o for o in flow.rendered_objects(settings, IMAGE) if flow.is_controller_object(o)]
    kinds = sorted(o["kind"] for o in controller)
    assert "CustomResourceDefinition" in kinds and "ClusterRole" in kinds and "Deployment" in kinds
    assert all(
        o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "sealed-secrets"
        or o["metadata"]["name"] == "sealedsecrets.bitnami.com"
        for o in controller
    )


def test_rendered_manifests_contain_no_plaintext_secret(settings: Settings) -> None:
    assert [o["metadata"]["name"] for o in flow.rendered_objects(settings, IMAGE) if o["kind"] == "Secret"] == []


def test_diff_is_empty_after_the_rendered_platform_is_applied(cluster: FakeCluster, settings: Settings) -> None:
    rendered = flow.rendered_objects(settings, IMAGE)
    controller = [o for o in rendered if flow.is_controller_object(o)]
    platform = [o for o in rendered if not flow.is_controller_object(o)]
    Engine(cluster, CONTROLLER_NAMESPACE, parent_name=flow.CONTROLLER_APPLYSET).apply(controller)  # type: ignore[arg-type]
    Engine(cluster, settings.platform.namespace).apply(platform)  # type: ignore[arg-type]
    assert [ref for ref, _ in flow.diff(settings, mlflow_image=IMAGE) if ref.kind != "SealedSecret"] == []


@pytest.fixture
def certificate() -> sealing.Certificate:
    """A controller certificate made here: the real one comes from the controller through the API server."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return sealing.load_certificate(cert.public_bytes(serialization.Encoding.PEM), "test certificate")


def test_deploy_applies_sealed_credentials_and_never_a_plaintext_secret(
    cluster: FakeCluster,
    settings: Settings,
    certificate: sealing.Certificate,
    monkeypatch: pytest.MonkeyPatch,
    sample_env: dict[str, str],
) -> None:
    monkeypatch.setattr(sealing, "fetch_certificate", lambda settings, api=None: certificate)
    monkeypatch.setattr(flow, "_wait", lambda dyn, objects, timeout: None)  # no controllers in the stand-in
    outcome = flow.deploy(settings, verify=False)
    stored = list(cluster.objects.values())
    assert any(o["kind"] == "SealedSecret" for o in stored)
    secrets = [o for o in stored if o["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"applyset-mlopskit", flow.CONTROLLER_APPLYSET}
    assert all("data" not in s and "stringData" not in s for s in secrets)
    dumped = json.dumps(stored)
    for value in sample_env.values():
        assert value not in dumped
    assert outcome.result.created and not outcome.result.configured


def test_second_deploy_is_unchanged(
    cluster: FakeCluster,
    settings: Settings,
    certificate: sealing.Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sealing, "fetch_certificate", lambda settings, api=None: certificate)
    monkeypatch.setattr(flow, "_wait", lambda dyn, objects, timeout: None)
    flow.deploy(settings, verify=False)
    second = flow.deploy(settings, verify=False).result
    assert not second.changed, second.summary()
