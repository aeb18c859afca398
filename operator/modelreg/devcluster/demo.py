"""`modelreg demo`: the main job on the local control plane.

Brings up (or reuses) the dev cluster and its S3 server, installs the CRDs,
seeds the example bucket, starts the operator in the background, applies
`examples/` and shows `kubectl get modelreg`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from modelreg import artifacts
from modelreg.api.crds import write_crds
from modelreg.devcluster import building, cluster, processes

EXAMPLE_BUCKET = "modelreg-examples"


def run_demo(*, examples: Path, namespace: str, directory: Path | None = None) -> int:
    directory = directory or cluster.default_directory()
    bins = building.ensure_binaries()
    state = cluster.ClusterState.load(directory)
    if state is None or not all(state.running().values()):
        if state is not None:
            cluster.down(directory)
        state = cluster.up(directory, bins=bins)

    def kubectl(*args: str) -> str:
        return cluster.kubectl(bins, state, *args)

    crd_dir = Path(state.directory) / "crds"
    write_crds(crd_dir)
    kubectl("apply", "--server-side", "--field-manager=modelreg-demo", "-f", str(crd_dir))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd_dir))
    seed_bucket(state, examples / "artifacts")

    if "operator" not in state.processes or not state.processes["operator"].alive():
        env = os.environ | state.env()
        argv = [sys.executable, "-m", "modelreg", "run", "--kubeconfig", state.kubeconfig]
        state.processes["operator"] = processes.start(
            "operator", argv, log=Path(state.directory) / "logs" / "operator.log", env=env
        )
        state.save()

    cluster.kubectl(bins, state, "create", "namespace", namespace, check=False)
    placed = Path(state.directory) / "examples.yaml"
    placed.write_text(examples_on_kwok(examples))
    kubectl("apply", "-n", namespace, "-f", str(placed))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "modelversions", "--all")
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "registeredmodels", "--all")
    kubectl("wait", "-n", namespace, "--for=condition=Available", "--timeout=120s", "deployments", "--all")
    print(kubectl("get", "modelreg", "-n", namespace, "-o", "wide"))
    print(kubectl("get", "deployments,services", "-n", namespace))
    print("The operator runs in the background; its log: " + state.processes["operator"].log)
    print("Reach the cluster:")
    print('  eval "$(modelreg devcluster env)"')
    print(f"  kubectl get modelreg -n {namespace}")
    print(f"  modelreg stage iris-2 Production -n {namespace}   # promote; iris-1 is archived in the same step")
    print("Stop everything (cluster, S3 server, operator) and delete its data:")
    print("  modelreg devcluster down")
    return 0


def examples_on_kwok(examples: Path) -> str:
    """The manifests in `examples/`, their models served on the dev cluster's kwok node.

    The examples themselves name no node: on a real cluster they run wherever the
    scheduler puts them. Here the kwok node is tainted so that nothing lands on it by
    accident, and the demo's serving Pods ask for it explicitly.
    """
    docs: list[dict[str, Any]] = []
    for path in sorted(examples.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        serving = (doc.get("spec") or {}).get("serving") if doc.get("kind") == "RegisteredModel" else None
        if isinstance(serving, dict):
            serving.update(cluster.kwok_placement())
    return yaml.safe_dump_all(docs, sort_keys=False)


def seed_bucket(state: cluster.ClusterState, root: Path) -> None:
    c = state.s3
    client = artifacts.new_s3_client(endpoint=c.endpoint, region=c.region, access_key=c.access_key,
                                     secret_key=c.secret_key)  # fmt: skip
    seed_examples(client, root)


def seed_examples(client: artifacts.S3Client, root: Path) -> None:
    """examples/artifacts, uploaded where the example versions point (used by the tests too)."""
    artifacts.ensure_bucket(client, EXAMPLE_BUCKET)
    if root.is_dir():
        artifacts.upload_tree(client, root=root, bucket=EXAMPLE_BUCKET)
