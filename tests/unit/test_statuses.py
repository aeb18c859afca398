"""Conditions keep their transition time; times are written as Kubernetes writes them."""

from __future__ import annotations

from modelreg import statuses


def test_transition_time_is_kept_while_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    cond = statuses.condition(old, type_="Ready", status="True", reason="R", message="m", generation=2, at="later")
    assert cond["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = statuses.condition(old, type_="Ready", status="False", reason="R", message="m", generation=2, at="later")
    assert flipped["lastTransitionTime"] == "later"


def test_times_are_utc_to_the_second() -> None:
    import datetime

    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert statuses.format_time(moment) == "2026-01-02T01:04:05Z"
