"""The model registry: versions, aliases, and loading a model back by its alias.

The test group's client is mlflow-skinny, which has no numpy or pandas, so `mlflow.pyfunc` cannot be
imported on the test side; a model is logged as plain files (an MLmodel and its payload) and loaded back
by downloading `models:/<name>@<alias>`, which is what pyfunc does before it unpickles.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.docker

MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlopskit_test_model
    python_version: 3.11.0
mlflow_version: 3.17.2
"""


@pytest.fixture
def model_name(client: Any) -> str:
    name = f"itest-model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    return name


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "MLmodel").write_text(MLMODEL)
    (directory / "weights.bin").write_bytes(uuid.uuid4().bytes * 1000)
    return directory


def _register(client: Any, experiment_id: str, name: str, model_dir: Path) -> Any:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_artifacts(run_id, str(model_dir), artifact_path="model")
    return client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)


def test_registering_a_model_creates_numbered_versions(
    client: Any, experiment_id: str, model_name: str, model_dir: Path
) -> None:
    first = _register(client, experiment_id, model_name, model_dir)
    second = _register(client, experiment_id, model_name, model_dir)

    assert (first.version, second.version) == ("1", "2")
    assert {v.version for v in client.search_model_versions(f"name = '{model_name}'")} == {"1", "2"}


def test_alias_points_at_the_chosen_version(client: Any, experiment_id: str, model_name: str, model_dir: Path) -> None:
    _register(client, experiment_id, model_name, model_dir)
    chosen = _register(client, experiment_id, model_name, model_dir)

    client.set_registered_model_alias(model_name, "champion", chosen.version)

    assert client.get_model_version_by_alias(model_name, "champion").version == chosen.version


def test_model_loaded_by_alias_has_the_registered_files(
    client: Any, experiment_id: str, model_name: str, model_dir: Path, tmp_path: Path, mlflow_env: Stack
) -> None:
    version = _register(client, experiment_id, model_name, model_dir)
    client.set_registered_model_alias(model_name, "champion", version.version)

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}@champion",
            dst_path=str(tmp_path / "loaded"),
            tracking_uri=mlflow_env.tracking_uri,
        )
    )

    assert (local / "MLmodel").read_text() == MLMODEL
    assert (local / "weights.bin").read_bytes() == (model_dir / "weights.bin").read_bytes()
