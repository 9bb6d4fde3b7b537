"""Cross-check against an independent implementation: the npm package @linode/kubeseal-encrypt.

It implements kubeseal's namespace-wide sealing in JavaScript (WebCrypto). What it seals must open with the
controller's algorithm (tests.unit.test_sealing.hybrid_decrypt), and what mlopskit seals must have the same
shape. Needs Node and the npm registry, no Docker; it fails (never skips) when either is missing, because the
check is the point.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mlopskit.kube import sealing
from tests.unit.test_sealing import hybrid_decrypt, make_certificate

PACKAGE = "@linode/kubeseal-encrypt@1.0.1"
NAMESPACE = "mlops"
VALUES = ["s3cr3t", "postgresql+psycopg://mlflow:p%40ss@postgres.mlops.svc.cluster.local:5432/mlflow", "ü-ñ-€"]

# Reads {"pem": ..., "namespace": ..., "values": [...]} on stdin, prints the sealed values as a JSON list.
ENCRYPT_SCRIPT = """
const { encryptSecretItem } = require("@linode/kubeseal-encrypt");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const { pem, namespace, values } = JSON.parse(input);
  const sealed = [];
  for (const value of values) sealed.push(await encryptSecretItem(pem, namespace, value));
  process.stdout.write(JSON.stringify(sealed));
});
"""


@pytest.fixture(scope="module")
def node_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the npm package installed and the encrypt script next to it."""
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "this cross-check needs Node.js and npm on PATH (Node 20 or newer)"
    folder = tmp_path_factory.mktemp("kubeseal-encrypt")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-save", PACKAGE],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm install {PACKAGE} failed:\n{result.stderr}"
    (folder / "encrypt.cjs").write_text(ENCRYPT_SCRIPT)
    return folder


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)  # the controller's key size


@pytest.fixture(scope="module")
def certificate(private_key: rsa.RSAPrivateKey) -> sealing.Certificate:
    return sealing.load_certificate(make_certificate(private_key), "generated")


@pytest.fixture(scope="module")
def node_sealed(node_package: Path, certificate: sealing.Certificate) -> list[bytes]:
    """VALUES sealed by the npm package for NAMESPACE (it takes the public key as SPKI PEM, not a certificate)."""
    spki = certificate.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    result = subprocess.run(
        ["node", "encrypt.cjs"],
        cwd=node_package,
        input=json.dumps({"pem": spki, "namespace": NAMESPACE, "values": VALUES}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [base64.b64decode(value, validate=True) for value in json.loads(result.stdout)]


def test_values_sealed_by_the_npm_package_open_with_the_controllers_algorithm(
    node_sealed: list[bytes], private_key: rsa.RSAPrivateKey
) -> None:
    label = sealing.scope_label("namespace-wide", NAMESPACE, "any-name")
    assert [hybrid_decrypt(private_key, blob, label).decode() for blob in node_sealed] == VALUES


def test_values_sealed_by_the_npm_package_do_not_open_in_another_namespace(
    node_sealed: list[bytes], private_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ValueError):
        hybrid_decrypt(private_key, node_sealed[0], sealing.scope_label("namespace-wide", "other", "any-name"))


def _layout(blob: bytes) -> tuple[int, int]:
    """(length prefix, length of the AES part) of a hybrid blob."""
    (rsa_len,) = struct.unpack(">H", blob[:2])
    return rsa_len, len(blob) - 2 - rsa_len


def test_mlopskit_output_has_the_same_layout_as_the_npm_packages(
    node_sealed: list[bytes], certificate: sealing.Certificate
) -> None:
    ours = [
        base64.b64decode(sealing.encrypt_value(certificate.public_key, value, NAMESPACE, "x", "namespace-wide"))
        for value in VALUES
    ]
    assert [_layout(blob) for blob in ours] == [_layout(blob) for blob in node_sealed]
    assert [len(blob) for blob in ours] == [len(blob) for blob in node_sealed]


def test_mlopskit_and_the_npm_package_seal_with_the_same_label(
    node_sealed: list[bytes], certificate: sealing.Certificate, private_key: rsa.RSAPrivateKey
) -> None:
    ours = base64.b64decode(sealing.encrypt_value(certificate.public_key, VALUES[0], NAMESPACE, "x", "namespace-wide"))
    label = sealing.scope_label("namespace-wide", NAMESPACE, "x")
    assert hybrid_decrypt(private_key, ours, label) == hybrid_decrypt(private_key, node_sealed[0], label)
