"""Deciding: every version's effective stage and the one serving Production.

Called through `lifecycle.plan`. The rules (README, "Using it"): gates before
Staging and Production; exactly one Production version, the newest passing
request winning (ties to the higher version); a failing request never disturbs
the serving version; with serving enabled, the switch happens only once the new
version's rollout is Available, and the serving version keeps serving until
another takes over (or `spec.serving` is removed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime

from modelreg import gates
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionStatus, Phase
from modelreg.api.registeredmodel import ServedArtifact, StageOrder
from modelreg.facts import Rollout, RolloutState
from modelreg.lifecycle.records import (
    ARTIFACT_VERIFIED,
    ROLLED_OUT,
    ModelInput,
    Plan,
    VersionInput,
    Work,
    timestamp,
)
from modelreg.lifecycle.reporting import finish
from modelreg.versionorder import newest_key


def plan(
    model: ModelInput | None,
    versions: Sequence[VersionInput],
    *,
    now: datetime,
    rollouts: Mapping[str, Rollout] | None = None,
    refusals: Sequence[str] = (),
) -> Plan:
    """Compute every status. `rollouts` is None when nothing is served (the
    switch to a new Production version is then immediate). `refusals` says why
    owned objects could not be written (the API server refused what
    `spec.serving` renders to, or a name is taken): the model is Stalled."""
    # Request times keep sub-second precision, so a request made within the same
    # second as another still counts as newer; everything else is to the second.
    requested_now, now = now, now.replace(microsecond=0)
    taken = duplicates(versions)
    ordered = sorted((v for v in versions if v.name not in taken), key=lambda v: v.name)
    by_name = {v.name: v for v in ordered}
    original = _incumbent(ordered)
    shadowed = {name: _duplicate(v, versions, requested_now) for v in versions if (name := v.name) in taken}
    if model is None:
        works = {v.name: _start(v, requested_now) for v in ordered}
        for w in works.values():
            _hold(w, "ModelNotFound", f"RegisteredModel {w.v.spec.model!r} does not exist in this namespace",
                  release=f"create RegisteredModel {w.v.spec.model} here (spec.model is immutable)")  # fmt: skip
        return finish(None, works | shadowed, production=original.name if original else None, rolling_out=None,
                      now=now)  # fmt: skip

    # Decide against the serving version; when the decision switches to another
    # version, decide again against that one, until nothing moves. The newest
    # passing request only ever grows, so this ends, and planning on the result
    # again changes nothing.
    serving = original
    served = _served_digests(ordered, model.status.served_artifacts)
    has_served = bool(served) or any(_served(v) for v in ordered)
    for _ in range(len(ordered) + 2):
        works = {v.name: _start(v, requested_now) for v in ordered}
        for w in works.values():
            w.verdicts += _metric_verdicts(w, model, serving) + _validation_verdicts(w)
            if model.spec.promotion.stage_order is StageOrder.STRICT:
                w.verdicts.append(_stage_order_verdict(w, model.name, served, has_served=has_served, serving=serving))
        winner = _resolve_production(works, serving, rollouts)
        production, rolling_out = _switch(works, serving, winner, rollouts, held=model.spec.serving is not None)
        decided = by_name[production] if production else None
        if decided is serving:
            break
        serving = decided
    for w in works.values():
        if w.v.name not in (production, rolling_out) and w.v.spec.stage is not Stage.PRODUCTION:
            _settle_lower_stage(w, was_production=original is not None and w.v.name == original.name)
    if production is not None:
        _report_serving_rollout(works[production], rollouts)
    return finish(model, works | shadowed, production=production, rolling_out=rolling_out, now=now,
                  refusals=refusals)  # fmt: skip


def duplicates(versions: Sequence[VersionInput]) -> set[str]:
    """Object names of versions that repeat the `spec.version` of an older object
    of the same model. The API server cannot refuse them (admission sees one
    object at a time), so the oldest object keeps the version and the others are
    held: two objects deploying one version would fight over one Deployment."""
    first: dict[str, VersionInput] = {}
    for v in sorted(versions, key=_claim):
        first.setdefault(v.spec.version, v)
    return {v.name for v in versions if first[v.spec.version].name != v.name}


def _claim(v: VersionInput) -> tuple[float, bool, str]:
    """Which object of one version came first. creationTimestamp has whole seconds, so
    two objects can tie: then the one that has been deployed (Staging or Production,
    now or in its history) keeps the version, whatever the names; a copy applied in
    the same second as the original must never take over, or demote, what serves.
    Only the owner can ever be deployed, so this never changes hands; "has a history"
    would (the held copy gains one, Registered in Development, on its first plan)."""
    deployed = v.status.stage in _DEPLOYED or any(t.stage in _DEPLOYED for t in v.status.history)
    return timestamp(v.created), not deployed, v.name


def _duplicate(v: VersionInput, versions: Sequence[VersionInput], now: datetime) -> Work:
    owner = min((o for o in versions if o.spec.version == v.spec.version), key=_claim)
    w = _start(v, now)
    w.requested_at = None
    if w.effective in (Stage.PRODUCTION, Stage.STAGING):
        w.effective, w.reason = Stage.ARCHIVED, "DuplicateVersion"
        w.note = f"version {v.spec.version} belongs to ModelVersion {owner.name}"
    _hold(w, "DuplicateVersion", f"ModelVersion {owner.name} already registers version {v.spec.version!r} of model "
          f"{v.spec.model!r}", release="delete this object (spec.version is immutable: register another version "
          "as a new ModelVersion)")  # fmt: skip
    return w


def _report_serving_rollout(w: Work, rollouts: Mapping[str, Rollout] | None) -> None:
    """The serving version's own Deployment can fail too (a serving spec whose new
    Pods cannot be created or never become ready): the old Pods keep serving, and
    status must say that the change did not roll out."""
    rollout = (rollouts or {}).get(w.v.name)
    if w.stalled or w.waiting:
        return  # already held for a reason of its own (e.g. HeldServing): that one is reported
    if rollout is not None and (rollout.state is RolloutState.FAILED or rollout.stuck):
        # Stuck Pods can be all there is (a replaced Pod that cannot fetch its artifact):
        # then nothing keeps serving, and status must not claim otherwise.
        left = "no Pod is ready to serve" if rollout.available == 0 else "the Pods that were serving keep serving"
        _hold(w, "ServingRolloutFailed", f"{rollout.message}; {left}")
        w.phase = Phase.DEGRADED
    elif rollout is not None and rollout.available == 0:
        # Serving, and nothing behind the endpoint: never Ready (kwok nodes hide
        # this; Pods that crash on a real node do not).
        w.waiting, w.message = "NoEndpoint", f"{rollout.message}: the endpoint has nothing ready behind it"


def _start(v: VersionInput, now: datetime) -> Work:
    check = v.artifact
    if check is not None:
        message = check.message
        if not check.ok and not check.transient and v.status.artifact and v.status.stage in _DEPLOYED:
            message += (f"; keeps serving the last verified digest {v.status.artifact.digest}; new rollouts that "
                        "would fetch the artifact are blocked")  # fmt: skip
        artifact = gates.Verdict(ARTIFACT_VERIFIED, check.ok, check.reason.value, message)
        transient = check.transient
    else:
        artifact, transient = _previous_artifact_verdict(v.status)
    if not artifact.passed and not artifact.release:
        artifact = dataclasses.replace(artifact, release=gates.artifact_release(artifact.reason, model=v.spec.model))
    requested_at = None
    if v.spec.stage is Stage.PRODUCTION:
        requested_at = v.status.production_requested_at or now
    return Work(
        v=v,
        verdicts=[artifact],
        artifact_ok=artifact.passed,
        artifact_transient=transient,
        requested_at=requested_at,
        effective=v.status.stage or Stage.DEVELOPMENT,
    )


_DEPLOYED = (Stage.PRODUCTION, Stage.STAGING)


def _previous_artifact_verdict(status: ModelVersionStatus) -> tuple[gates.Verdict, bool]:
    old = next((c for c in status.conditions if c.type == ARTIFACT_VERIFIED), None)
    if old is None:
        return gates.Verdict(ARTIFACT_VERIFIED, False, "Pending", "the artifact has not been verified yet"), True
    # The condition's message already says what releases it (see Verdict.explained).
    message = old.message.split(gates.RELEASE_MARK, 1)[0]
    return gates.Verdict(ARTIFACT_VERIFIED, old.status == "True", old.reason, message), old.status == "Unknown"


def _incumbent(versions: Sequence[VersionInput]) -> VersionInput | None:
    serving = [v for v in versions if v.status.stage is Stage.PRODUCTION]
    if not serving:
        return None
    # Never more than one by construction; if an older operator left several, keep the newest.
    return max(serving, key=lambda v: newest_key(timestamp(v.status.production_requested_at), v.spec.version, v.name))


def _served_digests(versions: Sequence[VersionInput], recorded: Sequence[ServedArtifact]) -> dict[str, str]:
    """Artifact digest → version, for every artifact with a Production record
    (the model's status keeps them after their versions are deleted): what the
    Strict stage order lets back into Production without Staging."""
    out = {a.digest: a.version for a in recorded}
    for v in sorted(versions, key=lambda v: v.name):
        if _served(v) and v.status.artifact is not None and v.status.artifact.digest:
            out.setdefault(v.status.artifact.digest, v.spec.version)
    return out


def _with_serving(served: Mapping[str, str], serving: VersionInput) -> Mapping[str, str]:
    digest = _digest(serving)
    return served if digest is None or digest in served else {**served, digest: serving.spec.version}


def _digest(v: VersionInput) -> str | None:
    check = v.artifact
    facts = check.facts if check is not None and check.ok and check.facts is not None else v.status.artifact
    return facts.digest if facts is not None else None


def _served(v: VersionInput) -> bool:
    return v.status.stage is Stage.PRODUCTION or any(t.stage is Stage.PRODUCTION for t in v.status.history)


def _stage_order_verdict(
    w: Work, model: str, served: Mapping[str, str], *, has_served: bool, serving: VersionInput | None
) -> gates.Verdict:
    itself = serving is not None and serving.name == w.v.name
    if serving is not None and not itself:
        # Decided against the serving version, the others count it as served too.
        served, has_served = _with_serving(served, serving), True
    digest = _digest(w.v)
    verdict = gates.check_stage_order(
        (t.stage for t in w.v.status.history),
        requested=w.v.spec.stage,
        digest_served_as=served.get(digest) if digest else None,
        model_has_served=has_served,
        model=model,
    )
    if verdict.reason in gates.STAGE_ORDER_EXEMPT:
        w.skipped_staging = verdict.message
    if itself and w.v.spec.stage is Stage.PRODUCTION:
        # Decided against itself (as compareToProduction is): the same verdict on the
        # plan that switches to it and on every plan after, so planning again changes nothing.
        return gates.Verdict(gates.STAGE_ORDER, True, "IsProduction", "this version serves Production")
    return verdict


def _validation_verdicts(w: Work) -> list[gates.Verdict]:
    check = w.v.validation
    if check is None or not check.gated:
        return []
    release = (
        ""
        if check.passed is not False
        else (
            "fix what the Job reports; it runs again when the artifact, spec.promotion.validation or this "
            "version's spec changes"
        )
    )
    return [gates.Verdict(gates.VALIDATION_PASSED, check.passed is True, check.reason, check.message,
                          release=release, pending=check.passed is None)]  # fmt: skip


def _metrics(v: VersionInput) -> dict[str, float]:
    """What the metric gates read: spec.metrics, and over them what its validation Job measured."""
    record = v.validation.record if v.validation is not None and v.validation.record else v.status.validation
    return dict(v.spec.metrics) | (dict(record.metrics or {}) if record is not None else {})


def _metric_verdicts(w: Work, model: ModelInput, serving: VersionInput | None) -> list[gates.Verdict]:
    spec = model.spec
    thresholds = gates.check_thresholds(_metrics(w.v), spec.promotion.thresholds, model=model.name)
    rule = spec.promotion.compare_to_production
    if rule is not None and serving is not None and serving.name == w.v.name and w.v.spec.stage is Stage.PRODUCTION:
        return [thresholds, gates.serving_itself()]
    if serving is not None and serving.name == w.v.name:
        serving = None  # leaving Production: there is nothing else to compare with
    return [
        thresholds,
        gates.check_against_production(
            _metrics(w.v),
            spec.promotion.compare_to_production,
            production_version=serving.spec.version if serving else None,
            production_metrics=_metrics(serving) if serving else None,
            is_rollback=any(t.stage is Stage.PRODUCTION for t in w.v.status.history),
            model=model.name,
        ),
    ]


def _resolve_production(
    works: dict[str, Work], incumbent: VersionInput | None, rollouts: Mapping[str, Rollout] | None
) -> Work | None:
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
            message = message.split(gates.RELEASE_MARK, 1)[0]  # an old condition's, which said it already
            _hold(w, "RolloutFailed", message or "the rollout missed its progress deadline",
                  release=f"fix the cause (spec.serving of RegisteredModel {w.v.spec.model}, or the cluster), then "
                  "change any field of this ModelVersion's spec, e.g. spec.description: a new generation tries "
                  "the rollout again")  # fmt: skip
            w.phase = Phase.FAILED
        elif w.gates_pass():
            candidates.append(w)
        else:
            _block(w)
    if not candidates:
        return None
    return max(candidates, key=lambda w: newest_key(timestamp(w.requested_at), w.v.spec.version, w.v.name))


def _switch(
    works: dict[str, Work],
    incumbent: VersionInput | None,
    winner: Work | None,
    rollouts: Mapping[str, Rollout] | None,
    *,
    held: bool,
) -> tuple[str | None, str | None]:
    """Apply the Production decision; returns (serving version, version rolling out).

    A serving version whose spec left Production keeps serving while another
    version is asked to replace it and cannot yet (rolling out, failed, blocked):
    the endpoint is only ever handed over, never dropped in between. With
    serving enabled (`held`) it also keeps serving when no other version asks
    for Production at all: a GitOps sync may apply "v1: Archived" a moment (or
    a retry) before "v2: Production", and the endpoint must not drop between
    the two. Taking a model offline is explicit: remove `spec.serving`.
    """
    serving = incumbent.name if incumbent is not None else None
    demoted = works[serving] if serving and works[serving].v.spec.stage is not Stage.PRODUCTION else None
    if winner is None:
        if demoted is not None:
            if not any(w.v.spec.stage is Stage.PRODUCTION for w in works.values()):
                if not held:
                    return None, None  # nothing is served: the stage is only a record
                demoted.phase, demoted.waiting = Phase.HELD, "HeldServing"
                demoted.message = (
                    f"spec.stage is {demoted.v.spec.stage.value}, but this version keeps serving Production until "
                    f"another version takes over{gates.RELEASE_MARK}ask another version for Production (it takes "
                    "over once Available); to take the model offline, remove spec.serving from "
                    f"RegisteredModel {demoted.v.spec.model}"
                )
                return serving, None
            _hold(
                demoted,
                "KeptServing",
                "keeps serving Production: no other version can take over yet",
                release="the version asking for Production passes its gates (see its conditions)",
            )
        return serving, None
    if winner.v.name != serving and rollouts is not None:
        rollout = rollouts.get(winner.v.name, Rollout(RolloutState.PROGRESSING, "waiting for the Deployment"))
        if rollout.state is RolloutState.PROGRESSING:
            # Stuck Pods are said at once (a Warning), but only the progress deadline
            # fails a promotion: a failed one is final for its generation, and a cause
            # fixed in time (the artifact restored, a Secret created) lets it finish.
            winner.phase, winner.waiting = Phase.PROMOTING, "RolloutStuck" if rollout.stuck else "RolloutInProgress"
            winner.message = rollout.message or "waiting for the new version's Deployment to become Available"
            _supersede_others(works, keep={n for n in (serving, winner.v.name) if n})
            if demoted is not None:
                demoted.phase, demoted.waiting = Phase.HANDING_OVER, "HandingOver"
                demoted.message = f"keeps serving Production until {winner.v.name} is Available"
            return serving, winner.v.name
    _enter(winner, Stage.PRODUCTION)
    _supersede_others(works, keep={winner.v.name})
    return winner.v.name, None


def _supersede_others(works: dict[str, Work], *, keep: set[str]) -> None:
    for w in works.values():
        if w.v.name in keep or w.v.spec.stage is not Stage.PRODUCTION:
            continue
        lost_its_place = w.effective is Stage.PRODUCTION
        if not lost_its_place and (w.stalled or w.waiting or w.phase is Phase.BLOCKED):
            continue  # a failed request keeps its own reason
        w.effective, w.reason = Stage.ARCHIVED, "Superseded"
        w.note = "a newer Production request won; set spec.stage to Archived to acknowledge"
        if w.stalled or w.waiting:
            continue  # it lost its place, and could not get back in anyway: keep saying why
        if lost_its_place and not w.gates_pass():
            _block(w)
            continue
        w.message = (f"a newer Production request won{gates.RELEASE_MARK}set spec.stage to Archived to "
                     "acknowledge (or, to serve this version, to Archived and back to Production: the newest "
                     "request wins)")  # fmt: skip
        w.phase, w.stalled = Phase.SUPERSEDED, "Superseded"


def _settle_lower_stage(w: Work, *, was_production: bool) -> None:
    """Development, Staging and Archived requests (Production is handled by `_switch`)."""
    target = w.v.spec.stage
    gated = target is Stage.STAGING and not was_production and w.effective is not Stage.STAGING
    if gated and not w.gates_pass():
        _block(w)
        return
    _enter(w, target)


def _enter(w: Work, stage: Stage) -> None:
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
    if stage is Stage.PRODUCTION and w.skipped_staging:
        # The verdict is recomputed on every reconcile; history keeps why Staging was skipped.
        w.note += f" (stage order: {w.skipped_staging})"


def _rank(stage: Stage) -> int:
    return [Stage.ARCHIVED, Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION].index(stage)


def _block(w: Work) -> None:
    """Hold a version at a failing gate; the message names each gate that holds it
    and what would release it, so status alone explains the hold."""
    failed = w.failed_gates()
    if w.artifact_transient:
        w.phase, w.waiting = Phase.WAITING, failed[0].reason
        w.message = f"held by {failed[0].gate}: {failed[0].explained()}"
        return
    if all(f.pending for f in failed):  # a validation Job runs: on its way, not blocked
        w.phase, w.waiting = Phase.RECONCILING, failed[0].reason
        w.message = f"cannot enter {w.v.spec.stage.value} yet: " + "; and ".join(
            f"held by {f.gate}: {f.explained()}" for f in failed
        )
        return
    w.phase, w.stalled = Phase.BLOCKED, failed[0].reason
    w.message = f"cannot enter {w.v.spec.stage.value}: " + "; and ".join(
        f"held by {f.gate}: {f.explained()}" for f in failed
    )


def _hold(w: Work, reason: str, message: str, *, release: str = "") -> None:
    """Stall a version for a reason its gates do not cover (no model, failed rollout, …),
    saying what would release it."""
    w.phase, w.stalled = Phase.BLOCKED, reason
    w.message = f"{message}{gates.RELEASE_MARK}{release}" if release else message


def _rollout_failed_before(w: Work) -> bool:
    old = next((c for c in w.v.status.conditions if c.type == ROLLED_OUT), None)
    return bool(
        old and old.status == "False" and old.reason == "RolloutFailed" and old.observed_generation == w.v.generation
    )


def _condition_message(status: ModelVersionStatus, type_: str) -> str:
    old = next((c for c in status.conditions if c.type == type_), None)
    return old.message if old else ""
