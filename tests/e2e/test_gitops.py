"""GitOps tools read the operator's real objects: the Argo CD health scripts
(manifests/argocd) run on objects captured live while a model and its versions
pass through healthy, progressing and degraded states (rollouts, gates, a
validation Job), and Flux's kstatus rules agree with them. With MODELREG_SAVE_GITOPS_FIXTURES=1 the captured objects are
written to tests/unit/fixtures/gitops for the unit tests."""

from __future__ import annotations

import json
import os
from typing import Any

from modelreg.devcluster import cluster
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.registry import (
    SERVING,
    apply,
    condition,
    model_manifest,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_replicas,
    wait_serving,
    wait_stage,
)
from tests.gitops import ARGO_FOR_KSTATUS, FIXTURES, health, kstatus, scrub

GATES = {"promotion": {"thresholds": [{"metric": "accuracy", "min": 0.8}]}}
# Long enough a progress deadline to read a rollout under way on a loaded machine.
SERVED = SERVING | {"progressDeadlineSeconds": 20}


class Captures:
    """Objects read from the API server, each checked by the Argo CD script where it was read."""

    def __init__(self, kube: Cluster, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.save = os.environ.get("MODELREG_SAVE_GITOPS_FIXTURES") == "1"

    def check(self, label: str, kind: str, name: str, expected: str, *, says: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.kube.get_json("-n", self.namespace, f"{kind.lower()}/{name}")
        got = health(kind, obj)
        assert got["status"] == expected, (label, got, obj.get("status"))
        assert says in got["message"], (label, got)
        if obj.get("status"):
            # Flux's kstatus reading of the same object says the same thing.
            assert ARGO_FOR_KSTATUS[kstatus(obj)] == expected, (label, kstatus(obj), obj["status"])
        if self.save:
            FIXTURES.mkdir(parents=True, exist_ok=True)
            (FIXTURES / f"{label}.json").write_text(json.dumps(scrub(obj), indent=2, sort_keys=True) + "\n")
        return obj


def test_argo_cd_and_flux_read_real_objects(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    seen = Captures(kube, namespace)
    first = upload(s3)

    # Applied before the operator runs: no status at all yet.
    operator.stop()
    apply(kube, namespace, model_manifest("m", serving=SERVED, **GATES))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=first.uri, sha256=first.sha256,
                                            stage="Production"))  # fmt: skip
    seen.check("modelversion-no-status", "ModelVersion", "m-1", "Progressing", says="waiting for the modelreg operator")
    seen.check("registeredmodel-no-status", "RegisteredModel", "m", "Progressing",
               says="waiting for the modelreg operator")  # fmt: skip
    operator.start()

    wait_stage(kube, namespace, "m-1", "Production", timeout=90)
    wait_serving(kube, namespace, "m", "1")
    wait_replicas(kube, namespace, "m-1", 2)
    wait_condition(kube, namespace, "m-1", "Ready", status_="True")
    wait_condition(kube, namespace, "m", "Ready", status_="True", kind="registeredmodel")
    seen.check("modelversion-production-ready", "ModelVersion", "m-1", "Healthy", says="Production")
    seen.check("registeredmodel-ready", "RegisteredModel", "m", "Healthy", says="Production: 1")

    # Gates that fail: a metric under the model's threshold, a digest that does not match.
    low = upload(s3)
    apply(kube, namespace, version_manifest("m-3", model="m", version="3", uri=low.uri, sha256=low.sha256,
                                            stage="Staging", metrics={"accuracy": 0.5}))  # fmt: skip
    wait_condition(kube, namespace, "m-3", "Stalled", status_="True", reason="ThresholdNotMet")
    seen.check("modelversion-threshold-not-met", "ModelVersion", "m-3", "Degraded", says="ThresholdNotMet: ")
    wrong = upload(s3)
    apply(kube, namespace, version_manifest("m-4", model="m", version="4", uri=wrong.uri, sha256="0" * 64,
                                            stage="Staging"))  # fmt: skip
    wait_condition(kube, namespace, "m-4", "Stalled", status_="True", reason="ChecksumMismatch")
    seen.check("modelversion-checksum-mismatch", "ModelVersion", "m-4", "Degraded", says=wrong.sha256)

    # A rollout that cannot finish: new Pods are never scheduled.
    second = upload(s3)
    kube.kubectl("cordon", cluster.NODE_NAME)
    try:
        apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=second.uri, sha256=second.sha256,
                                                stage="Production"))  # fmt: skip
        wait_condition(kube, namespace, "m-2", "RolledOut", status_="False", reason="RolloutInProgress")
        seen.check("modelversion-rolling-out", "ModelVersion", "m-2", "Progressing", says="Deployment")
        wait_condition(kube, namespace, "m", "Reconciling", status_="True", kind="registeredmodel")
        seen.check("registeredmodel-rolling-out", "RegisteredModel", "m", "Progressing", says="waiting for m-2")
        wait_condition(kube, namespace, "m-2", "RolledOut", status_="False", reason="RolloutFailed", timeout=90)
        wait_condition(kube, namespace, "m-2", "Stalled", status_="True")
        seen.check("modelversion-rollout-failed", "ModelVersion", "m-2", "Degraded", says="unschedulable")
    finally:
        kube.kubectl("uncordon", cluster.NODE_NAME)
    # Version 1 still serves: the model is healthy; the failed versions carry their own Degraded.
    wait_condition(kube, namespace, "m", "Ready", status_="True", kind="registeredmodel")
    seen.check("registeredmodel-ready-beside-failures", "RegisteredModel", "m", "Healthy", says="Production: 1")

    # A serving spec the API server refuses (huge pages need cpu or memory beside them).
    bad = SERVED | {"resources": {"requests": {"hugepages-2Mi": "64Mi"}, "limits": {"hugepages-2Mi": "64Mi"}}}
    apply(kube, namespace, model_manifest("m", serving=bad, **GATES))
    wait_condition(kube, namespace, "m", "Stalled", status_="True", reason="ServingRefused", kind="registeredmodel")
    seen.check("registeredmodel-serving-refused", "RegisteredModel", "m", "Degraded",
               says="ServingRefused: the API server refused Deployment m-1")  # fmt: skip
    apply(kube, namespace, model_manifest("m", serving=SERVED, **GATES))
    wait_condition(kube, namespace, "m", "Ready", status_="True", kind="registeredmodel")

    # A newer Production request wins: the older one says so until Git archives it.
    fifth = upload(s3)
    apply(kube, namespace, version_manifest("m-5", model="m", version="5", uri=fifth.uri, sha256=fifth.sha256,
                                            stage="Production"))  # fmt: skip
    wait_serving(kube, namespace, "m", "5")
    wait_condition(kube, namespace, "m-1", "Stalled", status_="True", reason="Superseded")
    seen.check("modelversion-superseded", "ModelVersion", "m-1", "Degraded", says="Superseded: a newer Production")
    wait_condition(kube, namespace, "m-5", "Ready", status_="True")

    # A spec the operator has not seen yet: Ready=True from the old generation says nothing.
    operator.stop()
    before = status(kube, namespace, "m-5")["observedGeneration"]
    kube.kubectl("patch", "-n", namespace, "modelversion", "m-5", "--type=merge", "-p",
                 json.dumps({"spec": {"description": "retrained on more data"}}))  # fmt: skip
    wait_for(lambda: kube.get_json("-n", namespace, "modelversion/m-5")["metadata"]["generation"] > before,
             timeout=10, what="a new generation of m-5")  # fmt: skip
    obj = seen.check("modelversion-spec-not-observed", "ModelVersion", "m-5", "Progressing",
                     says="has not observed the latest spec")  # fmt: skip
    assert condition(obj["status"], "Ready")["status"] == "True"  # what a naive check would call Healthy


def test_argo_cd_reads_a_validation_under_way_and_its_failure(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    seen = Captures(kube, namespace)
    # No Pod may be created in the namespace: the validation Job waits out its deadline.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "0"}}}
    apply(kube, namespace, json.dumps(quota))
    validation = {"image": "registry.example.com/validate:1", "command": ["true"], "activeDeadlineSeconds": 15}
    apply(kube, namespace, model_manifest("m", serving=SERVED, promotion={"validation": validation}))
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Staging"))  # fmt: skip
    wait_condition(kube, namespace, "m-1", "ValidationPassed", status_="Unknown")
    seen.check("modelversion-validation-running", "ModelVersion", "m-1", "Progressing",
               says="held by ValidationPassed: validation Job")  # fmt: skip
    wait_condition(kube, namespace, "m-1", "ValidationPassed", status_="False", timeout=90)
    seen.check("modelversion-validation-failed", "ModelVersion", "m-1", "Degraded",
               says="DeadlineExceeded: cannot enter Staging")  # fmt: skip
