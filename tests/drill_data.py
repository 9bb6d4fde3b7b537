"""What the restore drills (local and cluster) put into a platform before the backup: the same data for both."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def fill(client: Any, workdir: Path, artifact_bytes: int) -> dict[str, Any]:
    """Through an MlflowClient: 2 experiments of 3 runs, each with a param, tags and a 5-step loss history; an
    artifact of artifact_bytes random bytes on the first run; model "drill-model" with alias "champion".

    Returns {"experiments": [id, ...], "runs": [id, ...], "artifact_sha256": hex, "model_version": str}.
    """
    experiments = [client.create_experiment(f"drill-{n}") for n in range(2)]
    runs = []
    for experiment in experiments:
        for n in range(3):
            run = client.create_run(experiment, tags={"drill": "yes", "n": str(n)})
            client.log_param(run.info.run_id, "lr", str(0.1 * (n + 1)))
            for step in range(5):
                client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1 + n), step=step)
            client.set_terminated(run.info.run_id)
            runs.append(run.info.run_id)
    artifact = workdir / "weights.bin"
    artifact.write_bytes(os.urandom(artifact_bytes))
    client.log_artifact(runs[0], str(artifact))
    client.create_registered_model("drill-model")
    version = client.create_model_version("drill-model", f"runs:/{runs[0]}/weights.bin", run_id=runs[0])
    client.set_registered_model_alias("drill-model", "champion", version.version)
    return {
        "experiments": experiments,
        "runs": runs,
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "model_version": version.version,
    }
