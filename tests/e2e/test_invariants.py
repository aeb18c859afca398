"""The invariant checker can fail: with no operator running, forge the states it
must catch (statuses written with `kubectl patch --subresource=status`) and see
each reported. The serving tests rely on it, so a checker that never fires
would make them pass for nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.devcluster import cluster
from tests.conftest import wait_for
from tests.e2e.conftest import Cluster
from tests.e2e.invariants import Invariants
from tests.e2e.registry import apply, version_manifest

URI = "s3://nowhere/model.bin"  # nothing verifies it: no operator runs here


@pytest.fixture
def checker(kube: Cluster, crds: Path, namespace: str) -> Iterator[Invariants]:
    """A checker the test inspects itself (the `invariants` fixture would fail it)."""
    checker = Invariants(kubeconfig=kube.kubeconfig, namespace=namespace, model="m").start()
    try:
        yield checker
    finally:
        checker.stop()
        print(checker.report())


def forge_stage(kube: Cluster, namespace: str, name: str, stage: str) -> None:
    patch = json.dumps({"status": {"stage": stage}})
    kube.kubectl("patch", "-n", namespace, "modelversion", name, "--subresource=status", "--type=merge", "-p", patch)


def service(kube: Cluster, namespace: str, selector: dict[str, str]) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"},
           "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
    apply(kube, namespace, json.dumps(svc))


def violations_mentioning(checker: Invariants, text: str) -> list[str]:
    return [str(v) for v in checker.violations if text in v.what]


def test_two_production_versions_are_a_violation(kube: Cluster, namespace: str, checker: Invariants) -> None:
    for n in (1, 2):
        apply(kube, namespace, version_manifest(f"m-{n}", model="m", version=str(n), uri=URI))
    forge_stage(kube, namespace, "m-1", "Production")
    wait_for(lambda: checker.observations >= 3, timeout=10, what="the checker to see both versions and a status")
    assert not violations_mentioning(checker, "versions in Production"), checker.report()
    forge_stage(kube, namespace, "m-2", "Production")
    found = wait_for(lambda: violations_mentioning(checker, "2 versions in Production"), timeout=10,
                     what="the checker to report two Production versions")  # fmt: skip
    assert "m-1 (version 1)" in found[0]
    assert "m-2 (version 2)" in found[0]


def test_a_service_selecting_no_version_is_a_violation(kube: Cluster, namespace: str, checker: Invariants) -> None:
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=URI))
    service(kube, namespace, {"modelreg.dev/model": "m"})
    wait_for(lambda: checker.observations >= 2, timeout=10, what="the checker to see the version and the Service")
    assert not checker.violations, "nothing is Production yet: " + checker.report()
    forge_stage(kube, namespace, "m-1", "Production")
    wait_for(lambda: violations_mentioning(checker, "selects no version"), timeout=10,
             what="the checker to report a Service that selects no version")  # fmt: skip


def test_an_endpoint_lost_after_the_first_rollout_is_a_violation(
    kube: Cluster, namespace: str, checker: Invariants
) -> None:
    labels = {"modelreg.dev/model": "m", "modelreg.dev/version": "1"}
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=URI))
    forge_stage(kube, namespace, "m-1", "Production")
    service(kube, namespace, labels)  # no ready endpoint yet: the grace of an initial rollout
    pod = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "server", "image": "example/server:1"}], **cluster.kwok_placement()},
    }
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m-1"},
              "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod}}  # fmt: skip
    apply(kube, namespace, json.dumps(deploy))
    checker.wait_served(timeout=60)  # kwok makes the Pod Ready; the EndpointSlice follows
    assert not checker.violations, "the initial rollout has a grace: " + checker.report()
    kube.kubectl("scale", "deployment/m-1", "-n", namespace, "--replicas=0")
    wait_for(lambda: violations_mentioning(checker, "has no ready endpoint"), timeout=30,
             what="the checker to report the lost endpoint")  # fmt: skip
