"""STAND-IN for bitnami-labs/sealed-secrets' controller, for machines that cannot pull its image from a registry.

It does what the real controller does with the SealedSecrets mlopskit (and kubeseal) writes:

- finds its sealing key, a ``kubernetes.io/tls`` Secret in its namespace labelled
  ``sealedsecrets.bitnami.com/sealed-secrets-key=active``, or creates one (RSA 4096, self-signed, CN
  ``sealed-secret``, valid ten years), so a restart keeps the key; every active key can decrypt, the newest seals;
- serves HTTP on :8080: ``GET /v1/cert.pem`` (the newest certificate), ``GET /healthz``, and
  ``POST /v1/verify`` (200 if a SealedSecret decrypts, 409 if not, as kubeseal --validate expects);
- watches SealedSecrets (bitnami.com/v1alpha1) in every namespace and unseals each into a Secret: the RSA-OAEP
  label comes from the scope annotations, metadata and type from ``spec.template``, an owner reference marks the
  SealedSecret as the controller; a Secret it does not own is never overwritten unless annotated
  ``sealedsecrets.bitnami.com/managed: "true"``; ``status`` gets a ``Synced`` condition and ``observedGeneration``
  through the status subresource (a CRD without one gets no status; the 404 is logged).

``--key-dir`` (``SEALED_SECRETS_KEY_DIR``) takes the key from a folder and only serves HTTP, for tests without an
API server. The key namespace comes from ``--key-namespace`` (``SEALED_SECRETS_KEY_NAMESPACE``, default kube-system).

Not implemented: key renewal and rotation, the re-encrypt endpoint (/v1/rotate), metrics on :8081, events,
Go templates in ``spec.template.data`` (literal values are copied), the deprecated single-blob ``spec.data``,
and watching Secrets (a deleted Secret comes back at the next full resync, every five minutes).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("sealed-secrets-standin")

GROUP, VERSION, PLURAL, KIND = "bitnami.com", "v1alpha1", "sealedsecrets", "SealedSecret"
KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
KEY_PREFIX = "sealed-secrets-key"
NAMESPACE_WIDE = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE = "sealedsecrets.bitnami.com/cluster-wide"
MANAGED = "sealedsecrets.bitnami.com/managed"
CERT_CN = "sealed-secret"
KEY_BITS = 4096
KEY_TTL = timedelta(days=3650)
SYNCED_MESSAGE = "Secret unsealed"
RESYNC_SECONDS = 300
MAX_BODY = 1 << 20


class UnsealError(Exception):
    """A SealedSecret that cannot become a Secret; the message goes into its Synced condition."""


# ------------------------------------------------------------------------------------------ decryption


def scope_label(sealed: dict[str, Any]) -> bytes:
    """The RSA-OAEP label the scope annotations imply: ``namespace/name``, ``namespace`` or empty."""
    meta = sealed.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if annotations.get(CLUSTER_WIDE) == "true":
        return b""
    if annotations.get(NAMESPACE_WIDE) == "true":
        return str(meta.get("namespace", "")).encode()
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}".encode()


def hybrid_decrypt(key: rsa.RSAPrivateKey, blob: bytes, label: bytes) -> bytes:
    """The controller's HybridDecrypt: 2-byte length, RSA-OAEP(SHA-256) session key, AES-256-GCM with a zero nonce."""
    if len(blob) < 2:
        raise ValueError("ciphertext too short")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    if len(blob) < 2 + rsa_len:
        raise ValueError("ciphertext shorter than its RSA part")
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
    session_key = key.decrypt(blob[2 : 2 + rsa_len], oaep)
    return AESGCM(session_key).decrypt(bytes(12), blob[2 + rsa_len :], None)


def unseal(keys: Sequence[rsa.RSAPrivateKey], sealed: dict[str, Any]) -> dict[str, bytes]:
    """Every spec.encryptedData value in plain text, each tried with every sealing key."""
    spec = sealed.get("spec") or {}
    encrypted: dict[str, str] = spec.get("encryptedData") or {}
    if not encrypted and spec.get("data"):
        raise UnsealError("spec.data (the deprecated single-blob form) is not supported by this stand-in")
    label = scope_label(sealed)
    values: dict[str, bytes] = {}
    for name, text in sorted(encrypted.items()):
        try:
            blob = base64.b64decode(text, validate=True)
        except ValueError:
            raise UnsealError(f"key {name!r}: not base64") from None
        for key in keys:
            try:
                values[name] = hybrid_decrypt(key, blob, label)
                break
            except (ValueError, InvalidTag):
                continue  # another key's value, or sealed for another scope
        else:
            raise UnsealError(f"no key could decrypt the value of {name!r} (label {label.decode()!r})")
    return values


# ---------------------------------------------------------------------------------------------- secret


def owner_reference(sealed: dict[str, Any]) -> dict[str, Any]:
    meta = sealed["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def secret_for(sealed: dict[str, Any], values: dict[str, bytes]) -> dict[str, Any]:
    """The Secret a SealedSecret unseals into: template metadata and type, its own name and namespace."""
    meta = sealed["metadata"]
    template = (sealed.get("spec") or {}).get("template") or {}
    template_meta = template.get("metadata") or {}
    secret_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta["namespace"]}
    for field in ("labels", "annotations", "finalizers"):
        if template_meta.get(field):
            secret_meta[field] = copy.deepcopy(template_meta[field])
    secret_meta["ownerReferences"] = [owner_reference(sealed)]
    data: dict[str, str] = {}
    for name, text in (template.get("data") or {}).items():
        if "{{" in text:
            raise UnsealError(f"spec.template.data[{name!r}] is a Go template; this stand-in copies literals only")
        data[name] = base64.b64encode(text.encode()).decode()
    data |= {name: base64.b64encode(value).decode() for name, value in values.items()}
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": secret_meta,
        "type": template.get("type") or "Opaque",
        "data": data,
    }
    if template.get("immutable") is not None:
        secret["immutable"] = template["immutable"]
    return secret


def refusal(existing: dict[str, Any], sealed: dict[str, Any]) -> str | None:
    """Why an existing Secret must not be overwritten (not controlled by this SealedSecret, not managed), or None."""
    meta = existing.get("metadata") or {}
    uid = sealed["metadata"]["uid"]
    if any(ref.get("controller") and ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
        return None
    if (meta.get("annotations") or {}).get(MANAGED) == "true":
        return None
    return f'Resource "{meta.get("name")}" already exists and is not managed by SealedSecret'


def merged(existing: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The existing Secret with what the SealedSecret defines replaced; other metadata (resourceVersion) kept."""
    result = copy.deepcopy(existing)
    meta = result.setdefault("metadata", {})
    for field in ("labels", "annotations", "ownerReferences"):
        meta.pop(field, None)
        if field in desired["metadata"]:
            meta[field] = copy.deepcopy(desired["metadata"][field])
    for field in ("type", "data", "immutable"):
        result.pop(field, None)
        if field in desired:
            result[field] = copy.deepcopy(desired[field])
    return result


def synced_status(sealed: dict[str, Any], ok: bool, message: str, now: datetime) -> dict[str, Any]:
    """status with the Synced condition; the transition time moves only when the condition changes."""
    conditions = (sealed.get("status") or {}).get("conditions") or []
    previous: dict[str, Any] = next((c for c in conditions if c.get("type") == "Synced"), {})
    state = "True" if ok else "False"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = previous.get("status") != state or previous.get("message") != message
    condition = {
        "type": "Synced",
        "status": state,
        "reason": "Unsealed" if ok else "ErrUnsealFailed",
        "message": message,
        "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),
        "lastUpdateTime": stamp if changed else previous.get("lastUpdateTime", stamp),
    }
    return {"observedGeneration": sealed["metadata"].get("generation", 0), "conditions": [condition]}


# ------------------------------------------------------------------------------------------------ keys


@dataclass(frozen=True)
class SealingKeys:
    """Private keys, newest first, and the newest certificate (what /v1/cert.pem serves)."""

    private_keys: list[rsa.RSAPrivateKey]
    cert_pem: bytes


def generate_key(now: datetime, bits: int | None = None) -> tuple[bytes, bytes]:
    """A new sealing key as upstream makes it: RSA, self-signed certificate with CN sealed-secret. (key, cert) PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits or KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_CN)])
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)  # signature, encipherment
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + KEY_TTL)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def key_secret(namespace: str, key_pem: bytes, cert_pem: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"generateName": KEY_PREFIX, "namespace": namespace, "labels": {KEY_LABEL: "active"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()},
    }


def keys_from_pems(pairs: Sequence[tuple[bytes, bytes]]) -> SealingKeys:
    """(key, cert) PEM pairs, newest first."""
    keys = []
    for key_pem, _ in pairs:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"a sealing key must be RSA, not {type(key).__name__}")
        keys.append(key)
    return SealingKeys(keys, pairs[0][1])


def load_or_create_keys(core: Any, namespace: str) -> SealingKeys:
    """The active sealing keys in namespace; a new one is created (and logged) when there is none."""
    listed = plain(core.list_namespaced_secret(namespace, label_selector=f"{KEY_LABEL}=active"))
    items = sorted(listed.get("items") or [], key=lambda s: s["metadata"].get("creationTimestamp") or "", reverse=True)
    pairs = [(base64.b64decode(s["data"]["tls.key"]), base64.b64decode(s["data"]["tls.crt"])) for s in items]
    if pairs:
        log.info(
            "using %d active sealing key(s) from %s, newest %s", len(pairs), namespace, items[0]["metadata"]["name"]
        )
        return keys_from_pems(pairs)
    log.info("no active sealing key in %s: generating one (RSA %d)", namespace, KEY_BITS)
    key_pem, cert_pem = generate_key(datetime.now(UTC))
    created = plain(core.create_namespaced_secret(namespace, key_secret(namespace, key_pem, cert_pem)))
    log.info("created sealing key %s/%s", namespace, created["metadata"]["name"])
    return keys_from_pems([(key_pem, cert_pem)])


def plain(obj: Any) -> Any:
    """An API answer as plain JSON-like data (kubernetes models are converted, dicts pass through)."""
    if isinstance(obj, dict | list):
        return obj
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


# ------------------------------------------------------------------------------------------------ HTTP


def http_server(keys: SealingKeys, address: tuple[str, int]) -> ThreadingHTTPServer:
    """/v1/cert.pem, /healthz and /v1/verify; the caller runs serve_forever."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/cert.pem":
                self._reply(200, keys.cert_pem, "application/x-pem-file")
            elif self.path == "/healthz":
                self._reply(200, b"ok\n")
            else:
                self._reply(404, b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/v1/verify":
                self._reply(404, b"not found\n")
                return
            body = self._body()
            if body is None:
                self._reply(413, b"too large\n")
                return
            try:
                unseal(keys.private_keys, json.loads(body))
            except (UnsealError, ValueError, AttributeError) as exc:
                self._reply(409, f"{exc}\n".encode())
                return
            self._reply(200, b"OK\n")

        def _body(self) -> bytes | None:
            """The request body, None beyond MAX_BODY; the API server's service proxy sends it chunked."""
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length <= MAX_BODY else None
            chunks: list[bytes] = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                if sum(map(len, chunks)) + size > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return ThreadingHTTPServer(address, Handler)


# ---------------------------------------------------------------------------------------------- control


class Controller:
    """Unseals SealedSecrets into Secrets through a CoreV1Api and a CustomObjectsApi (or fakes of them)."""

    def __init__(self, core: Any, custom: Any, keys: SealingKeys) -> None:
        self.core = core
        self.custom = custom
        self.keys = keys

    def reconcile(self, sealed: dict[str, Any]) -> None:
        """Create or update the Secret of one SealedSecret and report the outcome in its status."""
        from kubernetes.client.exceptions import ApiException

        meta = sealed["metadata"]
        where = f"{meta['namespace']}/{meta['name']}"
        try:
            desired = secret_for(sealed, unseal(self.keys.private_keys, sealed))
            log.info("%s: %s", where, self._write_secret(sealed, desired))
            ok, message = True, SYNCED_MESSAGE  # one message for created/updated/unchanged: a stable status
        except UnsealError as exc:
            ok, message = False, str(exc)
        except ApiException as exc:
            ok, message = False, f"writing Secret {where}: HTTP {exc.status} {_api_message(exc)}"
        if not ok:
            log.warning("%s: %s", where, message)
        self._report(sealed, synced_status(sealed, ok, message, datetime.now(UTC)))

    def _write_secret(self, sealed: dict[str, Any], desired: dict[str, Any]) -> str:
        from kubernetes.client.exceptions import ApiException

        namespace, name = sealed["metadata"]["namespace"], sealed["metadata"]["name"]
        try:
            existing = plain(self.core.read_namespaced_secret(name, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_secret(namespace, desired)
            return "Secret created"
        reason = refusal(existing, sealed)
        if reason is not None:
            raise UnsealError(reason)
        updated = merged(existing, desired)
        if updated == existing:
            return "Secret unchanged"
        self.core.replace_namespaced_secret(name, namespace, updated)
        return "Secret updated"

    def _report(self, sealed: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        old = sealed.get("status") or {}
        if old.get("observedGeneration") == status["observedGeneration"] and _conditions(old) == _conditions(status):
            return  # writing the same status again would only trigger another watch event
        body = copy.deepcopy(sealed) | {"status": status}
        meta = sealed["metadata"]
        try:
            self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body
            )
        except ApiException as exc:
            # 404: deleted meanwhile, or a CRD without the status subresource; 409: changed meanwhile (a new event).
            log.info("%s/%s: status not updated (HTTP %s %s)", meta["namespace"], meta["name"], exc.status, exc.reason)

    def run(self) -> None:
        """List and reconcile everything, then follow the watch; start over every RESYNC_SECONDS or on any error."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        while True:
            try:
                listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                for item in listed.get("items") or []:
                    self.reconcile(item)
                stream = watch.Watch().stream(
                    self.custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=RESYNC_SECONDS,
                )
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(event["object"])
            except (ApiException, HTTPError, OSError) as exc:
                log.warning("watching SealedSecrets failed (%s); retrying in 5 s", exc)
                time.sleep(5)


def _api_message(exc: Any) -> str:
    """The API server's own explanation (the Status body's message), else the HTTP reason."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def _conditions(status: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c.get("type"), c.get("status"), c.get("message")) for c in status.get("conditions") or []]


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="controller", description="Stand-in Sealed Secrets controller.")
    parser.add_argument(
        "--key-namespace",
        default=os.environ.get("SEALED_SECRETS_KEY_NAMESPACE", "kube-system"),
        help="namespace of the sealing keys [env SEALED_SECRETS_KEY_NAMESPACE, default kube-system]",
    )
    parser.add_argument("--listen-addr", default=":8080", help="HTTP address [default :8080]")
    parser.add_argument(
        "--key-dir",
        type=Path,
        default=os.environ.get("SEALED_SECRETS_KEY_DIR") or None,
        help="take the key from DIR/tls.key and DIR/tls.crt and only serve HTTP, without any API server "
        "(for tests) [env SEALED_SECRETS_KEY_DIR]",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as PID 1, SIGTERM is ignored without a handler
    host, _, port = args.listen_addr.rpartition(":")
    controller = None
    if args.key_dir is not None:
        keys = keys_from_pems([((args.key_dir / "tls.key").read_bytes(), (args.key_dir / "tls.crt").read_bytes())])
    else:
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        core, custom = client.CoreV1Api(), client.CustomObjectsApi()
        keys = load_or_create_keys(core, args.key_namespace)
        controller = Controller(core, custom, keys)
    server = http_server(keys, (host, int(port)))
    log.info("serving /v1/cert.pem and /healthz on %s", args.listen_addr)
    if controller is None:
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    controller.run()


if __name__ == "__main__":
    main()
