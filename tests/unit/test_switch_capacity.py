"""The switch waits for Production capacity (issue 7, item 5): the Production
replica count, or an autoscaler's minimum, available in the new Deployment."""

from __future__ import annotations

from typing import Any

from modelreg import kube, reconciling
from modelreg.api.common import Stage
from modelreg.api.registeredmodel import Serving
from modelreg.facts import RolloutState
from tests.unit.lifecycle_builders import version

SERVE = Serving.model_validate({"image": "s:1", "replicas": 2, "stagingReplicas": 1})


def live(replicas: int, available: int) -> dict[str, Any]:
    return {"metadata": {"name": "iris-2", "generation": 3}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": 3, "updatedReplicas": available, "availableReplicas": available,
                       "conditions": [{"type": "Available", "status": "True"}]}}  # fmt: skip


def rollout(dep: dict[str, Any], autoscaled: dict[str, int]) -> RolloutState:
    owned = kube.OwnedObjects(deployments={"iris-2": dep}, services={}, autoscaled=autoscaled)
    return reconciling._rollouts("iris", SERVE, [version("2", Stage.PRODUCTION)], owned, {})["iris-2"].state


def test_the_staging_count_is_not_production_capacity() -> None:
    assert rollout(live(1, 1), {}) is RolloutState.PROGRESSING
    assert rollout(live(2, 2), {}) is RolloutState.AVAILABLE


def test_an_autoscalers_minimum_is_the_bar() -> None:
    assert rollout(live(1, 1), {"iris-2": 3}) is RolloutState.PROGRESSING
    assert rollout(live(3, 3), {"iris-2": 3}) is RolloutState.AVAILABLE


def test_a_name_another_owner_holds_is_a_failed_rollout() -> None:
    owned = kube.OwnedObjects(deployments={}, services={}, autoscaled={})
    rollouts = reconciling._rollouts("iris", SERVE, [version("2", Stage.PRODUCTION)], owned, {"iris-2": "taken"})
    assert rollouts["iris-2"].state is RolloutState.FAILED
