"""Validation Jobs on kwok nodes (RegisteredModel spec.promotion.validation): what
needs no real run. kwok completes a Job's Pods with exit 0 as soon as they run,
so a Job placed on the kwok node passes; one no node can take fails. What a real
container does (a failing exit, a missing image, the deadline, reported metrics)
is tested on the real node: test_validation_jobs.py."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    SERVING,
    apply,
    condition,
    events,
    model_manifest,
    operator_writes,
    serve_first_version,
    serving_version,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_stage,
)

VALIDATION = {"image": "registry.example.com/validate:1", "command": ["python3", "-c", "print('ok')"],
              "ttlSecondsAfterFinished": 10, "activeDeadlineSeconds": 60}  # fmt: skip


def jobs(kube: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(kube.get_json("jobs", "-n", namespace)["items"])


def job_creates(kube: Cluster, namespace: str) -> list[str]:
    assert kube.audit_log is not None
    return [w["objectRef"]["name"] for w in operator_writes(kube.audit_log, namespace)
            if w["objectRef"].get("resource") == "jobs" and w["verb"] == "create"]  # fmt: skip


def reconciled_again(kube: Cluster, namespace: str, model: str) -> None:
    """Change the model (a description: nothing the Jobs depend on) and wait for a
    reconcile to have read it: everything the operator would do again, it has done."""
    description = f"touched {len(job_creates(kube, namespace))}-{id(object())}"
    kube.kubectl("patch", "registeredmodel", model, "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"description": description}}))  # fmt: skip
    generation = kube.get_json("registeredmodel", model, "-n", namespace)["metadata"]["generation"]
    wait_for(lambda: status(kube, namespace, model, "registeredmodel").get("observedGeneration") == generation,
             timeout=30, what="a reconcile of the changed model")  # fmt: skip


def test_a_validation_job_runs_once_per_key_owned_by_its_version(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    art = upload(s3)
    apply(kube, namespace, model_manifest("m", serving=SERVING, promotion={"validation": VALIDATION}))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Staging", metrics={"accuracy": 0.91}))  # fmt: skip
    (job,) = wait_for(lambda: jobs(kube, namespace), timeout=60, what="the validation Job")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelVersion", "m-1", True)
    pod = job["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"][:1] == ["fetch-artifact"]
    assert art.sha256 in init["args"]
    assert pod["nodeSelector"] == SERVING["nodeSelector"], "the Job runs where the serving Pods run"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODELREG_VERSION"] == "1"
    assert env["MODELREG_DIGEST"] == f"sha256:{art.sha256}"
    assert json.loads(env["MODELREG_METRICS"]) == {"accuracy": 0.91}
    assert "modelreg.dev/version" not in job["spec"]["template"]["metadata"]["labels"]

    st = wait_condition(kube, namespace, "m-1", "ValidationPassed", status_="True", timeout=60)
    assert st["validation"]["result"] == "Passed"
    assert st["validation"]["jobName"] == job["metadata"]["name"]
    wait_stage(kube, namespace, "m-1", "Staging", timeout=30)
    key = st["validation"]["key"]

    # Finished, the Job goes after its TTL; its outcome stays, and nothing runs again.
    wait_for(lambda: not jobs(kube, namespace), timeout=60, what="the TTL controller to delete the finished Job")
    reconciled_again(kube, namespace, "m")
    assert not jobs(kube, namespace)
    assert job_creates(kube, namespace) == [job["metadata"]["name"]]
    st = status(kube, namespace, "m-1")
    assert (st["validation"]["key"], st["validation"]["result"]) == (key, "Passed")

    # Asking for Production is a new generation: one more Job, with a new key.
    set_stage(kube, namespace, "m-1", "Production")
    wait_stage(kube, namespace, "m-1", "Production", timeout=60)
    st = status(kube, namespace, "m-1")
    assert st["validation"]["key"] != key
    assert (
        st["validation"]["generation"]
        == kube.get_json("modelversion", "m-1", "-n", namespace)["metadata"]["generation"]
    )
    reconciled_again(kube, namespace, "m")
    creates = job_creates(kube, namespace)
    assert len(creates) == 2, creates
    assert len(set(creates)) == 2


def test_a_failed_validation_never_disturbs_the_serving_version(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    # A Job no node can take (more CPU than the kwok node has): its Pod says so.
    greedy = VALIDATION | {"resources": {"requests": {"cpu": "100"}}}
    apply(kube, namespace, model_manifest("m", serving=SERVING, promotion={"validation": greedy}))
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, sha256=art.sha256,
                                            stage="Staging"))  # fmt: skip
    st = wait_condition(kube, namespace, "m-2", "ValidationPassed", status_="False", timeout=90)
    said = condition(st, "ValidationPassed")
    assert said["reason"] == "Unschedulable", said
    assert "Insufficient cpu" in said["message"], said
    assert st["stage"] == "Development"
    assert condition(st, "Stalled")["status"] == "True"
    warnings = [e for e in events(kube, namespace, "m-2") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["Unschedulable"]
    # The stuck Job is deleted (it would wait out its deadline); the outcome stays.
    wait_for(lambda: not jobs(kube, namespace), timeout=30, what="the stuck Job to be deleted")
    assert status(kube, namespace, "m-2")["validation"]["result"] == "Failed"
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["stage"] == "Production"
    assert condition(status(kube, namespace, "m-1"), "Ready")["status"] == "True"


def test_a_forged_validation_outcome_opens_no_gate(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    """status.validation written by somebody else ("Passed", under the failed Job's own
    key) is dropped with one Warning; the validation runs again and fails again, and the
    version stays out of Staging."""
    greedy = VALIDATION | {"resources": {"requests": {"cpu": "100"}}}  # no node takes it: fails at once
    apply(kube, namespace, model_manifest("m", serving=SERVING, promotion={"validation": greedy}))
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Staging"))  # fmt: skip
    st = wait_condition(kube, namespace, "m-1", "ValidationPassed", status_="False", timeout=90)
    failed = st["validation"]
    forged = failed | {"result": "Passed", "reason": "Succeeded", "message": "forged"}
    kube.kubectl("patch", "modelversion/m-1", "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"validation": forged}}))  # fmt: skip

    def restored() -> list[dict[str, Any]]:
        return [e for e in events(kube, namespace, "m-1") if e["reason"] == "StatusRestored"]

    (event,) = wait_for(restored, timeout=30, what="the forged validation outcome to be dropped")
    assert "status.validation was written by kubectl" in event["message"], event["message"]
    st = wait_condition(kube, namespace, "m-1", "ValidationPassed", status_="False", timeout=90)
    assert st["validation"]["result"] == "Failed"
    assert st["stage"] == "Development"
    reconciled_again(kube, namespace, "m")
    assert status(kube, namespace, "m-1")["stage"] == "Development"
    assert len(restored()) == 1, "restored once, not fought in a loop"
