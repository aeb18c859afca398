"""The order of version status writes in a switch (issue 7, item 4): a reader
between two writes may see no Production version, never two."""

from __future__ import annotations

import dataclasses
from typing import Any

from modelreg import lifecycle, reconciling
from modelreg.api.common import Stage
from modelreg.facts import Rollout, RolloutState
from tests.unit.lifecycle_builders import EARLIER, NOW, model, version

P, S, A = Stage.PRODUCTION, Stage.STAGING, Stage.ARCHIVED


def live(plan_input: list[lifecycle.VersionInput]) -> dict[str, dict[str, Any]]:
    return {v.name: {"status": {"stage": v.status.stage.value if v.status.stage else None}} for v in plan_input}


def test_the_version_leaving_production_is_written_first_and_the_new_one_last() -> None:
    # Object names chosen so that name order would write the winner first.
    versions = [version("9", S, effective=A), version("2", P, effective=S),
                version("1", A, effective=P, requested_at=EARLIER)]  # fmt: skip
    versions = [v if v.name != "iris-2" else dataclasses.replace(v, name="a-winner") for v in versions]
    plan = lifecycle.plan(model(serving={"image": "s:1"}), versions, now=NOW,
                          rollouts={"a-winner": Rollout(RolloutState.AVAILABLE)})  # fmt: skip
    assert plan.production == "a-winner"
    order = reconciling._status_write_order(plan, live(versions))
    assert order[0] == "iris-1"
    assert order[-1] == "a-winner"
    seen = {v.name: v.status.stage for v in versions}
    for name in order:  # what a watcher sees after each write
        seen[name] = plan.versions[name].stage
        assert sum(stage is P for stage in seen.values()) <= 1


def _deployment(name: str, replicas: int | None) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def test_a_scale_up_is_written_before_the_services_and_a_scale_down_after() -> None:
    """A promotion's first write is the new version's scale-up (issue 11, item 3);
    what shrinks is written only after the Services moved off it."""
    services = [{"kind": "Service", "metadata": {"name": "m"}}, {"kind": "Service", "metadata": {"name": "m-staging"}}]
    desired = [_deployment("m-1", 0), _deployment("m-2", 2), _deployment("m-3", 1), _deployment("m-4", None)]
    live = {"m-1": _deployment("m-1", 2), "m-2": _deployment("m-2", 1), "m-4": _deployment("m-4", 3)}
    order = [o["metadata"]["name"] for o in reconciling._serving_write_order(services, desired, live)]
    assert order == ["m-2", "m-3", "m", "m-staging", "m-1", "m-4"]
