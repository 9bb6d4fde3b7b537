"""MLflow that does not answer is reported by cause and with where to look, not with urllib3's retry text.
Real sockets on 127.0.0.1: a port nothing listens on, and a plain TCP server spoken to with TLS."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import RERUN_CLUSTER, RERUN_LOCAL, MlflowClient


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens


@pytest.fixture
def plain_server() -> Iterator[int]:
    """A TCP server that answers every connection with plain text: a TLS client's handshake fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def test_a_stopped_local_stack_says_refused_and_how_to_start_it(closed_port: int) -> None:
    client = MlflowClient(f"http://127.0.0.1:{closed_port}", "-", "-", rerun=RERUN_LOCAL)
    with pytest.raises(PlatformError) as raised:
        client.health()
    message = str(raised.value)
    assert message.startswith(f"cannot reach MLflow at http://127.0.0.1:{closed_port}/health: connection refused")
    assert "`invoke up` starts it" in message
    assert "HTTPConnectionPool" not in message and "Max retries" not in message


def test_every_call_reports_the_same_way(closed_port: int) -> None:
    client = MlflowClient(f"http://127.0.0.1:{closed_port}", "-", "-", rerun=RERUN_CLUSTER)
    for call in (client.anonymous_status, lambda: client.api("GET", "experiments/search")):
        with pytest.raises(PlatformError, match=r"connection refused.*invoke doctor --cluster"):
            call()


def test_tls_to_a_server_without_it_names_the_handshake(plain_server: int) -> None:
    client = MlflowClient(f"https://127.0.0.1:{plain_server}", "-", "-", rerun=RERUN_LOCAL)
    with pytest.raises(PlatformError, match=r"cannot reach MLflow at https://127.0.0.1:\d+/health: the TLS handshake"):
        client.health()
