"""Issue 9, items 3-5: the Strict stage order, the best version at a glance, and
every hold explained in status (which gate, and what would release it)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelreg import gates, lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ArtifactStatus
from modelreg.api.registeredmodel import MAX_SERVED_ARTIFACTS, BestBy, Direction, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, ArtifactReason, Rollout, RolloutState
from tests.unit.lifecycle_builders import (
    EARLIER,
    MISMATCH,
    MISSING,
    NOW,
    UNAVAILABLE,
    condition,
    model,
    stages,
    version,
)
from tests.unit.test_lifecycle_properties import worlds

D, S, P, A = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
STRICT = {"promotion": {"stageOrder": "Strict"}}
LATER = NOW + datetime.timedelta(minutes=1)


def verified(hex_digit: str) -> ArtifactCheck:
    digest = hex_digit * 64
    facts = ArtifactStatus.model_validate({"digest": f"sha256:{digest}", "shortDigest": digest[:12], "size": 10})
    return ArtifactCheck(ArtifactReason.VERIFIED, "verified", facts)


def with_status(m: lifecycle.ModelInput, status: RegisteredModelStatus | None) -> lifecycle.ModelInput:
    assert status is not None
    return dataclasses.replace(m, status=status)


def serving_one(spec: dict[str, Any]) -> tuple[lifecycle.ModelInput, lifecycle.Plan, lifecycle.VersionInput]:
    """Version 1 (artifact b…) serving Production, as the operator recorded it."""
    m = model(**spec)
    v1 = version("1", P, artifact=verified("b"))
    first = lifecycle.plan(m, [v1], now=EARLIER)
    assert first.production == "iris-1"
    return m, first, v1


def replan(before: lifecycle.Plan, m: lifecycle.ModelInput, versions: list[lifecycle.VersionInput]) -> lifecycle.Plan:
    """Plan again on the previous plan's statuses; a version new since keeps its own."""
    fed = [dataclasses.replace(v, status=before.versions[v.name]) if v.name in before.versions else v
           for v in versions]  # fmt: skip
    return lifecycle.plan(with_status(m, before.model), fed, now=NOW)


def message(plan: lifecycle.Plan, name: str, type_: str) -> str:
    return next(c for c in plan.versions[name].conditions if c.type == type_).message


class TestStageOrder:
    def test_strict_holds_a_version_created_at_production_that_never_was_in_staging(self) -> None:
        m, first, v1 = serving_one(STRICT)
        v2 = version("2", P, artifact=verified("c"))
        plan = replan(first, m, [v1, v2])
        assert plan.production == "iris-1"
        assert stages(plan)["iris-2"] is D
        assert condition(plan, "iris-2", "StageOrder") == ("False", "StagingRequired")
        assert condition(plan, "iris-2", "Stalled") == ("True", "StagingRequired")
        assert plan.versions["iris-2"].phase == "Blocked"
        ready = message(plan, "iris-2", "Ready")
        assert "held by StageOrder" in ready
        assert "move it to Staging first" in ready
        warnings = [e.reason for e in plan.events if e.warning and e.name == "iris-2"]
        assert warnings == ["StagingRequired"]
        assert replan(plan, m, [v1, v2]).versions == plan.versions  # held, not an error loop

    def test_strict_lets_a_version_through_once_it_was_in_staging(self) -> None:
        m, first, v1 = serving_one(STRICT)
        staged = replan(first, m, [v1, version("2", S, artifact=verified("c"))])
        assert stages(staged)["iris-2"] is S
        plan = replan(staged, m, [v1, version("2", P, artifact=verified("c"))])
        assert plan.production == "iris-2"
        assert condition(plan, "iris-2", "StageOrder") == ("True", "IsProduction")
        assert [t.stage for t in plan.versions["iris-2"].history] == [S, P]
        assert "stage order" not in plan.versions["iris-2"].history[-1].message  # nothing was skipped

    def test_free_is_the_default_and_adds_no_condition(self) -> None:
        m, first, v1 = serving_one({})
        plan = replan(first, m, [v1, version("2", P, artifact=verified("c"))])
        assert plan.production == "iris-2"
        assert all(c.type != "StageOrder" for c in plan.versions["iris-2"].conditions)

    def test_a_rollback_is_exempt(self) -> None:
        m, first, v1 = serving_one(STRICT)
        back = version("0", P, effective=A, served_before=True, artifact=verified("d"))
        plan = replan(first, m, [v1, dataclasses.replace(back, status=back.status)])
        assert plan.production == "iris-0"
        assert condition(plan, "iris-0", "StageOrder") == ("True", "IsProduction")
        assert plan.versions["iris-0"].history[-1].reason == "RolledBack"

    def test_a_restore_from_git_on_an_empty_cluster_is_exempt(self) -> None:
        # Everything re-created at once: no history anywhere, and the Production
        # version must serve again with no manual step.
        plan = lifecycle.plan(model(**STRICT), [version("1", P), version("2", S)], now=NOW)
        assert plan.production == "iris-1"
        assert stages(plan) == {"iris-1": P, "iris-2": S}
        assert condition(plan, "iris-1", "StageOrder") == ("True", "IsProduction")
        assert "taken as a restore from Git" in plan.versions["iris-1"].history[-1].message
        again = replan(plan, model(**STRICT), [version("1", P), version("2", S)])
        assert condition(again, "iris-1", "StageOrder") == ("True", "IsProduction")
        assert again.versions["iris-1"].history == plan.versions["iris-1"].history

    def test_a_deleted_version_re_created_with_the_same_digest_is_a_restore(self) -> None:
        m, first, v1 = serving_one(STRICT)
        staged = replan(first, m, [v1, version("2", S, artifact=verified("c"))])
        promoted = replan(staged, m, [v1, version("2", P, artifact=verified("c"))])
        assert promoted.production == "iris-2"
        assert promoted.model is not None
        assert [(a.version, a.digest) for a in promoted.model.served_artifacts] == [
            ("1", "sha256:" + "b" * 64),
            ("2", "sha256:" + "c" * 64),
        ]
        # Version 1 is deleted, then re-created from Git at Production: its object is
        # new (no history), but the model remembers that its artifact served.
        again = version("1", P, artifact=verified("b"))
        plan = lifecycle.plan(with_status(m, promoted.model), [again, promoted_input(promoted, m)], now=LATER)
        assert condition(plan, "iris-1", "StageOrder") == ("True", "IsProduction")
        note = plan.versions["iris-1"].history[-1].message
        assert "its artifact digest served Production as version 1: a restore" in note
        assert plan.production == "iris-1"
        # Another artifact created the same way is held.
        other = version("3", P, artifact=verified("e"))
        held = lifecycle.plan(with_status(m, promoted.model), [other, promoted_input(promoted, m)], now=LATER)
        assert condition(held, "iris-3", "StageOrder") == ("False", "StagingRequired")
        assert held.production == "iris-2"

    def test_the_record_of_served_artifacts_is_bounded_and_kept_once(self) -> None:
        m, first, v1 = serving_one(STRICT)
        assert first.model is not None
        many = [{"digest": f"sha256:{i:064x}", "version": str(i)} for i in range(MAX_SERVED_ARTIFACTS)]
        full = first.model.model_copy(update={"served_artifacts": RegisteredModelStatus.model_validate(
            {"servedArtifacts": many}).served_artifacts})  # fmt: skip
        plan = lifecycle.plan(with_status(m, full), [dataclasses.replace(v1, status=first.versions["iris-1"])],
                              now=NOW)  # fmt: skip
        assert plan.model is not None
        kept = plan.model.served_artifacts
        assert len(kept) == MAX_SERVED_ARTIFACTS
        assert kept[-1].digest == "sha256:" + "b" * 64
        assert kept[0].version == "1"  # the oldest (version 0) went
        assert lifecycle.plan(with_status(m, plan.model), [dataclasses.replace(v1, status=plan.versions["iris-1"])],
                              now=NOW).model == plan.model  # fmt: skip


def promoted_input(plan: lifecycle.Plan, m: lifecycle.ModelInput) -> lifecycle.VersionInput:
    return version("2", P, artifact=verified("c"), status=plan.versions["iris-2"])


@pytest.mark.parametrize(
    ("history", "requested", "served_as", "has_served", "reason"),
    [
        ([D], S, None, True, "NotRequested"),
        ([D, S], P, None, True, "PassedStaging"),
        ([D, P, A], P, None, True, "ServedBefore"),
        ([D], P, "7", True, "DigestServed"),
        ([], P, None, False, "NothingServedYet"),
        ([D, A], P, None, True, "StagingRequired"),
    ],
)
def test_the_stage_order_rule(
    history: list[Stage], requested: Stage, served_as: str | None, has_served: bool, reason: str
) -> None:
    verdict = gates.check_stage_order(history, requested=requested, digest_served_as=served_as,
                                      model_has_served=has_served, model="m")  # fmt: skip
    assert verdict.reason == reason
    assert verdict.passed is (reason != "StagingRequired")


class TestBestVersion:
    def test_best_among_verified_versions_whatever_their_stage(self) -> None:
        spec = {"promotion": {"bestBy": {"metric": "accuracy"}}}
        versions = [
            version("1", A, effective=A, metrics={"accuracy": 0.91}),
            version("2", S, metrics={"accuracy": 0.95}),
            version("3", metrics={"accuracy": 0.99}, artifact=MISMATCH),  # not verified: never the best
            version("4", metrics={"f1": 0.99}),  # no such metric: takes no part
        ]
        plan = lifecycle.plan(model(**spec), versions, now=NOW)
        assert plan.model is not None
        assert (plan.model.best_version, plan.model.best_value) == ("2", 0.95)

    def test_lower_is_better_and_a_tie_goes_to_the_higher_version(self) -> None:
        spec = {"promotion": {"bestBy": {"metric": "loss", "direction": "LowerIsBetter"}}}
        versions = [version(n, metrics={"loss": loss}) for n, loss in (("9", 0.2), ("10", 0.2), ("11", 0.3))]
        plan = lifecycle.plan(model(**spec), versions, now=NOW)
        assert plan.model is not None
        assert (plan.model.best_version, plan.model.best_value) == ("10", 0.2)

    def test_compare_to_production_names_the_metric_when_best_by_is_absent(self) -> None:
        spec = {"promotion": {"compareToProduction": {"metric": "loss", "direction": "LowerIsBetter"}}}
        versions = [version("1", metrics={"loss": 0.5}), version("2", metrics={"loss": 0.4})]
        plan = lifecycle.plan(model(**spec), versions, now=NOW)
        assert plan.model is not None
        assert plan.model.best_version == "2"

    def test_no_rule_no_best(self) -> None:
        plan = lifecycle.plan(model(), [version("1")], now=NOW)
        assert plan.model is not None
        assert plan.model.best_version is None
        assert plan.model.best_value is None

    def test_the_pure_rule(self) -> None:
        higher = BestBy(metric="a")
        assert gates.best_version([], higher) is None
        assert gates.best_version([("1", {"a": 1.0}), ("2", {"a": 3.0}), ("3", {"a": 2.0})], higher) == ("2", 3.0)
        lower = BestBy(metric="a", direction=Direction.LOWER_IS_BETTER)
        assert gates.best_version([("1", {"a": 1.0}), ("2", {"a": 3.0})], lower) == ("1", 1.0)
        assert gates.best_version([("1.10", {"a": 1.0}), ("1.9", {"a": 1.0})], higher) == ("1.10", 1.0)


GATED = {"promotion": {"thresholds": [{"metric": "accuracy", "min": 0.8}],
                       "compareToProduction": {"metric": "accuracy"}, "stageOrder": "Strict"}}  # fmt: skip


def _thresholds() -> tuple[lifecycle.Plan, str]:
    return lifecycle.plan(model(**GATED), [version("1", S, metrics={"accuracy": 0.5})], now=NOW), "iris-1"


def _missing_metric() -> tuple[lifecycle.Plan, str]:
    return lifecycle.plan(model(**GATED), [version("1", S, metrics={})], now=NOW), "iris-1"


def _compare() -> tuple[lifecycle.Plan, str]:
    m, first, v1 = serving_one(GATED)
    return replan(first, m, [v1, version("2", S, metrics={"accuracy": 0.85}, artifact=verified("c"))]), "iris-2"


def _stage_order() -> tuple[lifecycle.Plan, str]:
    m, first, v1 = serving_one(GATED)
    return replan(first, m, [v1, version("2", P, metrics={"accuracy": 0.95}, artifact=verified("c"))]), "iris-2"


def _artifact(check: ArtifactCheck) -> tuple[lifecycle.Plan, str]:
    return lifecycle.plan(model(), [version("1", S, artifact=check)], now=NOW), "iris-1"


def _not_yet_verified() -> tuple[lifecycle.Plan, str]:
    return lifecycle.plan(model(), [version("1", S, artifact=None)], now=NOW), "iris-1"


def _limit() -> tuple[lifecycle.Plan, str]:
    return _artifact(ArtifactCheck(ArtifactReason.LIMIT_EXCEEDED, "bigger than 1 GiB"))


def _no_model() -> tuple[lifecycle.Plan, str]:
    return lifecycle.plan(None, [version("1", S)], now=NOW), "iris-1"


def _rollout_failed() -> tuple[lifecycle.Plan, str]:
    serving = version("1", P, effective=P, requested_at=EARLIER)
    rollouts = {"iris-2": Rollout(RolloutState.FAILED, "progress deadline exceeded")}
    plan = lifecycle.plan(model(), [serving, version("2", P, effective=S)], now=NOW, rollouts=rollouts)
    return plan, "iris-2"


def _superseded() -> tuple[lifecycle.Plan, str]:
    versions = [version("1", P, requested_at=EARLIER), version("2", P, requested_at=NOW)]
    return lifecycle.plan(model(), versions, now=NOW), "iris-1"


def _held_serving() -> tuple[lifecycle.Plan, str]:
    # Asked to leave Production with nothing to take over: it keeps serving, and says why.
    serving = version("1", A, effective=P, requested_at=EARLIER)
    return lifecycle.plan(model(serving={"image": "server:1"}), [serving], now=NOW, rollouts={}), "iris-1"


def _kept_serving() -> tuple[lifecycle.Plan, str]:
    serving = version("1", A, effective=P, requested_at=EARLIER)
    blocked = version("2", P, effective=S, metrics={"accuracy": 0.5})
    return lifecycle.plan(model(**GATED), [serving, blocked], now=NOW), "iris-1"


def _duplicate() -> tuple[lifecycle.Plan, str]:
    old = dataclasses.replace(version("1", S), name="iris-one", created=EARLIER)
    new = dataclasses.replace(version("1", S), name="iris-again", created=NOW)
    return lifecycle.plan(model(), [old, new], now=NOW), "iris-again"


# (case, how to get a plan and the held version, the stage it asks for, the gate named, words of what releases it)
HOLDS = [
    ("thresholds", _thresholds, S, "MetricThresholds", "register a new ModelVersion whose metrics meet the bounds"),
    ("missing metric", _missing_metric, S, "MetricThresholds", "add the missing metrics to spec.metrics"),
    ("compare", _compare, S, "ComparedToProduction", "register a new ModelVersion that does at least as well"),
    ("stage order", _stage_order, P, "StageOrder", "move it to Staging first"),
    ("mismatch", lambda: _artifact(MISMATCH), S, "ArtifactVerified", "put back the object whose SHA-256"),
    ("missing", lambda: _artifact(MISSING), S, "ArtifactVerified", "upload the artifact at spec.artifact.uri"),
    ("unavailable", lambda: _artifact(UNAVAILABLE), S, "ArtifactVerified", "wait for the store to answer"),
    ("not yet verified", _not_yet_verified, S, "ArtifactVerified", "wait: the first check runs now"),
    ("limit", _limit, S, "ArtifactVerified", "--verify-max-bytes"),
    ("no model", _no_model, S, "ModelNotFound", "create RegisteredModel iris"),
    ("rollout failed", _rollout_failed, P, "RolloutFailed", "a new generation tries the rollout again"),
    ("superseded", _superseded, P, "Superseded", "Archived and back to Production"),
    ("held serving", _held_serving, A, "HeldServing", "ask another version for Production"),
    ("kept serving", _kept_serving, A, "KeptServing", "the version asking for Production passes its gates"),
    ("duplicate", _duplicate, S, "DuplicateVersion", "delete this object"),
]


@pytest.mark.parametrize(("make", "requested", "gate", "release"), [h[1:] for h in HOLDS], ids=[h[0] for h in HOLDS])
def test_status_says_which_gate_holds_a_version_and_what_releases_it(
    make: Any, requested: Stage, gate: str, release: str
) -> None:
    plan, name = make()
    status = plan.versions[name]
    assert status.stage is not requested  # held below the stage it asks for
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "False"
    assert gate in ready.message or gate == ready.reason, ready.message
    assert "to release: " in ready.message, ready.message
    assert release in ready.message, ready.message
    gate_condition = next((c for c in status.conditions if c.type == gate), None)
    if gate_condition is not None:  # a gate, not a hold: its own condition says both too
        assert gate_condition.status != "True"
        assert release in gate_condition.message


def test_a_version_at_its_stage_with_a_failing_gate_says_what_releases_it_too() -> None:
    plan = lifecycle.plan(model(), [version("1", D, artifact=MISSING)], now=NOW)
    ready = next(c for c in plan.versions["iris-1"].conditions if c.type == "Ready")
    assert ready.status == "False"
    assert ready.message.startswith("ArtifactVerified: s3://b/k does not exist; to release: upload the artifact")


def test_every_failing_gate_verdict_says_what_releases_it() -> None:
    """The pure gates: whenever one fails, its verdict carries a release."""
    from modelreg.api.registeredmodel import CompareToProduction, MetricThreshold

    failing = [
        gates.check_thresholds({"a": 0.1}, [MetricThreshold(metric="a", min=0.5)], model="m"),
        gates.check_thresholds({}, [MetricThreshold(metric="a", max=0.5)], model="m"),
        gates.check_against_production({"a": 0.1}, CompareToProduction(metric="a"), production_version="1",
                                       production_metrics={"a": 0.9}, is_rollback=False, model="m"),
        gates.check_against_production({}, CompareToProduction(metric="a"), production_version="1",
                                       production_metrics={"a": 0.9}, is_rollback=False, model="m"),
        gates.check_stage_order([D], requested=P, digest_served_as=None, model_has_served=True, model="m"),
    ]  # fmt: skip
    for verdict in failing:
        assert not verdict.passed
        assert verdict.release, verdict
        assert verdict.explained().endswith(verdict.release)
        assert "RegisteredModel m" in verdict.release  # the knob that would relax it
    for reason in ArtifactReason:
        if reason is not ArtifactReason.VERIFIED:
            assert gates.artifact_release(reason.value, model="m")


@st.composite
def strict_worlds(draw: st.DrawFn) -> tuple[lifecycle.ModelInput, list[lifecycle.VersionInput], Any]:
    m, versions, rollouts = draw(worlds())
    # Each artifact its own digest (the builders give all the same one), so the digest exemption is not everywhere.
    versions = [dataclasses.replace(v, artifact=verified("0123456789"[i])) if v.artifact is not None and v.artifact.ok
                else v for i, v in enumerate(versions)]  # fmt: skip
    best = {"metric": "accuracy", "direction": draw(st.sampled_from(list(Direction)))}
    promotion = m.spec.promotion.model_dump(by_alias=True, exclude_none=True) | {"stageOrder": "Strict", "bestBy": best}
    return model(promotion=promotion), versions, rollouts


@settings(max_examples=300, deadline=None)
@given(strict_worlds())
def test_strict_production_is_entered_only_after_staging_or_as_a_restore(world: tuple) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    plan = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    assert len([s for s in plan.versions.values() if s.stage is P]) <= 1
    served = [v for v in versions if v.status.stage is P or any(t.stage is P for t in v.status.history)]
    digests = {v.artifact.facts.digest for v in served if v.artifact is not None and v.artifact.facts is not None}
    for v in versions:
        if plan.versions[v.name].stage is P and v.status.stage is not P:
            been = {t.stage for t in v.status.history}
            assert v.artifact is not None
            assert v.artifact.facts is not None
            restore = not served or v.artifact.facts.digest in digests
            assert S in been or P in been or restore, f"{v.name} skipped Staging"


@settings(max_examples=300, deadline=None)
@given(strict_worlds())
def test_strict_planning_on_its_own_output_changes_nothing(world: tuple) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    first = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    second = lifecycle.plan(with_status(m, first.model), [dataclasses.replace(v, status=first.versions[v.name])
                                                          for v in versions], now=NOW, rollouts=rollouts)  # fmt: skip
    assert second.versions == first.versions
    assert second.model == first.model
    assert second.events == []
