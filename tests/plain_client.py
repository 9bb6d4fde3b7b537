"""A user's own MLflow client, as a fresh process: the local-stack and cluster tests both run it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# A user's script: nothing but the three variables MLflow's docs name, no transfer switches.
PLAIN_CLIENT = """
import hashlib, sys, mlflow
path = sys.argv[1]
with mlflow.start_run() as run:
    mlflow.log_artifact(path)
back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model.bin", dst_path=sys.argv[2])
print(hashlib.sha256(open(back, "rb").read()).hexdigest())
"""
# Bounded: MLflow 3.17's client used to retry presigned URLs it could not reach for minutes before giving up.
PLAIN_CLIENT_TIMEOUT = 300


def random_file(path: Path, size: int, seed: str) -> Path:
    """Incompressible content of `size` bytes, deterministic per seed, written in 1 MiB blocks."""
    with path.open("wb") as out:
        block = hashlib.sha256(seed.encode()).digest()
        written = 0
        while written < size:
            chunk = hashlib.shake_256(block + written.to_bytes(8, "big")).digest(min(1 << 20, size - written))
            out.write(chunk)
            written += len(chunk)
    return path


def plain_client_round_trip(tracking_uri: str, username: str, password: str, workdir: Path) -> tuple[str, str]:
    """Log a 25 MB artifact and download it with the mlflow client in a fresh process whose environment holds
    only PATH, HOME and MLFLOW_TRACKING_URI/USERNAME/PASSWORD; (SHA-256 sent, SHA-256 received).

    Raises AssertionError with the client's stderr when it fails; subprocess.TimeoutExpired after
    PLAIN_CLIENT_TIMEOUT seconds.
    """
    source = random_file(workdir / "model.bin", 25 * 1024 * 1024, "plain-client")
    (workdir / "out").mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_CLIENT, str(source), str(workdir / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=PLAIN_CLIENT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return hashlib.sha256(source.read_bytes()).hexdigest(), done.stdout.strip().splitlines()[-1]
