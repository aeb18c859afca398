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
