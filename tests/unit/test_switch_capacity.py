"""The switch waits for Production capacity (issue 7, item 5): the Production
replica count, or an autoscaler's minimum, available in the new Deployment."""

from __future__ import annotations

import datetime
from typing import Any

from modelreg import kube, reconciling
from modelreg.api.common import Stage
from modelreg.api.registeredmodel import Serving
from modelreg.facts import Rollout, RolloutState
from tests.unit.lifecycle_builders import version

SERVE = Serving.model_validate({"image": "s:1", "replicas": 2, "stagingReplicas": 1})

NOW = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)


def live(replicas: int, available: int) -> dict[str, Any]:
    return {"metadata": {"name": "iris-2", "generation": 3}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": 3, "updatedReplicas": available, "availableReplicas": available,
                       "conditions": [{"type": "Available", "status": "True"}]}}  # fmt: skip


def rollout(dep: dict[str, Any], autoscaled: dict[str, int]) -> RolloutState:
    owned = kube.OwnedObjects(deployments={"iris-2": dep}, services={}, autoscaled=autoscaled)
    return reconciling._rollouts("iris", SERVE, [version("2", Stage.PRODUCTION)], owned, {}, now=NOW)["iris-2"].state


def test_the_staging_count_is_not_production_capacity() -> None:
    assert rollout(live(1, 1), {}) is RolloutState.PROGRESSING
    assert rollout(live(2, 2), {}) is RolloutState.AVAILABLE


def test_an_autoscalers_minimum_is_the_bar() -> None:
    assert rollout(live(1, 1), {"iris-2": 3}) is RolloutState.PROGRESSING
    assert rollout(live(3, 3), {"iris-2": 3}) is RolloutState.AVAILABLE


def test_a_name_another_owner_holds_is_a_failed_rollout() -> None:
    owned = kube.OwnedObjects(deployments={}, services={}, autoscaled={})
    versions = [version("2", Stage.PRODUCTION)]
    rollouts = reconciling._rollouts("iris", SERVE, versions, owned, {"iris-2": "taken"}, now=NOW)
    assert rollouts["iris-2"].state is RolloutState.FAILED


def test_a_deployment_under_an_older_name_goes_once_its_successor_is_available() -> None:
    v = version("2", Stage.PRODUCTION)  # version "2"; pretend an older rule named its Deployment "iris-old-2"
    owner = {"kind": "ModelVersion", "name": "iris-2", "controller": True}
    old = live(2, 2) | {"metadata": {"name": "iris-old-2", "generation": 1, "ownerReferences": [owner]}}
    owned = kube.OwnedObjects(deployments={"iris-old-2": old, "iris-2": live(2, 2)}, services={}, autoscaled={})
    desired = [{"metadata": {"name": "iris-2"}}]
    progressing = {"iris-2": Rollout(RolloutState.PROGRESSING)}
    assert reconciling._renamed("iris", [v], owned, desired, progressing) == []
    available = {"iris-2": Rollout(RolloutState.AVAILABLE)}
    assert reconciling._renamed("iris", [v], owned, desired, available) == ["iris-old-2"]
    assert reconciling._renamed("iris", [v], owned, [], progressing) == ["iris-old-2"]  # not wanted at all
