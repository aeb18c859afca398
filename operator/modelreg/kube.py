"""Every call to the Kubernetes API that the operator makes, in one place.

Called by `reconciling` (and the CLI). The client is passed in, never global,
so tests and tools can point it anywhere. Writes use server-side apply with the
`modelreg` field manager and touch only what the operator owns: the status
subresource of the user's objects, Events, and the objects it creates.

Every call goes through the official client's `ApiClient` (its configuration,
authentication, TLS, retries and `ApiException`s), by path, with plain JSON in
and out (`_call`). Not through the typed API classes (`CoreV1Api` …): importing
them loads every model class they name (330 pydantic classes, ~32 MiB of the
operator's ~95 at start-up, issue 11), each first call of a method builds a
pydantic validator, and a typed response is turned back into the dicts the
operator works with anyway.
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
from urllib.parse import quote

import kubernetes
import kubernetes.config.kube_config
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from modelreg import cache
from modelreg.api import FIELD_MANAGER, GROUP, VERSION
from modelreg.api import modelversion as mv
from modelreg.api import registeredmodel as rm

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_APPLY = "application/apply-patch+yaml"
USER_AGENT = "modelreg-operator"
_TIMEOUT = (5, 30)  # connect, read seconds: a hung API server must not hang a reconcile
_MERGE = "application/merge-patch+json"

# kind → (apiVersion, plural) of the built-in kinds the operator reads or writes
_BUILTIN: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Service": ("v1", "services"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "Secret": ("v1", "secrets"),
    "Job": ("batch/v1", "jobs"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
}
_CUSTOM = f"{GROUP}/{VERSION}"


def _path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
          subresource: str | None = None) -> str:  # fmt: skip
    """The REST path of a collection (all namespaces when `namespace` is None) or of one object."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace is not None:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


def _of(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    return _path(*_BUILTIN[kind], namespace, name)


def _custom(plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    return _path(_CUSTOM, plural, namespace, name, subresource)


def _call(
    client: ApiClient,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Obj | None = None,
    content_type: str = "application/json",
) -> Any:
    """One request through the client, its JSON response as plain Python data.
    A status outside 2xx raises the client's ApiException (NotFoundException …)
    with the API server's body, as the typed API classes do."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    request = client.param_serialize(
        method=method,
        resource_path=path,
        query_params=[(k, v) for k, v in (query or {}).items()],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*request, _request_timeout=_TIMEOUT)
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=data.decode("utf-8", "replace"), data=None)
    return json.loads(data) if data else None


def _items(listed: Any) -> list[Obj]:
    return list((listed or {}).get("items") or [])


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
    model_obj = read_model(client, namespace=namespace, name=model)
    versions = list_versions(client, namespace=namespace, model=model)
    return ModelState(model=model_obj, versions=versions)


def read_version(client: ApiClient, *, namespace: str, name: str) -> Obj | None:
    return _read(client, _custom(mv.PLURAL, namespace, name))


def _read(client: ApiClient, path: str) -> Obj | None:
    """One object, None when there is no such object."""
    try:
        obj: Obj = _call(client, "GET", path)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def list_versions(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The ModelVersions of one model. spec.model is a selectable field of the CRD,
    so the API server filters; a server too old for that gets filtered here."""
    path = _custom(mv.PLURAL, namespace)
    try:
        listed = _call(client, "GET", path, query={"fieldSelector": f"spec.model={model}"})
    except ApiException as exc:
        if exc.status != 400:
            raise
        listed = _call(client, "GET", path)
    return [v for v in _items(listed) if v.get("spec", {}).get("model") == model]


def set_stages(client: ApiClient, *, namespace: str, stages: dict[str, str]) -> None:
    """Change spec.stage of versions, for people (the `modelreg stage` command).
    A merge patch of one field, so nothing else of the user's spec is touched."""
    for name, stage in stages.items():
        _call(
            client, "PATCH", _custom(mv.PLURAL, namespace, name), body={"spec": {"stage": stage}}, content_type=_MERGE
        )


def list_model_names(client: ApiClient, *, namespace: str | None) -> list[tuple[str, str]]:
    """(namespace, name) of every RegisteredModel and of every model a version names."""
    keys: set[tuple[str, str]] = set()
    for plural in (rm.PLURAL, mv.PLURAL):
        for item in list_objects(client, plural=plural, namespace=namespace):
            name = item["metadata"]["name"] if plural == rm.PLURAL else item.get("spec", {}).get("model")
            if name:
                keys.add((item["metadata"]["namespace"], name))
    return sorted(keys)


OWNED_SELECTOR = "app.kubernetes.io/managed-by=modelreg,modelreg.dev/model"
"""Our Deployments, Services and Jobs: the only ones listed and watched."""

# The built-in kinds the cache holds, and whether only ours (by label) are listed.
_CACHED: dict[str, bool] = {"Deployment": True, "Service": True, "Job": True, "HorizontalPodAutoscaler": False}


def list_for_cache(client: ApiClient, *, namespace: str | None) -> dict[str, list[Obj]]:
    """One LIST per kind the cache holds (`cache.Cache.prime`, which compacts them),
    as the watch shows objects: plain dicts with kind and apiVersion."""
    out: dict[str, list[Obj]] = {}
    for kind, plural in ((rm.KIND, rm.PLURAL), (mv.KIND, mv.PLURAL)):
        out[kind] = list_objects(client, plural=plural, namespace=namespace)
    for kind, ours in _CACHED.items():
        items = _items(
            _call(client, "GET", _of(kind, namespace), query={"labelSelector": OWNED_SELECTOR} if ours else None)
        )
        out[kind] = [_typed(item, kind) for item in items]
    return out


# Reads for `kubectl modelreg` (the `plugin` module): whole objects as plain dicts.


def list_objects(client: ApiClient, *, plural: str, namespace: str | None) -> list[Obj]:
    """Every RegisteredModel or ModelVersion (by `plural`) of a namespace, or of all with None."""
    return _items(_call(client, "GET", _custom(plural, namespace)))


def read_model(client: ApiClient, *, namespace: str, name: str) -> Obj | None:
    return _read(client, _custom(rm.PLURAL, namespace, name))


def read_service_selector(client: ApiClient, *, namespace: str, name: str) -> dict[str, str] | None:
    """The selector of a Service, None when there is no such Service."""
    svc = _read(client, _of("Service", namespace, name))
    return None if svc is None else dict((svc.get("spec") or {}).get("selector") or {})


def list_events_about(client: ApiClient, *, namespace: str, kind: str, names: set[str]) -> list[Obj]:
    """core/v1 Events about objects of `kind` named in `names` (one list call, filtered here)."""
    listed = _call(client, "GET", _of("Event", namespace), query={"fieldSelector": f"involvedObject.kind={kind}"})
    return [e for e in _items(listed) if e.get("involvedObject", {}).get("name") in names]


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
        path = _custom(plural, obj["metadata"]["namespace"], obj["metadata"]["name"], "status")
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        written: Obj = _call(client, "PATCH", path, query=query, body=body, content_type=_APPLY)
    except ApiException as exc:
        if exc.status == 404:  # deleted meanwhile: its status no longer matters
            return None
        if exc.status == 409 and resource_version:
            raise Stale(_reason(exc)) from exc
        raise
    return _resource_version(written)


def _resource_version(obj: Any) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


def clear_status_fields(client: ApiClient, obj: Obj, fields: tuple[str, ...]) -> str | None:
    """Remove status fields whoever owns them (a merge patch with nulls): a
    server-side apply only removes fields its own manager owned."""
    plural = rm.PLURAL if obj["kind"] == rm.KIND else mv.PLURAL
    body = {"status": dict.fromkeys(fields)}
    try:
        path = _custom(plural, obj["metadata"]["namespace"], obj["metadata"]["name"], "status")
        written = _call(client, "PATCH", path, query={"fieldManager": FIELD_MANAGER}, body=body, content_type=_MERGE)
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
    by_label = {"labelSelector": f"modelreg.dev/model={model},app.kubernetes.io/managed-by=modelreg"}
    deps = _items(_call(client, "GET", _of("Deployment", namespace), query=by_label))
    svcs = _items(_call(client, "GET", _of("Service", namespace), query=by_label))
    if autoscaled is None:
        autoscaled = cache.autoscaled(_items(_call(client, "GET", _of("HorizontalPodAutoscaler", namespace))))
    return OwnedObjects(
        deployments={d["metadata"]["name"]: _typed(d, "Deployment") for d in deps},
        services={s["metadata"]["name"]: _typed(s, "Service") for s in svcs},
        autoscaled=autoscaled,
    )


def _typed(obj: Obj, kind: str) -> Obj:
    """A listed object with the kind and apiVersion a LIST leaves out of its items."""
    obj["kind"], obj["apiVersion"] = kind, _BUILTIN[kind][0]
    return obj


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
        sets = _items(_call(client, "GET", _of("ReplicaSet", namespace), query={"labelSelector": labels}))
        pods = _items(_call(client, "GET", _of("Pod", namespace), query={"labelSelector": labels}))
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot read the Pods of %s in %s (%s): grant the operator list on pods and replicasets.apps",
                    labels, namespace, _reason(exc))  # fmt: skip
        return PodsOf(replica_sets=[], pods=[])
    return PodsOf(replica_sets=[_typed(r, "ReplicaSet") for r in sets], pods=[_typed(p, "Pod") for p in pods])


def apply_object(client: ApiClient, namespace: str, obj: Obj) -> str | None:
    """Server-side apply of an owned Deployment or Service; its new resourceVersion.
    Forcing takes back the fields we render (and only those) from whoever changed them."""
    if obj["kind"] not in ("Deployment", "Service"):
        raise ValueError(f"the operator does not own {obj['kind']} objects")
    try:
        path = _of(obj["kind"], namespace, obj["metadata"]["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        written = _call(client, "PATCH", path, query=query, body=obj, content_type=_APPLY)
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None:
            raise refused from exc
        raise
    return _resource_version(written)


_OWNED_KINDS = ("Deployment", "Service", "Job")


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
    if kind not in _OWNED_KINDS:
        raise ValueError(f"the operator does not own {kind} objects")
    try:
        made = _call(client, "POST", _of(kind, namespace), query={"fieldManager": FIELD_MANAGER}, body=obj)
        if created is not None and (version := _resource_version(made)) is not None:
            created.append(version)
        return None
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None:
            raise refused from exc
        if exc.status != 409:
            raise
    taken: Obj = _call(client, "GET", _of(kind, namespace, name))
    return taken


def delete_owned(client: ApiClient, namespace: str, *, kind: str, name: str) -> None:
    """Delete an owned Deployment, Service or Job (the caller checked its owner);
    a Job's Pods go with it."""
    if kind not in _OWNED_KINDS:
        raise ValueError(f"the operator does not own {kind} objects")
    # Services have no dependents; for them the policy is the default anyway.
    try:
        _call(client, "DELETE", _of(kind, namespace, name), query={"propagationPolicy": "Background"})
    except ApiException as exc:
        if exc.status != 404:
            raise


def read_jobs(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The validation Jobs of one model (by label; the caller checks the owner)."""
    selector = f"modelreg.dev/model={model},app.kubernetes.io/managed-by=modelreg"
    return [
        _typed(j, "Job") for j in _items(_call(client, "GET", _of("Job", namespace), query={"labelSelector": selector}))
    ]


def read_validation_pods(client: ApiClient, *, namespace: str, model: str) -> list[Obj]:
    """The Pods of a model's validation Jobs: why a Job that has not finished will
    not (an image that cannot be pulled, no node for it)."""
    selector = f"modelreg.dev/validation={model},app.kubernetes.io/managed-by=modelreg"
    return [
        _typed(p, "Pod") for p in _items(_call(client, "GET", _of("Pod", namespace), query={"labelSelector": selector}))
    ]


@dataclass(frozen=True)
class SecretData:
    labels: dict[str, str]
    data: dict[str, bytes]  # raw bytes: a value need not be text


def read_secret(client: ApiClient, *, namespace: str, name: str) -> SecretData | None:
    """A Secret's labels and decoded data, or None when it does not exist.
    The operator's only read of Secrets; what it may use is decided by the caller."""
    secret = _read(client, _of("Secret", namespace, name))
    if secret is None:
        return None
    labels = dict((secret.get("metadata") or {}).get("labels") or {})
    return SecretData(labels=labels, data={k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()})


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
        _call(client, "POST", _of("Event", meta["namespace"]), body=event)
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
        applied: Obj = _call(client, "PATCH", _custom(mv.PLURAL, namespace, obj["metadata"]["name"]),
                             query={"fieldManager": REGISTER_FIELD_MANAGER}, body=obj, content_type=_APPLY)  # fmt: skip
    except ApiException as exc:
        if (refused := _refusal(exc)) is not None or exc.status == 409:
            raise refused or Refused(_reason(exc)) from exc
        raise
    return applied
