"""The dev cluster's own promises: one per directory, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.devcluster import building, cluster, registry
from tests.conftest import local_cluster_only, unavailable
from tests.e2e.conftest import Cluster


def test_second_up_in_the_same_directory_is_refused(kube: Cluster) -> None:
    local_cluster_only(kube.state is not None, "a second `up` in the same state directory")
    assert kube.state is not None
    with pytest.raises(cluster.ClusterError, match="already running"):
        cluster.up(Path(kube.state.directory), bins=building.binaries())


def test_down_stops_every_process_and_removes_the_data(kube: Cluster, tmp_path: Path) -> None:
    local_cluster_only(kube.state is not None, "starting and stopping a second dev cluster")
    if registry.find_binary() is None:
        unavailable("the dev cluster's image registry needs Debian's docker-registry")
    directory = tmp_path / "second"
    state = cluster.up(directory, bins=building.binaries(), tie_to_parent=True)
    procs = list(state.processes.values())
    assert all(p.alive() for p in procs)
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "s3"} <= set(state.processes)
    assert state.registry is not None
    assert "registry" in state.processes
    assert registry.tags(state.registry, "nothing/here") == []  # the registry API answers
    assert cluster.ClusterState.load(directory) == state  # `status` and `env` in another shell see it

    stopped = cluster.down(directory)

    assert sorted(stopped) == sorted(state.processes)
    assert not any(p.alive() for p in procs)
    assert not directory.exists()
    with pytest.raises(OSError, match="Connection refused"):
        registry.tags(state.registry, "nothing/here")
