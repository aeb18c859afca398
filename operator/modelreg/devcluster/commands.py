"""`modelreg devcluster build|up|down|status|env|image|packages`: what each prints and returns."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from modelreg.devcluster import building, cluster, images, node, packages, registry

# `packages` exits with this when packages are missing and this machine cannot
# install them (not root, or no apt-get): `make setup` goes on, since only the
# image and real-node tests need them.
CANNOT_INSTALL = 3


def dispatch(action: str, *, directory: Path | None, real_node: bool = False, groups: Sequence[str] = ()) -> int:
    directory = directory or cluster.default_directory()
    try:
        if action == "up":
            return up(directory, real_node=real_node)
        if action == "packages":
            return install_packages(groups or list(packages.GROUPS))
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
    return 0


def install_packages(groups: Sequence[str]) -> int:
    """Install the Debian packages of `groups` that are missing (as root with apt-get)."""
    if unknown := [g for g in groups if g not in packages.GROUPS]:
        print(f"error: unknown package group {', '.join(unknown)} (groups: {', '.join(packages.GROUPS)})")
        return 2
    try:
        packages.ensure_packages(groups, log=building.say)
    except packages.InstallFailed:
        raise  # dispatch prints it: a failed apt-get is an error
    except packages.PackagesUnavailable as exc:
        print(f"note: {exc}")
        return CANNOT_INSTALL
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
