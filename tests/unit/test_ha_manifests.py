"""The shipped operator Deployment is set up for two replicas and one leader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelreg import leading

BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"


def docs(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((BASE / name).read_text()) if d and d["kind"] != "ClusterRole"}


def test_two_replicas_elect_a_leader_and_roll_one_at_a_time() -> None:
    shipped = docs("operator.yaml")
    deployment, budget = shipped["Deployment"], shipped["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"  # Recreate would leave no standby
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "MODELREG_LEADER_ELECT", "value": "true"} in container["env"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1


def test_the_role_grants_the_lease_the_operator_uses() -> None:
    rbac = [d for d in yaml.safe_load_all((BASE / "rbac.yaml").read_text()) if d]
    [role] = [d for d in rbac if d["kind"] == "Role"]
    [binding] = [d for d in rbac if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [leading.Settings(namespace="").name], "verbs": ["get", "update"]}]  # fmt: skip
