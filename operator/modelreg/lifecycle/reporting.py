"""Reporting: the statuses, conditions, history and Events that say what was
decided. Called by `lifecycle.deciding` at the end of a plan. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modelreg import gates, statuses
from modelreg.api.common import Stage
from modelreg.api.modelversion import MAX_HISTORY, ArtifactStatus, ModelVersionStatus, Phase, Transition
from modelreg.api.registeredmodel import MAX_SERVED_ARTIFACTS, BestBy, RegisteredModelStatus, ServedArtifact
from modelreg.lifecycle.records import ARTIFACT_VERIFIED, ROLLED_OUT, Event, ModelInput, Plan, Work, timestamp
from modelreg.versionorder import newest_key


def finish(
    model: ModelInput | None,
    works: dict[str, Work],
    *,
    production: str | None,
    rolling_out: str | None,
    now: datetime,
    refusals: Sequence[str] = (),
) -> Plan:
    at = statuses.format_time(now)
    events: list[Event] = []
    out: dict[str, ModelVersionStatus] = {}
    for name, w in works.items():
        out[name] = _version_status(w, at=at, now=now, rolling_out=rolling_out, events=events)
    in_staging = [w for w in works.values() if w.effective is Stage.STAGING]
    newest = max(in_staging, key=lambda w: newest_key(timestamp(_entered_at(w, now)), w.v.spec.version, w.v.name),
                 default=None)  # fmt: skip
    staging = newest.v.name if newest else None
    model_status = None
    if model is not None:
        model_status = _model_status(model, works, production=production, staging=staging, at=at, events=events,
                                     refusals=refusals, statuses_out=out)  # fmt: skip
    # A gate not known yet is looked at again: a validation Job's Pods are not watched.
    retry = any((w.artifact_transient and w.v.artifact is not None) or any(v.pending for v in w.verdicts)
                for w in works.values())  # fmt: skip
    return Plan(versions=out, model=model_status, events=events, production=production, staging=staging,
                rolling_out=rolling_out, retry=retry)  # fmt: skip


def _version_status(
    w: Work, *, at: str, now: datetime, rolling_out: str | None, events: list[Event]
) -> ModelVersionStatus:
    old = w.v.status
    prev_conditions = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in old.conditions]
    gen = w.v.generation
    cond = []
    for verdict in w.verdicts:
        state = "True" if verdict.passed else ("Unknown" if (verdict.gate == ARTIFACT_VERIFIED and
                                                w.artifact_transient) or verdict.pending else "False")  # fmt: skip
        cond.append(statuses.condition(prev_conditions, type_=verdict.gate, status=state, reason=verdict.reason,
                                       message=verdict.explained(), generation=gen, at=at))  # fmt: skip
    if w.v.name == rolling_out or w.phase in (Phase.FAILED, Phase.DEGRADED):
        rolled = "False"
        reason = {Phase.FAILED: "RolloutFailed", Phase.DEGRADED: "ServingRolloutFailed"}.get(
            w.phase, "RolloutStuck" if w.waiting == "RolloutStuck" else "RolloutInProgress"
        )
        cond.append(statuses.condition(prev_conditions, type_=ROLLED_OUT, status=rolled, reason=reason,
                                       message=w.message, generation=gen, at=at))  # fmt: skip
    elif w.effective is Stage.PRODUCTION:
        cond.append(statuses.condition(prev_conditions, type_=ROLLED_OUT, status="True", reason="Available",
                                       message="serving Production", generation=gen, at=at))  # fmt: skip
    ready = w.effective is w.v.spec.stage and not w.stalled and not w.waiting and w.artifact_ok
    if ready:
        summary_reason, summary = "Ready", f"{w.effective.value}; artifact verified"
    else:
        failed = w.failed_gates()
        summary_reason = w.stalled or w.waiting or (failed[0].reason if failed else "Reconciling")
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
        # Losing Production deserves a person's attention even when it was asked for.
        events.append(Event("ModelVersion", w.v.name, reason, f"{w.v.spec.model} version {w.v.spec.version}: "
                            f"{message}", warning=old.stage is Stage.PRODUCTION))  # fmt: skip
    _gate_events(w, old, cond, events)
    phase = w.phase if not ready else Phase.READY
    if not ready and phase is Phase.READY:
        phase = Phase.PENDING if not w.artifact_ok else Phase.RECONCILING
    return ModelVersionStatus.model_validate(
        {
            "observedGeneration": gen,
            "stage": w.effective,
            "phase": phase,
            "artifact": _artifact_facts(w),
            "productionRequestedAt": w.requested_at,
            "deploymentName": old.deployment_name,
            "validation": w.v.validation.record if w.v.validation and w.v.validation.record else old.validation,
            "history": history,
            "conditions": cond,
        }
    )


def _artifact_facts(w: Work) -> ArtifactStatus | None:
    """The facts of the last successful verification. A failed re-check does not
    erase them: the ArtifactVerified condition says it no longer holds, the gates
    refuse new stages, and a version already deployed keeps serving that digest."""
    check = w.v.artifact
    if check is not None and check.facts is not None and check.ok:
        return check.facts
    return w.v.status.artifact


def _first_failure_message(w: Work) -> str:
    failed = w.failed_gates()
    return f"{failed[0].gate}: {failed[0].explained()}" if failed else ""


def _gate_events(w: Work, old: ModelVersionStatus, cond: list[dict[str, object]], events: list[Event]) -> None:
    """One Event when a gate newly fails or a version is newly held or stalled
    (never again on every reconcile while it stays so). A rollout under way is a
    normal step, not a Warning.

    A promotion gate (metrics, compare-to-production, stage order, validation) is
    said only while the version asks to enter a stage it guards: most Development
    versions do worse than Production and ask for nothing, and a Warning each
    (thousands at scale) would drown the ones a person must act on. Status still
    shows every verdict; once such a version asks, the hold is said (Stalled)."""
    before = {c.type: (c.status, c.reason) for c in old.conditions}
    gate_types = {v.gate for v in w.verdicts} | {ROLLED_OUT}
    asks = w.v.spec.stage in (Stage.STAGING, Stage.PRODUCTION) and w.effective is not w.v.spec.stage
    said = set()
    for c in cond:
        type_, reason = str(c["type"]), str(c["reason"])
        if type_ not in _OWN_GATES and not asks:
            continue
        if type_ in gate_types and c["status"] == "False" and before.get(type_) != (c["status"], c["reason"]):
            events.append(Event("ModelVersion", w.v.name, reason, str(c["message"]),
                                warning=reason != "RolloutInProgress"))  # fmt: skip
            said.add(reason)
    if w.stalled and w.stalled not in said and before.get("Stalled") != ("True", w.stalled):
        events.append(Event("ModelVersion", w.v.name, w.stalled, w.message, warning=True))
    if w.waiting == "HeldServing" and before.get("Reconciling") != ("True", "HeldServing"):
        events.append(Event("ModelVersion", w.v.name, "HeldServing", w.message, warning=True))


_OWN_GATES = (ARTIFACT_VERIFIED, ROLLED_OUT)  # facts of the version itself, whatever it asks for


def _model_status(
    model: ModelInput,
    works: dict[str, Work],
    *,
    production: str | None,
    staging: str | None,
    at: str,
    events: list[Event],
    refusals: Sequence[str],
    statuses_out: dict[str, ModelVersionStatus],
) -> RegisteredModelStatus:
    prev = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in model.status.conditions]
    gen = model.generation
    by_name = {w.v.name: w for w in works.values()}
    prod_version = by_name[production].v.spec.version if production else None
    staging_version = by_name[staging].v.spec.version if staging else None
    requests = sorted(w.v.spec.version for w in works.values() if w.v.spec.stage is Stage.PRODUCTION)
    conflict = len(requests) > 1
    pending = [w.v.name for w in works.values() if not w.stalled and (w.waiting or w.effective is not w.v.spec.stage)]
    ready = not pending and not refusals
    conflict_msg = (f"{len(requests)} versions request Production ({', '.join(requests)}); only "
                    f"{prod_version or 'one'} serves. Set the others to Archived.") if conflict else ""  # fmt: skip
    message = f"Production: {prod_version or 'none'}; {len(works)} versions"
    if pending:
        message = f"waiting for {', '.join(sorted(pending))}"
    stalled = "; ".join(refusals)
    if stalled:
        message = stalled
    cond = [
        statuses.condition(prev, type_="Ready", status="True" if ready else "False",
                           reason="Ready" if ready else "ServingRefused" if stalled else "Reconciling",
                           message=message, generation=gen, at=at),
        statuses.condition(prev, type_="Reconciling", status="True" if pending and not stalled else "False",
                           reason="VersionsPending" if pending and not stalled else "Reconciled",
                           message=message if pending and not stalled else "", generation=gen, at=at),
        statuses.condition(prev, type_="Stalled", status="True" if stalled else "False",
                           reason="ServingRefused" if stalled else "NotStalled", message=stalled,
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
    best = _best(model, works)
    return RegisteredModelStatus.model_validate(
        {
            "observedGeneration": gen,
            "productionVersion": prod_version,
            "stagingVersion": staging_version,
            "versionCount": len(works),
            "endpoint": model.name if model.spec.serving is not None else None,
            "bestVersion": best[0] if best else None,
            "bestValue": best[1] if best else None,
            "servedArtifacts": _served_artifacts(model, prod_version, statuses_out.get(production or "")),
            "conditions": cond,
        }
    )


def _best(model: ModelInput, works: dict[str, Work]) -> tuple[str, float] | None:
    """The best version by the model's chosen metric, among the versions whose
    artifact is verified, whatever their stage (a duplicate object never counts)."""
    promotion = model.spec.promotion
    rule = promotion.best_by
    compare = promotion.compare_to_production
    if rule is None and compare is not None:
        rule = BestBy(metric=compare.metric, direction=compare.direction)
    if rule is None:
        return None
    verified = [(w.v.spec.version, w.v.spec.metrics) for w in works.values()
                if w.artifact_ok and w.stalled != "DuplicateVersion"]  # fmt: skip
    return gates.best_version(verified, rule)


def _served_artifacts(
    model: ModelInput, version: str | None, status: ModelVersionStatus | None
) -> list[ServedArtifact]:
    """The model's record of artifacts that served Production, with the one
    serving now: it outlives the versions, so deleting a version does not make
    the stage order forget that its artifact served."""
    kept = list(model.status.served_artifacts)
    digest = status.artifact.digest if status is not None and status.artifact is not None else None
    if version is None or not digest or any(a.digest == digest for a in kept):
        return kept
    return [*kept, ServedArtifact(digest=digest, version=version)][-MAX_SERVED_ARTIFACTS:]


def _entered_at(w: Work, now: datetime) -> datetime | None:
    if w.v.status.stage is not w.effective:
        return now
    for t in reversed(w.v.status.history):
        if t.stage is w.effective:
            return t.time
    return None
