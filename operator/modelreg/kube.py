"""Every call to the Kubernetes API that the operator makes, in one place.

Called by `reconciling` (and the CLI). The client is passed in, never global,
so tests and tools can point it anywhere. Writes use server-side apply with the
`modelreg` field manager and touch only what the operator owns: the status
subresource of the user's objects, Events, and the objects it creates.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

import kubernetes
import kubernetes.config.kube_config
from kubernetes.client import ApiClient, AppsV1Api, AutoscalingV2Api, BatchV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.rest import ApiException

from modelreg.api import FIELD_MANAGER, GROUP, VERSION
from modelreg.api import modelversion as mv
from modelreg.api import registeredmodel as rm

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_APPLY = "application/apply-patch+yaml"
USER_AGENT = "modelreg-operator"
_TIMEOUT = (5, 30)  # connect, read seconds: a hung API server must not hang a reconcile


def use_kubeconfig(path: str) -> None:
    """Make `path` the kubeconfig for every client in this process, Kopf's too.

    Kopf's login calls load_kube_config() without a path, which falls back to
    the default the client library read from $KUBECONFIG once, at import: so
    setting the variable later is not enough. (Found running the image, where
    no ~/.kube/config exists to hide it: `--kubeconfig` reached our client but
    not Kopf's.)
    """
    os.environ["KUBECONFIG"] = path
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path


def new_client(kubeconfig: str | None = None, *, context: str | None = None, user_agent: str = USER_AGENT) -> ApiClient:
    """An API client from a kubeconfig (and one of its contexts), or from the in-cluster service account."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
    except kubernetes.config.ConfigException:
        if context:  # a context that was asked for and is not there is an error, not a cue for in-cluster
            raise
        kubernetes.config.load_incluster_config(client_configuration=config)
    client = ApiClient(config)
    # Names the operator (or the tool) in audit logs, which is how tests count the operator's writes.
    client.user_agent = user_agent
    return client


@dataclass(frozen=True)
class ModelState:
    """Everything read from the API for one reconcile of one model."""

    model: Obj | None
    versions: list[Obj]


def read_model_state(client: ApiClient, *, namespace: str, model: str) -> ModelState:
    api = CustomObjectsApi(client)
    try:
        model_obj = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, rm.PLURAL, model, _request_timeout=_TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        model_obj = None
    versions = list_versions(client, namespace=namespace, model=model)
    return ModelState(model=model_obj, versions=versions)


def read_version(client: ApiClient, *, namespace: str, name: str) -> Obj | None:
    try:
        obj: Obj = CustomObjectsApi(client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, mv.PLURAL, name, _request_timeout=_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def list_versions(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The ModelVersions of one model. spec.model is a selectable field of the CRD,
    so the API server filters; a server too old for that gets filtered here."""
    api = CustomObjectsApi(client)
    try:
        listed = api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, mv.PLURAL, field_selector=f"spec.model={model}", _request_timeout=_TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 400:
            raise
        listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, mv.PLURAL, _request_timeout=_TIMEOUT)
    return [v for v in listed.get("items", []) if v.get("spec", {}).get("model") == model]


def set_stages(client: ApiClient, *, namespace: str, stages: dict[str, str]) -> None:
    """Change spec.stage of versions, for people (the `modelreg stage` command).
    A merge patch of one field, so nothing else of the user's spec is touched."""
    api = CustomObjectsApi(client)
    for name, stage in stages.items():
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, mv.PLURAL, name, {"spec": {"stage": stage}}, _request_timeout=_TIMEOUT
        )


def list_model_names(client: ApiClient, *, namespace: str | None) -> list[tuple[str, str]]:
    """(namespace, name) of every RegisteredModel and of every model a version names."""
    api = CustomObjectsApi(client)
    keys: set[tuple[str, str]] = set()
    for plural in (rm.PLURAL, mv.PLURAL):
        if namespace:
            items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _request_timeout=_TIMEOUT)
        else:
            items = api.list_cluster_custom_object(GROUP, VERSION, plural, _request_timeout=_TIMEOUT)
        for item in items.get("items", []):
            name = item["metadata"]["name"] if plural == rm.PLURAL else item.get("spec", {}).get("model")
            if name:
                keys.add((item["metadata"]["namespace"], name))
    return sorted(keys)


OWNED_SELECTOR = "app.kubernetes.io/managed-by=modelreg,modelreg.dev/model"
"""Our Deployments, Services and Jobs: the only ones listed and watched."""

# kind → (apiVersion, the list call of one namespace, of all, whether only ours)
_LISTS: dict[str, tuple[str, str, str, bool]] = {
    "Deployment": ("apps/v1", "list_namespaced_deployment", "list_deployment_for_all_namespaces", True),
    "Service": ("v1", "list_namespaced_service", "list_service_for_all_namespaces", True),
    "Job": ("batch/v1", "list_namespaced_job", "list_job_for_all_namespaces", True),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "list_namespaced_horizontal_pod_autoscaler",
                                "list_horizontal_pod_autoscaler_for_all_namespaces", False),
}  # fmt: skip


def list_for_cache(client: ApiClient, *, namespace: str | None) -> dict[str, list[Obj]]:
    """One LIST per kind the cache holds (`cache.Cache.prime`), as the watch shows
    objects: plain dicts with kind and apiVersion, without managedFields for the
    kinds the operator owns (never read; most of their size)."""
    out: dict[str, list[Obj]] = {}
    custom = CustomObjectsApi(client)
    for kind, plural in ((rm.KIND, rm.PLURAL), (mv.KIND, mv.PLURAL)):
        if namespace:
            listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _request_timeout=_TIMEOUT)
        else:
            listed = custom.list_cluster_custom_object(GROUP, VERSION, plural, _request_timeout=_TIMEOUT)
        out[kind] = list(listed.get("items", []))
    apis = {"apps/v1": AppsV1Api(client), "v1": CoreV1Api(client), "batch/v1": BatchV1Api(client),
            "autoscaling/v2": AutoscalingV2Api(client)}  # fmt: skip
    for kind, (api_version, in_namespace, in_all, ours) in _LISTS.items():
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": _TIMEOUT}
        if ours:
            kwargs["label_selector"] = OWNED_SELECTOR
        api = apis[api_version]
        response = getattr(api, in_namespace)(namespace, **kwargs) if namespace else getattr(api, in_all)(**kwargs)
        items = json.loads(response.data).get("items", [])
        for item in items:
            item["kind"], item["apiVersion"] = kind, api_version
            item["metadata"].pop("managedFields", None)
        out[kind] = items
    return out


# Reads for `kubectl modelreg` (the `plugin` module): whole objects as plain dicts.


def list_objects(client: ApiClient, *, plural: str, namespace: str | None) -> list[Obj]:
    """Every RegisteredModel or ModelVersion (by `plural`) of a namespace, or of all with None."""
    api = CustomObjectsApi(client)
    if namespace:
        listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, _request_timeout=_TIMEOUT)
    else:
        listed = api.list_cluster_custom_object(GROUP, VERSION, plural, _request_timeout=_TIMEOUT)
    return list(listed.get("items", []))


def read_model(client: ApiClient, *, namespace: str, name: str) -> Obj | None:
    try:
        obj: Obj = CustomObjectsApi(client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, rm.PLURAL, name, _request_timeout=_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def read_service_selector(client: ApiClient, *, namespace: str, name: str) -> dict[str, str] | None:
    """The selector of a Service, None when there is no such Service."""
    try:
        svc = CoreV1Api(client).read_namespaced_service(name, namespace, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(svc.spec.selector or {})


def list_events_about(client: ApiClient, *, namespace: str, kind: str, names: set[str]) -> list[Obj]:
    """core/v1 Events about objects of `kind` named in `names` (one list call, filtered here)."""
    listed = CoreV1Api(client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={kind}", _request_timeout=_TIMEOUT
    )
    events = [client.sanitize_for_serialization(e) for e in listed.items]
    return [e for e in events if e.get("involvedObject", {}).get("name") in names]


class Stale(Exception):
    """The API server refused a write made from an outdated read of the object
    (its resourceVersion moved on): read again and plan again."""


def apply_status(client: ApiClient, obj: Obj, status: Obj, *, resource_version: str | None = None) -> str | None:
    """Server-side apply of `status` on the status subresource of `obj`; the
    resourceVersion it now has (None: the object is gone).

    With `resource_version` (the one the status was planned from) the write is
    conditional: when the object changed since, the API server refuses it with
    409 and `Stale` is raised, so a plan made from an outdated (cached) read can
    never record a transition twice or undo a newer one."""
    plural = rm.PLURAL if obj["kind"] == rm.KIND else mv.PLURAL
    meta: Obj = {"name": obj["metadata"]["name"]}
    if resource_version:
        meta["resourceVersion"] = resource_version
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "status": status}
    try:
        written: Obj = CustomObjectsApi(client).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            obj["metadata"]["namespace"],
            plural,
            obj["metadata"]["name"],
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
            _request_timeout=_TIMEOUT,
        )
    except ApiException as exc:
        if exc.status == 404:  # deleted meanwhile: its status no longer matters
            return None
        if exc.status == 409 and resource_version:
            raise Stale(_reason(exc)) from exc
        raise
    return _resource_version(written)


def _resource_version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    meta = getattr(obj, "metadata", None)
    return getattr(meta, "resource_version", None)


def clear_status_fields(client: ApiClient, obj: Obj, fields: tuple[str, ...]) -> str | None:
    """Remove status fields whoever owns them (a merge patch with nulls): a
    server-side apply only removes fields its own manager owned."""
    plural = rm.PLURAL if obj["kind"] == rm.KIND else mv.PLURAL
    body = {"status": dict.fromkeys(fields)}
    try:
        written = CustomObjectsApi(client).patch_namespaced_custom_object_status(
            GROUP, VERSION, obj["metadata"]["namespace"], plural, obj["metadata"]["name"], body,
            field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json", _request_timeout=_TIMEOUT,
        )  # fmt: skip
    except ApiException as exc:
        if exc.status != 404:
            raise
        return None
    return _resource_version(written)


@dataclass(frozen=True)
class OwnedObjects:
    """The serving objects of one model, as plain dicts keyed by name."""

    deployments: dict[str, Obj]
    services: dict[str, Obj]
    autoscaled: dict[str, int]  # Deployments an HPA scales → its minReplicas


def read_owned(
    client: ApiClient, *, namespace: str, model: str, autoscaled: dict[str, int] | None = None
) -> OwnedObjects:
    """A model's Deployments and Services; the namespace's autoscalers too unless
    `autoscaled` is given (the watch-fed cache holds them)."""
    selector = f"modelreg.dev/model={model},app.kubernetes.io/managed-by=modelreg"
    deps = AppsV1Api(client).list_namespaced_deployment(namespace, label_selector=selector, _request_timeout=_TIMEOUT)
    svcs = CoreV1Api(client).list_namespaced_service(namespace, label_selector=selector, _request_timeout=_TIMEOUT)
    if autoscaled is None:
        hpas = AutoscalingV2Api(client).list_namespaced_horizontal_pod_autoscaler(namespace, _request_timeout=_TIMEOUT)
        autoscaled = {
            h.spec.scale_target_ref.name: h.spec.min_replicas or 1
            for h in hpas.items
            if h.spec.scale_target_ref.kind == "Deployment" and h.spec.scale_target_ref.api_version in ("apps/v1", None)
        }
    return OwnedObjects(
        deployments={d.metadata.name: client.sanitize_for_serialization(d) for d in deps.items},
        services={s.metadata.name: client.sanitize_for_serialization(s) for s in svcs.items},
        autoscaled=autoscaled,
    )


@dataclass(frozen=True)
class PodsOf:
    """A Deployment's ReplicaSets and Pods (all revisions), as plain dicts."""

    replica_sets: list[Obj]
    pods: list[Obj]


def read_pods(client: ApiClient, *, namespace: str, selector: dict[str, str]) -> PodsOf:
    """The ReplicaSets and Pods a Deployment's selector matches: why it does not
    become available. Only diagnostics: without the rights to read them (RBAC
    from before the operator read Pods) the reconcile goes on without them."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    if not labels:  # would list every Pod of the namespace
        return PodsOf(replica_sets=[], pods=[])
    try:
        sets = AppsV1Api(client).list_namespaced_replica_set(namespace, label_selector=labels,
                                                            _request_timeout=_TIMEOUT)  # fmt: skip
        pods = CoreV1Api(client).list_namespaced_pod(namespace, label_selector=labels, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot read the Pods of %s in %s (%s): grant the operator list on pods and replicasets.apps",
                    labels, namespace, _reason(exc))  # fmt: skip
        return PodsOf(replica_sets=[], pods=[])
    return PodsOf(
        replica_sets=[client.sanitize_for_serialization(r) for r in sets.items],
        pods=[client.sanitize_for_serialization(p) for p in pods.items],
    )


def apply_object(client: ApiClient, namespace: str, obj: Obj) -> str | None:
    """Server-side apply of an owned Deployment or Service; its new resourceVersion.
    Forcing takes back the fields we render (and only those) from whoever changed them."""
    name = obj["metadata"]["name"]
    kwargs = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": _APPLY, "_request_timeout": _TIMEOUT}
    try:
        if obj["kind"] == "Deployment":
            written = AppsV1Api(client).patch_namespaced_deployment(name, namespace, obj, **kwargs)
        elif obj["kind"] == "Service":
            written = CoreV1Api(client).patch_namespaced_service(name, namespace, obj, **kwargs)
        else:
            raise ValueError(f"the operator does not own {obj['kind']} objects")
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None:
            raise refused from exc
        raise
    return _resource_version(written)


class Refused(Exception):
    """The API server refused an object the operator rendered (invalid, or
    forbidden); the message is the API server's own."""


def _refusal(exc: ApiException) -> Refused | None:
    return Refused(_reason(exc)) if exc.status in (400, 403, 422) else None


def create_object(client: ApiClient, namespace: str, obj: Obj, *, created: list[str] | None = None) -> Obj | None:
    """Create an owned Deployment, Service or Job. None when created (its
    resourceVersion appended to `created`); when the name is taken, the object
    that holds it, so the caller can tell its own (adopt it) from somebody
    else's (report the conflict, never take it over)."""
    name, kind = obj["metadata"]["name"], obj["kind"]
    kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "_request_timeout": _TIMEOUT}
    try:
        if kind == "Deployment":
            made = AppsV1Api(client).create_namespaced_deployment(namespace, obj, **kwargs)
        elif kind == "Service":
            made = CoreV1Api(client).create_namespaced_service(namespace, obj, **kwargs)
        elif kind == "Job":
            made = BatchV1Api(client).create_namespaced_job(namespace, obj, **kwargs)
        else:
            raise ValueError(f"the operator does not own {kind} objects")
        if created is not None and (version := _resource_version(made)) is not None:
            created.append(version)
        return None
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None:
            raise refused from exc
        if exc.status != 409:
            raise
    if kind == "Deployment":
        live = AppsV1Api(client).read_namespaced_deployment(name, namespace, _request_timeout=_TIMEOUT)
    elif kind == "Job":
        live = BatchV1Api(client).read_namespaced_job(name, namespace, _request_timeout=_TIMEOUT)
    else:
        live = CoreV1Api(client).read_namespaced_service(name, namespace, _request_timeout=_TIMEOUT)
    taken: Obj = client.sanitize_for_serialization(live)
    return taken


def delete_owned(client: ApiClient, namespace: str, *, kind: str, name: str) -> None:
    """Delete an owned Deployment, Service or Job (the caller checked its owner);
    a Job's Pods go with it."""
    try:
        if kind == "Deployment":
            AppsV1Api(client).delete_namespaced_deployment(
                name, namespace, propagation_policy="Background", _request_timeout=_TIMEOUT
            )
        elif kind == "Service":
            CoreV1Api(client).delete_namespaced_service(name, namespace, _request_timeout=_TIMEOUT)
        elif kind == "Job":
            BatchV1Api(client).delete_namespaced_job(
                name, namespace, propagation_policy="Background", _request_timeout=_TIMEOUT
            )
        else:
            raise ValueError(f"the operator does not own {kind} objects")
    except ApiException as exc:
        if exc.status != 404:
            raise


def read_jobs(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The validation Jobs of one model (by label; the caller checks the owner)."""
    selector = f"modelreg.dev/model={model},app.kubernetes.io/managed-by=modelreg"
    jobs = BatchV1Api(client).list_namespaced_job(namespace, label_selector=selector, _request_timeout=_TIMEOUT)
    return [client.sanitize_for_serialization(j) for j in jobs.items]


def read_validation_pods(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The Pods of a model's validation Jobs: why a Job that has not finished will
    not (an image that cannot be pulled, no node for it)."""
    selector = f"modelreg.dev/validation={model},app.kubernetes.io/managed-by=modelreg"
    pods = CoreV1Api(client).list_namespaced_pod(namespace, label_selector=selector, _request_timeout=_TIMEOUT)
    return [client.sanitize_for_serialization(p) for p in pods.items]


@dataclass(frozen=True)
class SecretData:
    labels: dict[str, str]
    data: dict[str, bytes]  # raw bytes: a value need not be text


def read_secret(client: ApiClient, *, namespace: str, name: str) -> SecretData | None:
    """A Secret's labels and decoded data, or None when it does not exist.
    The operator's only read of Secrets; what it may use is decided by the caller."""
    try:
        secret = CoreV1Api(client).read_namespaced_secret(name, namespace, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    labels = dict(secret.metadata.labels or {}) if secret.metadata else {}
    return SecretData(labels=labels, data={k: base64.b64decode(v) for k, v in (secret.data or {}).items()})


def post_event(client: ApiClient, obj: Obj, *, reason: str, message: str, warning: bool = False) -> None:
    """Record a core/v1 Event about `obj`; failures are logged, never raised."""
    now = datetime.datetime.now(datetime.UTC)
    meta = obj["metadata"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
    }
    try:
        CoreV1Api(client).create_namespaced_event(meta["namespace"], event, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        log.warning("could not post event %s on %s: %s", reason, meta["name"], _reason(exc))


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message"))
    except (TypeError, ValueError):
        return str(exc.reason)


REGISTER_FIELD_MANAGER = "modelreg-register"
"""Not the operator's manager: `modelreg register --apply` writes a person's spec, which
the operator never owns."""


def apply_version(client: ApiClient, namespace: str, obj: Obj) -> Obj:
    """Server-side apply of a ModelVersion written by `modelreg register --apply`.
    Not forced: a field someone else set differently is a conflict to show, not to take."""
    try:
        applied: Obj = CustomObjectsApi(client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, mv.PLURAL, obj["metadata"]["name"], obj,
            field_manager=REGISTER_FIELD_MANAGER, _content_type=_APPLY, _request_timeout=_TIMEOUT,
        )  # fmt: skip
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None or exc.status == 409:
            raise refused or Refused(_reason(exc)) from exc
        raise
    return applied
