"""Remove from the builder stage's venv what the tracking server never uses; run by the Dockerfile.

    /opt/venv/bin/python slim.py /opt/venv

What goes, and the measurement behind each rule (MLflow 3.17.2; README "Image size" has the figures): the
server was run in the image under the integration tests plus a crawl of the UI and of the routes its pages
call, with every Python process's imported modules, opened files and mapped shared objects recorded.

- bytecode (.pyc) of modules the server does not import. Kept: every module a fresh import of the server's
  entry points loads (measured here, at build time, so a new MLflow release measures itself) and every module
  of the packages the server imports only while answering requests (REQUEST_TIME_PACKAGES). A module without
  .pyc still imports, from source; only the packages' tests and unused code lose bytecode.
- the source (.py) of those imported modules where their bytecode can stand alone: third-party packages
  are kept as bytecode only (`module.pyc` beside where `module.py` was, which Python imports without the
  source, compiled without column tables, `-X no_debug_ranges`). A traceback through them names file, line
  and function, without the line's text. Kept as source: MLflow itself (the tracebacks that matter) and
  every package whose code reads Python source at run time (inspect.getsource...; e.g. anyio builds its
  lazy imports from its own source), found by scanning each package here.
- test suites (directories named tests/test that nothing imports).
- botocore's API models of the 400-odd AWS services other than S3 (and STS, for role-based credentials).
- databricks.sdk, the Databricks workspace client (the `databricks` package itself stays: MLflow probes
  `importlib.util.find_spec("databricks.agents")` at import, which needs the parent package).
- C headers, Cython sources and type stubs (.h, .c, .pyx, .pxd, .pyi), numpy's f2py and distutils, and the
  extension modules that exist for the packages' own tests (numpy's _*_tests and _simd, multidict's _testcapi).
- symbols and debug sections of shared objects that dynamic linking does not need (`strip --strip-unneeded`,
  as Debian strips its packages), each one checked to still load afterwards; one that would not (numpy's
  OpenBLAS, laid out by patchelf) is left as it was, and so is one that cannot be loaded on its own to check.

Every removal is checked against the measured import set: the build fails when a rule would delete a module
the server imports, instead of shipping an image that breaks at start. Prints what each rule removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Imported by `mlflow-entrypoint serve`/`migrate`: MLflow's CLI and its two schema upgrade commands, the app's
# basic-auth and FastAPI parts, the stores, uvicorn's worker; and by the scheduled backup's upload container
# (k8s/backup/backup_to_s3.py: tar, age encryption to a recipient, boto3), so a rule that would break it fails
# the build. (The image's own module, installed in a later layer, imports only the stdlib.)
ENTRY_MODULES = (
    "pyrage",
    "pyrage.x25519",
    "tarfile",
    "boto3.s3.transfer",
    "mlflow.cli",
    "mlflow.db",
    "mlflow.server.auth.db.cli",
    "mlflow.server.auth",
    "mlflow.server.fastapi_app",
    "mlflow.server.handlers",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.server.auth.sqlalchemy_store",
    "uvicorn.main",
    "uvicorn.supervisors.multiprocess",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.on",
)
# Imported on the first request that needs them (measured: S3 artifacts, the PostgreSQL driver, the UI's
# GraphQL queries, OpenTelemetry trace ingestion, HTTP/1.1 parsing), plus the database migrations that
# `migrate` loads from files, and the metrics exporter that `--expose-prometheus` loads.
REQUEST_TIME_PACKAGES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "psycopg",
    "psycopg_binary",
    "graphql",
    "graphene",
    "graphql_relay",
    "h11",
    "anyio",
    "uvicorn",
    "flask_cors",
    "opentelemetry",
    "mlflow/store/db_migrations",
    "mlflow/server/auth/db",
    "prometheus_client",
    "prometheus_flask_exporter",
)
BOTOCORE_SERVICES = {"s3", "sts"}
SOURCE_SUFFIXES = {".h", ".c", ".pyx", ".pxd", ".pyi"}
TEST_EXTENSIONS = re.compile(r"^(_\w+_tests|_testcapi|_simd)\.cpython-.*\.so$")
# Packages that keep their source whatever the scan finds: MLflow, whose tracebacks are the ones to read.
SOURCE_KEPT = {"mlflow"}
READS_SOURCE = re.compile(rb"inspect\.getsource|getsourcelines\(|getsource\(")
TEST_DIRS = {"tests", "test"}
REMOVED_TREES = ("databricks/sdk", "numpy/f2py", "numpy/distutils", "numpy/_core/include")

IMPORT_PROBE = """
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}))
"""
# Compiles (source, target) pairs read as JSON from stdin; run with -X no_debug_ranges.
COMPILE = """
import json, py_compile, sys
for source, target in json.load(sys.stdin):
    py_compile.compile(source, cfile=target, doraise=True)
"""


class SlimError(Exception):
    """A rule would remove something the server imports."""


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SlimError(f"expected one site-packages under {venv}, found {found}")
    return found[0]


def imported_modules(python: Path) -> dict[str, str | None]:
    """Module name -> file of every module that importing ENTRY_MODULES loads, in a fresh interpreter."""
    result = subprocess.run(
        [str(python), "-c", IMPORT_PROBE, *ENTRY_MODULES], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SlimError(f"importing the server's entry modules failed:\n{result.stderr[-4000:]}")
    modules: dict[str, str | None] = json.loads(result.stdout)
    return modules


def _size(path: Path) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Slimmer:
    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.site = site_packages(venv)
        self.python = venv / "bin" / "python"
        self.modules = imported_modules(self.python)
        self.imported = {Path(f).resolve() for f in self.modules.values() if f}
        self.imported_dirs = {parent for path in self.imported for parent in path.parents}
        self.removed: dict[str, int] = {}

    def _guard(self, path: Path) -> None:
        if path in self.imported or path in self.imported_dirs:
            raise SlimError(f"refusing to remove {path}: the server imports it or a module inside it")

    def remove(self, rule: str, path: Path) -> None:
        self._guard(path.resolve())
        self.removed[rule] = self.removed.get(rule, 0) + _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    def walk(self) -> Iterator[tuple[Path, list[str], list[str]]]:
        for root, dirs, files in os.walk(self.site):
            yield Path(root), dirs, files

    # ------------------------------------------------------------------------------------------ rules

    def trees(self) -> None:
        for relative in REMOVED_TREES:
            if (self.site / relative).exists():
                self.remove(relative, self.site / relative)

    def tests(self) -> None:
        for root, dirs, _ in self.walk():
            for name in [d for d in dirs if d in TEST_DIRS]:
                self.remove("test suites", root / name)
                dirs.remove(name)

    def botocore_models(self) -> None:
        data = self.site / "botocore" / "data"
        if data.is_dir():
            for service in sorted(p for p in data.iterdir() if p.is_dir() and p.name not in BOTOCORE_SERVICES):
                self.remove("botocore models of unused AWS services", service)

    def sources(self) -> None:
        for root, _, files in self.walk():
            for name in files:
                if Path(name).suffix in SOURCE_SUFFIXES:
                    self.remove("C headers, Cython sources, type stubs", root / name)
                elif TEST_EXTENSIONS.match(name):
                    self.remove("extension modules of the packages' own tests", root / name)

    def _keeps_bytecode(self, source: Path) -> bool:
        if source in self.imported:
            return True
        relative = source.relative_to(self.site).as_posix()
        return any(
            relative == p or relative.startswith(p + "/") or relative == p + ".py" for p in REQUEST_TIME_PACKAGES
        )

    def _keeps_source(self, source: Path, cache: dict[str, bool]) -> bool:
        top = source.relative_to(self.site).parts[0]
        if top not in cache:
            package = self.site / top
            files = package.rglob("*.py") if package.is_dir() else [package]
            cache[top] = top.removesuffix(".py") in SOURCE_KEPT or any(
                READS_SOURCE.search(f.read_bytes()) for f in files
            )
        return cache[top]

    def bytecode(self) -> None:
        """Unused bytecode goes; used third-party modules become bytecode only (see the module docstring)."""
        sourceless: list[tuple[str, str]] = []
        reads_source: dict[str, bool] = {}
        for root, _, files in self.walk():
            if root.name != "__pycache__":
                continue
            for name in files:
                source = (root.parent / (name.split(".", 1)[0] + ".py")).resolve()
                if not self._keeps_bytecode(source):
                    self.remove("bytecode of modules the server does not import", root / name)
                elif source.is_file() and not self._keeps_source(source, reads_source):
                    sourceless.append((str(source), str(source.with_suffix(".pyc"))))
        result = subprocess.run(
            [str(self.python), "-X", "no_debug_ranges", "-c", COMPILE],
            input=json.dumps(sourceless),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SlimError(f"compiling bytecode-only modules failed:\n{result.stderr[-4000:]}")
        for source_text, _ in sourceless:
            source = Path(source_text)
            cached = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
            saved = source.stat().st_size + (cached.stat().st_size if cached.exists() else 0)
            saved -= source.with_suffix(".pyc").stat().st_size
            self.removed["source of imported third-party modules (bytecode only)"] = (
                self.removed.get("source of imported third-party modules (bytecode only)", 0) + saved
            )
            source.unlink()
            cached.unlink(missing_ok=True)
        for root, _, _ in self.walk():
            if root.name == "__pycache__" and not any(root.iterdir()):
                root.rmdir()

    def _loads(self, path: Path) -> bool:
        check = [str(self.python), "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(path)]
        return subprocess.run(check, capture_output=True, check=False).returncode == 0

    def strip(self) -> None:
        """strip --strip-unneeded every shared object that loads; undo it where the result no longer loads.
        One that cannot be loaded on its own (a vendored library another one loads) is left as it is."""
        strip = shutil.which("strip")
        if strip is None:
            raise SlimError("no `strip` in the builder stage (Debian's binutils)")
        for root, _, files in self.walk():
            for name in files:
                path = root / name
                if ".so" not in name or path.is_symlink() or not self._loads(path):
                    continue
                backup = path.with_name(name + ".slim-backup")
                shutil.copy2(path, backup)
                before = path.stat().st_size
                stripped = subprocess.run([strip, "--strip-unneeded", str(path)], capture_output=True, check=False)
                if stripped.returncode == 0 and self._loads(path) and path.stat().st_size <= before:
                    rule = "symbols and debug sections of shared objects"
                    self.removed[rule] = self.removed.get(rule, 0) + before - path.stat().st_size
                    backup.unlink()
                else:
                    print(f"slim: {path.name} does not load once stripped; kept as it was")
                    backup.replace(path)

    def run(self) -> None:
        before = _size(self.venv)
        self.trees()
        self.tests()
        self.botocore_models()
        self.sources()
        self.bytecode()
        self.strip()
        # The server still imports: the same probe, after every removal, loads the same modules.
        missing = sorted(set(self.modules) - set(imported_modules(self.python)))
        if missing:
            raise SlimError(f"modules the server imported before no longer import: {missing[:10]}")
        for rule, size in sorted(self.removed.items(), key=lambda item: -item[1]):
            print(f"slim: {size / 1e6:7.1f} MB  {rule}")
        print(f"slim: {before / 1e6:.1f} MB -> {_size(self.venv) / 1e6:.1f} MB ({self.venv})")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        Slimmer(Path(argv[0])).run()
    except SlimError as exc:
        print(f"slim: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
