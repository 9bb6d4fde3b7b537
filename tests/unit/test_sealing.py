"""Sealing is byte-compatible with the Sealed Secrets controller: what we seal, its algorithm unseals.

`hybrid_decrypt` below is written from the controller's HybridDecrypt (pkg/crypto/crypto.go), independently
of mlopskit.kube.sealing, and is what the other sealing tests use to check output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from mlopskit.credentials import CredentialSecret
from mlopskit.errors import PlatformError
from mlopskit.kube import sealing


def hybrid_decrypt(private_key: rsa.RSAPrivateKey, blob: bytes, label: bytes) -> bytes:
    """The controller's HybridDecrypt: 2-byte length, RSA-OAEP(SHA-256) session key, AES-GCM with a zero nonce."""
    if len(blob) < 2:
        raise ValueError("too short")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    wrapped, sealed = blob[2 : 2 + rsa_len], blob[2 + rsa_len :]
    session_key = private_key.decrypt(
        wrapped, padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
    )
    return AESGCM(session_key).decrypt(bytes(12), sealed, None)


def unseal(private_key: rsa.RSAPrivateKey, sealed_secret: dict[str, Any]) -> dict[str, str]:
    """Decrypt every key of a SealedSecret the way the controller does, label chosen by its annotations."""
    meta = sealed_secret["metadata"]
    annotations = meta.get("annotations") or {}
    if annotations.get("sealedsecrets.bitnami.com/cluster-wide") == "true":
        label = b""
    elif annotations.get("sealedsecrets.bitnami.com/namespace-wide") == "true":
        label = meta["namespace"].encode()
    else:
        label = f"{meta['namespace']}/{meta['name']}".encode()
    return {
        key: hybrid_decrypt(private_key, base64.b64decode(value), label).decode()
        for key, value in sealed_secret["spec"]["encryptedData"].items()
    }


def make_certificate(private_key: Any, not_before: datetime | None = None, not_after: datetime | None = None) -> bytes:
    """A self-signed certificate like the controller's (CN sealed-secret), as PEM."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=3650))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def certificate(private_key: rsa.RSAPrivateKey) -> sealing.Certificate:
    return sealing.load_certificate(make_certificate(private_key), "test cert")


SECRET = CredentialSecret("db-credentials", {"PASSWORD": "s3cr3t-value", "USER": "mlflow"}, "test secret")


def sealed_for(certificate: sealing.Certificate, scope: sealing.Scope) -> dict[str, Any]:
    encrypted = {
        key: sealing.encrypt_value(certificate.public_key, value, "mlops", SECRET.name, scope)
        for key, value in SECRET.data.items()
    }
    return sealing.build_sealed_secret(SECRET, "mlops", {"app": "x"}, encrypted, scope)


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_each_scope_round_trips_through_the_controllers_algorithm(
    scope: sealing.Scope, certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    assert unseal(private_key, sealed_for(certificate, scope)) == SECRET.data


@pytest.mark.parametrize(
    ("scope", "annotation"),
    [
        ("namespace-wide", "sealedsecrets.bitnami.com/namespace-wide"),
        ("cluster-wide", "sealedsecrets.bitnami.com/cluster-wide"),
    ],
)
def test_scope_is_declared_by_the_standard_annotation_on_object_and_template(
    scope: sealing.Scope, annotation: str, certificate: sealing.Certificate
) -> None:
    sealed = sealed_for(certificate, scope)
    assert sealed["metadata"]["annotations"][annotation] == "true"
    assert sealed["spec"]["template"]["metadata"]["annotations"][annotation] == "true"
    assert sealing.scope_of(sealed) == scope


def test_strict_scope_carries_no_scope_annotation(certificate: sealing.Certificate) -> None:
    annotations = sealed_for(certificate, "strict")["metadata"]["annotations"]
    assert not any(key.startswith("sealedsecrets.bitnami.com/") for key in annotations)


def test_template_carries_the_secrets_metadata_and_type(certificate: sealing.Certificate) -> None:
    template = sealed_for(certificate, "strict")["spec"]["template"]
    assert template["metadata"]["name"] == SECRET.name
    assert template["metadata"]["namespace"] == "mlops"
    assert template["metadata"]["labels"] == {"app": "x"}
    assert template["type"] == "Opaque"
    assert "data" not in template


def test_strict_value_does_not_decrypt_under_another_name(
    certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    blob = sealing.hybrid_encrypt(certificate.public_key, b"value", sealing.scope_label("strict", "mlops", "a"))
    with pytest.raises(ValueError):
        hybrid_decrypt(private_key, blob, sealing.scope_label("strict", "mlops", "b"))


def test_strict_value_does_not_decrypt_in_another_namespace(
    certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    blob = sealing.hybrid_encrypt(certificate.public_key, b"value", sealing.scope_label("strict", "mlops", "a"))
    with pytest.raises(ValueError):
        hybrid_decrypt(private_key, blob, sealing.scope_label("strict", "other", "a"))


def test_namespace_wide_value_decrypts_under_any_name_but_not_in_another_namespace(
    certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    blob = sealing.hybrid_encrypt(certificate.public_key, b"value", sealing.scope_label("namespace-wide", "mlops", "a"))
    assert hybrid_decrypt(private_key, blob, sealing.scope_label("namespace-wide", "mlops", "renamed")) == b"value"
    with pytest.raises(ValueError):
        hybrid_decrypt(private_key, blob, sealing.scope_label("namespace-wide", "other", "a"))


def test_tampered_ciphertext_fails_authentication(
    certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    label = sealing.scope_label("strict", "mlops", "a")
    blob = bytearray(sealing.hybrid_encrypt(certificate.public_key, b"value", label))
    blob[-1] ^= 0x01
    with pytest.raises(InvalidTag):
        hybrid_decrypt(private_key, bytes(blob), label)


def test_another_private_key_cannot_decrypt(certificate: sealing.Certificate) -> None:
    label = sealing.scope_label("cluster-wide", "mlops", "a")
    blob = sealing.hybrid_encrypt(certificate.public_key, b"value", label)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError):
        hybrid_decrypt(stranger, blob, label)


def test_blob_layout_is_length_prefix_rsa_part_then_aes_ciphertext_and_tag(certificate: sealing.Certificate) -> None:
    blob = sealing.hybrid_encrypt(certificate.public_key, b"12345", b"")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    assert rsa_len == 256  # a 2048-bit key wraps into 256 bytes
    assert len(blob) == 2 + 256 + 5 + 16  # AES-GCM adds a 16-byte tag, no nonce is stored


def test_every_sealing_uses_a_fresh_session_key(certificate: sealing.Certificate) -> None:
    first = sealing.encrypt_value(certificate.public_key, "same", "mlops", "a", "strict")
    second = sealing.encrypt_value(certificate.public_key, "same", "mlops", "a", "strict")
    assert first != second


def test_fingerprint_is_the_sha256_of_the_der_certificate(private_key: rsa.RSAPrivateKey) -> None:
    pem = make_certificate(private_key)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert sealing.load_certificate(pem, "c").fingerprint == expected


def test_non_pem_certificate_is_rejected_naming_its_source() -> None:
    with pytest.raises(PlatformError, match=r"cert\.pem: not a PEM certificate"):
        sealing.load_certificate(b"hello", "cert.pem")


def test_expired_certificate_is_rejected(private_key: rsa.RSAPrivateKey) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    pem = make_certificate(private_key, not_before=past - timedelta(days=1), not_after=past)
    with pytest.raises(PlatformError, match="expired"):
        sealing.load_certificate(pem, "old.pem")


def test_non_rsa_certificate_is_rejected() -> None:
    with pytest.raises(PlatformError, match="expected RSA"):
        sealing.load_certificate(make_certificate(ec.generate_private_key(ec.SECP256R1())), "ec.pem")


def test_missing_certificate_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"missing\.pem: cannot read it"):
        sealing.read_certificate(tmp_path / "missing.pem")


def test_unknown_scope_is_rejected_listing_the_choices() -> None:
    with pytest.raises(PlatformError, match="strict, namespace-wide, cluster-wide"):
        sealing.check_scope("global")


KEY_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {
        "name": "sealed-secrets-keyabcde",
        "namespace": "kube-system",
        "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"},
        "resourceVersion": "123",
        "uid": "u-1",
        "managedFields": [{"manager": "controller"}],
    },
    "type": "kubernetes.io/tls",
    "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
}


def test_key_backup_is_a_list_of_the_key_secrets_without_server_fields(tmp_path: Path) -> None:
    out = tmp_path / "keys.yaml"
    sealing.write_key_backup([KEY_SECRET], out)
    backup = yaml.safe_load(out.read_text())
    assert backup["kind"] == "List"
    (item,) = backup["items"]
    assert item["data"] == KEY_SECRET["data"]
    assert item["metadata"] == {
        "name": "sealed-secrets-keyabcde",
        "namespace": "kube-system",
        "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"},
    }


def test_key_backup_is_readable_only_by_its_owner(tmp_path: Path) -> None:
    out = tmp_path / "keys.yaml"
    sealing.write_key_backup([KEY_SECRET], out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_key_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    out = tmp_path / "keys.yaml"
    out.write_text("precious")
    with pytest.raises(PlatformError, match="exists"):
        sealing.write_key_backup([KEY_SECRET], out)
    assert out.read_text() == "precious"


def test_key_backup_without_keys_says_to_deploy_the_controller(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="no sealing keys"):
        sealing.write_key_backup([], tmp_path / "keys.yaml")
    assert not (tmp_path / "keys.yaml").exists()


class FakeApiServer(ThreadingHTTPServer):
    """Answers like the API server for the calls sealing makes, so error handling is tested without a
    cluster; that the real proxy serves the certificate is tested in tests/cluster."""

    def __init__(self, cert_pem: bytes, key_secrets: list[dict[str, Any]], status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.cert_pem, self.key_secrets, self.status = cert_pem, key_secrets, status
        self.paths: list[str] = []


class FakeApiHandler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.server.status != 200:
            body, ctype = b'{"kind":"Status","code":503,"message":"no endpoints available"}', "application/json"
            self.send_response(self.server.status)
        elif self.path == "/api/v1/namespaces/kube-system/services/sealed-secrets-controller":
            service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sealed-secrets-controller"}}
            service["spec"] = {"ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}
            body, ctype = json.dumps(service).encode(), "application/json"
            self.send_response(200)
        elif (
            self.path == "/api/v1/namespaces/kube-system/services/http:sealed-secrets-controller:http/proxy/v1/cert.pem"
        ):
            body, ctype = self.server.cert_pem, "text/plain"
            self.send_response(200)
        else:
            listing = {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": self.server.key_secrets}
            body, ctype = json.dumps(listing).encode(), "application/json"
            self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_api(server: FakeApiServer) -> Iterator[tuple[FakeApiServer, Any]]:
    from kubernetes import client

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server, client.ApiClient(config)
    finally:
        server.shutdown()
        server.server_close()


def test_certificate_is_fetched_through_the_service_proxy_naming_the_services_port(
    private_key: rsa.RSAPrivateKey, make_settings: Any
) -> None:
    """The API server's proxy matches an empty port only to an unnamed one: the path names the port."""
    pem = make_certificate(private_key)
    with fake_api(FakeApiServer(pem, [])) as (server, api):
        fetched = sealing.fetch_certificate(make_settings(), api)
    assert server.paths == [
        "/api/v1/namespaces/kube-system/services/sealed-secrets-controller",
        "/api/v1/namespaces/kube-system/services/http:sealed-secrets-controller:http/proxy/v1/cert.pem",
    ]
    assert fetched.pem == pem


def test_an_unnamed_service_port_is_named_by_its_number() -> None:
    assert sealing.cert_proxy_path("8080").endswith("/services/http:sealed-secrets-controller:8080/proxy/v1/cert.pem")


def test_unavailable_controller_says_to_deploy_it_or_use_a_cert_file(
    private_key: rsa.RSAPrivateKey, make_settings: Any
) -> None:
    with (
        fake_api(FakeApiServer(b"", [], status=503)) as (_, api),
        pytest.raises(PlatformError, match=r"HTTP 503.*--cert PATH"),
    ):
        sealing.fetch_certificate(make_settings(), api)


def test_sealing_keys_are_listed_by_the_controllers_label(make_settings: Any) -> None:
    with fake_api(FakeApiServer(b"", [KEY_SECRET])) as (server, api):
        keys = sealing.fetch_sealing_keys(make_settings(), api)
    assert unquote(server.paths[0]) == (
        "/api/v1/namespaces/kube-system/secrets?labelSelector=sealedsecrets.bitnami.com/sealed-secrets-key"
    )
    assert [key["metadata"]["name"] for key in keys] == ["sealed-secrets-keyabcde"]


def test_sealed_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    from mlopskit.kube.sealing import _read_sealed

    path = tmp_path / "mlflow-credentials.yaml"
    path.write_bytes("kind: SealedSecret # caf\xe9\n".encode("latin-1"))
    with pytest.raises(PlatformError, match=rf"{path}: not valid YAML"):
        _read_sealed(path)
