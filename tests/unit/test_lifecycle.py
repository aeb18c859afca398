"""Scenarios of the lifecycle engine, one rule (README, "Using it") at a time."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from modelreg import lifecycle
from modelreg.api.common import Stage
from modelreg.facts import Rollout, RolloutState
from tests.unit.lifecycle_builders import (
    EARLIER,
    MISMATCH,
    MISSING,
    NOW,
    UNAVAILABLE,
    condition,
    model,
    replan,
    stages,
    version,
)

D, S, P, A = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
GATED = {"promotion": {"thresholds": [{"metric": "accuracy", "min": 0.8}],
                       "compareToProduction": {"metric": "accuracy"}}}  # fmt: skip


def test_a_new_version_is_registered_in_development_and_ready() -> None:
    plan = lifecycle.plan(model(), [version("1")], now=NOW)
    status = plan.versions["iris-1"]
    assert status.stage is D
    assert status.phase == "Ready"
    assert condition(plan, "iris-1", "Ready") == ("True", "Ready")
    assert condition(plan, "iris-1", "ArtifactVerified") == ("True", "Verified")
    assert [(t.stage, t.reason) for t in status.history] == [(D, "Registered")]
    assert status.observed_generation == 1
    assert [e.reason for e in plan.events if e.kind == "ModelVersion"] == ["Registered"]


def test_staging_needs_the_thresholds() -> None:
    passing = lifecycle.plan(model(**GATED), [version("1", S, metrics={"accuracy": 0.9})], now=NOW)
    assert stages(passing) == {"iris-1": S}
    failing = lifecycle.plan(model(**GATED), [version("1", S, effective=D, metrics={"accuracy": 0.5})], now=NOW)
    assert stages(failing) == {"iris-1": D}
    assert failing.versions["iris-1"].phase == "Blocked"
    assert condition(failing, "iris-1", "MetricThresholds") == ("False", "ThresholdNotMet")
    assert condition(failing, "iris-1", "Stalled") == ("True", "ThresholdNotMet")
    assert condition(failing, "iris-1", "Ready")[0] == "False"
    warning = [e for e in failing.events if e.warning]
    assert [e.reason for e in warning] == ["ThresholdNotMet"]
    assert "0.5 is below the minimum 0.8" in warning[0].message


def test_a_missing_metric_fails_its_threshold() -> None:
    plan = lifecycle.plan(model(**GATED), [version("1", S, effective=D, metrics={})], now=NOW)
    assert stages(plan) == {"iris-1": D}
    assert "missing" in plan.versions["iris-1"].conditions[1].message


def test_created_straight_in_production_as_from_git_on_an_empty_cluster() -> None:
    plan = lifecycle.plan(model(), [version("1", P)], now=NOW)
    assert stages(plan) == {"iris-1": P}
    assert plan.production == "iris-1"
    assert plan.versions["iris-1"].production_requested_at == NOW
    assert plan.model is not None
    assert plan.model.production_version == "1"


def test_a_tie_goes_to_the_higher_version_numerically() -> None:
    plan = lifecycle.plan(model(), [version("9", P), version("10", P)], now=NOW)
    assert stages(plan) == {"iris-10": P, "iris-9": A}
    assert plan.versions["iris-9"].phase == "Superseded"
    assert condition(plan, "iris-9", "Stalled") == ("True", "Superseded")
    assert plan.model is not None
    cond = next(c for c in plan.model.conditions if c.type == "ConflictingProductionRequests")
    assert cond.status == "True"
    assert "10, 9" in cond.message


def test_the_newest_request_wins() -> None:
    serving = version("1", P, effective=P, requested_at=EARLIER)
    plan = lifecycle.plan(model(), [serving, version("2", P, effective=S)], now=NOW)
    assert stages(plan) == {"iris-1": A, "iris-2": P}
    assert plan.versions["iris-1"].history[-1].reason == "Superseded"


def test_the_newest_request_wins_even_with_a_lower_version() -> None:
    serving = version("5", P, effective=P, requested_at=EARLIER)
    plan = lifecycle.plan(model(), [serving, version("2", P, effective=S)], now=NOW)
    assert stages(plan) == {"iris-5": A, "iris-2": P}


@pytest.mark.parametrize("bad", [MISMATCH, MISSING, UNAVAILABLE], ids=["mismatch", "missing", "unavailable"])
def test_a_failing_request_never_disturbs_the_serving_version(bad: object) -> None:
    serving = version("1", P, effective=P, requested_at=EARLIER)
    candidate = version("2", P, effective=S, artifact=bad)  # type: ignore[arg-type]
    plan = lifecycle.plan(model(), [serving, candidate], now=NOW)
    assert stages(plan) == {"iris-1": P, "iris-2": S}
    assert plan.production == "iris-1"
    assert not any(e.reason in ("Superseded", "Archived") for e in plan.events)


def test_a_transient_storage_failure_waits_and_retries_instead_of_stalling() -> None:
    plan = lifecycle.plan(model(), [version("2", S, effective=D, artifact=UNAVAILABLE)], now=NOW)
    assert stages(plan) == {"iris-2": D}
    assert plan.retry
    assert plan.versions["iris-2"].phase == "Waiting"
    assert condition(plan, "iris-2", "ArtifactVerified") == ("Unknown", "StorageUnavailable")
    assert condition(plan, "iris-2", "Reconciling") == ("True", "StorageUnavailable")
    assert condition(plan, "iris-2", "Stalled")[0] == "False"


def test_checksum_mismatch_blocks_with_its_reason() -> None:
    plan = lifecycle.plan(model(), [version("2", S, effective=D, artifact=MISMATCH)], now=NOW)
    assert condition(plan, "iris-2", "ArtifactVerified") == ("False", "ChecksumMismatch")
    assert condition(plan, "iris-2", "Stalled") == ("True", "ChecksumMismatch")
    assert not plan.retry
    assert plan.versions["iris-2"].artifact is None


def test_compare_to_production_blocks_a_worse_candidate() -> None:
    serving = version("1", P, effective=P, requested_at=EARLIER, metrics={"accuracy": 0.95})
    worse = version("2", P, effective=S, metrics={"accuracy": 0.9})
    plan = lifecycle.plan(model(**GATED), [serving, worse], now=NOW)
    assert stages(plan) == {"iris-1": P, "iris-2": S}
    assert condition(plan, "iris-2", "ComparedToProduction") == ("False", "WorseThanProduction")


def test_compare_to_production_honours_direction_and_margin() -> None:
    rule = {"promotion": {"compareToProduction": {"metric": "latency", "direction": "LowerIsBetter", "margin": 5}}}
    serving = version("1", P, effective=P, requested_at=EARLIER, metrics={"latency": 100})
    within = version("2", P, effective=S, metrics={"latency": 104})
    assert stages(lifecycle.plan(model(**rule), [serving, within], now=NOW))["iris-2"] is P
    beyond = version("2", P, effective=S, metrics={"latency": 106})
    assert stages(lifecycle.plan(model(**rule), [serving, beyond], now=NOW))["iris-2"] is S


def test_rollback_is_not_compared_and_says_so() -> None:
    serving = version("2", P, effective=P, requested_at=EARLIER, metrics={"accuracy": 0.95})
    old = version("1", P, effective=A, served_before=True, metrics={"accuracy": 0.85})
    plan = lifecycle.plan(model(**GATED), [serving, old], now=NOW)
    assert stages(plan) == {"iris-1": P, "iris-2": A}
    assert plan.versions["iris-1"].history[-1].reason == "RolledBack"


def test_demoting_the_serving_version_leaves_no_production() -> None:
    plan = lifecycle.plan(model(), [version("1", A, effective=P, requested_at=EARLIER)], now=NOW)
    assert stages(plan) == {"iris-1": A}
    assert plan.production is None
    assert plan.model is not None
    assert plan.model.production_version is None


def test_leaving_production_for_staging_needs_no_gates() -> None:
    plan = lifecycle.plan(model(**GATED), [version("1", S, effective=P, metrics={"accuracy": 0.1})], now=NOW)
    assert stages(plan) == {"iris-1": S}


def test_an_unknown_model_holds_every_version() -> None:
    plan = lifecycle.plan(None, [version("1", S, effective=D)], now=NOW)
    assert stages(plan) == {"iris-1": D}
    assert condition(plan, "iris-1", "Stalled") == ("True", "ModelNotFound")
    assert plan.model is None


def test_staging_version_is_the_newest_in_staging() -> None:
    plan = lifecycle.plan(model(), [version("1", S, effective=S), version("2", S)], now=NOW)
    assert plan.model is not None
    assert plan.model.staging_version == "2"


class TestRollouts:
    def test_the_switch_waits_for_the_rollout(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        plan = lifecycle.plan(model(), [serving, version("2", P, effective=S)], now=NOW, rollouts={})
        assert stages(plan) == {"iris-1": P, "iris-2": S}
        assert plan.rolling_out == "iris-2"
        assert plan.versions["iris-2"].phase == "Promoting"
        assert condition(plan, "iris-2", "Reconciling") == ("True", "RolloutInProgress")

    def test_available_switches(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        rollouts = {"iris-2": Rollout(RolloutState.AVAILABLE)}
        plan = lifecycle.plan(model(), [serving, version("2", P, effective=S)], now=NOW, rollouts=rollouts)
        assert stages(plan) == {"iris-1": A, "iris-2": P}
        assert condition(plan, "iris-2", "RolledOut") == ("True", "Available")

    def test_a_failed_rollout_keeps_the_old_version_and_stays_failed(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        rollouts = {"iris-2": Rollout(RolloutState.FAILED, "progress deadline exceeded")}
        versions = [serving, version("2", P, effective=S)]
        plan = lifecycle.plan(model(), versions, now=NOW, rollouts=rollouts)
        assert stages(plan) == {"iris-1": P, "iris-2": S}
        assert condition(plan, "iris-2", "RolledOut") == ("False", "RolloutFailed")
        assert plan.versions["iris-2"].phase == "Failed"
        again = replan(plan, model(), versions, rollouts={})
        assert stages(again) == {"iris-1": P, "iris-2": S}
        assert again.rolling_out is None


def test_history_is_bounded() -> None:
    v = version("1", S, effective=D)
    long = v.status.model_copy(update={"history": v.status.history * 30})
    plan = lifecycle.plan(model(), [version("1", S, status=long)], now=NOW)
    assert len(plan.versions["iris-1"].history) == 20
    assert plan.versions["iris-1"].history[-1].stage is S


def test_planning_again_on_the_result_changes_nothing() -> None:
    versions = [version("1", P, effective=P, requested_at=EARLIER), version("2", P, effective=S), version("3", S)]
    first = lifecycle.plan(model(**GATED), versions, now=NOW)
    second = replan(first, model(**GATED), versions)
    assert second.versions == first.versions
    assert second.model == first.model
    assert second.events == []


def test_a_demoted_serving_version_hands_over_only_when_the_new_one_is_available() -> None:
    old = version("1", A, effective=P, requested_at=EARLIER)  # archived in the same change as ...
    new = version("2", P, effective=S)  # ... this promotion (what `modelreg stage` does)
    rolling = lifecycle.plan(model(), [old, new], now=NOW, rollouts={})
    assert rolling.production == "iris-1"
    assert stages(rolling) == {"iris-1": P, "iris-2": S}
    assert rolling.versions["iris-1"].phase == "HandingOver"
    done = lifecycle.plan(model(), [old, new], now=NOW, rollouts={"iris-2": Rollout(RolloutState.AVAILABLE)})
    assert stages(done) == {"iris-1": A, "iris-2": P}


def test_a_demoted_serving_version_keeps_serving_when_its_replacement_fails() -> None:
    old = version("1", A, effective=P, requested_at=EARLIER)
    broken = version("2", P, effective=S, artifact=MISMATCH)
    plan = lifecycle.plan(model(), [old, broken], now=NOW)
    assert plan.production == "iris-1"
    assert condition(plan, "iris-1", "Stalled") == ("True", "KeptServing")
    failed = lifecycle.plan(model(), [old, version("2", P, effective=S)], now=NOW,
                           rollouts={"iris-2": Rollout(RolloutState.FAILED, "deadline")})  # fmt: skip
    assert failed.production == "iris-1"


SERVED = {"serving": {"image": "server:1"}}


class TestServingNeverDrops:
    """Issue 7, items 2-4: the endpoint is only ever handed over, never dropped."""

    def test_a_demoted_serving_version_with_no_successor_keeps_serving(self) -> None:
        # A GitOps sync applied "v1: Archived" before "v2: Production".
        v1 = version("1", A, effective=P, requested_at=EARLIER)
        plan = lifecycle.plan(model(**SERVED), [v1, version("2", S, effective=S)], now=NOW, rollouts={})
        assert plan.production == "iris-1"
        assert stages(plan) == {"iris-1": P, "iris-2": S}
        assert plan.versions["iris-1"].phase == "Held"
        assert condition(plan, "iris-1", "Reconciling") == ("True", "HeldServing")
        assert condition(plan, "iris-1", "Stalled") == ("False", "NotStalled")
        held = [e for e in plan.events if e.reason == "HeldServing"]
        assert len(held) == 1
        assert held[0].warning
        assert "remove spec.serving" in held[0].message
        again = replan(plan, model(**SERVED), [v1, version("2", S, effective=S)], rollouts={})
        assert again.events == []  # one Event, not one per reconcile

    def test_the_second_sync_step_hands_over(self) -> None:
        v1 = version("1", A, effective=P, requested_at=EARLIER)
        v2 = version("2", P, effective=S)
        rolling = lifecycle.plan(model(**SERVED), [v1, v2], now=NOW, rollouts={})
        assert rolling.production == "iris-1"
        assert rolling.rolling_out == "iris-2"
        done = lifecycle.plan(model(**SERVED), [v1, v2], now=NOW, rollouts={"iris-2": Rollout(RolloutState.AVAILABLE)})
        assert stages(done) == {"iris-1": A, "iris-2": P}
        lost = next(e for e in done.events if e.name == "iris-1" and e.reason == "Archived")
        assert lost.warning  # losing Production is worth a person's attention

    def test_without_serving_demoting_leaves_no_production(self) -> None:
        plan = lifecycle.plan(model(), [version("1", A, effective=P, requested_at=EARLIER)], now=NOW)
        assert plan.production is None

    def test_a_failed_recheck_keeps_the_last_verified_digest_and_serving(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        first = lifecycle.plan(model(**SERVED), [serving], now=NOW, rollouts={})
        assert first.versions["iris-1"].artifact is not None
        digest = first.versions["iris-1"].artifact.digest
        for failure in (MISSING, MISMATCH):
            failing = version("1", P, status=first.versions["iris-1"], artifact=failure)
            plan = lifecycle.plan(model(**SERVED), [failing], now=NOW, rollouts={})
            assert plan.production == "iris-1"
            status = plan.versions["iris-1"]
            assert status.stage is P
            assert status.artifact is not None
            assert status.artifact.digest == digest
            verified = next(c for c in status.conditions if c.type == "ArtifactVerified")
            assert verified.status == "False"
            assert "keeps serving the last verified digest" in verified.message
            assert any(e.reason == failure.reason.value and e.warning for e in plan.events)

    def test_a_failed_recheck_blocks_a_new_rollout(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        staged = version("2", S, effective=S)
        first = lifecycle.plan(model(**SERVED), [serving, staged], now=NOW, rollouts={})
        promote = version("2", P, status=first.versions["iris-2"], artifact=MISSING)
        plan = lifecycle.plan(model(**SERVED), [serving, promote], now=NOW, rollouts={})
        assert plan.production == "iris-1"
        assert plan.rolling_out is None
        assert stages(plan)["iris-2"] is S

    def test_a_failing_serving_deployment_is_reported_and_keeps_serving(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        rollouts = {"iris-1": Rollout(RolloutState.FAILED, "Deployment iris-1: FailedCreate: invalid image")}
        plan = lifecycle.plan(model(**SERVED), [serving], now=NOW, rollouts=rollouts)
        assert plan.production == "iris-1"
        assert condition(plan, "iris-1", "RolledOut") == ("False", "ServingRolloutFailed")
        assert condition(plan, "iris-1", "Ready")[0] == "False"
        assert condition(plan, "iris-1", "Stalled") == ("True", "ServingRolloutFailed")

    def test_a_rollout_in_progress_is_a_normal_event(self) -> None:
        serving = version("1", P, effective=P, requested_at=EARLIER)
        plan = lifecycle.plan(model(**SERVED), [serving, version("2", P, effective=S)], now=NOW, rollouts={})
        started = [e for e in plan.events if e.reason == "RolloutInProgress"]
        assert started
        assert not any(e.warning for e in started)


def created(v: lifecycle.VersionInput, *, name: str, minutes: int) -> lifecycle.VersionInput:
    return dataclasses.replace(v, name=name, created=EARLIER + datetime.timedelta(minutes=minutes))


class TestDuplicateVersions:
    """Issue 7, item 6: two objects claiming one (model, version)."""

    def test_the_older_object_keeps_the_version_and_the_newer_is_held(self) -> None:
        old = created(version("1", P, effective=P, requested_at=EARLIER), name="iris-one", minutes=0)
        new = created(version("1", P), name="iris-again", minutes=5)
        plan = lifecycle.plan(model(**SERVED), [new, old], now=NOW, rollouts={})
        assert plan.production == "iris-one"
        assert stages(plan)["iris-again"] is D
        assert condition(plan, "iris-again", "Stalled") == ("True", "DuplicateVersion")
        assert "iris-one" in plan.versions["iris-again"].conditions[-1].message
        assert plan.versions["iris-again"].production_requested_at is None
        assert lifecycle.duplicates([new, old]) == {"iris-again"}

    def test_a_newer_duplicate_never_serves_even_as_the_newest_request(self) -> None:
        old = created(version("1", S, effective=S), name="iris-one", minutes=0)
        new = created(version("1", P), name="aaa", minutes=5)  # sorts first, asks for more
        plan = lifecycle.plan(model(**SERVED), [new, old], now=NOW, rollouts={})
        assert plan.production is None
        assert plan.rolling_out is None
        assert [e for e in plan.events if e.name == "aaa" and e.reason == "DuplicateVersion"]

    def test_a_copy_created_in_the_same_second_never_takes_over_what_serves(self) -> None:
        """creationTimestamp has whole seconds: seen in CI, a copy applied within the
        second of the original, with a name that sorts first, took the version."""
        serving = created(version("1", P, effective=P, requested_at=EARLIER), name="m-1", minutes=0)
        copy = created(version("1", P), name="a-copy", minutes=0)
        assert lifecycle.duplicates([copy, serving]) == {"a-copy"}
        plan = lifecycle.plan(model(**SERVED), [copy, serving], now=NOW, rollouts={})
        assert plan.production == "m-1"
        assert condition(plan, "a-copy", "Stalled") == ("True", "DuplicateVersion")
        assert "ModelVersion m-1 already registers" in plan.versions["a-copy"].conditions[-1].message
        # The copy now has a history of its own (registered, held): the next plans must
        # still give the version to the object that serves. Seen in CI: the second plan
        # broke the tie by name, archived m-1 and made the copy the Production request.
        again = replan(plan, model(**SERVED), [copy, serving], rollouts={})
        assert plan.versions["a-copy"].history
        assert (again.production, stages(again)["m-1"]) == ("m-1", P)
        assert condition(again, "a-copy", "Stalled") == ("True", "DuplicateVersion")
        assert replan(again, model(**SERVED), [copy, serving], rollouts={}).production == "m-1"

    def test_copies_created_in_the_same_second_keep_one_owner(self) -> None:
        """Neither deployed yet: the name decides, and keeps deciding as both gain a history."""
        one, two = (created(version("1", P), name=n, minutes=0) for n in ("b-one", "a-two"))
        plan = lifecycle.plan(model(**SERVED), [one, two], now=NOW, rollouts={})
        for _ in range(3):
            assert lifecycle.duplicates([one, two]) == {"b-one"}
            assert condition(plan, "b-one", "Stalled") == ("True", "DuplicateVersion")
            plan = replan(plan, model(**SERVED), [one, two], rollouts={})
            one, two = (dataclasses.replace(v, status=plan.versions[v.name]) for v in (one, two))
        assert plan.rolling_out == "a-two"  # its Deployment has not rolled out yet (rollouts={})


def test_a_refused_serving_spec_stalls_the_model_with_the_api_servers_words() -> None:
    why = "the API server refused Deployment iris-1 as rendered from spec.serving: Limit must be set"
    plan = lifecycle.plan(model(**SERVED), [version("1", P, effective=P, requested_at=EARLIER)], now=NOW,
                          rollouts={}, refusals=[why])  # fmt: skip
    assert plan.model is not None
    stalled = next(c for c in plan.model.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason, stalled.message) == ("True", "ServingRefused", why)
    assert next(c for c in plan.model.conditions if c.type == "Ready").status == "False"


def test_a_serving_version_with_no_pod_available_is_not_ready() -> None:
    serving = version("1", P, effective=P, requested_at=EARLIER)
    empty = {"iris-1": Rollout(RolloutState.PROGRESSING, "Deployment iris-1: 0/2 Pods available", available=0)}
    plan = lifecycle.plan(model(**SERVED), [serving], now=NOW, rollouts=empty)
    assert plan.production == "iris-1"
    assert condition(plan, "iris-1", "Ready") == ("False", "NoEndpoint")
    assert plan.model is not None
    assert next(c for c in plan.model.conditions if c.type == "Ready").status == "False"
    partial = {"iris-1": Rollout(RolloutState.PROGRESSING, "Deployment iris-1: 1/2 Pods available", available=1)}
    assert (
        condition(lifecycle.plan(model(**SERVED), [serving], now=NOW, rollouts=partial), "iris-1", "Ready")[0] == "True"
    )
