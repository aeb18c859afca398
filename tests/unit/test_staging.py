"""What `modelreg stage` changes."""

from __future__ import annotations

import pytest

from modelreg.api.common import Stage
from modelreg.staging import StageChangeError, stage_changes


def mv(name: str, stage: str) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"name": name}, "spec": {"stage": stage}}


def test_promotion_archives_the_other_production_requests() -> None:
    versions = [mv("a", "Production"), mv("b", "Staging"), mv("c", "Production"), mv("d", "Archived")]
    assert stage_changes(versions, target="b", stage=Stage.PRODUCTION) == {
        "b": "Production", "a": "Archived", "c": "Archived"}  # fmt: skip
    assert next(iter(stage_changes(versions, target="b", stage=Stage.PRODUCTION))) == "b"


def test_other_stages_touch_only_the_target() -> None:
    versions = [mv("a", "Production"), mv("b", "Development")]
    assert stage_changes(versions, target="b", stage=Stage.STAGING) == {"b": "Staging"}
    assert stage_changes(versions, target="a", stage=Stage.ARCHIVED) == {"a": "Archived"}


def test_development_cannot_jump_to_production() -> None:
    with pytest.raises(StageChangeError, match="Staging first"):
        stage_changes([mv("b", "Development")], target="b", stage=Stage.PRODUCTION)
    with pytest.raises(StageChangeError, match="no ModelVersion"):
        stage_changes([], target="x", stage=Stage.STAGING)


def test_a_version_a_gate_holds_is_refused_before_the_serving_request_is_archived() -> None:
    stalled = {"type": "Stalled", "status": "True", "reason": "ThresholdNotMet", "message": "accuracy too low"}
    status = {"observedGeneration": 1, "phase": "Blocked", "conditions": [stalled]}
    held = mv("b", "Staging") | {"metadata": {"name": "b", "generation": 1}, "status": status}
    with pytest.raises(StageChangeError, match="b is held, nothing was changed: ThresholdNotMet: accuracy too low"):
        stage_changes([mv("a", "Production"), held], target="b", stage=Stage.PRODUCTION)
    assert stage_changes([held], target="b", stage=Stage.ARCHIVED) == {"b": "Archived"}  # only Production is refused
    unseen = held | {"metadata": {"name": "b", "generation": 2}}  # the hold is for an older spec
    assert stage_changes([unseen], target="b", stage=Stage.PRODUCTION) == {"b": "Production"}
