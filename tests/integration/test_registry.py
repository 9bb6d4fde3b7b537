"""The model registry: versions, aliases, and loading a model back by its alias.

The file-level tests log a model as plain files and download it by alias; the pyfunc test logs a real
PythonModel and runs it after `mlflow.pyfunc.load_model("models:/<name>@<alias>")`.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.pyfunc.model import PythonModel

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


class AddN(PythonModel):
    """A pyfunc model small enough to log in a test: adds n to every value."""

    def __init__(self, n: int) -> None:
        self.n = n

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return model_input + self.n


def test_pyfunc_model_loaded_by_alias_predicts(mlflow_env: Stack, client: Any, experiment_id: str) -> None:
    """A real pyfunc model: logged and registered through MLflow, loaded back by alias, and run."""
    name = f"itest-pyfunc-{uuid.uuid4().hex[:8]}"
    model = AddN(5)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            registered_model_name=name,
            pip_requirements=["mlflow-skinny==3.17.2"],  # skips dependency inference (a slow subprocess)
        )
    client.set_registered_model_alias(name, "champion", info.registered_model_version)

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    prediction = loaded.predict(pd.DataFrame({"x": [1, 2, 3]}))

    assert list(prediction["x"]) == [6, 7, 8]
