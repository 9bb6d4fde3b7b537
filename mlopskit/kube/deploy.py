"""The deploy flow as plain functions: render, validate, seal, apply, prune, wait, verify.

The invoke tasks in mlopskit/tasks/deploy.py only parse flags and print; everything here can be
called (and tested) without invoke.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from mlopskit import access, console, public_host
from mlopskit.access import PreviousPassword, ensure_admin_password
from mlopskit.contract import CONTROLLER_NAMESPACE, MLFLOW_SERVICE
from mlopskit.errors import PlatformError
from mlopskit.image_names import mlflow_image_ref
from mlopskit.kube import render, sealing, validate
from mlopskit.kube.api_errors import api_error
from mlopskit.kube.apply import ApplyResult, Engine
from mlopskit.kube.applyset import ObjectRef
from mlopskit.kube.client import api_client, dynamic_client
from mlopskit.kube.discovery import Discovery
from mlopskit.kube.order import unknown_kinds
from mlopskit.kube.retry import RetryPolicy
from mlopskit.kube.wait import Readiness, wait_for_namespace_deletion, wait_for_rollout
from mlopskit.mlflow_admin import RERUN_CLUSTER, MlflowClient, smoke_check, wait_healthy
from mlopskit.settings import Settings

SEALED_SECRETS_CRD = "sealedsecrets.bitnami.com"
CONTROLLER_APPLYSET = "applyset-mlopskit-sealed-secrets"


@dataclass
class DeployOutcome:
    result: ApplyResult
    url: str | None = None
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def kubernetes_version(settings: Settings) -> str:
    """'v1.34.1+k3s1' -> '1.34.1': the schema version to validate against."""
    return settings.cluster.k3s_version.split("+")[0].removeprefix("v")


def cluster_features(settings: Settings, dyn: DynamicClient | None) -> render.ClusterFeatures:
    """What the cluster serves that the settings can use (a ServiceMonitor's CRD, K3s's HelmChartConfig); the
    cluster is asked only when a setting depends on the answer. Raises PlatformError for
    platform.metrics.service_monitor: true on a cluster without the CRD, before anything is applied."""
    if dyn is None:
        return render.ClusterFeatures()
    discovery = Discovery(dyn, RetryPolicy())
    helm_chart_config, taken = _traefik_config_room(settings, dyn, discovery)
    return render.ClusterFeatures(
        service_monitor=_service_monitor_served(settings, discovery),
        helm_chart_config=helm_chart_config,
        traefik_config_taken=taken,
    )


def _service_monitor_served(settings: Settings, discovery: Discovery) -> bool:
    metrics = settings.platform.metrics
    if not metrics.enabled or metrics.service_monitor is False:
        return False
    api_version, kind = render.SERVICE_MONITOR_API
    served = discovery.serves(api_version, kind)
    if metrics.service_monitor is True and not served:
        raise PlatformError(
            f"{settings.describe('platform.metrics.service_monitor')}: is true, but the cluster serves no "
            f"{api_version} {kind}; install the Prometheus Operator's CRDs first, or set it to auto (a "
            "ServiceMonitor only where the CRD exists) or false"
        )
    return served


def _traefik_config_room(settings: Settings, dyn: DynamicClient, discovery: Discovery) -> tuple[bool, bool]:
    """(the cluster serves K3s's HelmChartConfig, a HelmChartConfig kube-system/traefik that is not mlopskit's
    exists), asked only for ingress class traefik. Applying ours over an administrator's own would replace
    their values, and a later prune would delete them."""
    from kubernetes.client.exceptions import ApiException

    if public_host.traefik_values(settings.platform.ingress) is None:
        return False, False
    api_version, kind = public_host.HELM_CHART_CONFIG_API
    if not discovery.serves(api_version, kind):
        return False, False
    resource = discovery.resolve(api_version, kind).resource
    try:
        live = discovery.retry.call(
            resource.get, name=public_host.TRAEFIK_CHART, namespace=public_host.TRAEFIK_NAMESPACE
        ).to_dict()
    except ApiException as exc:
        if exc.status != 404:
            raise PlatformError(
                f"cannot read {kind} {public_host.TRAEFIK_NAMESPACE}/{public_host.TRAEFIK_CHART} "
                f"(HTTP {exc.status}): {exc.reason}"
            ) from None
        return True, False
    labels = (live.get("metadata") or {}).get("labels") or {}
    return True, labels.get("app.kubernetes.io/managed-by") != render.PART_OF


def rendered_objects(
    settings: Settings,
    mlflow_image: str,
    dyn: DynamicClient | None = None,
    features: render.ClusterFeatures | None = None,
) -> list[dict[str, Any]]:
    """Render the k8s/ templates with the settings and validate them against the cluster's schema.

    With a cluster (dyn), rendering follows what it serves (cluster_features, unless given) and custom resources
    are also validated against the cluster's own CRDs; without one, nothing optional is rendered."""
    if features is None:
        features = cluster_features(settings, dyn)
    objects = render.render_manifests(settings, mlflow_image=mlflow_image, features=features)
    version = kubernetes_version(settings)
    crds: list[dict[str, Any]] = []
    if dyn is not None:
        discovery = Discovery(dyn, RetryPolicy())
        crds = [
            crd
            for api_version, kind in validate.custom_kinds(objects, version)
            if (crd := discovery.crd_of(api_version, kind))
        ]
    validate.validate_objects(objects, version, crds)
    return objects


def is_controller_object(obj: dict[str, Any]) -> bool:
    """Objects of the Sealed Secrets controller: its CRD and everything labelled as part of it."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "CustomResourceDefinition":
        return str(meta.get("name")) == SEALED_SECRETS_CRD
    return (meta.get("labels") or {}).get("app.kubernetes.io/name") == "sealed-secrets"


def _container_images(workload: dict[str, Any]) -> dict[str, str]:
    """{container name: image} of a workload's pod template (init containers included)."""
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return {str(c.get("name")): str(c.get("image")) for c in containers}


def shared_image_changes(dyn: DynamicClient, controller: list[dict[str, Any]]) -> list[str]:
    """One line per container of a live cluster-wide workload (the Sealed Secrets controller, which every
    platform on the cluster relies on) whose image this deploy would change; none when it does not run yet."""
    changes = []
    for obj in controller:
        if obj.get("kind") not in {"Deployment", "StatefulSet", "DaemonSet"}:
            continue
        meta = obj["metadata"]
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            live = resource.get(name=meta["name"], namespace=meta.get("namespace", CONTROLLER_NAMESPACE)).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise api_error(exc, "get", ObjectRef.of(obj)) from exc
        running = _container_images(live)
        for name, image in _container_images(obj).items():
            if name in running and running[name] != image:
                changes.append(
                    f"{obj['kind']} {meta.get('namespace', CONTROLLER_NAMESPACE)}/{meta['name']} (shared by every "
                    f"platform on this cluster): container {name} changes image {running[name]} -> {image}"
                )
    return changes


def service_port(objects: list[dict[str, Any]], namespace: str, name: str) -> int:
    """The first port of a rendered Service, so verification follows the templates."""
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Service" and meta.get("name") == name and meta.get("namespace", namespace) == namespace:
            ports = (obj.get("spec") or {}).get("ports") or []
            if ports:
                return int(ports[0]["port"])
    raise PlatformError(f"no Service {namespace}/{name} with a port is rendered; cannot verify MLflow")


def sealed_objects(settings: Settings, api: client.ApiClient, *, reseal: bool) -> tuple[list[dict[str, Any]], str]:
    """SealedSecret objects for the credentials, resealed with the controller's certificate when asked."""
    resealed = ""
    if reseal:
        certificate = sealing.fetch_certificate(settings, api)
        report = sealing.seal_all(settings, certificate)
        resealed = (
            f"sealed {', '.join(report.sealed)}; " if report.sealed else "credentials unchanged (nothing resealed); "
        )
    sealed = sealing.load_sealed(settings)
    return sealed, f"{resealed}{len(sealed)} SealedSecret(s) from config/sealed/{settings.cluster.name}/"


def progress_printer(dry_run: bool) -> Callable[[ObjectRef, str], None]:
    def report(ref: ObjectRef, action: str) -> None:
        if action != "unchanged":
            prefix = "(dry run) " if dry_run else ""
            console.info(f"  {prefix}{action:<10} {ref}")

    return report


def connect(settings: Settings) -> tuple[client.ApiClient, DynamicClient]:
    api = api_client(settings)
    return api, dynamic_client(api)


def deploy(
    settings: Settings,
    *,
    dry_run: bool = False,
    force: bool = False,
    timeout: float = 600.0,
    verify: bool = True,
    purge_data: bool = False,
    mlflow_image: str | None = None,
) -> DeployOutcome:
    """Render, validate, seal, apply in order, prune, wait for rollouts and verify MLflow end to end."""
    settings.require("deploy")
    api, dyn = connect(settings)
    console.step("Rendering and validating manifests")
    features = cluster_features(settings, dyn)
    objects = rendered_objects(settings, mlflow_image or mlflow_image_ref(settings), dyn, features)
    notes: list[str] = ingress_notes(settings, features)
    unknown = unknown_kinds(objects)
    if unknown:
        notes.append(f"kinds without a known phase, applied after config and before workloads: {', '.join(unknown)}")
    namespace = settings.platform.namespace
    engine = Engine(dyn, namespace, force=force, dry_run=dry_run, progress=progress_printer(dry_run))

    controller = [obj for obj in objects if is_controller_object(obj)]
    if controller:
        console.step("Sealed Secrets controller")
        # Its own ApplySet: the platform's prune must never remove the controller that unseals it.
        controller_engine = Engine(
            dyn,
            CONTROLLER_NAMESPACE,
            parent_name=CONTROLLER_APPLYSET,
            force=force,
            dry_run=dry_run,
            progress=progress_printer(dry_run),
        )
        for change in shared_image_changes(dyn, controller):
            console.warn(
                f"{change}; it follows images.source={settings.images.source!r} "
                f"({settings.describe('images.source')}): make sure every node can pull or already holds it, or its "
                "pods stop starting for every platform (IMAGE_SOURCE=offline renders the offline stand-in)"
            )
        controller_engine.apply(controller)
        if not dry_run:
            _wait(dyn, controller, timeout)

    # MLflow reads MLFLOW_ADMIN_PASSWORD only when its auth database is empty: a changed one is rotated
    # through the API with the one the live Secret still holds, before the new Secret replaces it.
    previous = live_admin_password(settings, dyn)
    admin_password = "unchanged"
    if previous and not dry_run:
        admin_password = rotate_admin_if_running(settings, api, previous)

    console.step("Sealing credentials")
    sealed, note = sealed_objects(settings, api, reseal=not dry_run)
    if dry_run:
        # A dry run writes no sealed files: it plans with those on disk, which a real deploy refreshes first.
        note += "; a real deploy first seals the credentials from .env into that folder (the dry run writes nothing)"
    (console.info if sealed or dry_run else console.warn)(note)

    platform = [obj for obj in objects if not is_controller_object(obj)] + sealed
    if not dry_run:
        wait_for_namespace_deletion(dyn, namespace, timeout)
    console.step(
        f"Applying {len(platform)} objects to namespace {namespace}" + (" (server-side dry run)" if dry_run else "")
    )
    result = engine.apply(platform, prune=True, purge_data=purge_data)
    outcome = DeployOutcome(result=result, notes=notes, url=platform_url(settings))
    if dry_run:
        return outcome

    console.step("Waiting for rollouts")
    _wait(dyn, list(result.applied.values()), timeout)
    if verify or previous or settings.access.declared:
        port = service_port(platform, namespace, MLFLOW_SERVICE)
        console.step("MLflow: admin password, access (config/access.yaml)" + (", verification" if verify else ""))
        outcome.checks = reconcile_mlflow(settings, api, port, previous, verify=verify, rotated=admin_password)
    return outcome


def live_admin_password(settings: Settings, dyn: DynamicClient) -> list[PreviousPassword]:
    """The admin password the deployed Secret holds, when it differs from .env (the one MLflow may still have)."""
    from kubernetes.client.exceptions import ApiException

    from mlopskit.credentials import ENV_ADMIN_PASSWORD, MLFLOW_SECRET

    namespace = settings.platform.namespace
    try:
        secret = dyn.resources.get(api_version="v1", kind="Secret").get(name=MLFLOW_SECRET, namespace=namespace)
    except ApiException as exc:
        if exc.status != 404:
            console.warn(
                f"cannot read Secret {namespace}/{MLFLOW_SECRET} (HTTP {exc.status}): a changed "
                "MLFLOW_ADMIN_PASSWORD cannot be rotated without the previous one"
            )
        return []
    encoded = (secret.to_dict().get("data") or {}).get(ENV_ADMIN_PASSWORD)
    if not encoded:
        return []
    old = base64.b64decode(encoded).decode()
    wanted = settings.platform.mlflow.admin_password
    if wanted is not None and old == wanted.get_secret_value():
        return []
    return [PreviousPassword(old, f"the live Secret {namespace}/{MLFLOW_SECRET}")]


def rotate_admin_if_running(settings: Settings, api: client.ApiClient, previous: list[PreviousPassword]) -> str:
    """Rotate the admin password through the MLflow that runs now; 'deferred' when none is ready yet."""
    from mlopskit.kube.portforward import forward_service

    namespace = settings.platform.namespace
    with contextlib.ExitStack() as stack:
        try:
            service = client.CoreV1Api(api).read_namespaced_service(MLFLOW_SERVICE, namespace)
            ports = (service.spec.ports if service.spec else None) or []
            if not ports:
                return "deferred"
            local_port = stack.enter_context(forward_service(api, namespace, MLFLOW_SERVICE, int(ports[0].port)))
        except (PlatformError, client.exceptions.ApiException):
            return "deferred"  # nothing runs yet: rotated after the rollout, with the same previous password
        url = f"http://127.0.0.1:{local_port}"
        wait_healthy(MlflowClient(url, "-", "-"), timeout=30)
        state = ensure_admin_password(settings, url, previous)
    console.info(f"MLflow admin password {state} (the previous one came from {previous[0].source})")
    return state


def reconcile_mlflow(
    settings: Settings,
    api: client.ApiClient,
    port: int,
    previous: list[PreviousPassword],
    *,
    verify: bool,
    rotated: str = "unchanged",
) -> list[str]:
    """Through one port-forward: the admin password from .env, config/access.yaml applied, the smoke check."""
    from mlopskit.kube.portforward import forward_service

    mlflow = settings.platform.mlflow
    assert mlflow.admin_password is not None  # settings.require("deploy")
    checks = []
    with forward_service(api, settings.platform.namespace, MLFLOW_SERVICE, port) as local_port:
        url = f"http://127.0.0.1:{local_port}"
        admin = MlflowClient(url, mlflow.admin_user, mlflow.admin_password.get_secret_value(), rerun=RERUN_CLUSTER)
        wait_healthy(admin)
        state = ensure_admin_password(settings, url, previous)
        checks.append(f"admin password: {rotated if state == 'unchanged' else state}")
        if settings.access.declared:
            done = access.apply_plan(settings, admin, access.make_plan(settings, admin))
            checks.append(
                f"access (config/access.yaml): {len(done)} change(s) applied" if done else "access: unchanged"
            )
        if verify:
            checks += smoke_check(admin).steps
    return checks


def _wait(dyn: DynamicClient, objects: list[dict[str, Any]], timeout: float) -> None:
    waited = [obj for obj in objects if obj.get("kind") in {"Deployment", "StatefulSet", "Job"}]
    if not waited:
        return
    with console.progress() as bar:
        task = bar.add_task("rollouts", total=len(waited))
        done: set[ObjectRef] = set()

        def update(ref: ObjectRef, state: Readiness) -> None:
            if state.ready:
                done.add(ref)
            bar.update(task, completed=len(done), description=f"{ref.kind} {ref.name}: {state.detail}")

        wait_for_rollout(dyn, waited, timeout=timeout, on_update=update)


def platform_url(settings: Settings) -> str | None:
    return public_host.public_url(settings)


def _dotted(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Helm values as (dotted.key, value) pairs, as `helm --set` takes them."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            pairs += _dotted(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def ingress_notes(settings: Settings, features: render.ClusterFeatures) -> list[str]:
    """What deploy cannot set for the ingress class on this cluster, and what to set by hand instead."""
    ingress = settings.platform.ingress
    values = public_host.traefik_values(ingress)
    if values is not None and not render.renders_traefik_config(settings, features):
        where = f"HelmChartConfig {public_host.TRAEFIK_NAMESPACE}/{public_host.TRAEFIK_CHART}"
        why = (
            f"{where} exists and is not mlopskit's, so it is left as it is"
            if features.traefik_config_taken
            else f"{where} not applied: the cluster has no {public_host.HELM_CHART_CONFIG_CRD} CRD (not K3s)"
        )
        return [
            f"{why}; for uploads longer than 60 s through Traefik, set these values of its Helm release: "
            + ", ".join(f"{key}={value}" for key, value in _dotted(values))
            + " (or Traefik's flags --entryPoints.<name>.transport.respondingTimeouts.readTimeout)"
        ]
    if not ingress.enabled or ingress.class_name in {public_host.TRAEFIK_CLASS, public_host.NGINX_CLASS}:
        return []
    return [
        f"ingress class {ingress.class_name!r}: mlopskit knows the controllers of traefik and nginx only. Add a "
        f"NetworkPolicy in namespace {settings.platform.namespace} that lets this controller's pods reach the mlflow "
        "pods on port 5000 (all traffic is denied by default), and let it pass request bodies of any size and read "
        f"a request for up to {ingress.upload_timeout_seconds} s (platform.ingress.upload_timeout_seconds), or large "
        "artifact uploads fail (README: Deploying, one public host name)"
    ]


def diff(settings: Settings, mlflow_image: str | None = None) -> list[tuple[ObjectRef, str]]:
    """Per-object unified diffs between the live cluster and a server-side dry run of a deploy."""
    api, dyn = connect(settings)
    objects = rendered_objects(settings, mlflow_image or mlflow_image_ref(settings), dyn)
    # The sealed files on disk, not a fresh seal: sealing is randomized and would always differ.
    sealed, note = sealed_objects(settings, api, reseal=False)
    if not sealed:
        console.warn(note)
    controller = [obj for obj in objects if is_controller_object(obj)]
    diffs = Engine(dyn, CONTROLLER_NAMESPACE, parent_name=CONTROLLER_APPLYSET).diff(controller) if controller else []
    platform = [obj for obj in objects if not is_controller_object(obj)] + sealed
    return diffs + Engine(dyn, settings.platform.namespace).diff(platform)


def destroy(settings: Settings, *, purge_data: bool = False, dry_run: bool = False) -> ApplyResult:
    """Delete the platform's ApplySet in reverse order; the Sealed Secrets controller and data stay."""
    _, dyn = connect(settings)
    engine = Engine(dyn, settings.platform.namespace, dry_run=dry_run, progress=progress_printer(dry_run))
    return engine.destroy(purge_data=purge_data)
