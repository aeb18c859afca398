"""The metrics: what a reconcile's statuses before and after count as, the work
queue's client-go metrics, the reconcile results, and the exposition itself."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from modelreg import artifacts, logs
from modelreg.api.common import Condition, Stage
from modelreg.api.modelversion import ModelVersionStatus, Transition
from modelreg.facts import ArtifactCheck
from modelreg.metrics import Metrics, parse_bind_address
from modelreg.verifying import Settings, Verifier
from modelreg.workqueue import WorkQueue
from tests.unit.lifecycle_builders import OK, model, version

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
NS = {"namespace": "ns", "model": "m"}


def get(m: Metrics, metric: str, **labels: str) -> float:
    return m.registry.get_sample_value(metric, labels) or 0.0


def status(stage: Stage | None, *, reason: str = "", requested: datetime.datetime | None = None,
           conditions: list[Condition] | None = None) -> ModelVersionStatus:  # fmt: skip
    history = [Transition(stage=stage, time=NOW, reason=reason)] if stage is not None else []
    return ModelVersionStatus(stage=stage, history=history, production_requested_at=requested,
                              conditions=conditions or [])  # fmt: skip


def gate(type_: str, state: str, reason: str) -> Condition:
    return Condition.model_validate({"type": type_, "status": state, "reason": reason, "message": "",
                                     "lastTransitionTime": NOW})  # fmt: skip


def test_every_reconcile_result_series_exists_before_any_reconcile() -> None:
    text = generate_latest(Metrics().registry).decode()
    for result in ("success", "error", "requeue", "requeue_after"):
        assert f'controller_runtime_reconcile_total{{controller="registeredmodel",result="{result}"}} 0.0' in text
    assert 'workqueue_depth{name="registeredmodel"} 0.0' in text


def test_a_failed_reconcile_counts_as_an_error_and_its_time() -> None:
    m = Metrics()
    m.observe_reconcile(result="error", seconds=0.2)
    m.observe_reconcile(result="success", seconds=0.1)
    assert get(m, "controller_runtime_reconcile_total", controller="registeredmodel", result="error") == 1
    assert get(m, "controller_runtime_reconcile_errors_total", controller="registeredmodel") == 1
    assert get(m, "controller_runtime_reconcile_time_seconds_count", controller="registeredmodel") == 2
    assert get(m, "controller_runtime_reconcile_time_seconds_sum", controller="registeredmodel") == pytest.approx(0.3)


def test_a_promotion_counts_one_transition_and_its_switch_time() -> None:
    m = Metrics()
    requested = NOW - datetime.timedelta(seconds=42)
    before = {"m-1": status(Stage.STAGING, requested=requested), "m-2": status(Stage.PRODUCTION)}
    after = {"m-1": status(Stage.PRODUCTION, reason="Promoted", requested=requested),
             "m-2": status(Stage.ARCHIVED, reason="Superseded")}  # fmt: skip
    m.observe_plan(**NS, before=before, after=after, now=NOW)
    assert get(m, "modelreg_stage_transitions_total", **NS, stage="Production", reason="Promoted") == 1
    assert get(m, "modelreg_stage_transitions_total", **NS, stage="Archived", reason="Superseded") == 1
    assert get(m, "modelreg_production_switch_duration_seconds_sum", **NS) == 42
    assert get(m, "modelreg_versions", **NS, stage="Production") == 1
    assert get(m, "modelreg_versions", **NS, stage="Archived") == 1
    assert get(m, "modelreg_versions", **NS, stage="Staging") == 0
    # The next reconcile reads what was written: nothing new to count.
    m.observe_plan(**NS, before=after, after=after, now=NOW)
    assert get(m, "modelreg_stage_transitions_total", **NS, stage="Production", reason="Promoted") == 1
    assert get(m, "modelreg_production_switch_duration_seconds_count", **NS) == 1


def test_a_gate_is_counted_when_it_newly_fails_not_while_it_stays_failed() -> None:
    m = Metrics()
    ok = status(Stage.DEVELOPMENT, conditions=[gate("MetricThresholds", "True", "ThresholdsMet")])
    failing = status(Stage.DEVELOPMENT, conditions=[gate("MetricThresholds", "False", "BelowThreshold"),
                                                    gate("Ready", "False", "BelowThreshold")])  # fmt: skip
    m.observe_plan(**NS, before={"m-1": ok}, after={"m-1": failing}, now=NOW)
    m.observe_plan(**NS, before={"m-1": failing}, after={"m-1": failing}, now=NOW)
    assert get(m, "modelreg_gate_failures_total", **NS, gate="MetricThresholds", reason="BelowThreshold") == 1
    assert get(m, "modelreg_gate_failures_total", **NS, gate="Ready", reason="BelowThreshold") == 0  # not a gate


def test_a_model_without_versions_loses_its_series() -> None:
    m = Metrics()
    m.observe_plan(**NS, before={}, after={"m-1": status(Stage.STAGING)}, now=NOW)
    assert get(m, "modelreg_versions", **NS, stage="Staging") == 1
    m.observe_plan(**NS, before={}, after={}, now=NOW)
    assert 'modelreg_versions{model="m"' not in generate_latest(m.registry).decode()


def test_a_verification_counts_its_time_and_bytes() -> None:
    m = Metrics()
    m.observe_verification(result="Verified", seconds=1.5, downloaded=1000, size=1000)
    m.observe_verification(result="ChecksumMismatch", seconds=0.5, downloaded=10, size=None)
    assert get(m, "modelreg_artifact_verification_duration_seconds_count", result="Verified") == 1
    assert get(m, "modelreg_artifact_verification_bytes_total") == 1010
    assert get(m, "modelreg_artifact_verified_size_bytes_count") == 1


def test_the_work_queue_reports_adds_depth_and_durations() -> None:
    m = Metrics()

    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue(m.queue)
        q.add("a")
        q.add("a")  # already waiting: not an add
        q.add("b")
        assert get(m, "workqueue_depth", name="registeredmodel") == 2
        key = await q.get()
        assert get(m, "workqueue_depth", name="registeredmodel") == 1
        q.add(key)  # arrives while worked on: waits for done
        assert get(m, "workqueue_depth", name="registeredmodel") == 2
        q.done(key)
        q.retried()

    asyncio.run(scenario())
    assert get(m, "workqueue_adds_total", name="registeredmodel") == 3
    assert get(m, "workqueue_queue_duration_seconds_count", name="registeredmodel") == 1
    assert get(m, "workqueue_work_duration_seconds_count", name="registeredmodel") == 1
    assert get(m, "workqueue_retries_total", name="registeredmodel") == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", None), ("0", None), ("127.0.0.1:9090", ("127.0.0.1", 9090)), (":8081", ("0.0.0.0", 8081)),
     ("[::1]:8081", ("::1", 8081))],
)  # fmt: skip
def test_bind_addresses(given: str, expected: tuple[str, int] | None) -> None:
    assert parse_bind_address(given) == expected


def test_a_bind_address_without_a_port_is_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_bind_address("localhost")


def test_an_artifact_check_records_its_time_bytes_and_whose_it_was() -> None:
    m = Metrics()
    seen: list[dict[str, str]] = []

    def streaming(client: Any, uri: str, *, budget: artifacts.Budget, **_: Any) -> ArtifactCheck:
        budget.spend(artifacts.S3Location("models", "big"), 4096)
        seen.append(logs.current())  # what a log line of the check would carry
        return OK

    v = Verifier(Settings(wait_seconds=5.0), verify=streaming, new_client=lambda **_: object(), metrics=m)
    try:
        assert v.checks(None, namespace="ns", model=model(), versions=[version("1", artifact=None)], now=NOW)
    finally:
        v.close()
    assert seen == [{"namespace": "ns", "model": "iris", "version": "iris-1"}]
    assert get(m, "modelreg_artifact_verification_duration_seconds_count", result="Verified") == 1
    assert get(m, "modelreg_artifact_verification_bytes_total") == 4096


def test_no_created_series_as_controller_runtime() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert "_created" not in text
    assert 'leader_election_master_status{name="modelreg-operator"} 0.0' in text  # until it leads
