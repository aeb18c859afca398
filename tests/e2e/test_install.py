"""The shipped installs (manifests/ and manifests/namespaced/): the operator, run with
the arguments of the shipped Deployment and nothing but the RBAC its install grants,
serves a model end to end, and nothing it does is refused."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelreg.devcluster import cluster, processes
from tests.conftest import wait_for
from tests.e2e.conftest import REPO, S3, Cluster, Operator
from tests.e2e.registry import (
    SERVING,
    apply,
    deployment,
    model_manifest,
    secret_manifest,
    service_selector,
    set_stage,
    upload,
    version_manifest,
    wait_replicas,
    wait_serving,
    wait_stage,
)

INSTALLS = {"clusterwide": REPO / "manifests", "namespaced": REPO / "manifests" / "namespaced"}
SYSTEM = "modelreg-system"
ACCOUNT = f"system:serviceaccount:{SYSTEM}:modelreg-operator"


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = find(docs, "Deployment", "modelreg-operator")["spec"]["template"]["spec"]["containers"]
    return dict(next(c for c in containers if c["name"] == "operator"))


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    return list(operator_container(docs)["args"])


def render(kube: Cluster, install: str, namespace: str) -> list[dict[str, Any]]:
    """The install as `kubectl apply -k` would apply it; the namespaced one is
    pointed at the test's namespace, where a user edits rolebinding.yaml."""
    docs = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(INSTALLS[install]))) if d]
    if install == "namespaced":
        binding = find(docs, "RoleBinding", "modelreg-operator")
        container = find(docs, "Deployment", "modelreg-operator")["spec"]["template"]["spec"]["containers"][0]
        watched = container["args"].index("--namespace") + 1
        # kustomize wires the one namespace into both places
        assert container["args"][watched] == binding["metadata"]["namespace"]
        binding["metadata"]["namespace"] = container["args"][watched] = namespace
    else:
        assert "--namespace" not in operator_args(docs)
    # Only kwok runs Pods here, and its node takes none that do not ask for it.
    find(docs, "Deployment", "modelreg-operator")["spec"]["template"]["spec"].update(cluster.kwok_placement())
    return docs


def can(kube: Cluster, verb: str, resource: str, namespace: str) -> bool:
    out = kube.run("auth", "can-i", verb, resource, "-n", namespace, f"--as={ACCOUNT}")
    return out.stdout.strip() == "yes"


def remove_grants(kube: Cluster) -> None:
    """The grants an earlier install left (the other install's, or a failed run's)."""
    kube.kubectl("delete", "clusterrolebinding", "-l", "app.kubernetes.io/part-of=modelreg", "--ignore-not-found")
    kube.kubectl("delete", "deployment", "modelreg-operator", "-n", SYSTEM, "--ignore-not-found")


def account_kubeconfig(kube: Cluster, path: Path) -> str:
    """A kubeconfig that authenticates as the operator's ServiceAccount."""
    token = kube.kubectl("create", "token", "modelreg-operator", "-n", SYSTEM).strip()
    config = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path.write_text(json.dumps(config))
    return str(path)


def refusals(log: str) -> list[str]:
    """Log lines that say the API server refused the operator something: an RBAC
    denial names the account; an admission refusal (e.g. blockOwnerDeletion without
    finalizers rights) says forbidden; Kopf says it lacks permissions. A namespace
    that an earlier test is deleting refuses new objects; that is not about RBAC."""
    return [
        line
        for line in log.splitlines()
        if ACCOUNT in line
        or "Not enough permissions" in line
        or ("forbidden" in line.lower() and "being terminated" not in line)
    ]


@pytest.mark.parametrize("install", ["clusterwide", "namespaced"])
def test_the_shipped_rbac_is_enough(
    kube: Cluster, s3: S3, crds: Path, namespace: str, tmp_path: Path, install: str
) -> None:
    """Every verb the operator uses is exercised: Kopf's lists and watches, reads by
    name, status patches, server-side apply creating and repairing Deployments and
    Services (with blockOwnerDeletion owner references, which the dev cluster's
    OwnerReferencesPermissionEnforcement checks), a Deployment deleted beyond the
    retention, the HPA list, a Secret read and Events. The cluster-wide operator
    runs cluster-wide, as the shipped Deployment does; it also reconciles what
    earlier tests left behind."""
    remove_grants(kube)
    docs = render(kube, install, namespace)
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    op: Operator | None = None
    try:
        # The shipped Deployment is admitted in the `restricted` Pod Security namespace
        # (kwok fakes its Pod; the operator under test is the subprocess below).
        kube.kubectl("rollout", "status", "deployment/modelreg-operator", "-n", SYSTEM, "--timeout=90s")
        assert can(kube, "patch", "deployments.apps", namespace)
        assert can(kube, "patch", "deployments.apps", "default") == (install == "clusterwide")
        assert not can(kube, "update", "deployments.apps", namespace)
        assert not can(kube, "list", "secrets", namespace)
        # Pods and ReplicaSets are listed while a rollout is not available, never watched.
        assert can(kube, "list", "pods", namespace)
        assert can(kube, "list", "replicasets.apps", namespace)
        assert not can(kube, "watch", "pods", namespace)
        # Its Lease, and no other, in its own namespace.
        assert can(kube, "update", "leases.coordination.k8s.io/modelreg-operator", SYSTEM)
        assert not can(kube, "update", "leases.coordination.k8s.io/kube-scheduler", SYSTEM)

        port = processes.free_port()
        args = operator_args(docs)
        args[args.index("--liveness") + 1] = f"http://127.0.0.1:{port}/healthz"
        # No ambient S3 credentials: the model's Secret is the only way to its artifacts.
        # The Deployment's own environment (leader election included: its Lease in
        # modelreg-system, which the Pod would find as its namespace).
        shipped = {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}
        assert shipped["MODELREG_LEADER_ELECT"] == "true"
        args += ["--leader-election-namespace", SYSTEM]
        shipped["MODELREG_METRICS_BIND_ADDRESS"] = "0"  # a fixed port would collide with parallel runs
        env = (
            {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            | shipped
            | {
                "KUBECONFIG": account_kubeconfig(kube, tmp_path / "operator.kubeconfig"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # The local S3 server speaks plain http: allowed for it alone, as an administrator would.
        argv = [sys.executable, "-m", "modelreg", *args, "--resync-seconds", "5", "--allow-insecure-storage",
                "--storage-endpoint", s3.config.endpoint]  # fmt: skip
        op = Operator(argv=argv, env=env, log_path=tmp_path / "operator.log", port=port)
        op.start()
        serve_and_switch(kube, s3, namespace)
        holder = kube.get_json("lease", "modelreg-operator", "-n", SYSTEM)["spec"]["holderIdentity"]
        assert holder in op.log(), "the operator reconciled without holding the Lease"
        denied = refusals(op.log())
        assert not denied, "\n".join(denied[:20])
    finally:
        if op is not None:
            op.stop()
        remove_grants(kube)


def serve_and_switch(kube: Cluster, s3: S3, namespace: str) -> None:
    creds = {"AWS_ACCESS_KEY_ID": s3.config.access_key.encode(), "AWS_SECRET_ACCESS_KEY": s3.config.secret_key.encode()}
    apply(kube, namespace, secret_manifest("s3-creds", creds))
    storage = {"endpoint": s3.config.endpoint, "region": s3.config.region, "credentialsSecret": {"name": "s3-creds"}}
    apply(kube, namespace, model_manifest("m", serving=SERVING, storage=storage, retention={"archivedDeployments": 0}))
    first, second = upload(s3), upload(s3)
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=first.uri, sha256=first.sha256,
                                            stage="Production"))  # fmt: skip
    wait_stage(kube, namespace, "m-1", "Production", timeout=90)
    wait_serving(kube, namespace, "m", "1")
    wait_replicas(kube, namespace, "m-1", 2)

    kube.kubectl("scale", "deployment/m-1", "-n", namespace, "--replicas=5")
    wait_replicas(kube, namespace, "m-1", 2)
    kube.kubectl("delete", "service", "m", "-n", namespace)
    wait_serving(kube, namespace, "m", "1")

    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=second.uri, sha256=second.sha256,
                                            stage="Production"))  # fmt: skip
    wait_serving(kube, namespace, "m", "2")
    set_stage(kube, namespace, "m-1", "Archived")
    wait_for(lambda: deployment(kube, namespace, "m-1") is None, timeout=60, what="m-1's Deployment deleted")

    events = kube.get_json("-n", namespace, "events")["items"]
    assert any(e.get("reportingComponent") == "modelreg" for e in events), events

    # Taken offline on purpose: Deployments and Services are deleted.
    kube.kubectl("patch", "registeredmodel/m", "-n", namespace, "--type=json", "-p",
                 json.dumps([{"op": "remove", "path": "/spec/serving"}]))  # fmt: skip
    wait_for(lambda: service_selector(kube, namespace, "m") is None, timeout=60, what="Service m deleted")
    wait_for(lambda: deployment(kube, namespace, "m-2") is None, timeout=60, what="m-2's Deployment deleted")
