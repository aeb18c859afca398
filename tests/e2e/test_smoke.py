"""The foundation works end to end: real kubectl, CRDs, operator, examples,
and a Deployment whose Pods kwok runs becoming Available."""

from __future__ import annotations

import json
from pathlib import Path

from modelreg.devcluster import versions
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
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    for name in ("iris-1", "iris-2"):
        kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", f"modelversion/{name}")
    kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "registeredmodel/iris")
    version = kube.get_json("-n", namespace, "modelversion/iris-1")
    assert version["status"]["observedGeneration"] == version["metadata"]["generation"]
    listed = kube.kubectl("get", "modelreg", "-n", namespace)
    assert "iris-1" in listed
    assert "iris" in listed


def test_a_deployment_becomes_available_on_kwok_nodes(kube: Cluster, namespace: str) -> None:
    kube.kubectl("create", "deployment", "web", "-n", namespace, "--image=registry.example.com/web:1", "--replicas=3")
    kube.kubectl("wait", "-n", namespace, "--for=condition=Available", "--timeout=90s", "deployment/web")
    pods = kube.get_json("-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    assert all(p["spec"]["nodeName"] for p in pods)
