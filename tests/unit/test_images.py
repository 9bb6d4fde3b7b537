"""Image builds without Docker: build contexts and the CA bundle, pip settings, tags, source choice."""

from __future__ import annotations

import io
import re
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import ImageNotFound, NotFound

from mlopskit import image_names, images
from mlopskit.errors import PlatformError
from mlopskit.images import ensure_debian_base
from mlopskit.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CA = b"-----BEGIN CERTIFICATE-----\nproxy CA\n-----END CERTIFICATE-----\n"


@pytest.fixture
def context_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Dockerfile").write_text("FROM scratch\n")
    script = directory / "entrypoint.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return directory


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: member for member in tar.getmembers()}


def tar_text(data: bytes, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read().decode()


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(tmp_path, env)


# -------------------------------------------------------------------------------- pip and CA bundle


def test_pip_config_output_is_parsed_by_key() -> None:
    text = ":env:.cert='/etc/ssl/certs/ca.crt'\nglobal.index-url='https://pypi.example/simple'\n"
    assert images.parse_pip_config(text) == {
        "cert": "/etc/ssl/certs/ca.crt",
        "index-url": "https://pypi.example/simple",
    }


def test_file_indexes_of_the_host_are_left_out_of_the_container_pip_conf() -> None:
    conf = images.pip_conf_for_containers(
        {"index-url": "https://pypi.example/simple", "extra-index-url": "file:///opt/pypi/simple https://x/simple"}
    )
    assert "index-url = https://pypi.example/simple" in conf
    assert "extra-index-url = https://x/simple" in conf
    assert "file:" not in conf


def test_host_paths_like_find_links_never_reach_the_container() -> None:
    assert images.pip_conf_for_containers({"find-links": "/opt/wheels", "constraint": "/etc/c.txt"}) == ""


def test_the_ca_bundle_is_pips_cert_setting_when_it_exists(tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    cert.write_bytes(CA)
    assert images.ca_bundle_path({"cert": str(cert)}, default=tmp_path / "missing") == cert


def test_the_ca_bundle_falls_back_to_the_system_bundle_or_none(tmp_path: Path) -> None:
    system = tmp_path / "system.crt"
    assert images.ca_bundle_path({"cert": str(tmp_path / "gone")}, default=system) is None
    system.write_bytes(CA)
    assert images.ca_bundle_path({}, default=system) == system


# ------------------------------------------------------------------------------------ build context


def test_build_context_adds_ca_and_pip_conf_under_build(context_dir: Path) -> None:
    data = images.build_context(context_dir, images.BuildFiles(CA, "[global]\n"))
    members = tar_members(data)
    assert {"Dockerfile", "entrypoint.sh", "build/ca.crt", "build/pip.conf"} <= set(members)
    assert tar_text(data, "build/ca.crt") == CA.decode()


def test_build_context_without_build_files_has_no_build_dir(context_dir: Path) -> None:
    assert not any(name.startswith("build/") for name in tar_members(images.build_context(context_dir, None)))


def test_build_context_keeps_scripts_executable(context_dir: Path) -> None:
    members = tar_members(images.build_context(context_dir, None))
    assert members["entrypoint.sh"].mode & 0o111
    assert not members["Dockerfile"].mode & 0o111


def test_inputs_hash_follows_files_and_args_but_not_the_host_ca(context_dir: Path) -> None:
    base = images.inputs_hash(context_dir, {"A": "1"})
    assert images.inputs_hash(context_dir, {"A": "2"}) != base
    (context_dir / "build").mkdir()
    (context_dir / "build" / "ca.crt").write_bytes(CA)
    assert images.inputs_hash(context_dir, {"A": "1"}) == base
    (context_dir / "Dockerfile").write_text("FROM scratch\nENV X=1\n")
    assert images.inputs_hash(context_dir, {"A": "1"}) != base


def test_inputs_hash_changes_with_the_base_image(context_dir: Path) -> None:
    assert images.inputs_hash(context_dir, {}, ["sha256:a"]) != images.inputs_hash(context_dir, {}, ["sha256:b"])


@pytest.mark.parametrize(
    "dockerfile",
    [
        "docker/mlflow/Dockerfile",
        "docker/offline/seaweedfs/Dockerfile",
        "docker/offline/sealed-secrets-controller/Dockerfile",
    ],
)
def test_only_the_builder_stage_copies_the_build_files(dockerfile: str) -> None:
    stages = re.split(r"(?m)^FROM ", (REPO / dockerfile).read_text())[1:]
    assert "AS builder" in stages[0]
    assert "COPY build/" in stages[0]
    assert all("build/" not in stage and "/tmp/build" not in stage for stage in stages[1:])


# --------------------------------------------------------------------------------------- tags, refs


def test_mlflow_tag_is_version_and_git_sha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_names, "git_short_sha", lambda root: "abc1234")
    assert image_names.mlflow_tag(settings(tmp_path)) == "3.17.2-abc1234"


def test_image_tag_setting_overrides_the_computed_tag(tmp_path: Path) -> None:
    assert image_names.mlflow_tag(settings(tmp_path, IMAGE_TAG="v7")) == "v7"


def test_git_sha_outside_a_repository_is_nogit(tmp_path: Path) -> None:
    assert image_names.git_short_sha(tmp_path) == "nogit"


def test_mlflow_image_ref_carries_the_registry(tmp_path: Path) -> None:
    ref = image_names.mlflow_image_ref(settings(tmp_path, IMAGE_REGISTRY="registry.example:5000/", IMAGE_TAG="v7"))
    assert ref == "registry.example:5000/mlopskit/mlflow:v7"


# ----------------------------------------------------------------------------------- source choice


def never_pull(ref: str) -> str | None:
    raise AssertionError(f"must not pull {ref}")


def test_offline_source_never_pulls() -> None:
    assert images.choose_image("offline", "postgres:15", lambda ref: True, never_pull) == "offline"


def test_an_image_already_here_is_used_without_pulling() -> None:
    assert images.choose_image("auto", "postgres:15", lambda ref: True, never_pull) == "local"


def test_auto_pulls_and_uses_the_official_image() -> None:
    assert images.choose_image("auto", "postgres:15", lambda ref: False, lambda ref: None) == "pulled"


def test_auto_falls_back_to_the_offline_stand_in_when_the_pull_fails() -> None:
    assert images.choose_image("auto", "postgres:15", lambda ref: False, lambda ref: "no route") == "offline"


def test_registry_source_fails_with_the_reason_when_the_pull_fails() -> None:
    with pytest.raises(PlatformError, match=r"postgres:15 \(no route\).*IMAGE_SOURCE=auto"):
        images.choose_image("registry", "postgres:15", lambda ref: False, lambda ref: "no route")


# ------------------------------------------------------------------- the Sealed Secrets controller


def test_the_controller_stand_in_is_tagged_with_the_release_the_manifests_render(tmp_path: Path) -> None:
    upstream = settings(tmp_path).images.sealed_secrets_controller
    assert image_names.OFFLINE_SEALED_SECRETS.rpartition(":")[2] == upstream.rpartition(":")[2]


def test_the_controller_stand_in_is_built_from_the_offline_python_with_the_host_pip_settings() -> None:
    spec = images.offline_specs(load_settings(REPO, {}))[images.SEALED_SECRETS_KEY]
    assert spec.tags == [image_names.OFFLINE_SEALED_SECRETS]
    assert spec.bases == [image_names.OFFLINE_PYTHON]
    assert spec.buildargs["PYTHON_IMAGE"] == image_names.OFFLINE_PYTHON
    assert spec.needs_build_files
    assert (spec.context / "Dockerfile").is_file()


def test_offline_source_runs_the_controller_stand_in(tmp_path: Path) -> None:
    chosen = image_names.cluster_image(settings(tmp_path, IMAGE_SOURCE="offline"), "sealed_secrets_controller")
    assert chosen == image_names.OFFLINE_SEALED_SECRETS


@pytest.mark.parametrize("source", ["auto", "registry"])
def test_other_sources_run_the_configured_controller(tmp_path: Path, source: str) -> None:
    configured = settings(tmp_path, IMAGE_SOURCE=source)
    chosen = image_names.cluster_image(configured, "sealed_secrets_controller")
    assert chosen == configured.images.sealed_secrets_controller


def test_the_rendered_controller_deployment_runs_the_stand_in_with_upstreams_version_label(tmp_path: Path) -> None:
    from mlopskit.kube.render import render_manifests

    objects = render_manifests(settings(tmp_path, IMAGE_SOURCE="offline"), mlflow_image="mlopskit/mlflow:test")
    (deployment,) = [
        o for o in objects if o["metadata"]["name"] == "sealed-secrets-controller" and o["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image_names.OFFLINE_SEALED_SECRETS
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == image_names.SEALED_SECRETS_VERSION


def test_the_official_seaweedfs_image_and_the_stand_in_run_the_same_release(tmp_path: Path) -> None:
    official = settings(tmp_path).images.seaweedfs
    dockerfile = (REPO / "docker" / "offline" / "seaweedfs" / "Dockerfile").read_text()
    arg = re.search(r"^ARG SEAWEEDFS_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert arg is not None
    assert official.rsplit(":", 1)[1] == image_names.SEAWEEDFS_VERSION == arg.group(1)
    assert image_names.OFFLINE_SEAWEEDFS.endswith(f":{arg.group(1)}")


def offline_builder(monkeypatch: pytest.MonkeyPatch, *, built_now: bool) -> images.ImageBuilder:
    """A builder on a machine whose registry is out of reach; its stand-ins are built now or reused."""
    monkeypatch.setattr(images, "_image_id", lambda client, ref: None)
    monkeypatch.setattr(images, "_pull_reason", lambda client, ref: "no registry answers")
    builder = images.ImageBuilder(load_settings(REPO, {}), client=None)  # type: ignore[arg-type]

    def stand_in(key: str) -> str:
        builder.log.results.append(images.BuildResult(f"mlopskit/{key}:stand-in", built_now, 1))
        return f"mlopskit/{key}:stand-in"

    monkeypatch.setattr(builder, "_offline_image", stand_in)
    return builder


def test_a_stand_in_built_now_is_a_warning_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    builder = offline_builder(monkeypatch, built_now=True)
    builder.resolve("postgres:15-bookworm", "postgres")
    builder.resolve("postgres:15-bookworm", "postgres")
    assert builder.log.notes == [
        "postgres:15-bookworm could not be pulled; built the offline stand-in mlopskit/postgres:stand-in instead"
    ]
    assert builder.log.infos == []


def test_a_stand_in_built_earlier_is_only_mentioned(monkeypatch: pytest.MonkeyPatch) -> None:
    builder = offline_builder(monkeypatch, built_now=False)
    builder.resolve("postgres:15-bookworm", "postgres")
    assert builder.log.notes == []
    assert builder.log.infos == [
        "using the local stand-in mlopskit/postgres:stand-in built earlier (postgres:15-bookworm is out of reach)"
    ]


class LeftoverEngine:
    """The Docker SDK calls build_image makes, over an engine where a build leaves untagged images behind:
    the builder stage, and the image the tag pointed at before. `images` is the collection
    (get/remove), `api` the low-level client (the listing, history, build)."""

    def __init__(self) -> None:
        self.dangling = {"sha256:someone-elses"}
        self.removed: list[str] = []
        self.labelled: list[dict[str, Any]] = []  # images carrying the inputs label, as listed
        self.gone: set[str] = set()  # listed, then removed before they could be inspected
        self.digest = ""  # the inputs label's value of the labelled images
        self.images = SimpleNamespace(get=self.get, remove=self.remove)
        self.api = SimpleNamespace(images=self.list_images, history=self.history, build=self.build)

    def list_images(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        if filters.get("dangling"):
            return [{"Id": image_id, "RepoTags": []} for image_id in sorted(self.dangling)]
        return self.labelled

    def history(self, image_id: str) -> list[dict[str, Any]]:
        if image_id in self.gone:
            raise NotFound(image_id)
        return [{"CreatedBy": f"LABEL {images.INPUTS_LABEL}={self.digest}"}]

    def build(self, **_: Any) -> Any:
        self.dangling |= {"sha256:builder-stage", "sha256:previous-mlflow"}
        return iter([{"stream": "Step 1/1 : FROM scratch\n"}])

    def get(self, ref: str) -> Any:
        if ref in self.gone:
            raise ImageNotFound(ref)
        return type("Image", (), {"id": "sha256:new", "attrs": {"Size": 1}, "tag": lambda self, repo, tag: None})()

    def remove(self, image_id: str, noprune: bool) -> None:
        self.removed.append(image_id)
        self.dangling.discard(image_id)


def test_a_build_removes_the_untagged_images_it_left_and_nothing_else(tmp_path: Path) -> None:
    engine = LeftoverEngine()
    spec = images.BuildSpec("mlflow", tmp_path, ["mlopskit/mlflow:new"])
    result = images.build_image(engine, spec, None)  # type: ignore[arg-type]
    assert result.changed
    assert engine.removed == ["sha256:builder-stage", "sha256:previous-mlflow"]
    assert engine.dangling == {"sha256:someone-elses"}


def test_an_image_removed_while_the_build_looks_for_one_with_its_inputs_is_passed_over(tmp_path: Path) -> None:
    """A prune or another build can remove a listed image before it is inspected: that one is skipped, the
    next one with the same inputs is used, and no build runs."""
    engine = LeftoverEngine()
    engine.digest = "d1"
    tags = ["mlopskit/mlflow:new"]
    engine.labelled = [{"Id": "sha256:pruned", "RepoTags": tags}, {"Id": "sha256:kept", "RepoTags": tags}]
    engine.gone = {"sha256:pruned"}

    found = images._find_by_inputs(engine, "d1", tags)  # type: ignore[arg-type]

    assert found is not None and found.id == "sha256:new"
    engine.gone = {"sha256:pruned", "sha256:kept"}
    assert images._find_by_inputs(engine, "d1", tags) is None  # type: ignore[arg-type]


class _NoImages:
    """A Docker client stand-in that has no image at all (only `images.get` is used)."""

    class images:
        @staticmethod
        def get(ref: str) -> None:
            raise ImageNotFound(ref)


def _debian_script(root: Path, body: str) -> None:
    script = root / "docker" / "offline" / "debian" / "build.sh"
    script.parent.mkdir(parents=True)
    script.write_text("say() { printf 'offline-debian: %s\\n' \"$*\" >&2; }\n" + body)


def test_the_debian_base_build_reports_each_stage_as_it_starts(tmp_path: Path) -> None:
    _debian_script(tmp_path, 'say "debootstrap bookworm from M"; sleep 0.5; say "trimming x"; say "importing x"\n')
    seen: list[tuple[float, str, int, int, str]] = []
    start = time.monotonic()
    ensure_debian_base(_NoImages(), tmp_path, lambda *args: seen.append((time.monotonic() - start, *args)))  # type: ignore[arg-type]
    ended = time.monotonic() - start
    assert [row[1:] for row in seen] == [
        ("debian", 2, 5, "debootstrap bookworm from M"),
        ("debian", 3, 5, "trimming x"),
        ("debian", 4, 5, "importing x"),
    ]
    assert seen[0][0] < ended - 0.4  # reported while the script still ran, not collected at its end


def test_a_failed_debian_base_build_raises_with_the_scripts_last_lines(tmp_path: Path) -> None:
    _debian_script(tmp_path, 'say "debootstrap bookworm from M"; echo "E: mirror unreachable" >&2; exit 3\n')
    with pytest.raises(PlatformError, match=r"failed \(exit 3\):\n.*\nE: mirror unreachable"):
        ensure_debian_base(_NoImages(), tmp_path)  # type: ignore[arg-type]
