"""The foundation works end to end: real kubectl, CRDs, operator, examples,
and a Deployment whose Pods kwok runs becoming Available."""

from __future__ import annotations

import json
from pathlib import Path

from modelreg.devcluster import cluster, demo, versions
from tests.conftest import local_cluster_only, wait_for
from tests.e2e.conftest import REPO, Cluster, Operator

EXAMPLES = REPO / "examples"


def test_kubectl_and_server_report_the_pinned_release(kube: Cluster) -> None:
    out = json.loads(kube.kubectl("version", "-o", "json"))
    assert out["clientVersion"]["gitVersion"] == versions.KUBERNETES
    if kube.state is not None:  # only the local cluster is ours to pin
        assert out["serverVersion"]["gitVersion"] == versions.KUBERNETES


def test_examples_become_ready(
    kube: Cluster, crds: Path, namespace: str, operator: Operator, example_artifacts: str
) -> None:
    assert "modelversions.modelreg.dev" in kube.kubectl("apply", "-f", str(crds))  # the plain, client-side way
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=demo.examples_on_kwok(EXAMPLES))
    for name in ("iris-1", "iris-2"):
        kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", f"modelversion/{name}")
    kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "registeredmodel/iris")
    version = kube.get_json("-n", namespace, "modelversion/iris-1")
    assert version["status"]["observedGeneration"] == version["metadata"]["generation"]
    listed = kube.kubectl("get", "modelreg", "-n", namespace)
    assert "iris-1" in listed
    assert "iris" in listed


def web(replicas: int, **pod_spec: object) -> str:
    labels = {"app": "web"}
    pod = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}], **pod_spec},
    }
    spec = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec})


def test_a_deployment_becomes_available_on_kwok_nodes(kube: Cluster, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=web(3, **cluster.kwok_placement()))
    kube.kubectl("wait", "-n", namespace, "--for=condition=Available", "--timeout=90s", "deployment/web")
    pods = kube.get_json("-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    assert {p["spec"]["nodeName"] for p in pods} == {cluster.NODE_NAME}


def test_nothing_lands_on_the_kwok_node_by_accident(kube: Cluster, namespace: str) -> None:
    local_cluster_only(kube.state is not None, "the dev cluster's tainted kwok node")
    node_name = cluster.NODE_NAME
    node = kube.get_json(f"node/{node_name}")
    key, value = cluster.KWOK_NODE_LABEL
    assert node["metadata"]["labels"][key] == value
    assert cluster.KWOK_TAINT in node["spec"]["taints"]
    # Pinned to the node by name but not tolerating its taint (another node may take
    # Pods that ask for nothing, so pinning is what makes the refusal the taint's).
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=web(1, nodeSelector={"kubernetes.io/hostname": node_name}))
    message = wait_for(lambda: _unschedulable(kube, namespace), timeout=60, what="the scheduler to refuse the node")
    assert "untolerated taint" in message, message
    pods = kube.get_json("-n", namespace, "pods", "-l", "app=web")["items"]
    assert [p["spec"].get("nodeName") for p in pods] == [None]


def _unschedulable(kube: Cluster, namespace: str) -> str | None:
    for pod in kube.get_json("-n", namespace, "pods", "-l", "app=web")["items"]:
        for c in pod["status"].get("conditions", []):
            if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable":
                return str(c.get("message", ""))
    return None
