"""pg_dump, pg_restore and psql run inside the Postgres container or pod, their data streamed through exec.

Nothing is staged in the container's file system: a dump leaves through the exec's stdout, a restore enters
through its stdin. The commands log in over TCP with the container's own POSTGRES_USER/POSTGRES_PASSWORD
(the same variables in the local container and the cluster's StatefulSet), so no secret is on a command line.
"""

from __future__ import annotations

import shlex
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from mlopskit.errors import PlatformError

LOGIN = 'export PGPASSWORD="$POSTGRES_PASSWORD" PGUSER="$POSTGRES_USER" PGHOST=127.0.0.1; '


def dump_command(database: str) -> list[str]:
    """A consistent dump (one snapshot) of one database in pg_dump's custom format, on stdout."""
    return ["sh", "-c", LOGIN + f"exec pg_dump --format=custom --no-password --dbname={shlex.quote(database)}"]


def restore_command(database: str, size: int) -> list[str]:
    """Empty the database's public schema, then pg_restore exactly `size` bytes read from stdin.

    Dropping the schema first also removes tables a newer MLflow added after the dump, so the migrations
    that follow start from the dump's revision. `head -c` ends the input at the dump's size, so the restore
    does not depend on the exec transport closing stdin.
    """
    db = shlex.quote(database)
    drop = "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;"
    return [
        "sh",
        "-c",
        LOGIN + f"set -e; psql --no-psqlrc -v ON_ERROR_STOP=1 -q --dbname={db} -c {shlex.quote(drop)}; "
        f"head -c {int(size)} | pg_restore --clean --if-exists --no-owner --exit-on-error --dbname={db}",
    ]


def query_command(database: str, sql: str) -> list[str]:
    """psql printing bare values, one row per line, `|` between columns."""
    return [
        "sh",
        "-c",
        LOGIN + f"exec psql --no-psqlrc -v ON_ERROR_STOP=1 -At --dbname={shlex.quote(database)} -c {shlex.quote(sql)}",
    ]


class Shell(Protocol):
    """Runs a command in the Postgres container or pod."""

    where: str

    def stream(self, command: list[str]) -> Iterator[bytes]: ...

    def feed(self, command: list[str], chunks: Iterable[bytes]) -> str: ...


def run(shell: Shell, command: list[str]) -> str:
    return b"".join(shell.stream(command)).decode(errors="replace")


def _failed(where: str, command: list[str], code: object, stderr: bytes) -> PlatformError:
    program = next((tool for tool in ("pg_dump", "pg_restore", "psql") if tool in command[-1]), command[0])
    text = stderr.decode(errors="replace").strip()[-1500:]
    return PlatformError(f"{where}: {program} failed (exit {code}):\n{text}")


class DockerShell:
    """exec in a local container through the Docker API."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.api = container.client.api
        self.where = f"container {container.name}"

    def stream(self, command: list[str]) -> Iterator[bytes]:
        exec_id = self.api.exec_create(self.container.id, command, stdout=True, stderr=True)["Id"]
        stderr = bytearray()
        for out, err in self.api.exec_start(exec_id, stream=True, demux=True):
            if err:
                stderr += err
            if out:
                yield out
        code = self.api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            raise _failed(self.where, command, code, bytes(stderr))

    def feed(self, command: list[str], chunks: Iterable[bytes]) -> str:
        exec_id = self.api.exec_create(self.container.id, command, stdin=True, stdout=True, stderr=True)["Id"]
        sock = self.api.exec_start(exec_id, socket=True)
        raw: socket.socket = getattr(sock, "_sock", sock)
        received = bytearray()

        def drain() -> None:
            while data := raw.recv(65536):
                received.extend(data)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            for chunk in chunks:
                raw.sendall(chunk)
            raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the command ended early; its exit code and output say why
        reader.join()
        sock.close()
        stdout, stderr = _demux(bytes(received))
        code = self._exit_code(exec_id)
        if code != 0:
            raise _failed(self.where, command, code, stderr or stdout)
        return (stdout + stderr).decode(errors="replace")

    def _exit_code(self, exec_id: str) -> object:
        info = self.api.exec_inspect(exec_id)
        while info.get("Running"):  # the output closed; the process is about to be reaped
            threading.Event().wait(0.05)
            info = self.api.exec_inspect(exec_id)
        return info.get("ExitCode")


def _demux(data: bytes) -> tuple[bytes, bytes]:
    """Docker's multiplexed stream (8-byte headers: stream, 0, 0, 0, big-endian length) into stdout, stderr."""
    out, err = bytearray(), bytearray()
    offset = 0
    while offset + 8 <= len(data):
        kind, length = data[offset], struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        payload = data[offset + 8 : offset + 8 + length]
        (err if kind == 2 else out).extend(payload)
        offset += 8 + length
    return bytes(out), bytes(err)


class PodShell:
    """exec in a pod through the API server (what `kubectl exec` does)."""

    def __init__(self, core: Any, namespace: str, pod: str, container: str) -> None:
        self.core, self.namespace, self.pod, self.container = core, namespace, pod, container
        self.where = f"pod {namespace}/{pod}"

    def _open(self, command: list[str], stdin: bool) -> Any:
        from kubernetes.stream import stream

        return stream(
            self.core.connect_get_namespaced_pod_exec,
            self.pod,
            self.namespace,
            container=self.container,
            command=command,
            stdin=stdin,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )

    def _finish(self, resp: Any, command: list[str], stderr: bytearray) -> None:
        code = resp.returncode
        resp.close()
        if code != 0:
            raise _failed(self.where, command, code, bytes(stderr))

    def stream(self, command: list[str]) -> Iterator[bytes]:
        resp = self._open(command, stdin=False)
        stderr = bytearray()
        while True:
            resp.update(timeout=1)
            if resp.peek_stderr():
                stderr += resp.read_stderr()
            if resp.peek_stdout():
                yield resp.read_stdout()
            _forget_copy(resp)
            if not resp.is_open():
                break
        self._finish(resp, command, stderr)

    def feed(self, command: list[str], chunks: Iterable[bytes]) -> str:
        resp = self._open(command, stdin=True)
        output = bytearray()
        for chunk in chunks:
            resp.write_stdin(chunk)
            resp.update(timeout=0)
            output += resp.read_stdout(timeout=0) + resp.read_stderr(timeout=0)
            _forget_copy(resp)
        while resp.is_open():
            resp.update(timeout=1)
            output += resp.read_stdout(timeout=0) + resp.read_stderr(timeout=0)
            _forget_copy(resp)
        self._finish(resp, command, output)
        return output.decode(errors="replace")


def _forget_copy(resp: Any) -> None:
    """The websocket client keeps a second copy of all output for read_all(); a dump would fill memory with it.

    read_all() would also drop the error channel that carries the exit code, so the copy is emptied directly.
    """
    resp._all.seek(0)
    resp._all.truncate()
