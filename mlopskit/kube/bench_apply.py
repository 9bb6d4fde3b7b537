"""Benchmark: a no-op re-deploy with the apply engine against `kubectl apply --server-side` on the same server.

Run with `python -m mlopskit.kube.bench_apply [--runs N]` (`nox -s bench-apply`). Both sides apply the same
labelled objects with the same field manager, so both are no-ops, and the engine must also say so: a run
that reports anything created, configured or pruned makes the measurement invalid (exit 1). The target
is a ratio (engine / kubectl, medians) of 0.2 or less: the engine reads and applies concurrently, kubectl
goes object by object. With no reachable API server it says so and exits 0 without numbers: numbers are
only ever measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mlopskit.errors import PlatformError
from mlopskit.image_names import mlflow_image_ref
from mlopskit.kube.apply import FIELD_MANAGER, Engine
from mlopskit.kube.applyset import ApplySetParent, label_child
from mlopskit.kube.client import api_client, dynamic_client, kubeconfig_file
from mlopskit.kube.deploy import is_controller_object, rendered_objects
from mlopskit.settings import Settings, load_settings

RESULTS = Path("bench-results/apply.json")
TARGET_RATIO = 0.2


def _kubectl(settings: Settings, manifest_dir: Path) -> list[str]:
    command = ["kubectl", "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(manifest_dir)]
    path = kubeconfig_file(settings)
    if path:
        command[1:1] = ["--kubeconfig", str(path)]
    if settings.cluster.context:
        command[1:1] = ["--context", settings.cluster.context]
    return command


def run(settings: Settings, runs: int) -> dict[str, Any] | None:
    """Median seconds of each side over `runs` no-op applies; None (after saying why) when it cannot run."""
    try:
        api = api_client(settings)
        dyn = dynamic_client(api)
    except PlatformError as exc:
        print(f"no Kubernetes API server reachable: {exc}\nno numbers: the apply benchmark needs a cluster")
        return None
    if shutil.which("kubectl") is None:
        print("kubectl is not on PATH; the comparison needs it. No numbers.")
        return None
    objects = [obj for obj in rendered_objects(settings, mlflow_image_ref(settings)) if not is_controller_object(obj)]
    namespace = settings.platform.namespace
    engine = Engine(dyn, namespace)
    engine.apply(objects)  # bring the cluster to the rendered state, so every timed run is a no-op
    parent_id = ApplySetParent(engine.parent.name, namespace).id
    with tempfile.TemporaryDirectory(prefix="mlopskit-bench-") as tmp:
        manifest_dir = Path(tmp)
        for index, obj in enumerate(objects):
            labelled = label_child(engine.with_namespace(obj), parent_id)
            (manifest_dir / f"{index:03d}.yaml").write_text(yaml.safe_dump(labelled, sort_keys=False))
        kubectl = _kubectl(settings, manifest_dir)
        subprocess.run(kubectl, check=True, capture_output=True)  # warm kubectl's discovery cache too
        engine_times, kubectl_times = [], []
        misclassified: list[str] = []
        for _ in range(runs):
            start = time.perf_counter()
            result = Engine(dyn, namespace).apply(objects)
            engine_times.append(time.perf_counter() - start)
            if result.changed:
                misclassified.append(result.summary())
            start = time.perf_counter()
            subprocess.run(kubectl, check=True, capture_output=True)
            kubectl_times.append(time.perf_counter() - start)
    engine_median = statistics.median(engine_times)
    kubectl_median = statistics.median(kubectl_times)
    return {
        "objects": len(objects),
        "runs": runs,
        "server": api.configuration.host,
        "engine_seconds_median": round(engine_median, 4),
        "kubectl_seconds_median": round(kubectl_median, 4),
        "ratio": round(engine_median / kubectl_median, 3),
        "target_ratio": TARGET_RATIO,
        "engine_reported_changes": misclassified,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="timed no-op applies per side (default: 5)")
    parser.add_argument("--root", type=Path, default=Path(), help="project root (default: current directory)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.root)
        numbers = run(settings, args.runs)
    except PlatformError as exc:
        print(f"error: {exc}")
        return 1
    if numbers is None:
        return 0
    print(json.dumps(numbers, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(numbers, indent=2) + "\n")
    if numbers["engine_reported_changes"]:
        print(f"invalid: the engine reported changes on a no-op: {numbers['engine_reported_changes']}")
        return 1
    verdict = "meets" if numbers["ratio"] <= numbers["target_ratio"] else "misses"
    print(f"engine/kubectl = {numbers['ratio']} ({verdict} the target of {TARGET_RATIO}); written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
