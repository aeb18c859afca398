"""The lifecycle engine: from what was read and gathered, what every status
should say. Pure: no I/O, no clock (the caller passes `now`).

Called by `reconciling` once per reconcile of a RegisteredModel. Its rules are
DESIGN.md's: gates before Staging and Production; exactly one Production
version, the newest passing request winning (ties to the higher version); a
failing request never disturbs the serving version; with serving enabled, the
switch happens only once the new version's rollout is Available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modelreg import gates, statuses
from modelreg.api.common import Stage
from modelreg.api.modelversion import MAX_HISTORY, ArtifactStatus, ModelVersionSpec, ModelVersionStatus, Transition
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, Rollout, RolloutState
from modelreg.versionorder import version_key

ARTIFACT_VERIFIED = "ArtifactVerified"
ROLLED_OUT = "RolledOut"


@dataclass(frozen=True)
class VersionInput:
    name: str
    generation: int
    spec: ModelVersionSpec
    status: ModelVersionStatus
    artifact: ArtifactCheck | None = None  # None: not checked this time; keep what status says
    uid: str = ""


@dataclass(frozen=True)
class ModelInput:
    name: str
    generation: int
    spec: RegisteredModelSpec
    status: RegisteredModelStatus


@dataclass(frozen=True)
class Event:
    kind: str  # "ModelVersion" or "RegisteredModel"
    name: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Plan:
    versions: dict[str, ModelVersionStatus]
    model: RegisteredModelStatus | None
    events: list[Event] = field(default_factory=list)
    production: str | None = None  # object name of the version serving Production
    rolling_out: str | None = None  # object name of the version whose rollout gates the switch
    retry: bool = False  # a transient failure: reconcile again with backoff


@dataclass
class _Work:
    """Per-version scratch state while planning."""

    v: VersionInput
    verdicts: list[gates.Verdict]
    artifact_ok: bool
    artifact_transient: bool
    requested_at: datetime | None
    effective: Stage
    reason: str = ""  # why the effective stage changes, if it does
    note: str = ""  # the same for a person: history and Events
    message: str = ""  # why the version is held, waiting or stalled: conditions
    phase: str = "Ready"
    stalled: str | None = None
    waiting: str | None = None


def plan(
    model: ModelInput | None,
    versions: Sequence[VersionInput],
    *,
    now: datetime,
    rollouts: Mapping[str, Rollout] | None = None,
) -> Plan:
    """Compute every status. `rollouts` is None when nothing is served (the
    switch to a new Production version is then immediate)."""
    # Request times keep sub-second precision, so a request made within the same
    # second as another still counts as newer; everything else is to the second.
    requested_now, now = now, now.replace(microsecond=0)
    ordered = sorted(versions, key=lambda v: v.name)
    by_name = {v.name: v for v in ordered}
    original = _incumbent(ordered)
    if model is None:
        works = {v.name: _start(v, requested_now) for v in ordered}
        for w in works.values():
            _hold(w, "ModelNotFound", f"RegisteredModel {w.v.spec.model!r} does not exist in this namespace")
        return _finish(None, works, production=original.name if original else None, rolling_out=None, now=now)

    # Decide against the serving version; when the decision switches to another
    # version, decide again against that one, until nothing moves. The newest
    # passing request only ever grows, so this ends, and planning on the result
    # again changes nothing.
    serving = original
    for _ in range(len(ordered) + 2):
        works = {v.name: _start(v, requested_now) for v in ordered}
        for w in works.values():
            w.verdicts += _metric_verdicts(w, model.spec, serving)
        winner = _resolve_production(works, serving, rollouts)
        production, rolling_out = _switch(works, serving, winner, rollouts)
        decided = by_name[production] if production else None
        if decided is serving:
            break
        serving = decided
    for w in works.values():
        if w.v.name not in (production, rolling_out) and w.v.spec.stage is not Stage.PRODUCTION:
            _settle_lower_stage(w, was_production=original is not None and w.v.name == original.name)
    return _finish(model, works, production=production, rolling_out=rolling_out, now=now)


def _start(v: VersionInput, now: datetime) -> _Work:
    check = v.artifact
    if check is not None:
        artifact = gates.Verdict(ARTIFACT_VERIFIED, check.ok, check.reason.value, check.message)
        transient = check.transient
    else:
        artifact, transient = _previous_artifact_verdict(v.status)
    requested_at = None
    if v.spec.stage is Stage.PRODUCTION:
        requested_at = v.status.production_requested_at or now
    return _Work(
        v=v,
        verdicts=[artifact],
        artifact_ok=artifact.passed,
        artifact_transient=transient,
        requested_at=requested_at,
        effective=v.status.stage or Stage.DEVELOPMENT,
    )


def _previous_artifact_verdict(status: ModelVersionStatus) -> tuple[gates.Verdict, bool]:
    old = next((c for c in status.conditions if c.type == ARTIFACT_VERIFIED), None)
    if old is None:
        return gates.Verdict(ARTIFACT_VERIFIED, False, "Pending", "the artifact has not been verified yet"), True
    return gates.Verdict(ARTIFACT_VERIFIED, old.status == "True", old.reason, old.message), old.status == "Unknown"


def _incumbent(versions: Sequence[VersionInput]) -> VersionInput | None:
    serving = [v for v in versions if v.status.stage is Stage.PRODUCTION]
    if not serving:
        return None
    # Never more than one by construction; if an older operator left several, keep the newest.
    return max(serving, key=lambda v: (_ts(v.status.production_requested_at), version_key(v.spec.version), v.name))


def _metric_verdicts(w: _Work, spec: RegisteredModelSpec, serving: VersionInput | None) -> list[gates.Verdict]:
    thresholds = gates.check_thresholds(w.v.spec.metrics, spec.promotion.thresholds)
    rule = spec.promotion.compare_to_production
    if rule is not None and serving is not None and serving.name == w.v.name and w.v.spec.stage is Stage.PRODUCTION:
        return [thresholds, gates.serving_itself()]
    if serving is not None and serving.name == w.v.name:
        serving = None  # leaving Production: there is nothing else to compare with
    return [
        thresholds,
        gates.check_against_production(
            w.v.spec.metrics,
            spec.promotion.compare_to_production,
            production_version=serving.spec.version if serving else None,
            production_metrics=serving.spec.metrics if serving else None,
            is_rollback=any(t.stage is Stage.PRODUCTION for t in w.v.status.history),
        ),
    ]


def _gates_pass(w: _Work) -> bool:
    return all(verdict.passed for verdict in w.verdicts)


def _failed_gates(w: _Work) -> list[gates.Verdict]:
    return [verdict for verdict in w.verdicts if not verdict.passed]


def _resolve_production(
    works: dict[str, _Work], incumbent: VersionInput | None, rollouts: Mapping[str, Rollout] | None
) -> _Work | None:
    """The version that should serve Production: the newest passing request
    whose rollout has not failed."""
    failed_now = {name: r.message for name, r in (rollouts or {}).items() if r.state is RolloutState.FAILED}
    candidates = []
    for w in works.values():
        if w.v.spec.stage is not Stage.PRODUCTION:
            continue
        if incumbent is not None and w.v.name == incumbent.name:
            candidates.append(w)  # already serving: gates were for entering, not for staying
        elif _rollout_failed_before(w) or failed_now.get(w.v.name) is not None:
            message = failed_now.get(w.v.name) or _condition_message(w.v.status, ROLLED_OUT)
            _hold(w, "RolloutFailed", message or "the rollout missed its progress deadline", stalled=True)
            w.phase = "Failed"
        elif _gates_pass(w):
            candidates.append(w)
        else:
            _block(w)
    if not candidates:
        return None
    return max(candidates, key=lambda w: (_ts(w.requested_at), version_key(w.v.spec.version), w.v.name))


def _switch(
    works: dict[str, _Work],
    incumbent: VersionInput | None,
    winner: _Work | None,
    rollouts: Mapping[str, Rollout] | None,
) -> tuple[str | None, str | None]:
    """Apply the Production decision; returns (serving version, version rolling out).

    A serving version whose spec left Production keeps serving while another
    version is asked to replace it and cannot yet (rolling out, failed, blocked):
    the endpoint is only ever handed over, never dropped in between.
    """
    serving = incumbent.name if incumbent is not None else None
    demoted = works[serving] if serving and works[serving].v.spec.stage is not Stage.PRODUCTION else None
    if winner is None:
        if demoted is not None:
            if not any(w.v.spec.stage is Stage.PRODUCTION for w in works.values()):
                return None, None  # demoted, and nothing is asked to replace it
            _hold(demoted, "KeptServing", "keeps serving Production: no other version can take over yet")
        return serving, None
    if winner.v.name != serving and rollouts is not None:
        rollout = rollouts.get(winner.v.name, Rollout(RolloutState.PROGRESSING, "waiting for the Deployment"))
        if rollout.state is RolloutState.PROGRESSING:
            winner.phase, winner.waiting = "Promoting", "RolloutInProgress"
            winner.message = rollout.message or "waiting for the new version's Deployment to become Available"
            _supersede_others(works, keep={n for n in (serving, winner.v.name) if n})
            if demoted is not None:
                demoted.phase, demoted.waiting = "HandingOver", "HandingOver"
                demoted.message = f"keeps serving Production until {winner.v.name} is Available"
            return serving, winner.v.name
    _enter(winner, Stage.PRODUCTION)
    _supersede_others(works, keep={winner.v.name})
    return winner.v.name, None


def _supersede_others(works: dict[str, _Work], *, keep: set[str]) -> None:
    for w in works.values():
        if w.v.name in keep or w.v.spec.stage is not Stage.PRODUCTION:
            continue
        lost_its_place = w.effective is Stage.PRODUCTION
        if not lost_its_place and (w.stalled or w.waiting or w.phase == "Blocked"):
            continue  # a failed request keeps its own reason
        w.effective, w.reason = Stage.ARCHIVED, "Superseded"
        w.note = "a newer Production request won; set spec.stage to Archived to acknowledge"
        if w.stalled or w.waiting:
            continue  # it lost its place, and could not get back in anyway: keep saying why
        if lost_its_place and not _gates_pass(w):
            _block(w)
            continue
        w.message = w.note
        w.phase, w.stalled = "Superseded", "Superseded"


def _settle_lower_stage(w: _Work, *, was_production: bool) -> None:
    """Development, Staging and Archived requests (Production is handled by `_switch`)."""
    target = w.v.spec.stage
    gated = target is Stage.STAGING and not was_production and w.effective is not Stage.STAGING
    if gated and not _gates_pass(w):
        _block(w)
        return
    _enter(w, target)


def _enter(w: _Work, stage: Stage) -> None:
    if w.effective is stage:
        return
    previous, w.effective = w.effective, stage
    if w.v.status.stage is None:
        w.reason, w.note = "Registered", f"registered in {stage.value}"
    elif stage is Stage.PRODUCTION:
        rollback = any(t.stage is Stage.PRODUCTION for t in w.v.status.history)
        w.reason = "RolledBack" if rollback else "Promoted"
    elif stage is Stage.ARCHIVED:
        w.reason = "Archived"
    elif _rank(stage) < _rank(previous):
        w.reason = "Demoted"
    else:
        w.reason = "Promoted"
    if w.v.status.stage is not None:
        w.note = f"{previous.value} → {stage.value}"


def _rank(stage: Stage) -> int:
    return [Stage.ARCHIVED, Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION].index(stage)


def _block(w: _Work) -> None:
    failed = _failed_gates(w)
    if w.artifact_transient:
        w.phase, w.waiting = "Waiting", failed[0].reason
        w.message = failed[0].message
        return
    w.phase, w.stalled = "Blocked", failed[0].reason
    w.message = f"cannot enter {w.v.spec.stage.value}: " + "; ".join(f.message for f in failed)


def _hold(w: _Work, reason: str, message: str, *, stalled: bool = True) -> None:
    w.phase = "Blocked"
    w.message = message
    if stalled:
        w.stalled = reason
    else:
        w.waiting = reason


def _rollout_failed_before(w: _Work) -> bool:
    old = next((c for c in w.v.status.conditions if c.type == ROLLED_OUT), None)
    return bool(
        old and old.status == "False" and old.reason == "RolloutFailed" and old.observed_generation == w.v.generation
    )


def _condition_message(status: ModelVersionStatus, type_: str) -> str:
    old = next((c for c in status.conditions if c.type == type_), None)
    return old.message if old else ""


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value else 0.0


# --- writing the statuses -------------------------------------------------------------


def _finish(
    model: ModelInput | None, works: dict[str, _Work], *, production: str | None, rolling_out: str | None, now: datetime
) -> Plan:
    at = statuses.format_time(now)
    events: list[Event] = []
    out: dict[str, ModelVersionStatus] = {}
    for name, w in works.items():
        out[name] = _version_status(w, at=at, now=now, rolling_out=rolling_out, events=events)
    model_status = None
    if model is not None:
        model_status = _model_status(model, works, production=production, at=at, now=now, events=events)
    retry = any(w.artifact_transient and w.v.artifact is not None for w in works.values())
    return Plan(versions=out, model=model_status, events=events, production=production,
                rolling_out=rolling_out, retry=retry)  # fmt: skip


def _version_status(
    w: _Work, *, at: str, now: datetime, rolling_out: str | None, events: list[Event]
) -> ModelVersionStatus:
    old = w.v.status
    prev_conditions = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in old.conditions]
    gen = w.v.generation
    cond = []
    for verdict in w.verdicts:
        state = "True" if verdict.passed else ("Unknown" if verdict.gate == ARTIFACT_VERIFIED and
                                                w.artifact_transient else "False")  # fmt: skip
        cond.append(statuses.condition(prev_conditions, type_=verdict.gate, status=state, reason=verdict.reason,
                                       message=verdict.message, generation=gen, at=at))  # fmt: skip
    if w.v.name == rolling_out or w.phase == "Failed":
        rolled = "False"
        reason = "RolloutFailed" if w.phase == "Failed" else "RolloutInProgress"
        cond.append(statuses.condition(prev_conditions, type_=ROLLED_OUT, status=rolled, reason=reason,
                                       message=w.message, generation=gen, at=at))  # fmt: skip
    elif w.effective is Stage.PRODUCTION:
        cond.append(statuses.condition(prev_conditions, type_=ROLLED_OUT, status="True", reason="Available",
                                       message="serving Production", generation=gen, at=at))  # fmt: skip
    ready = w.effective is w.v.spec.stage and not w.stalled and not w.waiting and w.artifact_ok
    if ready:
        summary_reason, summary = "Ready", f"{w.effective.value}; artifact verified"
    else:
        summary_reason = w.stalled or w.waiting or ("Pending" if not w.artifact_ok else "Reconciling")
        summary = w.message or _first_failure_message(w) or f"effective stage is {w.effective.value}"
    reconciling = not ready and not w.stalled
    cond += [
        statuses.condition(prev_conditions, type_="Ready", status="True" if ready else "False",
                           reason=summary_reason, message=summary, generation=gen, at=at),
        statuses.condition(prev_conditions, type_="Reconciling", status="True" if reconciling else "False",
                           reason=summary_reason if reconciling else "Reconciled",
                           message=summary if reconciling else "", generation=gen, at=at),
        statuses.condition(prev_conditions, type_="Stalled", status="True" if w.stalled else "False",
                           reason=w.stalled or "NotStalled", message=summary if w.stalled else "",
                           generation=gen, at=at),
    ]  # fmt: skip
    history = list(old.history)
    if old.stage is not w.effective:
        reason = w.reason or ("Registered" if old.stage is None else "Changed")
        message = w.note or f"registered in {w.effective.value}"
        history = [*history, Transition(stage=w.effective, time=now.replace(microsecond=0), reason=reason,
                                        message=message)][-MAX_HISTORY:]  # fmt: skip
        events.append(Event("ModelVersion", w.v.name, reason, f"{w.v.spec.model} version {w.v.spec.version}: "
                            f"{message}"))  # fmt: skip
    _gate_events(w, old, cond, events)
    phase = w.phase if not ready else "Ready"
    if not ready and phase == "Ready":
        phase = "Pending" if not w.artifact_ok else "Reconciling"
    return ModelVersionStatus.model_validate(
        {
            "observedGeneration": gen,
            "stage": w.effective,
            "phase": phase,
            "artifact": _artifact_facts(w),
            "productionRequestedAt": w.requested_at,
            "deploymentName": old.deployment_name,
            "history": history,
            "conditions": cond,
        }
    )


def _artifact_facts(w: _Work) -> ArtifactStatus | None:
    check = w.v.artifact
    if check is not None and check.facts is not None:
        return check.facts
    if check is not None and not check.ok and not check.transient:
        return None  # what was verified before no longer holds
    return w.v.status.artifact


def _first_failure_message(w: _Work) -> str:
    failed = _failed_gates(w)
    return failed[0].message if failed else ""


def _gate_events(w: _Work, old: ModelVersionStatus, cond: list[dict[str, object]], events: list[Event]) -> None:
    """A Warning when a gate newly fails (not on every reconcile while it stays failed)."""
    before = {c.type: (c.status, c.reason) for c in old.conditions}
    gate_types = {v.gate for v in w.verdicts} | {ROLLED_OUT}
    for c in cond:
        type_ = str(c["type"])
        if type_ in gate_types and c["status"] == "False" and before.get(type_) != (c["status"], c["reason"]):
            events.append(Event("ModelVersion", w.v.name, str(c["reason"]), str(c["message"]), warning=True))
    if w.stalled == "Superseded" and before.get("Stalled") != ("True", "Superseded"):
        events.append(Event("ModelVersion", w.v.name, "Superseded", w.message, warning=True))


def _model_status(
    model: ModelInput,
    works: dict[str, _Work],
    *,
    production: str | None,
    at: str,
    now: datetime,
    events: list[Event],
) -> RegisteredModelStatus:
    prev = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in model.status.conditions]
    gen = model.generation
    by_name = {w.v.name: w for w in works.values()}
    prod_version = by_name[production].v.spec.version if production else None
    staging = [w for w in works.values() if w.effective is Stage.STAGING]
    staging_version = None
    if staging:
        newest = max(staging, key=lambda w: (_ts(_entered_at(w, now)), version_key(w.v.spec.version)))
        staging_version = newest.v.spec.version
    requests = sorted(w.v.spec.version for w in works.values() if w.v.spec.stage is Stage.PRODUCTION)
    conflict = len(requests) > 1
    pending = [w.v.name for w in works.values() if not w.stalled and (w.waiting or w.effective is not w.v.spec.stage)]
    ready = not pending
    conflict_msg = (f"{len(requests)} versions request Production ({', '.join(requests)}); only "
                    f"{prod_version or 'one'} serves. Set the others to Archived.") if conflict else ""  # fmt: skip
    message = f"Production: {prod_version or 'none'}; {len(works)} versions"
    if pending:
        message = f"waiting for {', '.join(sorted(pending))}"
    cond = [
        statuses.condition(prev, type_="Ready", status="True" if ready else "False",
                           reason="Ready" if ready else "Reconciling", message=message, generation=gen, at=at),
        statuses.condition(prev, type_="Reconciling", status="False" if ready else "True",
                           reason="Reconciled" if ready else "VersionsPending", message="" if ready else message,
                           generation=gen, at=at),
        statuses.condition(prev, type_="Stalled", status="False", reason="NotStalled", message="",
                           generation=gen, at=at),
        statuses.condition(prev, type_="ConflictingProductionRequests", status="True" if conflict else "False",
                           reason="MultipleRequests" if conflict else "NoConflict", message=conflict_msg,
                           generation=gen, at=at),
    ]  # fmt: skip
    old_conflict = next((c for c in model.status.conditions if c.type == "ConflictingProductionRequests"), None)
    if conflict and (old_conflict is None or old_conflict.status != "True"):
        events.append(Event("RegisteredModel", model.name, "ConflictingProductionRequests", conflict_msg, warning=True))
    if prod_version != model.status.production_version and prod_version is not None:
        events.append(Event("RegisteredModel", model.name, "ProductionChanged",
                            f"version {prod_version} serves Production"))  # fmt: skip
    return RegisteredModelStatus.model_validate(
        {
            "observedGeneration": gen,
            "productionVersion": prod_version,
            "stagingVersion": staging_version,
            "versionCount": len(works),
            "endpoint": model.name if model.spec.serving is not None else None,
            "conditions": cond,
        }
    )


def _entered_at(w: _Work, now: datetime) -> datetime | None:
    if w.v.status.stage is not w.effective:
        return now
    for t in reversed(w.v.status.history):
        if t.stage is w.effective:
            return t.time
    return None
