"""One reconcile of one RegisteredModel: read → gather facts → plan → apply.

Called by the workers in `handlers`. This module combines I/O (`kube`, and
artifact checks through `verifying`, which runs them on threads of its own)
with decisions; the decisions themselves are made by the pure `lifecycle.plan`.
Every write is skipped when the object already says what the plan says, so a
reconcile with nothing to do writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client import ApiClient
from pydantic import ValidationError

from modelreg import kube, lifecycle, serving, verifying
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionSpec, ModelVersionStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus, Serving
from modelreg.drift import find_drift
from modelreg.facts import Rollout

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Context:
    """Long-lived state of the operator process, shared by all reconciles."""

    client: ApiClient
    clock: Callable[[], datetime.datetime] = utcnow
    operator_image: str = serving.DEFAULT_OPERATOR_IMAGE
    # Artifact checks, their schedule, storage policy and S3 clients (runs its own threads).
    verifier: verifying.Verifier = field(default_factory=verifying.Verifier)


@dataclass(frozen=True)
class Outcome:
    writes: int
    retry: bool


def reconcile_model(ctx: Context, *, namespace: str, model: str) -> Outcome:
    state = kube.read_model_state(ctx.client, namespace=namespace, model=model)
    owned = kube.read_owned(ctx.client, namespace=namespace, model=model)
    now = ctx.clock()
    model_in = _model_input(state.model)
    parsed = [(obj, _version_input(obj)) for obj in state.versions]
    inputs = [v for _, v in parsed if v is not None]
    if model_in is not None:
        inputs = _with_artifact_checks(ctx, namespace, model_in, inputs, now)
    served = model_in.spec.serving if model_in is not None else None
    rollouts = _rollouts(model, served, inputs, owned) if served is not None else None
    plan = lifecycle.plan(model_in, inputs, now=now, rollouts=rollouts)

    writes = 0
    objects = {obj["metadata"]["name"]: obj for obj in state.versions}
    deployed: dict[str, str] = {}
    events = list(plan.events)
    if state.model is None or (model_in is not None and served is None):
        for name in owned.deployments:  # the model, or its serving spec, is gone: so is what served it
            kube.delete_deployment(ctx.client, namespace, name)
            writes += 1
    elif model_in is not None:  # (a spec we cannot read leaves serving as it is)
        changed, deployed, drift_events = _apply_serving(ctx, namespace, state.model, model_in, inputs, plan, owned)
        writes += changed
        events += drift_events
    for name, desired in plan.versions.items():
        desired = desired.model_copy(update={"deployment_name": deployed.get(name)})
        writes += _apply_version_status(ctx, objects[name], desired)
    if state.model is not None and plan.model is not None:
        writes += _apply_model_status(ctx, state.model, plan.model)
    for event in events:
        target = state.model if event.kind == "RegisteredModel" else objects.get(event.name)
        if target is not None:
            kube.post_event(ctx.client, target, reason=event.reason, message=event.message, warning=event.warning)
    return Outcome(writes=writes, retry=plan.retry or plan.rolling_out is not None)


def _rollouts(
    model: str, served: Serving, inputs: list[lifecycle.VersionInput], owned: kube.OwnedObjects
) -> dict[str, Rollout]:
    out = {}
    for v in inputs:
        name = serving.deployment_name(model, v.spec.version)
        live = owned.deployments.get(name)
        if live is not None:
            # An autoscaler decides the count; then one available Pod per its count is the bar.
            want = 1 if name in owned.autoscaled else served.replicas
            out[v.name] = serving.rollout_of(live, want_replicas=want)
    return out


def _apply_serving(
    ctx: Context,
    namespace: str,
    model_obj: Obj,
    model_in: lifecycle.ModelInput,
    inputs: list[lifecycle.VersionInput],
    plan: lifecycle.Plan,
    owned: kube.OwnedObjects,
) -> tuple[int, dict[str, str], list[lifecycle.Event]]:
    """Apply the Services first (they switch only to a version already
    Available), then Deployments, then deletions; repair and report drift."""
    served = model_in.spec.serving
    assert served is not None
    placements = {v.name: _placement(v, plan.versions[v.name]) for v in inputs}
    storage = model_in.spec.storage
    ref = storage.credentials_secret if storage else None
    desired = serving.plan_serving(
        model=model_in.name,
        model_uid=model_obj["metadata"]["uid"],
        serving=served,
        storage=serving.StorageEnv(
            endpoint=storage.endpoint if storage else None,
            region=storage.region if storage else None,
            secret_name=ref.name if ref else None,
            access_key_id_key=ref.access_key_id_key if ref else "AWS_ACCESS_KEY_ID",
            secret_access_key_key=ref.secret_access_key_key if ref else "AWS_SECRET_ACCESS_KEY",
        ),
        versions=placements,
        production=plan.production,
        rolling_out=plan.rolling_out,
        existing=set(owned.deployments),
        autoscaled=owned.autoscaled,
        retention=model_in.spec.retention.archived_deployments,
        operator_image=ctx.operator_image,
    )
    writes, events = 0, []
    by_deployment = {serving.deployment_name(model_in.name, v.spec.version): v for v in inputs}
    for obj in desired.services + desired.deployments:
        name = obj["metadata"]["name"]
        live = (owned.services if obj["kind"] == "Service" else owned.deployments).get(name)
        obj = _stamped(obj)
        drift = find_drift(_comparable(obj), live) if live is not None else []
        if live is not None and not drift:
            continue
        kube.apply_object(ctx.client, namespace, obj)
        writes += 1
        owner = by_deployment.get(name)
        kind, target = ("ModelVersion", owner.name) if owner else ("RegisteredModel", model_in.name)
        if live is None and _existed_before(obj, owner, model_in):
            events.append(lifecycle.Event(kind, target, "Recreated", f"{obj['kind']} {name} was deleted; recreated",
                                          warning=True))  # fmt: skip
        elif live is not None and _annotation(live) == _annotation(obj):
            message = f"{obj['kind']} {name} was changed ({', '.join(drift[:5])}); restored"
            events.append(lifecycle.Event(kind, target, "DriftRepaired", message, warning=True))
    for name in desired.delete:
        kube.delete_deployment(ctx.client, namespace, name)
        writes += 1
    deployed = {
        by_deployment[d["metadata"]["name"]].name: d["metadata"]["name"]
        for d in desired.deployments
        if d["metadata"]["name"] in by_deployment
    }
    return writes, deployed, events


_HASH_ANNOTATION = "modelreg.dev/applied-hash"


def _stamped(obj: Obj) -> Obj:
    """The object with a hash of itself, so a later reconcile can tell our own
    changes (the hash differs) from somebody else's (it still matches)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"] | {"annotations": {_HASH_ANNOTATION: digest}}
    return obj | {"metadata": meta}


def _annotation(obj: Obj) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(_HASH_ANNOTATION)


def _comparable(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _existed_before(obj: Obj, owner: lifecycle.VersionInput | None, model_in: lifecycle.ModelInput) -> bool:
    if owner is not None:
        return bool(owner.status.deployment_name == obj["metadata"]["name"])
    return model_in.status.endpoint is not None


def _placement(v: lifecycle.VersionInput, status: ModelVersionStatus) -> serving.Placement:
    digest = (status.artifact.digest if status.artifact else None) or ""
    ref = None
    if digest.startswith("sha256:"):
        ref = serving.VersionRef(
            name=v.name,
            uid=v.uid,
            version=v.spec.version,
            uri=v.spec.artifact.uri,
            digest=digest.removeprefix("sha256:"),
        )
    since = next((t.time.timestamp() for t in reversed(status.history) if t.stage is status.stage), 0.0)
    return serving.Placement(ref=ref, stage=status.stage or Stage.DEVELOPMENT, since=since)


def _model_input(obj: Obj | None) -> lifecycle.ModelInput | None:
    if obj is None:
        return None
    meta = obj["metadata"]
    try:
        spec = RegisteredModelSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:  # the CRD schema should have refused it; never crash on it
        log.error("RegisteredModel %s/%s has an invalid spec: %s", meta["namespace"], meta["name"], exc)
        return None
    return lifecycle.ModelInput(
        name=meta["name"], generation=meta.get("generation", 0), spec=spec, status=_status(RegisteredModelStatus, obj)
    )


def _version_input(obj: Obj) -> lifecycle.VersionInput | None:
    meta = obj["metadata"]
    try:
        spec = ModelVersionSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        log.error("ModelVersion %s/%s has an invalid spec: %s", meta["namespace"], meta["name"], exc)
        return None
    return lifecycle.VersionInput(
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation", 0),
        spec=spec,
        status=_status(ModelVersionStatus, obj),
    )


S = TypeVar("S", RegisteredModelStatus, ModelVersionStatus)


def _status(cls: type[S], obj: Obj) -> S:
    try:
        return cls.model_validate(obj.get("status") or {})
    except ValidationError:
        return cls()  # a status we cannot read is one we rebuild


def _with_artifact_checks(
    ctx: Context,
    namespace: str,
    model: lifecycle.ModelInput,
    versions: list[lifecycle.VersionInput],
    now: datetime.datetime,
) -> list[lifecycle.VersionInput]:
    """Each version with the latest verification result `verifying` has for it
    (None: none fresh; the engine keeps what status says). Checks run apart."""
    checks = ctx.verifier.checks(ctx.client, namespace=namespace, model=model, versions=versions, now=now)
    return [dataclasses.replace(v, artifact=checks.get(v.name)) for v in versions]


def _apply_version_status(ctx: Context, obj: Obj, desired: ModelVersionStatus) -> int:
    if _status(ModelVersionStatus, obj) == desired and _observed(obj):
        return 0
    kube.apply_status(ctx.client, obj, _dump(desired))
    return 1


def _apply_model_status(ctx: Context, obj: Obj, desired: RegisteredModelStatus) -> int:
    if _status(RegisteredModelStatus, obj) == desired and _observed(obj):
        return 0
    kube.apply_status(ctx.client, obj, _dump(desired))
    return 1


def _observed(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation"))


def _dump(status: RegisteredModelStatus | ModelVersionStatus) -> Obj:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
