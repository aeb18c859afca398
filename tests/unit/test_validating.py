"""Validation Jobs: the Job rendered, its outcome read from the Job and its Pods,
and when one runs (once per key), as `validating` decides them."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest

from modelreg import serving, validating
from modelreg.api.common import Stage
from modelreg.api.modelversion import ValidationResult, ValidationStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, ValidationJob

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
DIGEST = "sha256:" + "b" * 64
PLACEMENT = {"nodeSelector": {"modelreg.dev/node": "real"},
             "tolerations": [{"key": "modelreg.dev/node", "operator": "Equal", "value": "real",
                              "effect": "NoSchedule"}]}  # fmt: skip
SPEC = RegisteredModelSpec.model_validate(
    {
        "serving": {"image": "server:1", **PLACEMENT},
        "promotion": {
            "validation": {
                "image": "validate:1",
                "command": ["python3", "-c", "print(1)"],
                "env": [{"name": "SAMPLES", "value": "100"}],
                "resources": {"limits": {"memory": "256Mi"}},
                "activeDeadlineSeconds": 120,
                "backoffLimit": 1,
                "ttlSecondsAfterFinished": 60,
            }
        },
    }
)
STORAGE = serving.StorageEnv(endpoint="http://10.0.0.1:7070", region="us-east-1", secret_name="s3")
Obj = dict[str, Any]


def changed(**fields: Any) -> ValidationJob:
    """The test template with some fields changed (validated, as the API server would)."""
    assert SPEC.promotion.validation is not None
    return ValidationJob.model_validate(SPEC.promotion.validation.model_dump(by_alias=True) | fields)


def setting(template: ValidationJob | None = None, **kwargs: Any) -> validating.Setting:
    template = template or SPEC.promotion.validation
    assert template is not None
    fields: dict[str, Any] = {"namespace": "ns", "model": "iris", "template": template, "served": SPEC.serving,
                              "storage": STORAGE, "operator_image": "modelreg:1"} | kwargs  # fmt: skip
    return validating.Setting(**fields)


def version(stage: Stage = Stage.STAGING, **kwargs: Any) -> validating.Version:
    fields: dict[str, Any] = {
        "name": "iris-2",
        "uid": "uid-2",
        "generation": 2,
        "version": "2",
        "uri": "s3://models/iris/2/model.json",
        "metrics": {"accuracy": 0.9},
        "stage": stage,
        "effective": Stage.DEVELOPMENT,
        "served_before": False,
        "digest": DIGEST,
        "record": None,
    }
    return validating.Version(**(fields | kwargs))


def created(decision: validating.Decision) -> Obj:
    assert decision.create is not None, decision
    return decision.create


def live(job: Obj, *, conditions: list[Obj] | None = None, **status: Any) -> Obj:
    """The Job as the API returns it once created."""
    meta = job["metadata"] | {"uid": "job-uid", "creationTimestamp": "2026-11-30T11:59:00Z"}
    return job | {"metadata": meta, "status": {"conditions": conditions or [], **status}}


def pod(phase: str, *, containers: list[Obj] | None = None, init: list[Obj] | None = None,
        conditions: list[Obj] | None = None, name: str = "p-1") -> Obj:  # fmt: skip
    return {
        "metadata": {
            "name": name,
            "labels": {validating.JOB_UID_LABEL: "job-uid"},
            "creationTimestamp": "2026-11-30T11:59:01Z",
        },
        "status": {
            "phase": phase,
            "containerStatuses": containers or [],
            "initContainerStatuses": init or [],
            "conditions": conditions or [],
        },
    }


def terminated(name: str, code: int, message: str = "") -> Obj:
    return {"name": name, "state": {"terminated": {"exitCode": code, "message": message,
                                                   "reason": "Completed" if code == 0 else "Error"}}}  # fmt: skip


def true(type_: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-30T11:59:30Z"}  # fmt: skip


# --- the Job -------------------------------------------------------------------------------


def test_the_job_runs_the_template_on_the_verified_artifact_as_serving_fetches_it() -> None:
    s = setting(production_version="1", production_endpoint="http://10.96.0.20:80")
    job = created(validating.decide(s, version(), jobs=[], pods=[], now=NOW))
    assert job["kind"] == "Job"
    assert job["metadata"]["ownerReferences"] == [serving.owner_reference("ModelVersion", "iris-2", "uid-2")]
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    # The same init container, security context and placement as the version's serving Pods.
    ref = serving.VersionRef(name="iris-2", uid="uid-2", version="2", uri="s3://models/iris/2/model.json",
                             digest="b" * 64)  # fmt: skip
    assert SPEC.serving is not None
    deployment = serving.render_deployment(model="iris", serving=SPEC.serving, version=ref, stage=Stage.STAGING,
                                           replicas=1, storage=STORAGE, operator_image="modelreg:1")  # fmt: skip
    served = deployment["spec"]["template"]["spec"]
    assert pod_spec["initContainers"] == served["initContainers"]
    for key in ("securityContext", "nodeSelector", "tolerations", "automountServiceAccountToken"):
        assert pod_spec[key] == served[key], key
    (container,) = pod_spec["containers"]
    assert container["image"] == "validate:1"
    assert container["command"] == ["python3", "-c", "print(1)"]
    assert container["resources"] == {"limits": {"memory": "256Mi"}}
    assert container["securityContext"] == served["containers"][0]["securityContext"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "MODEL_PATH": serving.ARTIFACT_PATH,
        "MODELREG_MODEL": "iris",
        "MODELREG_VERSION": "2",
        "MODELREG_STAGE": "Staging",
        "MODELREG_DIGEST": DIGEST,
        "MODELREG_ARTIFACT_URI": "s3://models/iris/2/model.json",
        "MODELREG_METRICS": json.dumps({"accuracy": 0.9}),
        "MODELREG_PRODUCTION_VERSION": "1",
        "MODELREG_PRODUCTION_ENDPOINT": "http://10.96.0.20:80",
        "SAMPLES": "100",
    }


def test_the_jobs_pods_never_carry_the_labels_the_services_select() -> None:
    job = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert serving.VERSION_LABEL not in labels
    assert serving.MODEL_LABEL not in labels
    assert labels[validating.VALIDATION_LABEL] == "iris"
    # The Job itself is labelled like the model's other objects (read and watched by label).
    assert job["metadata"]["labels"][serving.MODEL_LABEL] == "iris"


def test_without_a_production_version_there_is_no_endpoint_to_compare_with() -> None:
    job = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELREG_PRODUCTION_ENDPOINT" not in names
    assert "MODELREG_PRODUCTION_VERSION" not in names


def test_job_names_fit_and_differ_per_version_and_key() -> None:
    long = version(name="x" * 60, version="1.2.3-" + "a" * 50)
    a = validating.job_name("m" * 52, long, "k1")
    b = validating.job_name("m" * 52, long, "k2")
    c = validating.job_name("m" * 52, dataclasses.replace(long, name="y" * 60), "k1")
    assert len({a, b, c}) == 3
    assert all(len(n) <= 63 and n[0].isalnum() for n in (a, b, c))


# --- when a Job runs -------------------------------------------------------------------------


def test_the_key_follows_the_digest_the_template_the_generation_and_the_placement_only() -> None:
    base = validating.validation_key(setting(), digest=DIGEST, generation=2)
    assert validating.validation_key(setting(), digest="sha256:" + "c" * 64, generation=2) != base
    assert validating.validation_key(setting(), digest=DIGEST, generation=3) != base
    assert validating.validation_key(setting(changed(args=["--strict"])), digest=DIGEST, generation=2) != base
    assert SPEC.serving is not None
    moved = SPEC.serving.model_validate(SPEC.serving.model_dump(by_alias=True) | {"nodeSelector": {"gpu": "true"}})
    assert validating.validation_key(setting(served=moved), digest=DIGEST, generation=2) != base
    unrelated = setting(production_version="7", production_endpoint="http://x", operator_image="modelreg:2",
                        storage=serving.StorageEnv())  # fmt: skip
    assert validating.validation_key(unrelated, digest=DIGEST, generation=2) == base


@pytest.mark.parametrize("stage", [Stage.DEVELOPMENT, Stage.ARCHIVED])
def test_no_job_for_a_stage_that_is_not_guarded(stage: Stage) -> None:
    decision = validating.decide(setting(), version(stage), jobs=[], pods=[], now=NOW)
    assert decision == validating.Decision(None)


def test_the_guarded_stages_are_the_templates() -> None:
    production_only = setting(changed(stages=["Production"]))
    assert validating.decide(production_only, version(Stage.STAGING), jobs=[], pods=[], now=NOW).create is None
    asks = version(Stage.PRODUCTION, effective=Stage.STAGING)
    assert validating.decide(production_only, asks, jobs=[], pods=[], now=NOW).create is not None


def test_no_job_without_a_verified_artifact() -> None:
    decision = validating.decide(setting(), version(digest=None), jobs=[], pods=[], now=NOW)
    assert decision.create is None
    assert decision.check is not None
    assert decision.check.passed is None
    assert decision.check.reason == "WaitingForArtifact"


def test_a_job_is_created_once_and_then_read() -> None:
    first = validating.decide(setting(), version(), jobs=[], pods=[], now=NOW)
    job = created(first)
    assert first.check is not None
    assert first.check.passed is None
    assert first.check.record is not None
    assert first.check.record.result is ValidationResult.RUNNING
    # Next reconcile: the Job exists (no Pod yet) → no second Job, still running.
    again = validating.decide(setting(), version(record=first.check.record), jobs=[live(job)], pods=[], now=NOW)
    assert again.create is None
    assert again.delete == ()
    assert again.check is not None
    assert again.check.passed is None
    assert again.check.record == first.check.record, "nothing changed: nothing to write"


def test_an_outcome_for_the_current_key_is_final_even_once_its_job_is_gone() -> None:
    job = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    done = live(job, conditions=[true("Complete")], completionTime="2026-11-30T11:59:40Z")
    passed = validating.decide(setting(), version(), jobs=[done], pods=[], now=NOW)
    assert passed.check is not None
    assert passed.check.passed is True
    # The TTL controller deleted the Job: the record says Passed for this key, nothing runs again.
    later = validating.decide(setting(), version(record=passed.check.record), jobs=[], pods=[], now=NOW)
    assert later.create is None
    assert later.check is not None
    assert later.check.passed is True


def test_a_new_key_runs_a_new_job_and_deletes_the_stale_one_still_running() -> None:
    old = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    decision = validating.decide(setting(changed(args=["--strict"])), version(), jobs=[live(old)], pods=[], now=NOW)
    assert created(decision)["metadata"]["name"] != old["metadata"]["name"]
    assert decision.delete == (old["metadata"]["name"],)


def test_a_finished_job_of_an_old_key_is_left_to_its_ttl() -> None:
    old = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    decision = validating.decide(setting(), version(generation=3), jobs=[live(old, conditions=[true("Failed")])],
                                 pods=[], now=NOW)  # fmt: skip
    assert decision.create is not None
    assert decision.delete == ()


def test_a_version_already_in_its_stage_runs_nothing_and_keeps_its_last_outcome() -> None:
    record = ValidationStatus(key="k", job_name="j", result=ValidationResult.PASSED, reason="Succeeded")
    decision = validating.decide(setting(), version(effective=Stage.STAGING, record=record), jobs=[], pods=[], now=NOW)
    assert decision.create is None
    assert decision.check is not None
    assert decision.check.passed is True
    assert decision.check.record == record


def test_a_rollback_is_not_validated_again() -> None:
    v = version(Stage.PRODUCTION, effective=Stage.ARCHIVED, served_before=True)
    decision = validating.decide(setting(), v, jobs=[], pods=[], now=NOW)
    assert decision.create is None
    assert decision.check is not None
    assert (decision.check.passed, decision.check.reason) == (True, "Rollback")


def test_a_job_no_longer_needed_is_cancelled() -> None:
    first = validating.decide(setting(), version(), jobs=[], pods=[], now=NOW)
    job, record = created(first), first.check.record if first.check else None
    back = version(Stage.DEVELOPMENT, record=record)
    decision = validating.decide(setting(), back, jobs=[live(job)], pods=[], now=NOW)
    assert decision.delete == (job["metadata"]["name"],)
    assert decision.check is not None
    assert not decision.check.gated
    assert decision.check.record is not None
    assert decision.check.record.reason == "Cancelled"
    # The model stops validating: the same.
    assert validating.decide(None, version(record=record), jobs=[live(job)], pods=[], now=NOW).delete == (
        job["metadata"]["name"],
    )


def test_another_versions_jobs_are_not_this_ones() -> None:
    other = created(validating.decide(setting(), version(name="iris-3", uid="u3"), jobs=[], pods=[], now=NOW))
    decision = validating.decide(setting(), version(Stage.DEVELOPMENT), jobs=[live(other)], pods=[], now=NOW)
    assert decision.delete == ()


# --- outcomes ---------------------------------------------------------------------------------


def decide_on(job_status: dict[str, Any], pods: list[Obj]) -> validating.Decision:
    job = created(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    return validating.decide(setting(), version(), jobs=[live(job, **job_status)], pods=pods, now=NOW)


def record_of(decision: validating.Decision) -> ValidationStatus:
    assert decision.check is not None
    assert decision.check.record is not None
    return decision.check.record


def test_exit_0_passes_and_reported_metrics_are_kept() -> None:
    said = 'loaded 3 samples\n{"agreement": 0.97, "latency_ms": 12, "note": "x", "ok": true}'
    decision = decide_on({"conditions": [true("Complete")], "completionTime": "2026-11-30T11:59:40Z"},
                         [pod("Succeeded", containers=[terminated("validate", 0, said)])])  # fmt: skip
    record = record_of(decision)
    assert (record.result, record.reason) == (ValidationResult.PASSED, "Succeeded")
    assert record.metrics == {"agreement": 0.97, "latency_ms": 12.0}
    assert record.finished_at == datetime.datetime(2026, 11, 30, 11, 59, 40, tzinfo=datetime.UTC)
    assert record.started_at == datetime.datetime(2026, 11, 30, 11, 59, tzinfo=datetime.UTC)
    assert '"agreement": 0.97' in record.message
    assert decision.delete == ()


def test_a_non_zero_exit_fails_quoting_the_end_of_its_termination_message() -> None:
    said = "\n".join(f"line {i}" for i in range(400)) + "\nAssertionError: accuracy 0.41 < 0.8"
    decision = decide_on({"conditions": [true("Failed", "BackoffLimitExceeded", "Job has reached the backoff")]},
                         [pod("Failed", containers=[terminated("validate", 3, said)])])  # fmt: skip
    record = record_of(decision)
    assert (record.result, record.reason) == (ValidationResult.FAILED, "Failed")
    assert "container validate exited 3" in record.message
    assert record.message.endswith("AssertionError: accuracy 0.41 < 0.8")
    assert "line 0 " not in record.message, "only the end is quoted"
    assert len(record.message) < 1200
    assert decision.check is not None
    assert decision.check.passed is False


def test_the_deadline_fails() -> None:
    decision = decide_on({"conditions": [true("Failed", "DeadlineExceeded", "Job was active longer than specified")]},
                         [])  # fmt: skip
    assert record_of(decision).reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in record_of(decision).message


def test_an_init_container_failure_fails_as_an_artifact_fetch() -> None:
    init = [terminated("fetch-artifact", 4, "fetch-artifact: ChecksumMismatch: the digest differs")]
    decision = decide_on({"conditions": [true("Failed", "BackoffLimitExceeded")]}, [pod("Failed", init=init)])
    record = record_of(decision)
    assert record.reason == "ArtifactFetchFailed"
    assert "fetch-artifact exited 4: fetch-artifact: ChecksumMismatch" in record.message


def test_an_image_that_cannot_be_pulled_fails_at_once_and_its_job_is_deleted() -> None:
    waiting = {"name": "validate", "image": "registry.local/nope:1",
               "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}  # fmt: skip
    decision = decide_on({"active": 1}, [pod("Pending", containers=[waiting])])
    record = record_of(decision)
    assert (record.result, record.reason) == (ValidationResult.FAILED, "ImagePullFailed")
    assert "registry.local/nope:1" in record.message
    assert record.finished_at == NOW
    assert len(decision.delete) == 1, "a stuck Job would wait out its deadline"


def test_a_pod_that_cannot_be_scheduled_fails() -> None:
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    }
    decision = decide_on({"active": 1}, [pod("Pending", conditions=[unschedulable])])
    assert record_of(decision).reason == "Unschedulable"
    assert "didn't match" in record_of(decision).message


def test_a_running_pod_is_running() -> None:
    running = {"name": "validate", "state": {"running": {"startedAt": "2026-11-30T11:59:05Z"}}}
    decision = decide_on({"active": 1}, [pod("Running", containers=[running])])
    assert record_of(decision).result is ValidationResult.RUNNING
    assert decision.delete == ()


def test_pods_of_another_job_say_nothing_about_this_one() -> None:
    other = pod("Pending", containers=[{"name": "validate", "state": {"waiting": {"reason": "ErrImagePull"}}}])
    other["metadata"]["labels"][validating.JOB_UID_LABEL] = "another-uid"
    assert record_of(decide_on({"active": 1}, [other])).result is ValidationResult.RUNNING


@pytest.mark.parametrize(
    ("message", "metrics"),
    [
        ('{"a": 1, "b": 2.5}', {"a": 1.0, "b": 2.5}),
        ('done\n{"a": 1}\n', {"a": 1.0}),
        ('{"a": "high", "b": true, "c": null, "": 1}', {}),
        ("[1, 2]", {}),
        ("not json", {}),
        ("", {}),
        (json.dumps({f"m{i:03}": i for i in range(100)}), {f"m{i:03}": float(i) for i in range(64)}),
        ('{"x": NaN, "y": 1}', {"y": 1.0}),
    ],
)
def test_metrics_are_a_json_object_of_numbers(message: str, metrics: dict[str, float]) -> None:
    assert validating.metrics_of(message) == metrics


def test_a_job_failing_on_its_own_is_left_to_its_ttl_with_its_logs() -> None:
    """Only a stuck Job is deleted: one the Job controller is failing (FailureTarget,
    its Pods still terminating) keeps its Pods' logs until its TTL."""
    decision = decide_on(
        {"conditions": [true("FailureTarget", "BackoffLimitExceeded")]},
        [pod("Failed", containers=[terminated("validate", 1, "boom")])],
    )
    assert record_of(decision).result is ValidationResult.FAILED
    assert decision.delete == ()


def test_no_metrics_reported_leaves_the_field_out_of_status() -> None:
    """A server-side apply that empties a map it owned stores null, which the schema refuses
    (seen on the real node when a new Job's record replaced one with metrics)."""
    decision = decide_on({"conditions": [true("Complete")]}, [pod("Succeeded", containers=[terminated("validate", 0)])])
    dumped = record_of(decision).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert "metrics" not in dumped
    running = record_of(validating.decide(setting(), version(), jobs=[], pods=[], now=NOW))
    assert "metrics" not in running.model_dump(by_alias=True, exclude_none=True, mode="json")
