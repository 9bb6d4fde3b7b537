"""Artifacts go through MLflow's proxy into S3 and come back byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.integration.conftest import Stack
from tests.plain_client import plain_client_round_trip, random_file

pytestmark = pytest.mark.docker

BIG = 21 * 1024 * 1024  # over 20 MB: more than one chunk on every hop


def _bucket_keys(stack: Stack) -> list[str]:
    store = stack.settings.platform.object_store
    assert store.access_key is not None and store.secret_key is not None
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3.endpoint,
        aws_access_key_id=store.access_key.get_secret_value(),
        aws_secret_access_key=store.secret_key.get_secret_value(),
        region_name=store.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_small_artifact_round_trip_is_byte_equal(client: Any, experiment_id: str, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("weights: 0.1, 0.2\n")
    run_id = client.create_run(experiment_id).info.run_id

    client.log_artifact(run_id, str(source), artifact_path="docs")
    downloaded = Path(client.download_artifacts(run_id, "docs/notes.txt", str(tmp_path / "out")))

    assert downloaded.read_bytes() == source.read_bytes()


def test_artifact_over_20_mb_round_trip_is_byte_equal(client: Any, experiment_id: str, tmp_path: Path) -> None:
    source = random_file(tmp_path / "big.bin", BIG, experiment_id)
    run_id = client.create_run(experiment_id).info.run_id

    client.log_artifact(run_id, str(source))
    downloaded = Path(client.download_artifacts(run_id, "big.bin", str(tmp_path / "out")))

    assert downloaded.stat().st_size == BIG
    assert downloaded.read_bytes() == source.read_bytes()


def test_artifacts_are_stored_in_the_s3_bucket(
    client: Any, experiment_id: str, tmp_path: Path, mlflow_env: Stack
) -> None:
    source = tmp_path / "model.txt"
    source.write_text("stored in s3\n")
    run_id = client.create_run(experiment_id).info.run_id

    client.log_artifact(run_id, str(source))

    assert any(key.endswith(f"{run_id}/artifacts/model.txt") for key in _bucket_keys(mlflow_env))


def test_artifact_listing_shows_sizes(client: Any, experiment_id: str, tmp_path: Path) -> None:
    directory = tmp_path / "outputs"
    directory.mkdir()
    (directory / "a.txt").write_bytes(b"a" * 10)
    (directory / "b.txt").write_bytes(b"b" * 20)
    run_id = client.create_run(experiment_id).info.run_id

    client.log_artifacts(run_id, str(directory), artifact_path="outputs")

    listed = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, "outputs")}
    assert listed == {"a.txt": 10, "b.txt": 20}


def test_a_plain_mlflow_client_round_trips_25_mb_with_no_extra_variable(stack: Stack, tmp_path: Path) -> None:
    """Without MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false a 3.17 client used to hang on presigned URLs that
    name the S3 host inside the Docker network; the server now advertises proxied transfers only."""
    sent, received = plain_client_round_trip(stack.tracking_uri, stack.admin_user, stack.admin_password, tmp_path)
    assert received == sent
