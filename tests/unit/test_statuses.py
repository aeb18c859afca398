"""Conditions keep their transition time; comparing statuses finds no-ops."""

from __future__ import annotations

from modelreg import statuses


def test_transition_time_is_kept_while_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    cond = statuses.condition(old, type_="Ready", status="True", reason="R", message="m", generation=2, at="later")
    assert cond["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = statuses.condition(old, type_="Ready", status="False", reason="R", message="m", generation=2, at="later")
    assert flipped["lastTransitionTime"] == "later"


def test_ready_status_of_an_already_ready_object_is_a_no_op() -> None:
    obj = {"metadata": {"name": "x", "generation": 3}, "status": None}
    first = statuses.ready_status(obj)
    assert statuses.differs({}, first)
    obj["status"] = first
    assert not statuses.differs(first, statuses.ready_status(obj))
