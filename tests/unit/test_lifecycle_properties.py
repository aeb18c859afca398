"""Invariants of the lifecycle engine over generated worlds (hypothesis)."""

from __future__ import annotations

import datetime
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from modelreg import lifecycle
from modelreg.api.common import Stage
from modelreg.facts import ArtifactCheck, Rollout, RolloutState
from tests.unit.lifecycle_builders import EARLIER, MISMATCH, MISSING, NOW, OK, UNAVAILABLE, model, replan, version

STAGES = list(Stage)
CHECKS = [OK, OK, OK, MISMATCH, MISSING, UNAVAILABLE]
TIMES = [None, EARLIER, EARLIER - datetime.timedelta(minutes=5), NOW]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[lifecycle.ModelInput, list[lifecycle.VersionInput], dict[str, Rollout] | None]:
    count = draw(st.integers(min_value=1, max_value=5))
    numbers = draw(st.lists(st.sampled_from(["1", "2", "3", "10", "1.2.0", "1.10.0", "beta", "2.0.0-rc.1"]),
                            min_size=count, max_size=count, unique=True))  # fmt: skip
    serving_index = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=count - 1)))
    versions = []
    for i, number in enumerate(numbers):
        requested = draw(st.sampled_from(STAGES))
        previous = Stage.PRODUCTION if i == serving_index else draw(
            st.sampled_from([None, Stage.DEVELOPMENT, Stage.STAGING, Stage.ARCHIVED]))  # fmt: skip
        requested_at = draw(st.sampled_from(TIMES)) if requested is Stage.PRODUCTION else None
        if previous is Stage.PRODUCTION and requested_at is None and requested is Stage.PRODUCTION:
            requested_at = EARLIER
        versions.append(
            version(
                number,
                requested,
                effective=previous,
                requested_at=requested_at,
                metrics={"accuracy": draw(st.sampled_from([0.5, 0.85, 0.9, 0.95]))},
                artifact=draw(st.sampled_from(CHECKS)),
                served_before=draw(st.booleans()),
            )
        )
    spec: dict[str, object] = {}
    if draw(st.booleans()):
        spec["promotion"] = {
            "thresholds": [{"metric": "accuracy", "min": draw(st.sampled_from([0.5, 0.8, 0.9]))}],
            "compareToProduction": {"metric": "accuracy", "margin": draw(st.sampled_from([0.0, 0.05]))},
        }
    rollouts = None
    if draw(st.booleans()):
        rollouts = {v.name: Rollout(draw(st.sampled_from(list(RolloutState)))) for v in versions if draw(st.booleans())}
    return model(**spec), versions, rollouts


def production(plan: lifecycle.Plan) -> list[str]:
    return [name for name, s in plan.versions.items() if s.stage is Stage.PRODUCTION]


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_never_two_production_versions(world: tuple) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    plan = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    assert len(production(plan)) <= 1
    assert plan.production == (production(plan)[0] if production(plan) else None)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_a_failing_request_never_displaces_the_serving_version(world: tuple) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    plan = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    for v in versions:
        check: ArtifactCheck | None = v.artifact
        entered = plan.versions[v.name].stage is Stage.PRODUCTION and v.status.stage is not Stage.PRODUCTION
        if entered:
            assert check is not None
            assert check.ok, f"{v.name} entered Production with a failed artifact"
    serving = [v for v in versions if v.status.stage is Stage.PRODUCTION]
    if serving and serving[0].spec.stage is Stage.PRODUCTION:
        others_pass = [
            v for v in versions
            if v is not serving[0] and v.spec.stage is Stage.PRODUCTION and v.artifact is not None and v.artifact.ok
        ]  # fmt: skip
        if not others_pass:
            assert production(plan) == [serving[0].name]


@settings(max_examples=200, deadline=None)
@given(worlds(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_input_order(world: tuple, rnd: random.Random) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    shuffled = list(versions)
    rnd.shuffle(shuffled)
    a = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    b = lifecycle.plan(m, shuffled, now=NOW, rollouts=rollouts)
    assert a.versions == b.versions
    assert a.model == b.model
    assert sorted(map(repr, a.events)) == sorted(map(repr, b.events))


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_planning_on_its_own_output_changes_nothing(world: tuple) -> None:  # type: ignore[type-arg]
    m, versions, rollouts = world
    first = lifecycle.plan(m, versions, now=NOW, rollouts=rollouts)
    second = replan(first, m, versions, rollouts=rollouts)
    assert second.versions == first.versions
    assert second.model == first.model
    assert second.events == []
