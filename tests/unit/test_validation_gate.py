"""The validation gate in the lifecycle engine: a running Job holds a version
without blocking it, a failed one blocks it with a Warning, a passed one lets
it in, the serving version is never disturbed, and metrics a Job reported are
read by the metric gates."""

from __future__ import annotations

import dataclasses

from modelreg import lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ValidationResult, ValidationStatus
from modelreg.facts import ValidationCheck
from tests.unit.lifecycle_builders import NOW, condition, model, stages, version

D, S, P, A = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
VALIDATED = {"promotion": {"validation": {"image": "validate:1"}}}


def record(result: ValidationResult, reason: str, **fields: object) -> ValidationStatus:
    return ValidationStatus.model_validate(
        {
            "key": "k",
            "jobName": "iris-2-validate-1",
            "result": result,
            "reason": reason,
            "message": f"validation Job iris-2-validate-1: {reason}",
        }
        | fields
    )


RUNNING = ValidationCheck(None, "ValidationRunning", "validation Job iris-2-validate-1 is running",
                          record(ValidationResult.RUNNING, "Running"))  # fmt: skip
FAILED = ValidationCheck(False, "ImagePullFailed", "validation Job iris-2-validate-1: cannot pull image",
                         record(ValidationResult.FAILED, "ImagePullFailed"))  # fmt: skip
PASSED = ValidationCheck(True, "Succeeded", "validation Job iris-2-validate-1 succeeded",
                         record(ValidationResult.PASSED, "Succeeded", metrics={"agreement": 0.97}))  # fmt: skip


def checked(v: lifecycle.VersionInput, check: ValidationCheck) -> lifecycle.VersionInput:
    return dataclasses.replace(v, validation=check)


def test_a_failed_validation_says_what_releases_it() -> None:
    plan = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), FAILED)], now=NOW)
    ready = next(c for c in plan.versions["iris-2"].conditions if c.type == "Ready")
    assert "held by ValidationPassed: validation Job iris-2-validate-1: cannot pull image" in ready.message
    assert "to release: fix what the Job reports" in ready.message
    gate = next(c for c in plan.versions["iris-2"].conditions if c.type == "ValidationPassed")
    assert "it runs again when the artifact, spec.promotion.validation or this version's spec changes" in gate.message


def test_a_running_validation_holds_the_version_on_its_way_without_a_warning() -> None:
    plan = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), RUNNING)], now=NOW)
    assert stages(plan) == {"iris-2": D}
    st = plan.versions["iris-2"]
    assert st.phase == "Reconciling"
    assert condition(plan, "iris-2", "ValidationPassed") == ("Unknown", "ValidationRunning")
    assert condition(plan, "iris-2", "Stalled") == ("False", "NotStalled")
    assert condition(plan, "iris-2", "Reconciling") == ("True", "ValidationRunning")
    assert not [e for e in plan.events if e.warning]
    assert st.validation == RUNNING.record


def test_a_failed_validation_blocks_with_a_warning_event() -> None:
    plan = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), FAILED)], now=NOW)
    assert stages(plan) == {"iris-2": D}
    assert plan.versions["iris-2"].phase == "Blocked"
    assert condition(plan, "iris-2", "ValidationPassed") == ("False", "ImagePullFailed")
    assert condition(plan, "iris-2", "Stalled") == ("True", "ImagePullFailed")
    warnings = [e for e in plan.events if e.warning]
    assert [(e.name, e.reason) for e in warnings] == [("iris-2", "ImagePullFailed")]
    assert "cannot pull image" in warnings[0].message
    # The same failure on the next reconcile announces nothing again.
    again = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D, status=plan.versions["iris-2"]),
                                                        FAILED)], now=NOW)  # fmt: skip
    assert not [e for e in again.events if e.warning]


def test_a_passed_validation_lets_the_version_in() -> None:
    plan = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), PASSED)], now=NOW)
    assert stages(plan) == {"iris-2": S}
    assert condition(plan, "iris-2", "ValidationPassed") == ("True", "Succeeded")
    assert condition(plan, "iris-2", "Ready") == ("True", "Ready")


def test_the_serving_version_is_not_disturbed_while_a_candidate_validates_or_fails() -> None:
    serving = version("1", P, effective=P)
    for check, phase in ((RUNNING, "Reconciling"), (FAILED, "Blocked")):
        candidate = checked(version("2", P, effective=S), check)
        plan = lifecycle.plan(model(**VALIDATED), [serving, candidate], now=NOW)
        assert stages(plan) == {"iris-1": P, "iris-2": S}
        assert plan.production == "iris-1"
        assert plan.rolling_out is None
        assert plan.versions["iris-2"].phase == phase
        assert condition(plan, "iris-1", "Ready") == ("True", "Ready")


def test_a_metric_reported_by_the_job_is_read_by_a_threshold() -> None:
    spec = {"promotion": {"validation": {"image": "validate:1"},
                          "thresholds": [{"metric": "agreement", "min": 0.95}]}}  # fmt: skip
    passing = lifecycle.plan(model(**spec), [checked(version("2", S, effective=D, metrics={}), PASSED)], now=NOW)
    assert stages(passing) == {"iris-2": S}
    low = dataclasses.replace(PASSED, record=PASSED.record.model_copy(update={"metrics": {"agreement": 0.5}})
                              if PASSED.record else None)  # fmt: skip
    failing = lifecycle.plan(model(**spec), [checked(version("2", S, effective=D, metrics={}), low)], now=NOW)
    assert stages(failing) == {"iris-2": D}
    assert condition(failing, "iris-2", "MetricThresholds") == ("False", "ThresholdNotMet")


def test_the_jobs_metric_wins_over_the_spec_of_the_same_name() -> None:
    spec = {"promotion": {"validation": {"image": "validate:1"},
                          "thresholds": [{"metric": "agreement", "min": 0.95}]}}  # fmt: skip
    v = checked(version("2", S, effective=D, metrics={"agreement": 0.1}), PASSED)
    assert stages(lifecycle.plan(model(**spec), [v], now=NOW)) == {"iris-2": S}


def test_a_record_without_a_gate_is_kept_in_status_only() -> None:
    cancelled = ValidationCheck(None, "Cancelled", "cancelled", record(ValidationResult.FAILED, "Cancelled"),
                                gated=False)  # fmt: skip
    plan = lifecycle.plan(model(**VALIDATED), [checked(version("2", D, effective=D), cancelled)], now=NOW)
    assert all(c.type != "ValidationPassed" for c in plan.versions["iris-2"].conditions)
    assert plan.versions["iris-2"].validation == cancelled.record
    assert condition(plan, "iris-2", "Ready") == ("True", "Ready")


def test_status_keeps_the_last_record_when_nothing_is_checked() -> None:
    before = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), PASSED)], now=NOW)
    after = lifecycle.plan(model(), [version("2", S, status=before.versions["iris-2"])], now=NOW)
    assert after.versions["iris-2"].validation == PASSED.record


def test_a_running_validation_is_looked_at_again_and_a_finished_one_is_not() -> None:
    running = lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), RUNNING)], now=NOW)
    assert running.retry
    for check in (PASSED, FAILED):
        assert not lifecycle.plan(model(**VALIDATED), [checked(version("2", S, effective=D), check)], now=NOW).retry
