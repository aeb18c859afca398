"""Serving end to end on kwok nodes: rendering, blue/green switches, failed
rollouts, rollback, Staging, drift repair, HPAs, deletion and recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from modelreg.devcluster import cluster
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    SERVING,
    apply,
    condition,
    deployment,
    events,
    model_manifest,
    serve_first_version,
    serve_then_lose_everything,
    service_selector,
    serving_version,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_replicas,
    wait_serving,
    wait_stage,
)


def test_production_version_is_served(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    art = upload(s3)
    apply(kube, namespace, model_manifest("m", serving=SERVING | {"env": [{"name": "WORKERS", "value": "2"}]}))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Production"))  # fmt: skip
    wait_stage(kube, namespace, "m-1", "Production", timeout=90)
    dep = wait_replicas(kube, namespace, "m-1", 2)
    labels = dep["metadata"]["labels"]
    assert labels["modelreg.dev/model"] == "m"
    assert labels["modelreg.dev/version"] == "1"
    assert labels["modelreg.dev/stage"] == "Production"
    assert labels["app.kubernetes.io/managed-by"] == "modelreg"
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelVersion", "m-1", True)
    pod = dep["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["args"][:1] == ["fetch-artifact"]
    assert art.uri in init["args"]
    assert art.sha256 in init["args"]
    server = pod["containers"][0]
    assert server["image"] == SERVING["image"]
    assert {"name": "WORKERS", "value": "2"} in server["env"]
    assert server["readinessProbe"]["tcpSocket"] == {"port": 8080}  # the default: none was given
    assert pod["nodeSelector"] == SERVING["nodeSelector"]
    assert pod["tolerations"] == SERVING["tolerations"]
    for container in (init, server):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert service_selector(kube, namespace, "m") == {"modelreg.dev/model": "m", "modelreg.dev/version": "1"}
    svc_owner = kube.get_json("-n", namespace, "service/m")["metadata"]["ownerReferences"][0]
    assert (svc_owner["kind"], svc_owner["name"]) == ("RegisteredModel", "m")
    assert status(kube, namespace, "m-1")["deploymentName"] == "m-1"
    fields = kube.get_json("-n", namespace, "deployment/m-1", "--show-managed-fields")["metadata"]["managedFields"]
    assert {"manager": "modelreg", "operation": "Apply"} in [
        {k: f[k] for k in ("manager", "operation")} for f in fields
    ]
    assert status(kube, namespace, "m", "registeredmodel")["endpoint"] == "m"


def test_gpu_pods_land_where_placement_and_resources_say(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    # The kwok node offers nvidia.com/gpu; Pods must ask for one, select the node and tolerate its taint.
    gpu = {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 1, "memory": "1Gi"}}
    serve_first_version(kube, s3, namespace, resources=gpu, readinessProbe={"path": "/healthz", "periodSeconds": 2})
    server = (deployment(kube, namespace, "m-1") or {})["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"] | {"scheme": "HTTP"} == {
        "path": "/healthz",
        "port": 8080,
        "scheme": "HTTP",
    }
    pods = kube.get_json("-n", namespace, "pods", "-l", "modelreg.dev/model=m,modelreg.dev/version=1")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == cluster.NODE_NAME
        assert pod["spec"]["nodeSelector"] == SERVING["nodeSelector"]
        assert SERVING["tolerations"][0] in pod["spec"]["tolerations"]  # beside the API server's defaults
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "1"
        assert resources["requests"]["nvidia.com/gpu"] == "1"  # defaulted to the limit
    # Steady: the server's defaults (toleration, probe fields, requests) are not drift.
    generation = (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"]
    time.sleep(7)  # two resyncs
    assert (deployment(kube, namespace, "m-1") or {})["metadata"]["generation"] == generation
    assert "DriftRepaired" not in [e["reason"] for e in events(kube, namespace, "m-1")]


def test_blue_green_switch_and_staging(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Staging"))
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_replicas(kube, namespace, "m-2", 1)
    wait_for(lambda: (service_selector(kube, namespace, "m-staging") or {}).get("modelreg.dev/version") == "2",
             timeout=30, what="m-staging to select version 2")  # fmt: skip

    set_stage(kube, namespace, "m-2", "Production")
    deadline = time.monotonic() + 90
    seen = set()
    while status(kube, namespace, "m-2").get("stage") != "Production":
        assert time.monotonic() < deadline, "the switch did not happen"
        selected = serving_version(kube, namespace, "m")
        pods = kube.get_json("-n", namespace, "pods", "-l", f"modelreg.dev/model=m,modelreg.dev/version={selected}")
        if serving_version(kube, namespace, "m") != selected:
            continue  # switched while we listed: this snapshot proves nothing either way
        seen.add(selected)
        ready = [p for p in pods["items"] if _ready(p) and not p["metadata"].get("deletionTimestamp")]
        assert ready, f"the Service selected version {selected} with no ready Pod"
        time.sleep(0.05)
    wait_serving(kube, namespace, "m", "2")
    wait_replicas(kube, namespace, "m-2", 2)
    wait_replicas(kube, namespace, "m-1", 0)
    st1 = wait_stage(kube, namespace, "m-1", "Archived")
    assert st1["history"][-1]["reason"] == "Superseded"
    assert deployment(kube, namespace, "m-1") is not None, "an archived Deployment is kept for rollback"


def _ready(pod: dict) -> bool:  # type: ignore[type-arg]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_a_failed_rollout_leaves_the_old_version_serving(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    node = cluster.NODE_NAME  # the one the Pods select
    kube.kubectl("cordon", node)  # new Pods cannot be scheduled: they never become ready
    try:
        apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Production"))
        st = wait_condition(kube, namespace, "m-2", "RolledOut", status_="False", reason="RolloutFailed", timeout=90)
        assert st["phase"] == "Failed"
        assert condition(st, "Stalled")["status"] == "True"
        assert "ProgressDeadlineExceeded" in condition(st, "RolledOut")["message"] or "progress" in (
            condition(st, "RolledOut")["message"].lower()
        )
        # Not only that the deadline passed: why (the operator read the new Pods).
        assert "cannot be scheduled: 0/" in condition(st, "RolledOut")["message"]
        assert "unschedulable" in condition(st, "RolledOut")["message"]
        wait_for(lambda: (deployment(kube, namespace, "m-2") or {}).get("spec", {}).get("replicas") == 0,
                 timeout=30, what="the failed version scaled to 0")  # fmt: skip
    finally:
        kube.kubectl("uncordon", node)
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["stage"] == "Production"
    assert deployment(kube, namespace, "m-1")["status"]["availableReplicas"] == 2  # type: ignore[index]
    assert "RolloutFailed" in [e["reason"] for e in events(kube, namespace, "m-2")]


def test_rollback_is_one_field(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Production"))
    wait_serving(kube, namespace, "m", "2")
    wait_stage(kube, namespace, "m-1", "Archived")
    set_stage(kube, namespace, "m-1", "Archived")  # acknowledge, as the CLI would
    wait_condition(kube, namespace, "m-1", "Ready", status_="True")

    set_stage(kube, namespace, "m-1", "Production")
    wait_serving(kube, namespace, "m", "1")
    st = wait_stage(kube, namespace, "m-1", "Production")
    assert st["history"][-1]["reason"] == "RolledBack"
    wait_replicas(kube, namespace, "m-1", 2)
    wait_replicas(kube, namespace, "m-2", 0)


def test_a_rollback_whose_pods_never_start_fails_at_the_deadline(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    """A rollback scales the kept Deployment up again. Kubernetes never times a scale-up
    against progressDeadlineSeconds (the Deployment keeps NewReplicaSetAvailable), so the
    operator times it from the request: RolloutFailed, and the serving version stays."""
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Production"))
    wait_serving(kube, namespace, "m", "2")
    set_stage(kube, namespace, "m-1", "Archived")
    wait_replicas(kube, namespace, "m-1", 0)
    deadline = SERVING["progressDeadlineSeconds"]
    kube.kubectl("cordon", cluster.NODE_NAME)  # the scaled-up Pods cannot be scheduled
    try:
        set_stage(kube, namespace, "m-1", "Production")
        asked = time.monotonic()
        st = wait_condition(kube, namespace, "m-1", "RolledOut", status_="False", reason="RolloutFailed",
                            timeout=deadline + 60)  # fmt: skip
        print(f"\nthe rollback failed {time.monotonic() - asked:.1f}s after the request (deadline {deadline}s)")
        message = condition(st, "RolledOut")["message"]
        assert f"{deadline}s after the Production request" in message
        assert st["phase"] == "Failed"
        assert serving_version(kube, namespace, "m") == "2"
        assert status(kube, namespace, "m-2")["stage"] == "Production"
        progressing = next(c for c in deployment(kube, namespace, "m-1")["status"]["conditions"]  # type: ignore[index]
                           if c["type"] == "Progressing")  # fmt: skip
        assert progressing["reason"] == "NewReplicaSetAvailable", "Kubernetes timed it after all"
    finally:
        kube.kubectl("uncordon", cluster.NODE_NAME)
    assert "RolloutFailed" in [e["reason"] for e in events(kube, namespace, "m-1")]


def test_drift_is_repaired_and_reported(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    serve_first_version(kube, s3, namespace)
    kube.kubectl("scale", "deployment/m-1", "-n", namespace, "--replicas=5")
    wait_for(lambda: (deployment(kube, namespace, "m-1") or {})["spec"]["replicas"] == 2, timeout=30,
             what="replicas restored to 2")  # fmt: skip
    patch = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "evil:1"}]}}}})
    kube.kubectl("patch", "deployment/m-1", "-n", namespace, "--type=strategic", "-p", patch)
    wait_for(lambda: (deployment(kube, namespace, "m-1") or {})["spec"]["template"]["spec"]["containers"][0]["image"]
             == SERVING["image"], timeout=30, what="image restored")  # fmt: skip
    wait_for(lambda: "DriftRepaired" in [e["reason"] for e in events(kube, namespace, "m-1")], timeout=20,
             what="a DriftRepaired event")  # fmt: skip

    kube.kubectl("delete", "service/m", "-n", namespace)
    wait_serving(kube, namespace, "m", "1", timeout=30)
    kube.kubectl("delete", "deployment/m-1", "-n", namespace)
    wait_replicas(kube, namespace, "m-1", 2)
    wait_for(lambda: "Recreated" in [e["reason"] for e in events(kube, namespace, "m-1")], timeout=20,
             what="a Recreated event on the version")  # fmt: skip
    wait_for(lambda: "Recreated" in [e["reason"] for e in events(kube, namespace, "m")], timeout=20,
             what="a Recreated event on the model")  # fmt: skip


def test_an_autoscaler_owns_the_replica_count(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    serve_first_version(kube, s3, namespace)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "m-1"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m-1"},
                    "minReplicas": 1, "maxReplicas": 10,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                 "target": {"type": "Utilization", "averageUtilization": 80}}}]}}  # fmt: skip
    apply(kube, namespace, json.dumps(hpa))
    time.sleep(4)  # one resync: the operator learns about the HPA
    kube.kubectl("scale", "deployment/m-1", "-n", namespace, "--replicas=4")  # what the HPA would do
    wait_replicas(kube, namespace, "m-1", 4)
    time.sleep(7)  # two more resyncs
    assert deployment(kube, namespace, "m-1")["spec"]["replicas"] == 4  # type: ignore[index]


def test_deletion(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Staging"))
    wait_replicas(kube, namespace, "m-2", 1)
    kube.kubectl("delete", "modelversion/m-2", "-n", namespace)
    wait_for(lambda: deployment(kube, namespace, "m-2") is None, timeout=60, what="m-2's Deployment collected")

    refused = kube.run("delete", "modelversion/m-1", "-n", namespace)
    assert refused.returncode != 0
    assert "serves Production for model m" in refused.stderr
    assert "modelreg.dev/allow-delete-serving=true" in refused.stderr

    kube.kubectl("annotate", "modelversion/m-1", "-n", namespace, "modelreg.dev/allow-delete-serving=true")
    kube.kubectl("delete", "modelversion/m-1", "-n", namespace)
    wait_for(lambda: deployment(kube, namespace, "m-1") is None, timeout=60, what="m-1's Deployment collected")

    art = upload(s3)
    apply(kube, namespace, version_manifest("m-3", model="m", version="3", uri=art.uri, stage="Staging"))
    wait_replicas(kube, namespace, "m-3", 1)
    kube.kubectl("delete", "registeredmodel/m", "-n", namespace)
    wait_for(lambda: deployment(kube, namespace, "m-3") is None, timeout=60, what="m-3's Deployment removed")
    wait_for(lambda: service_selector(kube, namespace, "m") is None, timeout=60, what="Service m collected")
    wait_for(lambda: service_selector(kube, namespace, "m-staging") is None, timeout=60, what="m-staging collected")


def test_disaster_recovery_from_the_same_yaml(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    invariants.require_endpoint = False  # everything is deleted, on purpose, before it is re-created
    manifests, _, _ = serve_then_lose_everything(kube, s3, namespace)

    apply(kube, namespace, manifests)
    wait_serving(kube, namespace, "m", "1")
    wait_replicas(kube, namespace, "m-1", 2)
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_replicas(kube, namespace, "m-2", 1)
    assert status(kube, namespace, "m", "registeredmodel")["productionVersion"] == "1"


def test_archived_deployments_beyond_retention_are_deleted(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    art = upload(s3)
    apply(kube, namespace, model_manifest("m", serving=SERVING, retention={"archivedDeployments": 1}))
    for n in (1, 2, 3):
        apply(kube, namespace, version_manifest(f"m-{n}", model="m", version=str(n), uri=art.uri, stage="Production"))
        wait_serving(kube, namespace, "m", str(n))
        if n > 1:
            set_stage(kube, namespace, f"m-{n - 1}", "Archived")
    wait_replicas(kube, namespace, "m-3", 2)
    wait_replicas(kube, namespace, "m-2", 0)  # the newest archived version keeps its Deployment
    wait_for(lambda: deployment(kube, namespace, "m-1") is None, timeout=60, what="m-1's Deployment deleted")
    assert status(kube, namespace, "m-1")["stage"] == "Archived"
    assert "deploymentName" not in status(kube, namespace, "m-1")


def test_modelreg_stage_hands_production_over_without_a_gap(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, stage="Staging"))
    wait_stage(kube, namespace, "m-2", "Staging")
    env = os.environ | {"KUBECONFIG": kube.kubeconfig}
    out = subprocess.run([sys.executable, "-m", "modelreg", "stage", "m-2", "Production", "-n", namespace],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "modelversion/m-1: spec.stage = Archived" in out.stdout
    deadline = time.monotonic() + 90
    # One read per look: two reads raced the switch (seen in CI: "2" read as a dropped endpoint).
    while (serves := serving_version(kube, namespace, "m")) != "2":
        assert time.monotonic() < deadline, "the switch did not happen"
        assert serves == "1", f"the endpoint was dropped during the handover (the Service selects {serves!r})"
        time.sleep(0.05)
    st1 = wait_stage(kube, namespace, "m-1", "Archived")
    assert condition(st1, "Ready")["status"] == "True"  # Git is tidy: nothing is left superseded
    assert kube.get_json("-n", namespace, "modelversion/m-1")["spec"]["stage"] == "Archived"
