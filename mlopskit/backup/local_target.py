"""The local stack (`invoke up`) as a backup target: its containers by name, S3 on its published port."""

from __future__ import annotations

from typing import Any

from docker.errors import NotFound

import docker
from mlopskit import local
from mlopskit.backup import bucket as bucket_parts
from mlopskit.backup.archive import ArchiveReader, ArchiveWriter
from mlopskit.backup.postgres import DockerShell
from mlopskit.errors import PlatformError
from mlopskit.mlflow_admin import RERUN_LOCAL, MlflowClient, wait_healthy
from mlopskit.services import MLFLOW, POSTGRES, S3, ImageSet, ServiceHosts, container_name, mlflow_spec
from mlopskit.settings import Settings

# docker/mlflow/Dockerfile labels the image with the MLflow release it installs.
IMAGE_VERSION_LABEL = "org.opencontainers.image.version"


class LocalTarget:
    kind = "local"

    def __init__(self, settings: Settings, client: docker.DockerClient) -> None:
        if settings.platform.postgres.mode != "internal" or settings.platform.object_store.kind == "external":
            raise PlatformError(
                "the local backup covers the stack `invoke up` runs (internal PostgreSQL and S3); with "
                "POSTGRES_MODE=external or OBJECT_STORE=external back those up with their own tools"
            )
        self.settings = settings
        self.client = client
        self.postgres = self._running(POSTGRES)
        self.mlflow = self._running(MLFLOW)
        s3 = self._running(S3)
        self.shell = DockerShell(self.postgres)
        endpoint = f"http://127.0.0.1:{local.published_port(s3, 8333)}"
        self.bucket = bucket_parts.connect(settings, endpoint)

    def _running(self, service: str) -> Any:
        name = container_name(self.settings, service)
        try:
            container = self.client.containers.get(name)
        except NotFound:
            raise PlatformError(
                f"container {name} does not exist: the local platform of project {self.settings.local.project} "
                "is not up; run `invoke up` first"
            ) from None
        if container.status != "running" and service != MLFLOW:
            raise PlatformError(f"container {name} is {container.status}; run `invoke up` first")
        return container

    def versions(self) -> dict[str, str | None]:
        """The MLflow image and the release it was built with (its OCI version label, set by docker/mlflow)."""
        config = self.mlflow.attrs.get("Config", {})
        labels = config.get("Labels") or {}
        return {
            "mlflow": labels.get(IMAGE_VERSION_LABEL) or None,
            "mlflow_image": str(config.get("Image", "")) or None,
            "k3s": None,
        }

    def back_up_extras(self, writer: ArchiveWriter) -> list[str]:
        return []

    def restore_extras(self, reader: ArchiveReader) -> list[str]:
        return []

    def stop_mlflow(self) -> None:
        self.mlflow.stop(timeout=20)

    def migrate(self) -> None:
        """The image's `migrate` command in a one-off container, as `invoke up` runs it."""
        image = str(self.mlflow.attrs["Config"]["Image"])
        spec = mlflow_spec(self.settings, ImageSet(mlflow=image, postgres="", s3=""), ServiceHosts())
        local.run_migrations(self.client, self.settings, spec)

    def start_mlflow(self) -> MlflowClient:
        self.mlflow.start()
        local.wait_healthy(self.mlflow, MLFLOW)
        mlflow = self.settings.platform.mlflow
        assert mlflow.admin_password is not None  # required by settings.require("up")
        client = MlflowClient(
            local.mlflow_url(self.settings),
            mlflow.admin_user,
            mlflow.admin_password.get_secret_value(),
            rerun=RERUN_LOCAL,
        )
        wait_healthy(client)
        return client
