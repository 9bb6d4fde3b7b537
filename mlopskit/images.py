"""Container images: the MLflow image, the offline stand-ins, and the choice between registry and local builds.

Builds go through the Docker SDK with a build context generated in memory, so the host's CA bundle and
package-index settings can be added as build/ca.crt and build/pip.conf: the Dockerfiles copy them into
their builder stage only (the classic builder has no build secrets). Each built image carries a label
with a hash of its inputs (context files, build args, base image); an image with the same hash is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from docker.errors import APIError, DockerException, ImageNotFound, NotFound

import docker
from mlopskit.errors import PlatformError
from mlopskit.image_names import (
    DEBIAN_BASE,
    OFFLINE_POSTGRES,
    OFFLINE_PYTHON,
    OFFLINE_SEALED_SECRETS,
    OFFLINE_SEAWEEDFS,
    SEALED_SECRETS_VERSION,
    SEAWEEDFS_VERSION,
    cluster_image,
    mlflow_image_ref,
    mlflow_repository,
)
from mlopskit.services import ImageSet
from mlopskit.settings import Settings

INPUTS_LABEL = "io.mlopskit.inputs"
SEALED_SECRETS_KEY = "sealed-secrets-controller"  # the controller stand-in's key in offline_specs
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_DIR = "build"  # inside a generated context: ca.crt and pip.conf, for builder stages only

# pip settings that describe where packages come from; find-links and constraints are host paths.
_PIP_INDEX_KEYS = ("index-url", "extra-index-url", "trusted-host")

# Reports a line of build output: (image, step number, step count, text).
Reporter = Callable[[str, int, int, str], None]


def _quiet(image: str, step: int, total: int, text: str) -> None:
    return None


# --------------------------------------------------------------------------------------- docker client


def docker_client() -> docker.DockerClient:
    """A client of the local Docker engine, or a PlatformError that says how to find out why not."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        raise PlatformError(
            f"the Docker engine is not reachable ({exc}); start Docker (scripts/ensure-docker.sh) "
            "and run `invoke doctor` to check the setup"
        ) from None
    return client


# ------------------------------------------------------------------------------ host package settings


@dataclass(frozen=True)
class BuildFiles:
    """What the builder stages receive from the host: a CA bundle and pip's index settings."""

    ca_bundle: bytes = b""
    pip_conf: str = ""


def parse_pip_config(text: str) -> dict[str, str]:
    """`pip config list` output (scope.key='value') -> {key: value}; later scopes win, as in pip."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^[^.=]*\.([a-z-]+)='?(.*?)'?$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def pip_conf_for_containers(config: Mapping[str, str]) -> str:
    """A pip.conf with the host's index settings that a container can use: file:// indexes are dropped."""
    lines = []
    for key in _PIP_INDEX_KEYS:
        raw = config.get(key, "")
        items = [item for item in raw.split() if not item.startswith("file:")]
        if items:
            lines.append(f"{key} = {' '.join(items)}")
    return "[global]\n" + "\n".join(lines) + "\n" if lines else ""


def host_pip_config() -> dict[str, str]:
    """pip's effective settings on this host (files and PIP_* variables), read through pip itself."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    return parse_pip_config(result.stdout) if result.returncode == 0 else {}


def ca_bundle_path(pip_config: Mapping[str, str], default: Path = HOST_CA_BUNDLE) -> Path | None:
    """The CA bundle builds should trust: pip's `cert` setting, else the system bundle, if it exists."""
    for candidate in (pip_config.get("cert"), str(default)):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def host_build_files() -> BuildFiles:
    config = host_pip_config()
    ca = ca_bundle_path(config)
    return BuildFiles(ca_bundle=ca.read_bytes() if ca else b"", pip_conf=pip_conf_for_containers(config))


# ------------------------------------------------------------------------------------ build contexts


def _context_files(directory: Path) -> list[Path]:
    # Bytecode is left out: importing docker/mlflow/app in the unit tests must not change the image.
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not {BUILD_DIR, "__pycache__"} & set(p.relative_to(directory).parts)
    )


def build_context(directory: Path, files: BuildFiles | None) -> bytes:
    """The directory as a tar, plus build/ca.crt and build/pip.conf when files are given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in _context_files(directory):
            info = tarfile.TarInfo(str(path.relative_to(directory)))
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
        if files is not None:
            for name, data in (("ca.crt", files.ca_bundle), ("pip.conf", files.pip_conf.encode())):
                info = tarfile.TarInfo(f"{BUILD_DIR}/{name}")
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def inputs_hash(directory: Path, buildargs: Mapping[str, str], base_ids: Sequence[str] = ()) -> str:
    """What defines a build: its context files (not the host's CA or pip settings), args and base images."""
    digest = hashlib.sha256()
    for path in _context_files(directory):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for key in sorted(buildargs):
        digest.update(f"{key}={buildargs[key]}\0".encode())
    for base in base_ids:
        digest.update(base.encode() + b"\0")
    return digest.hexdigest()[:24]


# ------------------------------------------------------------------------------------- image builds


@dataclass(frozen=True)
class BuildSpec:
    """An image mlopskit builds: from a directory under docker/, with build args and tags."""

    name: str
    context: Path
    tags: list[str]
    buildargs: dict[str, str] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)  # local images it is built FROM (their ids enter the hash)
    needs_build_files: bool = False


@dataclass(frozen=True)
class BuildResult:
    ref: str
    changed: bool
    size: int


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except ImageNotFound:
        return None


def _find_by_inputs(client: docker.DockerClient, digest: str, tags: Sequence[str]) -> Any:
    """A built image with these inputs, tagged in one of the spec's repositories.

    Images built FROM ours inherit its label (builder stages included), so the label alone proves nothing:
    the image must also be the one whose last build step set it.

    An image removed while this looks (a prune, another build retagging) is passed over, not an error: the
    listing and each inspection are separate calls to the engine.
    """
    repositories = {tag.rpartition(":")[0] for tag in tags}
    for summary in client.api.images(filters={"label": f"{INPUTS_LABEL}={digest}"}):
        if not any(tag.rpartition(":")[0] in repositories for tag in summary.get("RepoTags") or []):
            continue
        try:
            history = client.api.history(summary["Id"])
            if history and f"LABEL {INPUTS_LABEL}={digest}" in str(history[0].get("CreatedBy", "")):
                return client.images.get(summary["Id"])
        except NotFound:
            continue
    return None


def build_image(
    client: docker.DockerClient,
    spec: BuildSpec,
    files: BuildFiles | None,
    report: Reporter = _quiet,
    no_cache: bool = False,
) -> BuildResult:
    """Build spec unless an image with the same inputs exists; tag it with every tag either way."""
    base_ids = []
    for base in spec.bases:
        base_id = _image_id(client, base)
        if base_id is None:
            raise PlatformError(f"image {spec.name} is built FROM {base}, which does not exist locally")
        base_ids.append(base_id)
    digest = inputs_hash(spec.context, spec.buildargs, base_ids)
    existing = None if no_cache else _find_by_inputs(client, digest, spec.tags)
    changed = existing is None
    if existing is None:
        dangling_before = _dangling_ids(client)
        context = build_context(spec.context, files if spec.needs_build_files else None)
        stream = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=spec.tags[0],
            buildargs=spec.buildargs,
            labels={INPUTS_LABEL: digest},
            nocache=no_cache,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        _follow_build(spec, stream, report)
        existing = client.images.get(spec.tags[0])
    for tag in spec.tags:
        repository, _, name = tag.rpartition(":")
        existing.tag(repository, name)
    if changed:
        _remove_leftovers(client, _dangling_ids(client) - dangling_before)
    return BuildResult(spec.tags[0], changed, int(existing.attrs.get("Size", 0)))


def _dangling_ids(client: docker.DockerClient) -> set[str]:
    # The listing alone: one image removed between listing and inspecting would fail a whole list().
    return {str(summary["Id"]) for summary in client.api.images(filters={"dangling": True})}


def _remove_leftovers(client: docker.DockerClient, image_ids: set[str]) -> None:
    """Remove what a build left untagged: its builder stages and the image its tag pointed at before.
    One still in use (a container, another build) stays; it is not ours to force."""
    for image_id in sorted(image_ids):
        with contextlib.suppress(APIError, DockerException):
            client.images.remove(image_id, noprune=False)


def _follow_build(spec: BuildSpec, stream: Iterator[dict[str, Any]], report: Reporter) -> None:
    step, total = 0, 0
    tail: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            tail.append(str(chunk["error"]))
            raise PlatformError(
                f"building image {spec.name} from {spec.context} failed; last output:\n" + "\n".join(tail[-15:])
            )
        text = str(chunk.get("stream", "")).rstrip()
        if not text:
            continue
        for line in text.splitlines():
            tail = [*tail[-30:], line]
            match = _STEP.match(line)
            if match:
                step, total = int(match.group(1)), int(match.group(2))
                report(spec.name, step, total, match.group(3))
            else:
                report(spec.name, step, total, "")


def image_present(client: docker.DockerClient, ref: str) -> bool:
    """Whether the local Docker engine has an image of that name."""
    return _image_id(client, ref) is not None


def image_size(client: docker.DockerClient, ref: str) -> int:
    return int(client.images.get(ref).attrs.get("Size", 0))


# ------------------------------------------------------------------------------------------ sources

Choice = Literal["local", "pulled", "offline"]


def choose_image(
    source: Literal["auto", "registry", "offline"],
    official: str,
    have_local: Callable[[str], bool],
    pull: Callable[[str], str | None],
) -> Choice:
    """Where an official image comes from: already here, pulled, or replaced by its offline stand-in.

    pull returns None on success, else the reason it failed.
    """
    if source == "offline":
        return "offline"
    if have_local(official):
        return "local"
    reason = pull(official)
    if reason is None:
        return "pulled"
    if source == "registry":
        raise PlatformError(
            f"could not pull {official} ({reason}); images.source is 'registry', so there is no fallback: "
            "check the registry and your network, or set IMAGE_SOURCE=auto to build offline stand-ins"
        )
    return "offline"


def _pull_reason(client: docker.DockerClient, ref: str) -> str | None:
    try:
        client.images.pull(ref)
    except (APIError, DockerException) as exc:
        return str(getattr(exc, "explanation", None) or exc).splitlines()[0][:200]
    return None


# ------------------------------------------------------------------------------------- what to build


def docker_dir(settings: Settings) -> Path:
    directory = settings.root / "docker"
    if not (directory / "mlflow" / "Dockerfile").is_file():
        raise PlatformError(f"{directory}/mlflow/Dockerfile is missing; run the command from the mlopskit repository")
    return directory


def offline_specs(settings: Settings) -> dict[str, BuildSpec]:
    """The stand-ins for official images, built on the local Debian base."""
    offline = docker_dir(settings) / "offline"
    return {
        "python": BuildSpec("python", offline / "python", [OFFLINE_PYTHON], {"BASE_IMAGE": DEBIAN_BASE}, [DEBIAN_BASE]),
        "postgres": BuildSpec(
            "postgres", offline / "postgres", [OFFLINE_POSTGRES], {"BASE_IMAGE": DEBIAN_BASE}, [DEBIAN_BASE]
        ),
        "seaweedfs": BuildSpec(
            "seaweedfs",
            offline / "seaweedfs",
            [OFFLINE_SEAWEEDFS],
            {"BASE_IMAGE": DEBIAN_BASE, "PYTHON_IMAGE": OFFLINE_PYTHON, "SEAWEEDFS_VERSION": SEAWEEDFS_VERSION},
            [DEBIAN_BASE, OFFLINE_PYTHON],
            needs_build_files=True,
        ),
        SEALED_SECRETS_KEY: BuildSpec(
            SEALED_SECRETS_KEY,
            offline / "sealed-secrets-controller",
            [OFFLINE_SEALED_SECRETS],
            {"PYTHON_IMAGE": OFFLINE_PYTHON, "SEALED_SECRETS_VERSION": SEALED_SECRETS_VERSION},
            [OFFLINE_PYTHON],
            needs_build_files=True,
        ),
    }


def mlflow_build_spec(settings: Settings, python_base: str) -> BuildSpec:
    repository = mlflow_repository(settings)
    return BuildSpec(
        "mlflow",
        docker_dir(settings) / "mlflow",
        [mlflow_image_ref(settings), f"{repository}:latest"],
        {"BASE_IMAGE": python_base, "MLFLOW_VERSION": settings.images.mlflow_version},
        [python_base],
        needs_build_files=True,
    )


# The stages build.sh announces on stderr ("offline-debian: <stage> ..."), in order: one progress step each.
DEBIAN_STAGES = ("installing debootstrap", "debootstrap", "trimming", "importing", "built")


def ensure_debian_base(
    client: docker.DockerClient | None = None, root: Path | None = None, report: Reporter = _quiet
) -> str:
    """The local Debian base image, built with docker/offline/debian/build.sh (debootstrap) if missing.

    The script's stage lines reach `report` as they happen (image "debian", step i of len(DEBIAN_STAGES)), so a
    build of a minute or more is not silent. Raises PlatformError with the script's last output when it fails.
    """
    client = client or docker_client()
    if _image_id(client, DEBIAN_BASE) is not None:
        return DEBIAN_BASE
    script = (root or Path.cwd()) / "docker" / "offline" / "debian" / "build.sh"
    if not script.is_file():
        raise PlatformError(f"{script} is missing; run the command from the mlopskit repository")
    tail: list[str] = []
    with subprocess.Popen(
        ["bash", str(script), DEBIAN_BASE], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as build:
        assert build.stderr is not None
        for raw in build.stderr:
            line = raw.rstrip("\n")
            tail = [*tail[-30:], line]
            stage = line.removeprefix("offline-debian: ")
            if stage != line:
                step = next((i + 1 for i, name in enumerate(DEBIAN_STAGES) if stage.startswith(name)), 0)
                report("debian", step, len(DEBIAN_STAGES), stage)
    if build.returncode != 0:
        output = "\n".join(tail)[-2000:]
        raise PlatformError(f"building {DEBIAN_BASE} with {script} failed (exit {build.returncode}):\n{output}")
    return DEBIAN_BASE


@dataclass
class BuildLog:
    """What ensure_images did, for the task to print."""

    results: list[BuildResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings: something happened the user should know
    infos: list[str] = field(default_factory=list)  # plain information

    def note(self, text: str, *, warn: bool = True) -> None:
        """Add a warning (or, warn=False, an information) once: an image resolved twice says so once."""
        target = self.notes if warn else self.infos
        if text not in target:
            target.append(text)


class ImageBuilder:
    """Resolves official images or builds their stand-ins, then the MLflow image."""

    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient,
        report: Reporter = _quiet,
        no_cache: bool = False,
        files: BuildFiles | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.report = report
        self.no_cache = no_cache
        self.files = files
        self.log = BuildLog()
        self._offline = offline_specs(settings)

    def _files(self) -> BuildFiles:
        if self.files is None:
            self.files = host_build_files()
        return self.files

    def _build(self, spec: BuildSpec) -> str:
        result = build_image(self.client, spec, self._files(), self.report, self.no_cache)
        self.log.results.append(result)
        return result.ref

    def _offline_image(self, key: str) -> str:
        ensure_debian_base(self.client, self.settings.root, self.report)
        spec = self._offline[key]
        if OFFLINE_PYTHON in spec.bases:
            self._offline_image("python")
        return self._build(spec)

    def resolve(self, official: str, key: str) -> str:
        """The image to use for an official one: itself if here or pullable, else (auto/offline) its stand-in."""
        choice = choose_image(
            self.settings.images.source,
            official,
            lambda ref: _image_id(self.client, ref) is not None,
            lambda ref: _pull_reason(self.client, ref),
        )
        if choice == "offline":
            built_before = len(self.log.results)
            ref = self._offline_image(key)
            if self.settings.images.source == "auto":
                if any(result.changed for result in self.log.results[built_before:]):
                    self.log.note(f"{official} could not be pulled; built the offline stand-in {ref} instead")
                else:
                    self.log.note(
                        f"using the local stand-in {ref} built earlier ({official} is out of reach)", warn=False
                    )
            return ref
        return official

    def mlflow(self) -> str:
        python_base = self.resolve(self.settings.images.python_base, "python")
        return self._build(mlflow_build_spec(self.settings, python_base))

    def sealed_secrets_controller(self) -> str | None:
        """The controller stand-in, built if missing, when the manifests run it; None when they run upstream's."""
        if cluster_image(self.settings, "sealed_secrets_controller") != OFFLINE_SEALED_SECRETS:
            return None
        return self._offline_image(SEALED_SECRETS_KEY)

    def image_set(self) -> ImageSet:
        images = self.settings.images
        return ImageSet(
            mlflow=self.mlflow(),
            postgres=self.resolve(images.postgres, "postgres"),
            s3=self.resolve(images.seaweedfs, "seaweedfs"),
        )


def planned_image_set(settings: Settings, client: docker.DockerClient) -> ImageSet:
    """The images `up` would run, without pulling or building: what is here now, else the official names."""

    def pick(official: str, offline: str) -> str:
        if settings.images.source != "offline" and _image_id(client, official) is not None:
            return official
        return offline if _image_id(client, offline) is not None else official

    images = settings.images
    return ImageSet(
        mlflow=mlflow_image_ref(settings),
        postgres=pick(images.postgres, OFFLINE_POSTGRES),
        s3=pick(images.seaweedfs, OFFLINE_SEAWEEDFS),
    )


def ensure_images(
    settings: Settings, progress: Reporter = _quiet, client: docker.DockerClient | None = None
) -> ImageSet:
    """The mlflow, postgres and s3 images the local platform runs, building what is missing."""
    builder = ImageBuilder(settings, client or docker_client(), progress)
    return builder.image_set()


def push_image(client: docker.DockerClient, ref: str) -> None:
    """Push ref to its registry; a failure names the image and the registry's answer."""
    repository, _, tag = ref.rpartition(":")
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise PlatformError(
                f"pushing {ref} failed: {chunk['error']}; check images.registry (IMAGE_REGISTRY) and `docker login`"
            )


def save_images(refs: Sequence[str], client: docker.DockerClient | None = None) -> Iterator[bytes]:
    """One `docker save` tar stream holding every ref, for `k3s ctr images import -` on a node."""
    client = client or docker_client()
    for ref in refs:
        if _image_id(client, ref) is None:
            raise PlatformError(f"image {ref} does not exist locally; run `invoke build-images` first")
    try:
        # The SDK saves one image per call; the engine's endpoint takes several names into one archive.
        response = client.api.get(
            client.api._url("/images/get"),  # type: ignore[attr-defined]
            params={"names": list(refs)},
            stream=True,
            timeout=None,
        )
        response.raise_for_status()
    except (NotFound, DockerException, OSError) as exc:
        raise PlatformError(f"docker save of {', '.join(refs)} failed: {exc}") from None
    yield from response.iter_content(chunk_size=1 << 20)
