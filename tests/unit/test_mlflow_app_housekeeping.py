"""The image's metrics and gc helpers (docker/mlflow/app): the multiprocess directory emptied at start, the
metrics container summing every worker's files with the real prometheus_client, and gc's artifacts resolved
to the artifacts destination instead of the tracking server's HTTP proxy (MLflow's own artifact registry)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.unit.test_mlflow_app_guard import APP_DIR, app_module

# A stand-in for one of `mlflow server`'s worker processes: prometheus_client in multiprocess mode, as
# MLflow's exporter runs it, counting `requests` requests into a counter and a histogram.
WORKER = """
import sys
from prometheus_client import Counter, Histogram
count = int(sys.argv[1])
requests = Counter("mlflow_http_request_total", "requests", ["status"])
latency = Histogram("mlflow_http_request_duration_seconds", "latency", ["status"])
for _ in range(count):
    requests.labels("200").inc()
    latency.labels("200").observe(0.01)
"""


def run_worker(directory: Path, count: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", WORKER, str(count)], env=env, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The metrics container's command (`serve-metrics DIR PORT`) as a process; yields (DIR, its URL)."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(APP_DIR / "mlopskit_mlflow_app.py"), "serve-metrics", str(directory), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url, timeout=2)
            break
        except requests.ConnectionError:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the metrics server did not answer"
            time.sleep(0.1)
    yield directory, url
    process.terminate()
    process.wait(timeout=30)
    # It ends on SIGTERM by itself (exit 0, not killed by the signal): as PID 1 of its container, a process
    # without a handler would ignore SIGTERM and hold every pod deletion for the whole grace period.
    assert process.returncode == 0


def scrape(url: str) -> str:
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert values, f"no {name} in:\n{text}"
    return sum(values)


def test_the_metrics_container_serves_the_sum_of_every_workers_files_without_a_login(
    metrics_server: tuple[Path, str],
) -> None:
    directory, url = metrics_server
    run_worker(directory, 3)
    run_worker(directory, 4)
    text = scrape(url)
    assert sample(text, "mlflow_http_request_total") == 7
    assert sample(text, "mlflow_http_request_duration_seconds_count") == 7


def test_files_of_an_earlier_start_are_removed_so_they_are_never_summed_again(
    metrics_server: tuple[Path, str],
) -> None:
    directory, url = metrics_server
    run_worker(directory, 50)  # the server's previous start in the same pod (an emptyDir survives a restart)
    (directory / "notes.txt").write_text("not prometheus_client's")

    removed = app_module.prepare_metrics_dir(str(directory))
    run_worker(directory, 2)

    assert removed == 2  # counter_<pid>.db and histogram_<pid>.db
    assert sample(scrape(url), "mlflow_http_request_total") == 2
    assert (directory / "notes.txt").read_text() == "not prometheus_client's"


def test_a_missing_metrics_directory_is_created(tmp_path: Path) -> None:
    assert app_module.prepare_metrics_dir(str(tmp_path / "a" / "b")) == 0
    assert (tmp_path / "a" / "b").is_dir()


def test_a_metrics_directory_that_cannot_exist_names_the_variable_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(app_module.MetricsDirError, match=r"MLFLOW_EXPOSE_PROMETHEUS=.*file/metrics cannot be created"):
        app_module.prepare_metrics_dir(str(tmp_path / "file" / "metrics"))


@pytest.mark.parametrize(
    "destination,uri,expected",
    [
        ("s3://mlflow/", "mlflow-artifacts:/1/abc/artifacts", "s3://mlflow/1/abc/artifacts"),
        ("s3://mlflow", "mlflow-artifacts:/1/abc/artifacts", "s3://mlflow/1/abc/artifacts"),
        ("s3://b/prefix/", "mlflow-artifacts://mlflow.example.com:5000/2/r/artifacts", "s3://b/prefix/2/r/artifacts"),
        ("s3://mlflow/", "mlflow-artifacts:/", "s3://mlflow/"),
    ],
)
def test_proxied_artifact_uris_map_to_the_destination_as_the_server_maps_them(
    destination: str, uri: str, expected: str
) -> None:
    assert app_module.proxied_artifact_destination(destination, uri) == expected


def test_a_proxied_artifact_uri_climbing_out_of_the_destination_is_refused() -> None:
    with pytest.raises(ValueError, match="climbs out"):
        app_module.proxied_artifact_destination("s3://mlflow/", "mlflow-artifacts:/1/../../other")


def test_gc_deletes_a_runs_proxied_artifacts_from_the_destination_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own artifact registry and repositories (mlflow-skinny); a local directory as the destination."""
    from mlflow.store.artifact import artifact_repository_registry as registry

    monkeypatch.setattr(
        registry._artifact_repository_registry, "_registry", dict(registry._artifact_repository_registry._registry)
    )
    destination = tmp_path / "bucket"
    gone, kept = destination / "1" / "run-a" / "artifacts", destination / "1" / "run-b" / "artifacts"
    for folder in (gone, kept):
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_bytes(b"weights")

    app_module.resolve_proxied_artifacts_locally(destination.as_uri() + "/")
    repository: Any = registry.get_artifact_repository("mlflow-artifacts:/1/run-a/artifacts")
    repository.delete_artifacts()

    assert not (gone / "model.pkl").exists()
    assert (kept / "model.pkl").read_bytes() == b"weights"
