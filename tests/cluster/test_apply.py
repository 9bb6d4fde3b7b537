"""The apply engine against a real API server: create, no-op, change, prune, diff, CRDs, permissions."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from mlopskit.errors import PlatformError
from mlopskit.kube.apply import FIELD_MANAGER, Engine
from mlopskit.kube.applyset import GROUP_KINDS_ANNOTATION, ID_LABEL, PART_OF_LABEL, ObjectRef
from mlopskit.kube.deploy import shared_image_changes
from tests.cluster.platform_objects import Knobs, objects

EngineFactory = Callable[..., Engine]


def refs(items: list[dict[str, Any]], namespace: str) -> set[ObjectRef]:
    return {ObjectRef.of({**o, "metadata": {**o["metadata"], "namespace": namespace}}) for o in items}


def our_writes(dyn: DynamicClient, namespace: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per object, our field manager's managedFields entries (time included): any write of ours changes them.

    resourceVersion is no measure: controllers write status and annotations to the same objects.
    """
    writes = {}
    for obj in items:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        live = resource.get(name=obj["metadata"]["name"], namespace=namespace).to_dict()
        entries = [e for e in live["metadata"].get("managedFields") or [] if e.get("manager") == FIELD_MANAGER]
        assert entries, f"{obj['kind']}/{obj['metadata']['name']} has no managedFields entry of {FIELD_MANAGER}"
        writes[f"{obj['kind']}/{obj['metadata']['name']}"] = entries
    return writes


def test_first_apply_creates_every_object_with_the_applyset_label(
    engine: EngineFactory, dyn: DynamicClient, namespace: str
) -> None:
    rendered = objects()
    result = engine().apply(rendered)
    assert set(result.created) == refs(rendered, namespace)
    assert result.configured == [] and result.pruned == []
    parent = dyn.resources.get(api_version="v1", kind="Secret").get(name="applyset-mlopskit", namespace=namespace)
    set_id = parent.metadata.labels[ID_LABEL]
    assert parent.metadata.annotations[GROUP_KINDS_ANNOTATION] == (
        "ConfigMap,Deployment.apps,PersistentVolumeClaim,Role.rbac.authorization.k8s.io,"
        "RoleBinding.rbac.authorization.k8s.io,Service,ServiceAccount"
    )
    for obj in rendered:
        live = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).get(
            name=obj["metadata"]["name"], namespace=namespace
        )
        assert live.metadata.labels[PART_OF_LABEL] == set_id


def test_second_apply_changes_nothing(engine: EngineFactory, dyn: DynamicClient, namespace: str) -> None:
    rendered = objects()
    engine().apply(rendered)
    before = our_writes(dyn, namespace, rendered)
    result = engine().apply(rendered)
    assert result.created == [] and result.configured == [] and result.pruned == []
    assert set(result.unchanged) == refs(rendered, namespace)
    assert our_writes(dyn, namespace, rendered) == before


def test_changing_one_setting_changes_only_the_objects_it_affects(engine: EngineFactory, namespace: str) -> None:
    engine().apply(objects())
    result = engine().apply(objects(Knobs(mlflow_workers="4")))
    assert set(result.configured) == {
        ObjectRef("", "ConfigMap", namespace, "mlflow-config"),
        ObjectRef("apps", "Deployment", namespace, "mlflow"),
    }
    assert result.created == [] and result.pruned == []


def test_turning_a_component_off_prunes_exactly_its_objects_and_keeps_its_data(
    engine: EngineFactory, dyn: DynamicClient, namespace: str
) -> None:
    engine().apply(objects())
    result = engine().apply(objects(Knobs(objectstore=False)))
    assert set(result.pruned) == {
        ObjectRef("", "Service", namespace, "objectstore"),
        ObjectRef("apps", "Deployment", namespace, "objectstore"),
    }
    assert result.kept == [ObjectRef("", "PersistentVolumeClaim", namespace, "objectstore-data")]
    assert set(result.unchanged) == refs(objects(Knobs(objectstore=False)), namespace)
    services = dyn.resources.get(api_version="v1", kind="Service").get(namespace=namespace)
    assert sorted(s.metadata.name for s in services.items) == ["mlflow"]


def test_purge_data_prunes_the_claims_of_a_component_turned_off(engine: EngineFactory, namespace: str) -> None:
    engine().apply(objects())
    engine().apply(objects(Knobs(objectstore=False)))
    result = engine().apply(objects(Knobs(objectstore=False)), purge_data=True)
    assert result.pruned == [ObjectRef("", "PersistentVolumeClaim", namespace, "objectstore-data")]


def test_dry_run_reports_changes_and_changes_nothing(engine: EngineFactory, dyn: DynamicClient, namespace: str) -> None:
    engine().apply(objects())
    before = our_writes(dyn, namespace, objects())
    result = engine(dry_run=True).apply(objects(Knobs(mlflow_workers="8", objectstore=False)))
    assert ObjectRef("", "ConfigMap", namespace, "mlflow-config") in result.configured
    assert ObjectRef("apps", "Deployment", namespace, "objectstore") in result.pruned
    assert our_writes(dyn, namespace, objects()) == before


def test_diff_is_empty_right_after_apply(engine: EngineFactory) -> None:
    engine().apply(objects())
    assert engine().diff(objects()) == []


def test_diff_shows_the_changed_object_after_a_setting_change(engine: EngineFactory, namespace: str) -> None:
    engine().apply(objects())
    diffs = dict(engine().diff(objects(Knobs(mlflow_workers="3"))))
    assert set(diffs) == {
        ObjectRef("", "ConfigMap", namespace, "mlflow-config"),
        ObjectRef("apps", "Deployment", namespace, "mlflow"),
    }
    assert "+  workers: '3'" in diffs[ObjectRef("", "ConfigMap", namespace, "mlflow-config")]


@pytest.fixture
def crd_group(api: client.ApiClient) -> Iterator[str]:
    group = f"t{uuid.uuid4().hex[:8]}.mlopskit.test"
    yield group
    client.ApiextensionsV1Api(api).delete_custom_resource_definition(f"widgets.{group}")


def test_a_crd_and_its_objects_apply_together(engine: EngineFactory, namespace: str, crd_group: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{crd_group}"},
        "spec": {
            "group": crd_group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
                        }
                    },
                }
            ],
        },
    }
    widget = {"apiVersion": f"{crd_group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
    # Rendered in the "wrong" order on purpose: the engine puts the CRD first and waits for it.
    result = engine().apply([widget, crd])
    assert set(result.created) == {
        ObjectRef("apiextensions.k8s.io", "CustomResourceDefinition", "", f"widgets.{crd_group}"),
        ObjectRef(crd_group, "Widget", namespace, "w"),
    }
    assert engine().apply([widget, crd]).configured == []


@pytest.fixture
def unprivileged(api: client.ApiClient, namespace: str) -> DynamicClient:
    """A DynamicClient authenticated as a fresh ServiceAccount that has no RBAC rights at all."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="no-rights"))
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=600))
    issued = core.create_namespaced_service_account_token("no-rights", namespace, request)
    assert issued.status is not None, "the API server issued no token"
    token = issued.status.token
    configuration = copy.deepcopy(api.configuration)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.api_key_prefix = {}
    configuration.refresh_api_key_hook = None
    configuration.cert_file = configuration.key_file = None  # else the admin's client certificate wins
    configuration.username = configuration.password = None
    return DynamicClient(client.ApiClient(configuration))


def test_an_account_without_rights_gets_the_permission_error(unprivileged: DynamicClient, namespace: str) -> None:
    with pytest.raises(PlatformError) as caught:
        Engine(unprivileged, namespace).apply(objects())
    message = str(caught.value)
    assert message.startswith("permission denied: the Kubernetes account in your kubeconfig may not")
    assert f"in namespace '{namespace}'" in message
    assert f"system:serviceaccount:{namespace}:no-rights" in message


def test_a_changed_image_of_a_live_shared_workload_is_named_before_it_is_applied(
    engine: EngineFactory, dyn: DynamicClient, namespace: str
) -> None:
    """deploy warns with these lines before it changes the controller every platform on the cluster relies on."""
    running = next(o for o in objects() if o["kind"] == "Deployment")  # plays the controller
    name = running["metadata"]["name"]
    placed = {**running, "metadata": {**running["metadata"], "namespace": namespace}}
    assert shared_image_changes(dyn, [placed]) == []  # nothing live yet: nothing to warn about
    engine().apply([running])
    assert shared_image_changes(dyn, [placed]) == []  # same image: nothing to warn about
    changed = copy.deepcopy(placed)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.invalid/other:1"
    assert shared_image_changes(dyn, [changed]) == [
        f"Deployment {namespace}/{name} (shared by every platform on this cluster): container {name} changes image "
        "registry.invalid/mlopskit/none:0 -> registry.invalid/other:1"
    ]
