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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client import ApiClient
from pydantic import ValidationError

from modelreg import cache, kube, lifecycle, serving, tampering, troubles, validating, verifying
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionSpec, ModelVersionStatus, ValidationResult
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus, Serving
from modelreg.drift import find_drift
from modelreg.facts import Rollout, RolloutState, ValidationCheck

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
    # (namespace, model) → owned-object name → why it could not be written (a name
    # another owner holds, or the API server's refusal). Read by the next reconcile:
    # a failed rollout for a Deployment, a Stalled model. Lost on restart, and
    # found again by the first write attempt.
    refused: dict[tuple[str, str], dict[str, Refusal]] = field(default_factory=dict)
    # The watched objects (fed by `handlers`); a reconcile reads them instead of
    # the API once warm, and records its writes in it (see `cache` for why that is safe).
    cache: cache.Cache = field(default_factory=cache.Cache)


@dataclass(frozen=True)
class Outcome:
    writes: int
    retry: bool
    # The version statuses as read (forgeries undone) and as written, for `metrics`.
    before: dict[str, ModelVersionStatus] = field(default_factory=dict)
    after: dict[str, ModelVersionStatus] | None = None
    now: datetime.datetime | None = None
    # Seconds spent in each step, in order (`Laps`): logged at debug level by
    # `handlers`, read by bench/stage_change_latency.py to say where the time goes.
    laps: dict[str, float] = field(default_factory=dict)
    # The cache's stamp this reconcile planned from, when it ended settled: read
    # only from the cache, wrote nothing, needs no retry and depends on nothing the
    # cache does not hold (Pods, a name another owner holds, a validation Job under
    # way). Re-planning from the same stamp would give the same answer; what time
    # alone changes has timers of its own (see `handlers._resync`). None otherwise.
    settled_at: cache.Stamp | None = None


class Laps:
    """Wall-clock time per step of one reconcile: `lap(name)` closes the step
    that ran since the previous lap."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self._last
        self._last = now


@dataclass(frozen=True)
class Reads:
    """What a reconcile starts from: the cache's snapshot, or the API's answers."""

    state: kube.ModelState
    owned: kube.OwnedObjects
    jobs: list[Obj] | None  # None: read from the API if needed
    cached: bool
    stamp: cache.Stamp | None = None  # the cache's, when read from it


def read(ctx: Context, *, namespace: str, model: str) -> Reads:
    """From the cache when it can be trusted for this model (`cache.Cache.snapshot`), else from the API."""
    snap = ctx.cache.snapshot((namespace, model))
    if snap is not None:
        return Reads(state=kube.ModelState(model=snap.model, versions=snap.versions),
                     owned=kube.OwnedObjects(deployments=snap.deployments, services=snap.services,
                                             autoscaled=snap.autoscaled),
                     jobs=snap.jobs, cached=True, stamp=snap.stamp)  # fmt: skip
    state = kube.read_model_state(ctx.client, namespace=namespace, model=model)
    owned = kube.read_owned(ctx.client, namespace=namespace, model=model, autoscaled=ctx.cache.autoscaled_in(namespace))
    jobs = None
    if unconfirmed := ctx.cache.unconfirmed_kinds((namespace, model)):
        # What the API returned settles which primed objects still exist (see `cache`).
        read = {
            cache.MODEL: {model} if state.model is not None else set(),
            cache.VERSION: {v["metadata"]["name"] for v in state.versions},
            cache.DEPLOYMENT: set(owned.deployments),
            cache.SERVICE: set(owned.services),
        }
        if cache.JOB in unconfirmed:
            jobs = kube.read_jobs(ctx.client, namespace=namespace, model=model)
            read[cache.JOB] = {j["metadata"]["name"] for j in jobs}
        ctx.cache.settle((namespace, model), read)
    return Reads(state=state, owned=owned, jobs=jobs, cached=False)


def _wrote(ctx: Context, namespace: str, model: str, kind: str, name: str, resource_version: str | None) -> None:
    """Record a write (None: a deletion), so the cache is not read for this model before it shows it."""
    ctx.cache.expect((namespace, model), kind, name, resource_version)


def reconcile_model(ctx: Context, *, namespace: str, model: str) -> Outcome:
    laps = Laps()
    reads = read(ctx, namespace=namespace, model=model)
    state, owned = reads.state, reads.owned
    now = ctx.clock()
    model_in = _model_input(state.model)
    parsed = [(obj, _version_input(obj)) for obj in state.versions]
    inputs = [v for _, v in parsed if v is not None]
    forged = _forgeries(state.versions, inputs)
    inputs = [dataclasses.replace(v, status=forged[v.name][0]) if v.name in forged else v for v in inputs]
    job_writes = 0
    laps.lap("read")
    if model_in is not None:
        inputs = _with_artifact_checks(ctx, namespace, model_in, inputs, now)
        laps.lap("verify")
        inputs, job_writes = _with_validations(ctx, namespace, model_in, inputs, owned, now, reads.jobs)
    served = model_in.spec.serving if model_in is not None else None
    refusals = {name: r.message for name, r in ctx.refused.get((namespace, model), {}).items()}
    rollouts, unsettled = None, False
    pods_say: dict[str, troubles.Trouble | None] = {}
    if served is not None:
        pods_say = _pod_troubles(ctx, namespace, model, inputs, owned)
        rollouts = _rollouts(model, served, inputs, owned, refusals, pods_say, now=now)
        # Pods change without their Deployment changing (a crash loop begins): look
        # again soon, not at the next resync, while a rollout may still get stuck.
        deployments = {v.name: serving.deployment_name(model, v.spec.version) for v in inputs}
        unsettled = any(deployments[n] in pods_say and r.state is RolloutState.PROGRESSING for n, r in rollouts.items())
    laps.lap("facts")
    plan = lifecycle.plan(model_in, inputs, now=now, rollouts=rollouts, refusals=sorted(refusals.values()))
    before = {v.name: v.status for v in inputs}
    inputs = [v for v in inputs if v.name not in lifecycle.duplicates(inputs)]  # never deployed
    laps.lap("plan")

    writes = job_writes
    objects = {obj["metadata"]["name"]: obj for obj in state.versions}
    deployed: dict[str, str] = {}
    events = list(plan.events) + [
        lifecycle.Event("ModelVersion", name, "StatusRestored", message, warning=True)
        for name, (_, message) in forged.items()
    ]
    offline = state.model is None or (model_in is not None and served is None)
    if not offline and state.model is not None and model_in is not None:  # (an unreadable spec: left as is)
        changed, deployed, drift_events = _apply_serving(
            ctx, namespace, state.model, model_in, inputs, plan, owned, rollouts
        )
        writes += changed
        events += drift_events
        laps.lap("serving")
    for name in _status_write_order(plan, objects):
        desired = plan.versions[name].model_copy(update={"deployment_name": deployed.get(name)})
        obj = objects[name]
        if name in forged:
            # An apply cannot remove fields another writer owns; clear them first.
            cleared = kube.clear_status_fields(ctx.client, obj, tampering.REMEMBERED)
            _wrote(ctx, namespace, model, cache.VERSION, name, cleared)
            writes += 1
            # The apply that follows is conditional on the version the clearing made.
            obj = obj | {"metadata": obj["metadata"] | {"resourceVersion": cleared}}
        writes += _apply_version_status(ctx, obj, desired, model=model)
    laps.lap("version_status")
    if offline:
        # The model, or its serving spec, is gone: so is what served it (taking a
        # model offline on purpose), after the statuses stopped saying Production.
        writes += _delete_serving(ctx, namespace, model=model, model_exists=state.model is not None,
                                  inputs=inputs, owned=owned)  # fmt: skip
        laps.lap("serving")
    if state.model is not None and plan.model is not None:
        writes += _apply_model_status(ctx, state.model, plan.model, model=model)
    laps.lap("model_status")
    for event in events:
        target = state.model if event.kind == "RegisteredModel" else objects.get(event.name)
        if target is not None:
            kube.post_event(ctx.client, target, reason=event.reason, message=event.message, warning=event.warning)
    laps.lap("events")
    # A refusal found (or cleared) by this reconcile reaches status in the next one.
    changed = refusals != {name: r.message for name, r in ctx.refused.get((namespace, model), {}).items()}
    retry = plan.retry or plan.rolling_out is not None or changed or unsettled
    settled = (
        reads.stamp is not None
        and not retry
        and writes == 0
        and not events
        and not pods_say  # every Deployment fully available: no Pod was read
        and not ctx.refused.get((namespace, model))  # e.g. a name held by an object not watched
        and not _validation_running(inputs)  # its Pods are read, not watched
    )
    return Outcome(writes=writes, retry=retry, before=before, after=dict(plan.versions), now=now,
                   settled_at=reads.stamp if settled else None, laps=laps.steps)  # fmt: skip


def _validation_running(inputs: list[lifecycle.VersionInput]) -> bool:
    return any(v.status.validation is not None and v.status.validation.result is ValidationResult.RUNNING
               for v in inputs)  # fmt: skip


def _delete_serving(
    ctx: Context,
    namespace: str,
    *,
    model: str,
    model_exists: bool,
    inputs: list[lifecycle.VersionInput],
    owned: kube.OwnedObjects,
) -> int:
    """Delete the model's Deployments and Services; only those whose controlling
    owner is the model or one of its versions (labels alone prove nothing)."""
    owners = {("ModelVersion", v.name) for v in inputs}
    if model_exists:
        owners.add(("RegisteredModel", model))
    writes = 0
    for kind, objs in (("Deployment", owned.deployments), ("Service", owned.services)):
        for name, live in objs.items():
            if _controller(live) in owners:
                kube.delete_owned(ctx.client, namespace, kind=kind, name=name)
                _wrote(ctx, namespace, model, kind, name, None)
                writes += 1
    return writes


def _forgeries(objects: list[Obj], inputs: list[lifecycle.VersionInput]) -> dict[str, tuple[ModelVersionStatus, str]]:
    """Versions whose remembered status fields somebody else wrote: name → the
    status to believe, and what was wrong (see `tampering`)."""
    by_name = {obj["metadata"]["name"]: obj for obj in objects}
    return {v.name: found for v in inputs if (found := tampering.restore(by_name[v.name], v.status)) is not None}


def _status_write_order(plan: lifecycle.Plan, objects: dict[str, Obj]) -> list[str]:
    """Version statuses are separate writes, so their order is what a reader can
    see in between: the version leaving Production is written first and the one
    entering it last. A watcher may see no Production for the moment between
    the two writes, never two (the Service has switched before either write)."""

    def rank(name: str) -> int:
        was = (objects[name].get("status") or {}).get("stage") == Stage.PRODUCTION.value
        now = plan.versions[name].stage is Stage.PRODUCTION
        return 0 if was and not now else 2 if now and not was else 1

    return sorted(plan.versions, key=lambda name: (rank(name), name))


def _renamed(
    model: str,
    inputs: list[lifecycle.VersionInput],
    owned: kube.OwnedObjects,
    desired: list[Obj],
    rollouts: dict[str, Rollout],
) -> list[str]:
    """Deployments of our versions under a name the operator no longer renders (an
    older naming rule): deleted once the version's Deployment under its current
    name is Available, or at once when that one is not wanted at all. Their Pods
    carry the same labels, so the Service selects both while the new one starts."""
    wanted = {d["metadata"]["name"] for d in desired}
    by_name = {v.name: v for v in inputs}
    out = []
    for name, live in owned.deployments.items():
        kind, owner = _controller(live) or ("", "")
        if kind != "ModelVersion" or owner not in by_name or name in wanted:
            continue
        current = serving.deployment_name(model, by_name[owner].spec.version)
        if current == name:
            continue  # the plan decides about it
        rollout = rollouts.get(owner)
        if current not in wanted or (rollout is not None and rollout.state is RolloutState.AVAILABLE):
            out.append(name)
    return out


def _controller(obj: Obj) -> tuple[str, str] | None:
    """Kind and name of an object's controller. Not its uid: a ModelVersion
    re-created from Git (same name, new uid) adopts what its predecessor ran."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next(((r.get("kind", ""), r.get("name", "")) for r in refs if r.get("controller")), None)


def _pod_troubles(
    ctx: Context, namespace: str, model: str, inputs: list[lifecycle.VersionInput], owned: kube.OwnedObjects
) -> dict[str, troubles.Trouble | None]:
    """Deployment name → what its Pods say (None: nothing wrong yet), for the
    versions' Deployments that are not fully available: only those cost a read,
    so a settled model costs none."""
    out: dict[str, troubles.Trouble | None] = {}
    for v in inputs:
        name = serving.deployment_name(model, v.spec.version)
        live = owned.deployments.get(name)
        if live is None or name in out or serving.fully_available(live):
            continue
        selector = ((live.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        available, wanted = (live.get("status") or {}).get("availableReplicas", 0), live["spec"].get("replicas")
        log.debug("reading the Pods of %s: %s of %s replicas available", name, available, wanted)
        read = kube.read_pods(ctx.client, namespace=namespace, selector=selector)
        out[name] = troubles.pod_trouble(troubles.current_pods(live, read.replica_sets, read.pods))
    return out


def _rollouts(
    model: str,
    served: Serving,
    inputs: list[lifecycle.VersionInput],
    owned: kube.OwnedObjects,
    refusals: dict[str, str],
    pod_troubles: dict[str, troubles.Trouble | None] | None = None,
    *,
    now: datetime.datetime,
) -> dict[str, Rollout]:
    out = {}
    for v in inputs:
        name = serving.deployment_name(model, v.spec.version)
        live = owned.deployments.get(name)
        if name in refusals:
            out[v.name] = Rollout(RolloutState.FAILED, refusals[name])
        elif live is not None:
            # With an autoscaler, its minimum is the capacity the switch waits for.
            want = owned.autoscaled.get(name, served.replicas)
            # A version to take over is timed from its request (see serving.rollout_of).
            taking_over = v.spec.stage is Stage.PRODUCTION and v.status.stage is not Stage.PRODUCTION
            out[v.name] = serving.rollout_of(live, want_replicas=want, trouble=(pod_troubles or {}).get(name),
                                             requested_at=v.status.production_requested_at if taking_over else None,
                                             now=now)  # fmt: skip
    return out


def _apply_serving(
    ctx: Context,
    namespace: str,
    model_obj: Obj,
    model_in: lifecycle.ModelInput,
    inputs: list[lifecycle.VersionInput],
    plan: lifecycle.Plan,
    owned: kube.OwnedObjects,
    rollouts: dict[str, Rollout] | None,
) -> tuple[int, dict[str, str], list[lifecycle.Event]]:
    """Apply the Deployments that scale up, then the Services (they switch only to a
    version already Available), then the other Deployments, then deletions
    (`_serving_write_order`); repair and report drift."""
    desired = _desired_serving(model_obj, model_in, inputs, plan, owned, operator_image=ctx.operator_image)
    writes, events = 0, []
    by_deployment = {serving.deployment_name(model_in.name, v.spec.version): v for v in inputs}
    refused = ctx.refused.setdefault((namespace, model_in.name), {})
    storage_refusal = ctx.verifier.storage_refusal(ctx.client, namespace=namespace, model=model_in)
    for obj in _serving_write_order(desired.services, desired.deployments, owned.deployments):
        name = obj["metadata"]["name"]
        live = (owned.services if obj["kind"] == "Service" else owned.deployments).get(name)
        obj = _stamped(obj)
        owner = by_deployment.get(name)
        kind, target = ("ModelVersion", owner.name) if owner else ("RegisteredModel", model_in.name)
        if name in refused and refused[name].stamp == _annotation(obj):
            continue  # refused as it is: try again only once what we render changes
        if obj["kind"] == "Deployment" and storage_refusal is not None:
            # Never hand a Pod an endpoint or Secret the operator may not use itself
            # (a confused deputy); what runs keeps running as it is.
            outcome, detail = "storage", f"Deployment {name} is not written: {storage_refusal}"
        else:
            outcome, detail = _put(ctx, namespace, obj, live, model=model_in.name)
        if outcome in ("conflict", "refused", "storage"):
            if name not in refused or refused[name].message != detail:
                reason = "NameConflict" if outcome == "conflict" else "ServingRefused"
                events.append(lifecycle.Event(kind, target, reason, detail, warning=True))
            refused[name] = Refusal(stamp=_annotation(obj) if outcome == "refused" else None, message=detail)
            continue
        refused.pop(name, None)
        if outcome == "unchanged":
            continue
        writes += 1
        if outcome == "created" and _existed_before(obj, owner, model_in):
            message = f"{obj['kind']} {name} was deleted; recreated"
            events.append(lifecycle.Event(kind, target, "Recreated", message, warning=True))
        elif outcome == "repaired":
            events.append(lifecycle.Event(kind, target, "DriftRepaired", detail, warning=True))
    for name in desired.delete + _renamed(model_in.name, inputs, owned, desired.deployments, rollouts or {}):
        if _controller(owned.deployments[name]) in {("ModelVersion", v.name) for v in inputs}:
            kube.delete_owned(ctx.client, namespace, kind="Deployment", name=name)
            _wrote(ctx, namespace, model_in.name, cache.DEPLOYMENT, name, None)
            writes += 1
    deployed = {
        by_deployment[d["metadata"]["name"]].name: d["metadata"]["name"]
        for d in desired.deployments
        if d["metadata"]["name"] in by_deployment
    }
    return writes, deployed, events


def _desired_serving(
    model_obj: Obj,
    model_in: lifecycle.ModelInput,
    inputs: list[lifecycle.VersionInput],
    plan: lifecycle.Plan,
    owned: kube.OwnedObjects,
    *,
    operator_image: str,
) -> serving.ServingPlan:
    served = model_in.spec.serving
    assert served is not None
    placements = {v.name: _placement(v, plan.versions[v.name]) for v in inputs}
    return serving.plan_serving(
        model=model_in.name,
        model_uid=model_obj["metadata"]["uid"],
        serving=served,
        storage=_storage_env(model_in),
        versions=placements,
        production=plan.production,
        rolling_out=plan.rolling_out,
        staging=plan.staging,
        existing=set(owned.deployments),
        autoscaled=owned.autoscaled,
        retention=model_in.spec.retention.archived_deployments,
        operator_image=operator_image,
    )


def _serving_write_order(services: list[Obj], deployments: list[Obj], live: dict[str, Obj]) -> list[Obj]:
    """Deployments that gain replicas first (a promotion's scale-up is the first write
    after the request, so the rollout starts a write earlier), then the Services,
    then every other Deployment. Safe: adding Pods takes no endpoint away, and a
    Service only ever switches to a version the plan saw Available; what shrinks
    or goes still waits until the Services have moved off it."""

    def grows(obj: Obj) -> bool:
        want = (obj.get("spec") or {}).get("replicas")
        current = live.get(obj["metadata"]["name"])
        have = ((current or {}).get("spec") or {}).get("replicas", 0) if current is not None else 0
        return isinstance(want, int) and want > (have or 0)

    first = [d for d in deployments if grows(d)]
    return first + services + [d for d in deployments if not grows(d)]


def _storage_env(model_in: lifecycle.ModelInput) -> serving.StorageEnv:
    """How Pods that fetch the artifact (serving, validation) reach the store."""
    storage = model_in.spec.storage
    ref = storage.credentials_secret if storage else None
    return serving.StorageEnv(
        endpoint=storage.endpoint if storage else None,
        region=storage.region if storage else None,
        secret_name=ref.name if ref else None,
        access_key_id_key=ref.access_key_id_key if ref else "AWS_ACCESS_KEY_ID",
        secret_access_key_key=ref.secret_access_key_key if ref else "AWS_SECRET_ACCESS_KEY",
    )


def _with_validations(
    ctx: Context,
    namespace: str,
    model_in: lifecycle.ModelInput,
    inputs: list[lifecycle.VersionInput],
    owned: kube.OwnedObjects,
    now: datetime.datetime,
    cached_jobs: list[Obj] | None = None,
) -> tuple[list[lifecycle.VersionInput], int]:
    """Each version with where its validation Job stands (`validating.decide`),
    after creating the Jobs it needs and deleting the ones no longer wanted.
    Jobs are read only when the model validates or a Job may still run."""
    template = model_in.spec.promotion.validation
    running = any(v.status.validation and v.status.validation.result is ValidationResult.RUNNING for v in inputs)
    if template is None and not running:
        return inputs, 0
    jobs = (
        cached_jobs if cached_jobs is not None else kube.read_jobs(ctx.client, namespace=namespace, model=model_in.name)
    )
    # Pods say why a running Job is stuck, and what a finished one wrote (its termination
    # message): read them until every Job's outcome is in status.
    recorded = {v.status.validation.key for v in inputs
                if v.status.validation and v.status.validation.result is not ValidationResult.RUNNING}  # fmt: skip
    unsettled = any(not validating.finished(j) or validating.job_key(j) not in recorded for j in jobs)
    pods = kube.read_validation_pods(ctx.client, namespace=namespace, model=model_in.name) if unsettled else []
    setting = _validation_setting(ctx, namespace, model_in, inputs, owned) if template is not None else None
    taken = lifecycle.duplicates(inputs)  # never deployed, never validated
    out, writes = [], 0
    for v in inputs:
        if v.name in taken:
            out.append(v)
            continue
        decision = validating.decide(setting, _validation_view(v), jobs=jobs, pods=pods, now=now)
        check = decision.check
        if decision.create is not None:
            check, created = _create_job(ctx, namespace, model_in, decision.create, check)
            writes += created
        for name in decision.delete:
            kube.delete_owned(ctx.client, namespace, kind="Job", name=name)
            _wrote(ctx, namespace, model_in.name, cache.JOB, name, None)
            writes += 1
        out.append(dataclasses.replace(v, validation=check))
    return out, writes


def _create_job(
    ctx: Context, namespace: str, model_in: lifecycle.ModelInput, job: Obj, check: ValidationCheck | None
) -> tuple[ValidationCheck | None, int]:
    """Create a validation Job. A Job the API server refuses (a quota, a policy) or
    one whose store the operator may not hand out is not recorded as an outcome:
    the gate says why, and the next reconcile tries again."""
    name = job["metadata"]["name"]
    if (refusal := ctx.verifier.storage_refusal(ctx.client, namespace=namespace, model=model_in)) is not None:
        return ValidationCheck(False, "JobRefused", f"validation Job {name} is not created: {refusal}"), 0
    created: list[str] = []
    try:
        taken = kube.create_object(ctx.client, namespace, job, created=created)
    except kube.Refused as exc:
        return ValidationCheck(False, "JobRefused", f"the API server refused validation Job {name}: {exc}"), 0
    if created:
        _wrote(ctx, namespace, model_in.name, cache.JOB, name, created[0])
    # A name taken is our own Job (the name hashes the version and the key): the next reconcile reads it.
    return check, 0 if taken is not None else 1


def _validation_setting(
    ctx: Context,
    namespace: str,
    model_in: lifecycle.ModelInput,
    inputs: list[lifecycle.VersionInput],
    owned: kube.OwnedObjects,
) -> validating.Setting:
    template = model_in.spec.promotion.validation
    assert template is not None
    production = next((v for v in inputs if v.status.stage is Stage.PRODUCTION), None)
    endpoint = None
    service = owned.services.get(serving.service_names(model_in.name)[0])
    if production is not None and service is not None:
        # The ClusterIP works without cluster DNS; the name is what DNS would resolve.
        ip = (service.get("spec") or {}).get("clusterIP")
        host = ip if ip and ip != "None" else f"{model_in.name}.{namespace}.svc"
        endpoint = f"http://{host}:80"
    return validating.Setting(
        namespace=namespace,
        model=model_in.name,
        template=template,
        served=model_in.spec.serving,
        storage=_storage_env(model_in),
        operator_image=ctx.operator_image,
        production_version=production.spec.version if production is not None else None,
        production_endpoint=endpoint,
    )


def _validation_view(v: lifecycle.VersionInput) -> validating.Version:
    """The version as `validating` needs it; the digest only once verified (this
    reconcile's check, or the last one status holds)."""
    if v.artifact is not None:
        verified = v.artifact.ok and v.artifact.facts is not None
        digest = v.artifact.facts.digest if verified and v.artifact.facts else None
    else:
        old = next((c for c in v.status.conditions if c.type == lifecycle.ARTIFACT_VERIFIED), None)
        digest = v.status.artifact.digest if old is not None and old.status == "True" and v.status.artifact else None
    return validating.Version(
        name=v.name,
        uid=v.uid,
        generation=v.generation,
        version=v.spec.version,
        uri=v.spec.artifact.uri,
        metrics=v.spec.metrics,
        stage=v.spec.stage,
        effective=v.status.stage or Stage.DEVELOPMENT,
        served_before=any(t.stage is Stage.PRODUCTION for t in v.status.history),
        digest=digest if digest and digest.startswith("sha256:") else None,
        record=v.status.validation,
    )


@dataclass(frozen=True)
class Refusal:
    """An owned object the operator could not write: a name another owner holds
    (`stamp` None: checked again every reconcile), or an object the API server
    refused (`stamp`: the hash of what was refused, not sent again unchanged)."""

    stamp: str | None
    message: str


def _put(ctx: Context, namespace: str, obj: Obj, live: Obj | None, *, model: str) -> tuple[str, str]:
    """Create, repair or leave one owned object: (outcome, detail), the outcome one
    of created, applied, repaired, unchanged, conflict, refused."""
    name = obj["metadata"]["name"]
    try:
        if live is None:
            # Create, never apply: an apply would take over an object of the same
            # name that another model (or a person) owns.
            created: list[str] = []
            live = kube.create_object(ctx.client, namespace, obj, created=created)
            if live is None:
                _wrote(ctx, namespace, model, obj["kind"], name, created[0] if created else None)
                return "created", ""
        if _controller(live) != _controller(obj):
            holder = "/".join(_controller(live) or ("nobody",))
            return "conflict", (f"{obj['kind']} {name} already exists and belongs to {holder}, not to this "
                                "model; left alone: rename or delete one of them")  # fmt: skip
        drift = find_drift(_comparable(obj), live)
        if not drift:
            return "unchanged", ""
        _wrote(ctx, namespace, model, obj["kind"], name, kube.apply_object(ctx.client, namespace, obj))
    except kube.Refused as exc:
        return "refused", f"the API server refused {obj['kind']} {name} as rendered from spec.serving: {exc}"
    if _annotation(live) == _annotation(obj):  # what we wrote last time was changed by somebody else
        return "repaired", f"{obj['kind']} {name} was changed ({', '.join(drift[:5])}); restored"
    return "applied", ""


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
    created = meta.get("creationTimestamp")
    return lifecycle.VersionInput(
        name=meta["name"],
        uid=meta.get("uid", ""),
        created=datetime.datetime.fromisoformat(created) if isinstance(created, str) else created,
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


def _apply_version_status(ctx: Context, obj: Obj, desired: ModelVersionStatus, *, model: str) -> int:
    if _status(ModelVersionStatus, obj) == desired and _observed(obj):
        return 0
    _apply_status(ctx, obj, _dump(desired), model=model)
    return 1


def _apply_model_status(ctx: Context, obj: Obj, desired: RegisteredModelStatus, *, model: str) -> int:
    if _status(RegisteredModelStatus, obj) == desired and _observed(obj):
        return 0
    _apply_status(ctx, obj, _dump(desired), model=model)
    return 1


def _apply_status(ctx: Context, obj: Obj, status: Obj, *, model: str) -> None:
    """Write a status planned from `obj` only if `obj` is still the current version
    (`kube.Stale` otherwise), and record the write for the cache."""
    meta = obj["metadata"]
    written = kube.apply_status(ctx.client, obj, status, resource_version=meta.get("resourceVersion"))
    if written is None:
        ctx.cache.forget(obj["kind"], meta["namespace"], meta["name"])  # deleted
    else:
        _wrote(ctx, meta["namespace"], model, obj["kind"], meta["name"], written)


def _observed(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation"))


def _dump(status: RegisteredModelStatus | ModelVersionStatus) -> Obj:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- preview: what the next reconcile would write, for `kubectl modelreg diff` ---


@dataclass(frozen=True)
class Change:
    """One write the next reconcile would make."""

    object: str  # kind/name, lower case as kubectl prints it
    action: str  # status, create, update, delete, event, conflict
    detail: str


def preview(
    model_obj: Obj | None, version_objs: list[Obj], owned: kube.OwnedObjects, *, now: datetime.datetime,
    operator_image: str,
) -> list[Change]:  # fmt: skip
    """The writes the next reconcile of one model would make, in its order, from
    what was read and without writing: the same plan and the same rendering as
    `reconcile_model`. Pure. What only the operator learns on its own schedule is
    taken from status as it stands: artifact verdicts, validation results, the
    Pods' troubles, the API server's refusals."""
    model_in = _model_input(model_obj)
    inputs = [v for obj in version_objs if (v := _version_input(obj)) is not None]
    forged = _forgeries(version_objs, inputs)
    inputs = [dataclasses.replace(v, status=forged[v.name][0]) if v.name in forged else v for v in inputs]
    served = model_in.spec.serving if model_in is not None else None
    rollouts = _rollouts(model_in.name, served, inputs, owned, {}, now=now) if model_in and served else None
    plan = lifecycle.plan(model_in, inputs, now=now, rollouts=rollouts, refusals=[])
    inputs = [v for v in inputs if v.name not in lifecycle.duplicates(inputs)]
    changes: list[Change] = []
    offline = model_obj is None or (model_in is not None and served is None)
    if not offline and model_obj is not None and model_in is not None:
        changes += _serving_changes(model_obj, model_in, inputs, plan, owned, rollouts or {}, operator_image)
    objects = {obj["metadata"]["name"]: obj for obj in version_objs}
    before = {v.name: v.status for v in inputs}
    for name in _status_write_order(plan, objects):
        if name in before and (what := _status_change(before[name], plan.versions[name], forged=name in forged)):
            changes.append(Change(f"modelversion/{name}", "status", what))
    if offline:
        owners = {("ModelVersion", v.name) for v in inputs} | (
            {("RegisteredModel", model_in.name)} if model_in else set()
        )
        for kind, objs in (("deployment", owned.deployments), ("service", owned.services)):
            changes += [Change(f"{kind}/{n}", "delete", "the model is offline") for n, live in sorted(objs.items())
                        if _controller(live) in owners]  # fmt: skip
    changes += [Change(f"{e.kind.lower()}/{e.name}", "event", f"{'Warning' if e.warning else 'Normal'} {e.reason}: "
                       f"{e.message}") for e in plan.events]  # fmt: skip
    return changes


def _status_change(before: ModelVersionStatus, after: ModelVersionStatus, *, forged: bool) -> str:
    parts = []
    if before.stage != after.stage:
        parts.append(
            f"stage {before.stage.value if before.stage else '-'} → {after.stage.value if after.stage else '-'}"
        )
    if before.phase != after.phase:
        parts.append(f"phase {before.phase or '-'} → {after.phase or '-'}")
    was = {c.type: (c.status, c.reason) for c in before.conditions}
    for c in after.conditions:
        if was.get(c.type) != (c.status, c.reason):
            old = was.get(c.type)
            parts.append(f"{c.type} {'/'.join(old) if old else '-'} → {c.status}/{c.reason}")
    if forged:
        parts.append("fields written by somebody else restored")
    return ", ".join(parts)


def _serving_changes(
    model_obj: Obj, model_in: lifecycle.ModelInput, inputs: list[lifecycle.VersionInput], plan: lifecycle.Plan,
    owned: kube.OwnedObjects, rollouts: dict[str, Rollout], operator_image: str,
) -> list[Change]:  # fmt: skip
    """`_apply_serving`'s writes, described, in its order (`_serving_write_order`)."""
    desired = _desired_serving(model_obj, model_in, inputs, plan, owned, operator_image=operator_image)
    changes = []
    for obj in _serving_write_order(desired.services, desired.deployments, owned.deployments):
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = (owned.services if kind == "Service" else owned.deployments).get(name)
        ref = f"{kind.lower()}/{name}"
        if live is None:
            changes.append(Change(ref, "create", _describe(obj)))
        elif _controller(live) != _controller(obj):
            changes.append(
                Change(ref, "conflict", f"exists and belongs to {'/'.join(_controller(live) or ('nobody',))}")
            )
        elif drift := find_drift(_comparable(_stamped(obj)), live):
            changes.append(Change(ref, "update", _describe_update(obj, live, drift)))
    wanted = desired.delete + _renamed(model_in.name, inputs, owned, desired.deployments, rollouts)
    ours = {("ModelVersion", v.name) for v in inputs}
    changes += [Change(f"deployment/{n}", "delete", "beyond the retention, or renamed") for n in wanted
                if _controller(owned.deployments[n]) in ours]  # fmt: skip
    return changes


def _describe(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Service":
        return f"selecting version {(spec.get('selector') or {}).get(serving.VERSION_LABEL, '-')}"
    return f"{spec.get('replicas', 1)} replicas"


def _describe_update(obj: Obj, live: Obj, drift: list[str]) -> str:
    """The changes a person cares about by name (replicas, the Service's version);
    the other paths as they are (the hash annotation is bookkeeping, not a change)."""
    spec, was = obj.get("spec") or {}, live.get("spec") or {}
    parts = []
    if obj["kind"] == "Deployment" and spec.get("replicas") != was.get("replicas"):
        parts.append(f"replicas {was.get('replicas')} → {spec.get('replicas')}")
    if obj["kind"] == "Service":
        new, old = ((s.get("selector") or {}).get(serving.VERSION_LABEL) for s in (spec, was))
        if new != old:
            parts.append(f"switch from version {old or '-'} to {new or '-'}")
    skip = (".spec.replicas", ".spec.selector", f".metadata.annotations.{_HASH_ANNOTATION}")
    paths = [p for p in drift if not p.startswith(skip)]
    if paths:
        parts.append("restore " + ", ".join(paths[:5]) + (" …" if len(paths) > 5 else ""))
    return ", ".join(parts) or "refresh"
