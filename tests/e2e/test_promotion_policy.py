"""Promotion policy end to end on kwok nodes (issue 9, items 3-5): the Strict
stage order with its disaster-recovery exemptions, the best version at a glance,
and holds explained by status alone."""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    BUCKET,
    SERVING,
    apply,
    condition,
    deployment,
    model_manifest,
    serve_then_lose_everything,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_serving,
    wait_stage,
)

STRICT = {"stageOrder": "Strict"}


def test_strict_stage_order_holds_production_until_staging(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    a, b = upload(s3), upload(s3)
    apply(kube, namespace, model_manifest("m", serving=SERVING, promotion=STRICT))
    # The model's first Production: nothing has served, so it counts as a restore from Git.
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=a.uri, stage="Production"))
    wait_serving(kube, namespace, "m", "1")
    st = wait_stage(kube, namespace, "m-1", "Production")  # the Service switches before status is written
    assert condition(st, "StageOrder")["reason"] == "IsProduction"
    assert "taken as a restore from Git" in st["history"][-1]["message"]  # why Staging was skipped, kept

    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=b.uri, stage="Production"))
    st = wait_condition(kube, namespace, "m-2", "StageOrder", status_="False", reason="StagingRequired")
    assert st["stage"] == "Development"
    assert st["phase"] == "Blocked"
    stalled = condition(st, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "StagingRequired")
    assert "held by StageOrder" in stalled["message"]
    assert "move it to Staging first" in stalled["message"]
    assert "StagingRequired" in [e["reason"] for e in kube.get_json("-n", namespace, "events")["items"]]
    assert status(kube, namespace, "m", "registeredmodel")["productionVersion"] == "1"

    set_stage(kube, namespace, "m-2", "Staging")
    wait_stage(kube, namespace, "m-2", "Staging")
    set_stage(kube, namespace, "m-2", "Production")
    wait_serving(kube, namespace, "m", "2")
    assert [t["stage"] for t in wait_stage(kube, namespace, "m-2", "Production")["history"]] == [
        "Development", "Staging", "Production"]  # fmt: skip
    # The model's status is written after its versions'.
    wait_for(lambda: [s["version"] for s in status(kube, namespace, "m", "registeredmodel").get("servedArtifacts", [])]
             == ["1", "2"], timeout=30, what="servedArtifacts 1, 2")  # fmt: skip


def test_strict_stage_order_lets_a_restore_from_git_serve_again(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    invariants.require_endpoint = False  # everything is deleted, on purpose, before it is re-created
    manifests, _, b = serve_then_lose_everything(kube, s3, namespace, promotion=STRICT)

    apply(kube, namespace, manifests)  # from Git alone: no history survives
    wait_serving(kube, namespace, "m", "1")
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_for(lambda: status(kube, namespace, "m", "registeredmodel").get("productionVersion") == "1", timeout=30,
             what="the model's status names version 1")  # fmt: skip

    # Strict still holds for an artifact that never served ...
    c = upload(s3)
    apply(kube, namespace, version_manifest("m-3", model="m", version="3", uri=c.uri, stage="Production"))
    wait_condition(kube, namespace, "m-3", "StageOrder", status_="False", reason="StagingRequired")
    # ... while a version deleted and re-created at Production with the artifact that
    # served (here: promoted through Staging, then archived) goes back without Staging.
    set_stage(kube, namespace, "m-3", "Archived")
    set_stage(kube, namespace, "m-2", "Production")
    wait_serving(kube, namespace, "m", "2")
    set_stage(kube, namespace, "m-1", "Archived")
    wait_stage(kube, namespace, "m-1", "Archived")
    kube.kubectl("annotate", "modelversion/m-2", "-n", namespace, "modelreg.dev/allow-delete-serving=true")
    kube.kubectl("delete", "modelversion/m-2", "-n", namespace)
    # As in a restore: its Deployment is gone too (re-created while the garbage
    # collector is still deleting it, the switch can meet a vanishing Deployment).
    wait_for(lambda: deployment(kube, namespace, "m-2") is None, timeout=60, what="m-2's Deployment collected")
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=b.uri, sha256=b.sha256,
                                            stage="Production"))  # fmt: skip
    st = wait_stage(kube, namespace, "m-2", "Production", timeout=90)
    assert "its artifact digest served Production as version 2" in st["history"][-1]["message"]
    wait_serving(kube, namespace, "m", "2")


def test_the_best_version_at_a_glance(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    a, b, c = upload(s3), upload(s3), upload(s3)
    promotion = {"bestBy": {"metric": "accuracy"}, "thresholds": [{"metric": "accuracy", "min": 0.85}]}
    apply(kube, namespace, model_manifest("m", promotion=promotion))
    for name, uri, stage, accuracy in (("m-1", a.uri, "Development", 0.8), ("m-2", b.uri, "Archived", 0.95),
                                       ("m-3", f"s3://{BUCKET}/missing/model.bin", "Development", 0.99),
                                       ("m-4", c.uri, "Staging", 0.9)):  # fmt: skip
        apply(kube, namespace, version_manifest(name, model="m", version=name[2:], uri=uri, stage=stage,
                                                metrics={"accuracy": accuracy}))  # fmt: skip

    def best() -> tuple[str, float] | None:
        st = status(kube, namespace, "m", "registeredmodel")
        return (st["bestVersion"], st["bestValue"]) if "bestVersion" in st else None

    # m-3 would be best, but its artifact does not verify; m-2 is Archived and still counts.
    wait_for(lambda: best() == ("2", 0.95), timeout=60, what="bestVersion 2")
    st = wait_condition(kube, namespace, "m-3", "ArtifactVerified", status_="False", reason="ArtifactNotFound")
    for type_ in ("ArtifactVerified", "Ready"):  # the gate's own condition, and the summary
        assert "to release: upload the artifact at spec.artifact.uri" in condition(st, type_)["message"]
    table = kube.kubectl("get", "registeredmodel", "m", "-n", namespace, "-o", "wide")
    header, row = table.splitlines()[:2]
    assert "BEST" in header.split(), table
    assert row[header.index("BEST ") :].split()[:2] == ["2", "0.95"], table  # Best, and Best Value in -o wide

    # The versions sort by a metric with kubectl itself (metrics are a map); one
    # without that metric sorts first.
    e = upload(s3)
    apply(kube, namespace, version_manifest("m-0", model="m", version="0", uri=e.uri, metrics={"f1": 0.5}))
    ordered = kube.kubectl("get", "mv", "-n", namespace, "--sort-by=.spec.metrics.accuracy", "-o", "name")
    assert [line.split("/")[-1] for line in ordered.split()] == ["m-0", "m-1", "m-4", "m-2", "m-3"]

    # A better verified version takes over; metrics may be added to, never changed.
    d = upload(s3)
    apply(kube, namespace, version_manifest("m-5", model="m", version="5", uri=d.uri, metrics={"accuracy": 0.97}))
    wait_for(lambda: best() == ("5", 0.97), timeout=60, what="bestVersion 5")
    patch = json.dumps({"spec": {"metrics": {"accuracy": 0.99}}})
    out = kube.run("patch", "-n", namespace, "modelversion", "m-1", "--type=merge", "-p", patch)
    assert out.returncode != 0
    assert "may be added to but never changed" in out.stderr

    # The version below the threshold is held, and status says by which gate and what releases it.
    set_stage(kube, namespace, "m-1", "Staging")
    st = wait_condition(kube, namespace, "m-1", "Stalled", status_="True", reason="ThresholdNotMet")
    message = condition(st, "Ready")["message"]
    assert "held by MetricThresholds" in message
    assert "accuracy = 0.8 is below the minimum 0.85" in message
    assert "to release: a metric once set cannot change: register a new ModelVersion" in message
    assert "spec.promotion.thresholds of RegisteredModel m" in message
