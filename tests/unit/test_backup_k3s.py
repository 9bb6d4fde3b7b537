"""The K3s parts of a cluster backup: when the first server cannot give them, the archive says why."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from mlopskit.backup.archive import ArchiveWriter, Manifest
from mlopskit.backup.cluster_target import k3s_parts
from mlopskit.settings import Settings
from tests.unit.conftest import SAMPLE_SECRETS, private_key_text


def _writer(tmp_path: Path) -> ArchiveWriter:
    manifest = Manifest(target="cluster", cluster="mlops", project="p", namespace="mlops", bucket="b", started="t")
    return ArchiveWriter(tmp_path / "a.tar", manifest)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_without_a_server_in_the_inventory_holds_says_so(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    writer = _writer(tmp_path)
    holds = k3s_parts(make_settings(environ=dict(SAMPLE_SECRETS)), writer)
    assert holds == [
        "no K3s datastore or token: no K3s server in config/inventory.yaml (a cluster mlopskit did not provision)"
    ]
    assert writer.manifest.parts == []


def test_an_unreachable_first_server_is_a_note_naming_it_not_a_failed_backup(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(private_key_text())
    key.chmod(0o600)
    inventory = (
        f"ssh: {{user: root, port: {_closed_port()}, key_path: {key}, connect_timeout: 5}}\n"
        "hosts:\n  - {name: k3s-server-1, address: 127.0.0.1, roles: [server]}\n"
    )
    writer = _writer(tmp_path)
    holds = k3s_parts(make_settings(inventory=inventory, environ=dict(SAMPLE_SECRETS)), writer)
    assert len(holds) == 1 and holds[0].startswith("no K3s datastore or token: k3s-server-1 did not provide them")
    assert "cannot reach root@127.0.0.1" in holds[0]
    assert writer.manifest.parts == []
