"""SeaweedFS under its memory limit: GOMEMLIMIT and bounded uploads in flight, derived from the limit.

Why: in the cluster test through a real Traefik (tests/cluster/test_traefik_ingress.py), a 1 GiB upload through
MLflow got SeaweedFS OOM-killed under its 1Gi limit: Go collects late and SeaweedFS buffered every upload.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlopskit.kube.render import render_manifests, seaweedfs_memory
from mlopskit.kube.validate import check_objects
from mlopskit.settings import load_settings
from tests.unit.conftest import SAMPLE_SECRETS
from tests.unit.test_render import IMAGE


def seaweedfs_container(tmp_path: Path, platform_yaml: str) -> dict[str, Any]:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "platform.yaml").write_text(platform_yaml)
    settings = load_settings(tmp_path, dict(SAMPLE_SECRETS))
    objects = render_manifests(settings, IMAGE)
    assert check_objects(objects, "1.34.1").errors == []
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "seaweedfs"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize(
    ("limit", "gomemlimit", "upload_mb"),
    [("1Gi", 858993459, 128), ("4Gi", 3435973836, 512), ("64Mi", 53687091, 16)],
)
def test_the_limits_follow_the_containers_memory_limit(
    tmp_path: Path, limit: str, gomemlimit: int, upload_mb: int
) -> None:
    container = seaweedfs_container(
        tmp_path,
        "platform:\n  resources:\n    objectstore: "
        f"{{cpu_request: 100m, memory_request: 32Mi, memory_limit: {limit}}}\n",
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    script = container["command"][-1]
    flags = dict(re.findall(r"-(s3|filer|volume)\.concurrentUploadLimitMB=(\d+)", script))

    assert container["resources"]["limits"]["memory"] == limit
    assert env["GOMEMLIMIT"] == str(gomemlimit)
    assert flags == {"s3": str(upload_mb), "filer": str(upload_mb), "volume": str(upload_mb)}


def test_the_go_limit_stays_below_the_container_limit_and_the_uploads_below_the_go_limit() -> None:
    for limit, size in (("1Gi", 2**30), ("512Mi", 2**29), ("3G", 3 * 10**9)):
        memory = seaweedfs_memory(limit)
        assert memory["gomemlimit"] < size
        assert 3 * memory["upload_mb"] * 2**20 < memory["gomemlimit"]
