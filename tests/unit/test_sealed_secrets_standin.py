"""The stand-in Sealed Secrets controller unseals what mlopskit seals, and builds the Secrets upstream would.

Values are sealed with mlopskit.kube.sealing (the project's own code); the controller module comes from its image's
build context (docker/offline/sealed-secrets-controller, on pytest's pythonpath). The API is faked in memory;
behaviour against a real API server is checked on a real cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sealed_secrets_standin as standin
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from mlopskit.credentials import CredentialSecret
from mlopskit.kube import sealing

NAMESPACE = "mlops"
SECRET = CredentialSecret("db-credentials", {"PASSWORD": "s3cr3t-value", "USER": "mlflow"}, "test secret")
UID = "5e1f0c1a-0000-4000-8000-000000000001"


def make_keys(bits: int = 2048) -> tuple[standin.SealingKeys, sealing.Certificate]:
    key_pem, cert_pem = standin.generate_key(datetime.now(UTC) - timedelta(minutes=1), bits)
    return standin.keys_from_pems([(key_pem, cert_pem)]), sealing.load_certificate(cert_pem, "test key")


@pytest.fixture(scope="module")
def key_pair() -> tuple[standin.SealingKeys, sealing.Certificate]:
    return make_keys()


@pytest.fixture(scope="module")
def keys(key_pair: tuple[standin.SealingKeys, sealing.Certificate]) -> standin.SealingKeys:
    return key_pair[0]


@pytest.fixture(scope="module")
def certificate(key_pair: tuple[standin.SealingKeys, sealing.Certificate]) -> sealing.Certificate:
    return key_pair[1]


def sealed_secret(
    certificate: sealing.Certificate,
    scope: sealing.Scope = "strict",
    namespace: str = NAMESPACE,
    name: str = SECRET.name,
) -> dict[str, Any]:
    """A SealedSecret as `invoke seal` writes it, with what the API server adds (uid, generation)."""
    encrypted = {
        key: sealing.encrypt_value(certificate.public_key, value, NAMESPACE, SECRET.name, scope)
        for key, value in SECRET.data.items()
    }
    sealed = sealing.build_sealed_secret(SECRET, NAMESPACE, {"app": "mlflow"}, encrypted, scope)
    sealed["metadata"] |= {"namespace": namespace, "name": name, "uid": UID, "generation": 3}
    return sealed


def plaintexts(values: dict[str, bytes]) -> dict[str, str]:
    return {key: value.decode() for key, value in values.items()}


# ------------------------------------------------------------------------------------------ decryption


def test_strict_value_unseals_under_its_namespace_and_name(
    keys: standin.SealingKeys, certificate: sealing.Certificate
) -> None:
    assert plaintexts(standin.unseal(keys.private_keys, sealed_secret(certificate))) == SECRET.data


def test_strict_value_does_not_unseal_under_another_name(
    keys: standin.SealingKeys, certificate: sealing.Certificate
) -> None:
    with pytest.raises(standin.UnsealError, match="no key could decrypt"):
        standin.unseal(keys.private_keys, sealed_secret(certificate, name="renamed"))


def test_strict_value_does_not_unseal_in_another_namespace(
    keys: standin.SealingKeys, certificate: sealing.Certificate
) -> None:
    with pytest.raises(standin.UnsealError, match="label 'elsewhere/db-credentials'"):
        standin.unseal(keys.private_keys, sealed_secret(certificate, namespace="elsewhere"))


def test_namespace_wide_value_unseals_under_any_name_in_its_namespace(
    keys: standin.SealingKeys, certificate: sealing.Certificate
) -> None:
    sealed = sealed_secret(certificate, "namespace-wide", name="renamed")
    assert plaintexts(standin.unseal(keys.private_keys, sealed)) == SECRET.data
    with pytest.raises(standin.UnsealError):
        standin.unseal(keys.private_keys, sealed_secret(certificate, "namespace-wide", namespace="elsewhere"))


def test_cluster_wide_value_unseals_in_any_namespace_under_any_name(
    keys: standin.SealingKeys, certificate: sealing.Certificate
) -> None:
    sealed = sealed_secret(certificate, "cluster-wide", namespace="elsewhere", name="renamed")
    assert plaintexts(standin.unseal(keys.private_keys, sealed)) == SECRET.data


def test_value_sealed_for_another_key_does_not_unseal(certificate: sealing.Certificate) -> None:
    other_keys, _ = make_keys()
    with pytest.raises(standin.UnsealError, match="'PASSWORD'"):
        standin.unseal(other_keys.private_keys, sealed_secret(certificate))


def test_every_active_key_is_tried(keys: standin.SealingKeys, certificate: sealing.Certificate) -> None:
    newer, _ = make_keys()
    both = newer.private_keys + keys.private_keys
    assert plaintexts(standin.unseal(both, sealed_secret(certificate))) == SECRET.data


def test_tampered_value_does_not_unseal(keys: standin.SealingKeys, certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate)
    blob = bytearray(base64.b64decode(sealed["spec"]["encryptedData"]["USER"]))
    blob[-1] ^= 1
    sealed["spec"]["encryptedData"]["USER"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(standin.UnsealError, match="'USER'"):
        standin.unseal(keys.private_keys, sealed)


# ---------------------------------------------------------------------------------------------- secret


def test_secret_takes_labels_annotations_and_type_from_the_template(certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate, "namespace-wide")
    sealed["spec"]["template"]["type"] = "kubernetes.io/basic-auth"
    secret = standin.secret_for(sealed, {"USER": b"mlflow"})
    assert secret["metadata"]["labels"] == {"app": "mlflow"}
    assert secret["metadata"]["annotations"] == sealed["spec"]["template"]["metadata"]["annotations"]
    assert secret["type"] == "kubernetes.io/basic-auth"


def test_secret_has_the_sealed_secrets_name_and_namespace(certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate, "cluster-wide", namespace="elsewhere", name="renamed")
    secret = standin.secret_for(sealed, {})
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == ("elsewhere", "renamed")


def test_secret_data_is_base64_of_the_plaintexts(certificate: sealing.Certificate) -> None:
    secret = standin.secret_for(sealed_secret(certificate), {"PASSWORD": "ü-€".encode()})
    assert secret["data"] == {"PASSWORD": base64.b64encode("ü-€".encode()).decode()}


def test_secret_is_controlled_by_its_sealed_secret(certificate: sealing.Certificate) -> None:
    secret = standin.secret_for(sealed_secret(certificate), {})
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "bitnami.com/v1alpha1",
            "kind": "SealedSecret",
            "name": SECRET.name,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_secret_without_a_template_type_is_opaque(certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate)
    del sealed["spec"]["template"]
    assert standin.secret_for(sealed, {})["type"] == "Opaque"


def test_go_templates_in_template_data_are_refused(certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate)
    sealed["spec"]["template"]["data"] = {"url": "postgres://{{ .USER }}@db"}
    with pytest.raises(standin.UnsealError, match="Go template"):
        standin.secret_for(sealed, {})


# ----------------------------------------------------------------------------------------- reconcile


def not_found(what: str) -> ApiException:
    return ApiException(status=404, reason=f"{what} not found")


class FakeCore:
    """Secrets in memory, with the CoreV1Api calls the controller makes; every write is recorded."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []

    def add(self, secret: dict[str, Any]) -> None:
        meta = secret["metadata"]
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        self.secrets[(meta["namespace"], meta["name"])] = secret

    def list_namespaced_secret(self, namespace: str, label_selector: str) -> dict[str, Any]:
        key, _, value = label_selector.partition("=")
        items = [
            copy.deepcopy(s)
            for (ns, _), s in self.secrets.items()
            if ns == namespace and (s["metadata"].get("labels") or {}).get(key) == value
        ]
        return {"items": items}

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        if (namespace, name) not in self.secrets:
            raise not_found(f"secret {name}")
        return copy.deepcopy(self.secrets[(namespace, name)])

    def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        secret = copy.deepcopy(body)
        meta = secret["metadata"]
        meta.setdefault("name", meta.get("generateName", "") + "abcde")
        self.add(secret)
        self.writes.append(("create", meta["name"]))
        return copy.deepcopy(secret)

    def replace_namespaced_secret(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        assert body["metadata"]["resourceVersion"] == self.secrets[(namespace, name)]["metadata"]["resourceVersion"]
        self.secrets[(namespace, name)] = copy.deepcopy(body)
        self.writes.append(("replace", name))
        return body


class FakeCustom:
    """The status subresource of SealedSecrets: records what was written."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    def replace_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert (group, version, plural) == ("bitnami.com", "v1alpha1", "sealedsecrets")
        self.statuses.append(copy.deepcopy(body["status"]))
        return body


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def custom() -> FakeCustom:
    return FakeCustom()


@pytest.fixture
def controller(core: FakeCore, custom: FakeCustom, keys: standin.SealingKeys) -> standin.Controller:
    return standin.Controller(core, custom, keys)


def synced(status: dict[str, Any]) -> tuple[str, str]:
    (condition,) = status["conditions"]
    assert condition["type"] == "Synced"
    return condition["status"], condition["message"]


def test_reconcile_creates_the_secret_with_the_plaintexts(
    controller: standin.Controller, core: FakeCore, certificate: sealing.Certificate
) -> None:
    controller.reconcile(sealed_secret(certificate))
    data = core.secrets[(NAMESPACE, SECRET.name)]["data"]
    assert {key: base64.b64decode(value).decode() for key, value in data.items()} == SECRET.data


def test_reconcile_reports_synced_true_with_the_observed_generation(
    controller: standin.Controller, custom: FakeCustom, certificate: sealing.Certificate
) -> None:
    controller.reconcile(sealed_secret(certificate))
    (status,) = custom.statuses
    assert synced(status) == ("True", "Secret unsealed")
    assert status["observedGeneration"] == 3


def test_failed_decryption_reports_synced_false_and_writes_no_secret(
    controller: standin.Controller, core: FakeCore, custom: FakeCustom, certificate: sealing.Certificate
) -> None:
    controller.reconcile(sealed_secret(certificate, name="renamed"))
    assert core.writes == []
    state, message = synced(custom.statuses[-1])
    assert state == "False"
    assert "no key could decrypt" in message


def test_a_secret_not_owned_by_the_sealed_secret_is_not_overwritten(
    controller: standin.Controller, core: FakeCore, custom: FakeCustom, certificate: sealing.Certificate
) -> None:
    core.add({"metadata": {"name": SECRET.name, "namespace": NAMESPACE}, "type": "Opaque", "data": {"x": "eQ=="}})
    controller.reconcile(sealed_secret(certificate))
    assert core.writes == []
    assert synced(custom.statuses[-1]) == (
        "False",
        f'Resource "{SECRET.name}" already exists and is not managed by SealedSecret',
    )


def test_a_secret_annotated_managed_is_taken_over(
    controller: standin.Controller, core: FakeCore, certificate: sealing.Certificate
) -> None:
    meta = {"name": SECRET.name, "namespace": NAMESPACE, "annotations": {standin.MANAGED: "true"}}
    core.add({"metadata": meta, "type": "Opaque", "data": {"x": "eQ=="}})
    controller.reconcile(sealed_secret(certificate))
    secret = core.secrets[(NAMESPACE, SECRET.name)]
    assert core.writes == [("replace", SECRET.name)]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    assert set(secret["data"]) == set(SECRET.data)


def test_an_owned_secret_is_updated_when_a_value_changes(
    controller: standin.Controller, core: FakeCore, certificate: sealing.Certificate
) -> None:
    sealed = sealed_secret(certificate)
    controller.reconcile(sealed)
    core.secrets[(NAMESPACE, SECRET.name)]["data"]["USER"] = base64.b64encode(b"edited").decode()
    controller.reconcile(sealed)
    assert core.writes == [("create", SECRET.name), ("replace", SECRET.name)]
    assert core.secrets[(NAMESPACE, SECRET.name)]["data"]["USER"] == base64.b64encode(b"mlflow").decode()


def test_a_second_reconcile_writes_nothing(
    controller: standin.Controller, core: FakeCore, custom: FakeCustom, certificate: sealing.Certificate
) -> None:
    sealed = sealed_secret(certificate)
    controller.reconcile(sealed)
    sealed["status"] = custom.statuses[-1]
    controller.reconcile(sealed)
    assert core.writes == [("create", SECRET.name)]
    assert len(custom.statuses) == 1


def test_status_keeps_its_transition_time_while_the_condition_holds(certificate: sealing.Certificate) -> None:
    sealed = sealed_secret(certificate)
    first = standin.synced_status(sealed, True, "Secret unsealed", datetime(2025, 1, 1, tzinfo=UTC))
    sealed["status"] = first
    again = standin.synced_status(sealed, True, "Secret unsealed", datetime(2025, 6, 1, tzinfo=UTC))
    assert again["conditions"][0]["lastTransitionTime"] == "2025-01-01T00:00:00Z"


# ---------------------------------------------------------------------------------------------- keys


def test_an_existing_active_key_is_reused(core: FakeCore) -> None:
    key_pem, cert_pem = standin.generate_key(datetime.now(UTC), 2048)
    existing = standin.key_secret("kube-system", key_pem, cert_pem)
    existing["metadata"]["name"] = "sealed-secrets-keyold01"
    core.add(existing)
    loaded = standin.load_or_create_keys(core, "kube-system")
    assert core.writes == []
    assert loaded.cert_pem == cert_pem


def test_without_a_key_one_is_created_as_upstream_labels_it(core: FakeCore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin, "KEY_BITS", 2048)
    loaded = standin.load_or_create_keys(core, "kube-system")
    (created,) = core.secrets.values()
    assert created["metadata"]["name"].startswith("sealed-secrets-key")
    assert created["metadata"]["labels"] == {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}
    assert created["type"] == "kubernetes.io/tls"
    assert base64.b64decode(created["data"]["tls.crt"]) == loaded.cert_pem


def test_a_new_key_is_rsa_4096_self_signed_for_cn_sealed_secret() -> None:
    key_pem, cert_pem = standin.generate_key(datetime.now(UTC))
    cert = x509.load_pem_x509_certificate(cert_pem)
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 4096
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert (cn, cert.issuer) == ("sealed-secret", cert.subject)
    assert standin.keys_from_pems([(key_pem, cert_pem)]).private_keys[0].key_size == 4096


# ---------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http(keys: standin.SealingKeys) -> Iterator[str]:
    server = standin.http_server(keys, ("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_cert_pem_serves_the_newest_certificate(http: str, keys: standin.SealingKeys) -> None:
    assert fetch(f"{http}/v1/cert.pem") == (200, keys.cert_pem)


def test_healthz_answers_200(http: str) -> None:
    assert fetch(f"{http}/healthz")[0] == 200


def test_verify_accepts_what_unseals_and_rejects_what_does_not(http: str, certificate: sealing.Certificate) -> None:
    assert fetch(f"{http}/v1/verify", json.dumps(sealed_secret(certificate)).encode())[0] == 200
    assert fetch(f"{http}/v1/verify", json.dumps(sealed_secret(certificate, name="x")).encode())[0] == 409


def test_verify_reads_a_chunked_body_as_the_api_servers_proxy_sends_it(
    http: str, certificate: sealing.Certificate
) -> None:
    body = json.dumps(sealed_secret(certificate)).encode()
    response = requests.post(f"{http}/v1/verify", data=iter([body[:100], body[100:]]), timeout=10)  # chunked
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200


def test_unknown_paths_answer_404(http: str) -> None:
    assert fetch(f"{http}/v1/rotate", b"{}")[0] == 404
    assert fetch(f"{http}/metrics")[0] == 404
