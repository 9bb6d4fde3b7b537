"""A local port that reaches a Service's pod through the API server (kubectl port-forward, in Python)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.stream import portforward

from mlopskit.errors import PlatformError


def _pod_and_port(core: client.CoreV1Api, namespace: str, service: str, port: int) -> tuple[str, int]:
    """A running, ready pod behind the Service and the container port its `port` targets."""
    svc = core.read_namespaced_service(service, namespace)
    spec = svc.spec
    selector = (spec.selector if spec else None) or {}
    if not selector:
        raise PlatformError(f"Service {namespace}/{service} has no selector; there is no pod to forward to")
    target: Any = port
    for service_port in (spec.ports if spec else None) or []:
        if service_port.port == port:
            target = service_port.target_port or port
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    for pod in core.list_namespaced_pod(namespace, label_selector=label_selector).items:
        status, meta, pod_spec = pod.status, pod.metadata, pod.spec
        if status is None or meta is None or pod_spec is None or status.phase != "Running":
            continue
        if meta.deletion_timestamp is not None:
            continue  # terminating (e.g. the old replica after a rollout): still Ready, gone in a moment
        if not any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
            continue
        if isinstance(target, str) and not target.isdigit():
            named = [p.container_port for c in pod_spec.containers for p in c.ports or [] if p.name == target]
            if not named:
                continue
            return str(meta.name), int(named[0])
        return str(meta.name), int(target)
    raise PlatformError(
        f"no ready pod behind Service {namespace}/{service} ({label_selector}); "
        f"check `kubectl -n {namespace} get pods -l {label_selector}`"
    )


def ready_pod(core: client.CoreV1Api, namespace: str, service: str, port: int) -> tuple[str, int]:
    """The name of a running, ready pod behind the Service, and the container port `port` targets."""
    return _pod_and_port(core, namespace, service, port)


def _pump(local: socket.socket, remote: Any) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([local, remote], [], [], 60)
            if not readable:
                return
            for source, sink in ((local, remote), (remote, local)):
                if source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    sink.sendall(data)
    except OSError:
        return
    finally:
        local.close()
        remote.close()


@contextlib.contextmanager
def forward_service(api: client.ApiClient, namespace: str, service: str, port: int) -> Iterator[int]:
    """Yield a port on 127.0.0.1 whose connections reach `service:port` in `namespace`."""
    core = client.CoreV1Api(api)
    target = [_pod_and_port(core, namespace, service, port)]  # the pod in use; replaced when it goes away
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def open_remote() -> Any:
        """A stream to the pod in use; when that pod is gone (deleted, rescheduled), to another ready one."""
        for attempt in range(2):
            pod, pod_port = target[0]
            try:
                forwarded = portforward(
                    core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(pod_port)
                )
                remote = forwarded.socket(pod_port)
                remote.setblocking(True)
                return remote
            except Exception:  # the websocket library raises its own types for a 404 handshake
                if attempt:
                    raise
                target[0] = _pod_and_port(core, namespace, service, port)
        raise AssertionError("unreachable")

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            try:
                remote = open_remote()
            except Exception:
                connection.close()  # the client sees a closed connection and retries; no traceback here
                continue
            threading.Thread(target=_pump, args=(connection, remote), daemon=True).start()

    thread = threading.Thread(target=serve, name=f"port-forward {namespace}/{service}", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
