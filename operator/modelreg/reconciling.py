"""One reconcile of one RegisteredModel: read → gather facts → plan → apply.

Called by the workers in `handlers`. This is the only module that combines
I/O (`kube`, `artifacts`) with decisions; the decisions themselves are made
by the pure `lifecycle.plan`. Every write is skipped when the object already
says what the plan says, so a reconcile with nothing to do writes nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client import ApiClient
from pydantic import ValidationError

from modelreg import artifacts, kube, lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionSpec, ModelVersionStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, ArtifactReason

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Context:
    """Long-lived state of the operator process, shared by all reconciles."""

    client: ApiClient
    clock: Callable[[], datetime.datetime] = utcnow
    # A verified artifact is re-checked (one HEAD) at most this often, unless its spec changes.
    recheck_seconds: float = 300.0
    s3_clients: dict[tuple[str | None, ...], Any] = field(default_factory=dict)
    verified: dict[tuple[str, str, int], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    writes: int
    retry: bool


def reconcile_model(ctx: Context, *, namespace: str, model: str) -> Outcome:
    state = kube.read_model_state(ctx.client, namespace=namespace, model=model)
    now = ctx.clock()
    model_in = _model_input(state.model)
    parsed = [(obj, _version_input(obj)) for obj in state.versions]
    inputs = [v for _, v in parsed if v is not None]
    if model_in is not None:
        inputs = _with_artifact_checks(ctx, namespace, model_in, inputs, now)
    plan = lifecycle.plan(model_in, inputs, now=now)

    writes = 0
    objects = {obj["metadata"]["name"]: obj for obj in state.versions}
    for name, desired in plan.versions.items():
        writes += _apply_version_status(ctx, objects[name], desired)
    if state.model is not None and plan.model is not None:
        writes += _apply_model_status(ctx, state.model, plan.model)
    for event in plan.events:
        target = state.model if event.kind == "RegisteredModel" else objects.get(event.name)
        if target is not None:
            kube.post_event(ctx.client, target, reason=event.reason, message=event.message, warning=event.warning)
    return Outcome(writes=writes, retry=plan.retry)


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
    due = [v for v in versions if _check_due(ctx, namespace, v)]
    if not due:
        return versions
    try:
        s3 = _s3_client(ctx, namespace, model)
    except artifacts.ArtifactError as exc:
        failed = ArtifactCheck(exc.reason, str(exc))
        return [_replace(v, failed) if v in due else v for v in versions]
    out = []
    for v in versions:
        if v in due:
            check = artifacts.verify(
                s3, v.spec.artifact.uri, expected_sha256=v.spec.artifact.sha256, previous=v.status.artifact, now=now
            )
            if check.ok:
                ctx.verified[(namespace, v.name, v.generation)] = time.monotonic()
            v = _replace(v, check)
        out.append(v)
    return out


def _replace(v: lifecycle.VersionInput, check: ArtifactCheck) -> lifecycle.VersionInput:
    return lifecycle.VersionInput(name=v.name, generation=v.generation, spec=v.spec, status=v.status, artifact=check)


def _check_due(ctx: Context, namespace: str, v: lifecycle.VersionInput) -> bool:
    if v.spec.stage is Stage.ARCHIVED and v.status.stage is Stage.ARCHIVED:
        return False  # nothing will be deployed from it
    last = ctx.verified.get((namespace, v.name, v.generation))
    return last is None or time.monotonic() - last > ctx.recheck_seconds


def _s3_client(ctx: Context, namespace: str, model: lifecycle.ModelInput) -> Any:
    storage = model.spec.storage
    endpoint = storage.endpoint if storage else None
    region = storage.region if storage else None
    access = secret = None
    if storage and storage.credentials_secret:
        ref = storage.credentials_secret
        data = kube.read_secret(ctx.client, namespace=namespace, name=ref.name)
        if data is None:
            raise artifacts.ArtifactError(
                ArtifactReason.STORAGE_MISCONFIGURED, f"Secret {ref.name!r} (spec.storage.credentialsSecret) is missing"
            )
        access, secret = data.get(ref.access_key_id_key), data.get(ref.secret_access_key_key)
        if not access or not secret:
            raise artifacts.ArtifactError(
                ArtifactReason.STORAGE_MISCONFIGURED,
                f"Secret {ref.name!r} lacks {ref.access_key_id_key!r} or {ref.secret_access_key_key!r}",
            )
    # Keyed by a hash of the secret too, so a rotated Secret gets a fresh client.
    fingerprint = hashlib.sha256(secret.encode()).hexdigest() if secret else None
    key = (endpoint, region, access, fingerprint)
    if key not in ctx.s3_clients:
        ctx.s3_clients[key] = artifacts.new_s3_client(
            endpoint=endpoint, region=region, access_key=access, secret_key=secret
        )
    return ctx.s3_clients[key]


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
