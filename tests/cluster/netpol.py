"""Pods that try connections inside the cluster, and whether the cluster enforces NetworkPolicies at all.

A NetworkPolicy is only as real as the network plugin that implements it: K3s's embedded controller, Calico
or Cilium enforce them, a plain CNI bridge ignores them. So nothing here assumes: `enforcement_reason` asks
the cluster, in a throwaway namespace, whether a pod can still reach another pod after a deny-all ingress
policy selects it. Tests that need enforcement skip with the reason it gives; the others run anywhere.

The probe pods run the platform's MLflow image (it has python3 and is on the node once the platform is
deployed), under Pod Security `restricted`, and connect with urllib through `kubectl exec`'s API (the exec
stream of the real API server and kubelet).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kubernetes import client
from kubernetes.stream import stream

from tests.cluster.pod_security import RESTRICTED

# How long one connection attempt may take (seconds): a dropped SYN gives no answer, so this is the wait.
CONNECT_TIMEOUT = 4
# How long a new policy may take to be enforced by the plugin (seconds; K3s's controller syncs iptables).
POLICY_SETTLE = 30


# Prints the HTTP status, or the name of the error when no answer came (refused, timed out).
_FETCH = """
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(type(getattr(e, "reason", e)).__name__, e)
"""


def pod_manifest(name: str, image: str, command: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"mlopskit.test/role": name, **(labels or {})}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }


def start_pod(
    api: client.ApiClient, namespace: str, name: str, image: str, command: list[str] | None = None, timeout: float = 300
) -> str:
    """Create a pod (by default one that only sleeps) and wait until it runs; its IP."""
    core: Any = client.CoreV1Api(api)
    command = command or ["python3", "-c", "import time; time.sleep(86400)"]
    core.create_namespaced_pod(namespace, pod_manifest(name, image, command))
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Running" and pod.status.pod_ip:
            return str(pod.status.pod_ip)
        assert pod.status.phase in ("Pending", "Running"), f"{namespace}/{name}: {pod.status}"
        assert time.monotonic() < deadline, f"{namespace}/{name} not running after {timeout}s: {pod.status}"
        time.sleep(1)


def fetch(api: client.ApiClient, namespace: str, pod: str, url: str) -> str:
    """GET `url` from inside the pod: the HTTP status ("200") or the error's name (e.g. "TimeoutError ...")."""
    core: Any = client.CoreV1Api(api)
    output = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=["python3", "-c", _FETCH, url, str(CONNECT_TIMEOUT)],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    return str(output).strip()


def enforcement_reason(api: client.ApiClient, image: str) -> str | None:
    """None when the cluster enforces NetworkPolicies, else why not, as observed.

    In a throwaway namespace: a server pod (python -m http.server) and a client pod; the client must get 200
    first (else the probe itself is broken: AssertionError), then a deny-all ingress policy selects every pod
    of the namespace, and the client's next connections must get no answer within POLICY_SETTLE seconds."""
    core: Any = client.CoreV1Api(api)
    namespace = f"mlopskit-netpol-probe-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        server = start_pod(api, namespace, "server", image, ["python3", "-m", "http.server", "8080"])
        start_pod(api, namespace, "client", image)
        url = f"http://{server}:8080/"
        deadline = time.monotonic() + 60
        while (before := fetch(api, namespace, "client", url)) != "200":  # the server may still be starting
            assert time.monotonic() < deadline, f"the probe client cannot reach its server without a policy: {before}"
            time.sleep(1)
        deny_all: dict[str, Any] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
        networking: Any = client.NetworkingV1Api(api)
        networking.create_namespaced_network_policy(namespace, deny_all)
        deadline = time.monotonic() + POLICY_SETTLE
        while (after := fetch(api, namespace, "client", url)) == "200":
            if time.monotonic() > deadline:
                return (
                    f"this cluster does not enforce NetworkPolicies: a pod still got {after} from a pod that a "
                    f"deny-all ingress policy selects, {POLICY_SETTLE}s after the policy was created "
                    "(its network plugin ignores them)"
                )
            time.sleep(1)
        return None
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")


_REASONS: dict[str, str | None] = {}


def cached_enforcement_reason(api: client.ApiClient, image: str) -> str | None:
    """`enforcement_reason`, asked once per test session."""
    if "reason" not in _REASONS:
        _REASONS["reason"] = enforcement_reason(api, image)
    return _REASONS["reason"]
