"""`modelreg devcluster build|up|down|status|env|image`: what each prints and returns."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from modelreg.devcluster import building, cluster, images, node, packages, registry


def dispatch(action: str, *, directory: Path | None, real_node: bool = False) -> int:
    directory = directory or cluster.default_directory()
    try:
        if action == "up":
            return up(directory, real_node=real_node)
        return _ACTIONS[action](directory)
    except (
        cluster.ClusterError,
        node.NodeError,
        packages.PackagesUnavailable,
        images.ImageError,
        registry.RegistryError,
    ) as exc:
        print(f"error: {exc}")
        return 1


def build(_: Path) -> int:
    bins = building.ensure_binaries()
    building.ensure_kubelet()
    building.ensure_kube_proxy()
    print(f"binaries ready in {bins.kubectl.parent.parent}")
    try:
        packages.ensure_packages(log=building.say)
    except packages.PackagesUnavailable as exc:
        # Only `up --real-node` needs them; the control plane and kwok run without.
        print(f"note: {exc}")
    return 0


def up(directory: Path, *, real_node: bool = False) -> int:
    bins = building.ensure_binaries()
    state = cluster.up(directory, bins=bins, real_node=real_node)
    print(f"\nThe dev cluster runs (state in {directory}). To use it:")
    print('  eval "$(modelreg devcluster env)"   # sets KUBECONFIG and AWS_* for kubectl and boto3')
    print(f"  {bins.kubectl} --kubeconfig {state.kubeconfig} get nodes")
    print("To stop it and delete its data:\n  modelreg devcluster down")
    return 0


def down(directory: Path) -> int:
    stopped = cluster.down(directory)
    print(f"stopped: {', '.join(stopped)}" if stopped else f"no dev cluster was running from {directory}")
    return 0


def status(directory: Path) -> int:
    state = cluster.ClusterState.load(directory)
    if state is None:
        print(f"no dev cluster in {directory}")
        return 3
    running = state.running()
    print(f"kube-apiserver: {state.server}\nkubeconfig:     {state.kubeconfig}\nS3 endpoint:    {state.s3.endpoint}")
    print(f"registry:       {state.registry.address if state.registry else '(none: docker-registry not installed)'}")
    for name, alive in running.items():
        print(f"  {name:<24} {'running' if alive else 'STOPPED'}  pid {state.processes[name].pid}")
    if "kubelet" in state.processes:
        print(node.describe(lambda *args, check=True: cluster.kubectl(building.binaries(), state, *args, check=check)))
    return 0 if all(running.values()) else 1


def env(directory: Path) -> int:
    state = cluster.ClusterState.load(directory)
    if state is None or not any(state.running().values()):
        print(f"# no dev cluster runs in {directory}; start one with `modelreg devcluster up`")
        return 3
    bins = building.binaries()
    for key, value in state.env().items():
        print(f"export {key}={shlex.quote(value)}")
    print(f'export PATH={shlex.quote(str(bins.kubectl.parent))}:"$PATH"')
    return 0


def image(directory: Path) -> int:
    """Build (or reuse) the operator image and push it to the running cluster's registry."""
    state = cluster.ClusterState.load(directory)
    if state is None or state.registry is None or not state.processes["registry"].alive():
        print(f"no dev cluster with a registry runs in {directory}; start one with `modelreg devcluster up`")
        return 3
    print(images.ensure_operator_image(registry=state.registry.address))
    return 0


_ACTIONS: dict[str, Callable[[Path], int]] = {
    "build": build,
    "up": up,
    "down": down,
    "status": status,
    "env": env,
    "image": image,
}
