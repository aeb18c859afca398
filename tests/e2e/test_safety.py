"""The endpoint never drops by accident, and bad input is explained (issue 7):
GitOps sync order, failed re-verification of a serving artifact, taking a model
offline on purpose, forged statuses, duplicate versions, owned-name conflicts and
Pods that can never be created. On kwok nodes, with the real API server and S3."""

from __future__ import annotations

import json
import time

from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    BUCKET,
    SERVING,
    apply,
    condition,
    deployment,
    events,
    model_manifest,
    serve_first_version,
    service_selector,
    serving_version,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_stage,
)


def reasons(kube: Cluster, namespace: str, name: str, *, type_: str | None = None) -> list[str]:
    return [e["reason"] for e in events(kube, namespace, name) if type_ is None or e["type"] == type_]


def test_archive_applied_before_the_promotion_keeps_serving(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    """A commit that archives v1 and promotes v2 reaches the cluster in two steps."""
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Staging"))
    wait_stage(kube, namespace, "m-2", "Staging")

    set_stage(kube, namespace, "m-1", "Archived")  # the first step of the sync
    st = wait_condition(kube, namespace, "m-1", "Reconciling", status_="True", reason="HeldServing")
    assert st["stage"] == "Production"
    assert "remove spec.serving" in condition(st, "Reconciling")["message"]
    assert serving_version(kube, namespace, "m") == "1"
    assert (deployment(kube, namespace, "m-1") or {})["spec"]["replicas"] == 2
    assert reasons(kube, namespace, "m-1", type_="Warning").count("HeldServing") == 1

    set_stage(kube, namespace, "m-2", "Production")  # the second step, a moment later
    wait_stage(kube, namespace, "m-2", "Production", timeout=60)
    wait_stage(kube, namespace, "m-1", "Archived")
    assert serving_version(kube, namespace, "m") == "2"
    assert "RolloutInProgress" in reasons(kube, namespace, "m-2", type_="Normal")
    assert "RolloutInProgress" not in reasons(kube, namespace, "m-2", type_="Warning")
    assert "Archived" in reasons(kube, namespace, "m-1", type_="Warning")  # losing Production is a Warning


def test_removing_serving_takes_the_model_offline(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    set_stage(kube, namespace, "m-1", "Archived")
    wait_condition(kube, namespace, "m-1", "Reconciling", status_="True", reason="HeldServing")
    invariants.require_endpoint = False  # taken offline on purpose from here on
    patch = json.dumps([{"op": "remove", "path": "/spec/serving"}])
    kube.kubectl("patch", "registeredmodel/m", "-n", namespace, "--type=json", "-p", patch)
    wait_stage(kube, namespace, "m-1", "Archived")
    wait_for(lambda: deployment(kube, namespace, "m-1") is None, timeout=60, what="m-1's Deployment deleted")
    wait_for(lambda: service_selector(kube, namespace, "m") is None, timeout=60, what="Service m deleted")
    wait_for(lambda: service_selector(kube, namespace, "m-staging") is None, timeout=60, what="m-staging deleted")


def test_a_failed_recheck_of_the_serving_artifact_keeps_serving(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    uri = serve_first_version(kube, s3, namespace)
    digest = status(kube, namespace, "m-1")["artifact"]["digest"]
    s3.client().delete_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))
    # A spec change makes the operator verify again (the artifact itself is immutable).
    kube.kubectl("patch", "modelversion/m-1", "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"description": "re-check me"}}))  # fmt: skip
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="ArtifactNotFound")
    message = condition(st, "ArtifactVerified")["message"]
    assert f"keeps serving the last verified digest {digest}" in message
    assert st["stage"] == "Production"
    assert st["artifact"]["digest"] == digest
    assert "ArtifactNotFound" in reasons(kube, namespace, "m-1", type_="Warning")
    for _ in range(3):  # a few resyncs later, nothing that serves has moved
        time.sleep(1.5)
        assert serving_version(kube, namespace, "m") == "1"
        dep = deployment(kube, namespace, "m-1")
        assert dep is not None
        assert dep["spec"]["replicas"] == 2
        assert digest.removeprefix("sha256:") in dep["spec"]["template"]["spec"]["initContainers"][0]["args"]


def test_a_forged_status_is_restored_once(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Staging"))
    wait_stage(kube, namespace, "m-2", "Staging")
    forged = {"status": {"stage": "Production", "productionRequestedAt": "2099-01-01T00:00:00Z"}}
    # (No invariant checker here: the forgery itself shows two Production until it is restored.)
    kube.kubectl("patch", "modelversion/m-2", "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps(forged))  # fmt: skip
    wait_for(lambda: "StatusRestored" in reasons(kube, namespace, "m-2", type_="Warning"), timeout=30,
             what="a StatusRestored Warning on m-2")  # fmt: skip
    st = wait_stage(kube, namespace, "m-2", "Staging")
    assert "productionRequestedAt" not in st
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["stage"] == "Production"
    time.sleep(8)  # two more resyncs: no fight, no second Event
    assert reasons(kube, namespace, "m-2").count("StatusRestored") == 1
    assert [t["reason"] for t in status(kube, namespace, "m-2")["history"]].count("Demoted") == 0


def test_a_second_object_for_the_same_version_is_held(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    uri = serve_first_version(kube, s3, namespace)
    generation = (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"]
    apply(kube, namespace, version_manifest("a-copy", model="m", version="1", uri=uri, stage="Production"))
    st = wait_condition(kube, namespace, "a-copy", "Stalled", status_="True", reason="DuplicateVersion")
    assert "m-1" in condition(st, "Stalled")["message"]
    assert st.get("stage") != "Production"
    time.sleep(5)  # the shared Deployment is not rewritten, the serving version stays
    assert (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"] == generation
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["stage"] == "Production"


def test_an_owned_name_somebody_else_holds_is_reported_not_taken_over(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    kube.kubectl("create", "deployment", "m-2", "-n", namespace, "--image=registry.example.com/theirs:1")
    before = deployment(kube, namespace, "m-2")
    assert before is not None
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Production"))
    wait_for(lambda: "NameConflict" in reasons(kube, namespace, "m-2", type_="Warning"), timeout=60,
             what="a NameConflict Warning")  # fmt: skip
    st = wait_condition(kube, namespace, "m-2", "RolledOut", status_="False", reason="RolloutFailed")
    assert "Deployment m-2 already exists and belongs to nobody" in condition(st, "RolledOut")["message"]
    after = deployment(kube, namespace, "m-2")
    assert after is not None
    assert after["spec"]["template"] == before["spec"]["template"]
    assert "ownerReferences" not in after["metadata"]
    assert serving_version(kube, namespace, "m") == "1"


def test_pods_that_cannot_be_created_fail_the_rollout(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "2"}}}
    apply(kube, namespace, json.dumps(quota))
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, sha256=art.sha256,
                                            stage="Production"))  # fmt: skip
    st = wait_condition(kube, namespace, "m-2", "RolledOut", status_="False", reason="RolloutFailed", timeout=60)
    assert "FailedCreate" in condition(st, "RolledOut")["message"]
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["stage"] == "Production"


def test_a_serving_spec_the_api_server_refuses_is_explained_and_serving_stays(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    generation = (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"]
    # Accepted by the CRD schema, refused by Pod validation: huge pages need a cpu
    # or memory amount beside them.
    bad = SERVING | {"resources": {"requests": {"hugepages-2Mi": "64Mi"}, "limits": {"hugepages-2Mi": "64Mi"}}}
    apply(kube, namespace, model_manifest("m", serving=bad))
    st = wait_condition(kube, namespace, "m", "Stalled", status_="True", reason="ServingRefused",
                        kind="registeredmodel")  # fmt: skip
    assert "the API server refused Deployment m-1" in condition(st, "Stalled")["message"]
    assert condition(st, "Ready")["status"] == "False"
    assert st["observedGeneration"] == kube.get_json("-n", namespace, "registeredmodel/m")["metadata"]["generation"]
    time.sleep(7)  # two resyncs later, still one Event: the refused object is not sent again and again
    assert reasons(kube, namespace, "m-1", type_="Warning").count("ServingRefused") == 1
    assert serving_version(kube, namespace, "m") == "1"
    assert (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"] == generation
    apply(kube, namespace, model_manifest("m", serving=SERVING))  # fixed: the refusal clears
    wait_condition(kube, namespace, "m", "Stalled", status_="False", kind="registeredmodel")


def test_serving_pods_never_get_a_storage_endpoint_the_operator_may_not_use(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    """Confused deputy through the serving path: the init container would send the
    model's credentials to whatever `spec.storage.endpoint` says."""
    serve_first_version(kube, s3, namespace)
    before = (deployment(kube, namespace, "m-1") or {})["spec"]["template"]
    evil = SERVING | {"replicas": 3}  # a change that would roll the Deployment out
    apply(kube, namespace, model_manifest("m", serving=evil, storage={"endpoint": "https://collector.invalid"}))
    st = wait_condition(kube, namespace, "m", "Stalled", status_="True", reason="ServingRefused",
                        kind="registeredmodel")  # fmt: skip
    assert "is not one this operator may use" in condition(st, "Stalled")["message"]
    dep = deployment(kube, namespace, "m-1") or {}
    assert dep["spec"]["template"] == before
    assert dep["spec"]["replicas"] == 2
    assert serving_version(kube, namespace, "m") == "1"
