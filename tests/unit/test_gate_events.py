"""Which gate verdicts become Warning Events: only those that hold a version back
from a stage it asks for, plus the version's own artifact (issue 11: at 5,000
versions a Warning per Development version was most of the Event traffic)."""

from __future__ import annotations

from modelreg import lifecycle
from modelreg.api.common import Stage
from tests.unit.lifecycle_builders import EARLIER, MISSING, NOW, condition, model, version

D, S, P = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION
GATED = {"promotion": {"thresholds": [{"metric": "accuracy", "min": 0.8}],
                       "compareToProduction": {"metric": "accuracy"}}}  # fmt: skip


def serving() -> lifecycle.VersionInput:
    return version("1", P, effective=P, requested_at=EARLIER, metrics={"accuracy": 0.95})


def warnings(plan: lifecycle.Plan, name: str) -> list[str]:
    return [e.reason for e in plan.events if e.warning and e.name == name]


def test_development_versions_that_ask_for_nothing_get_no_warning() -> None:
    worse = version("2", D, effective=D, metrics={"accuracy": 0.9})
    below = version("3", D, effective=D, metrics={"accuracy": 0.5})
    plan = lifecycle.plan(model(**GATED), [serving(), worse, below], now=NOW)
    assert [e for e in plan.events if e.warning] == []
    # The verdicts are still in status, for whoever looks.
    assert condition(plan, "iris-2", "ComparedToProduction") == ("False", "WorseThanProduction")
    assert condition(plan, "iris-3", "MetricThresholds") == ("False", "ThresholdNotMet")


def test_a_staging_version_that_asks_to_stay_gets_no_warning_for_production_gates() -> None:
    staged = version("2", S, effective=S, metrics={"accuracy": 0.9})
    plan = lifecycle.plan(model(**GATED), [serving(), staged], now=NOW)
    assert warnings(plan, "iris-2") == []


def test_once_it_asks_for_production_the_hold_is_a_warning() -> None:
    """The verdict was already False while it asked for nothing: asking must still be said."""
    quiet = lifecycle.plan(model(**GATED), [serving(), version("2", D, effective=D, metrics={"accuracy": 0.9})],
                           now=NOW)  # fmt: skip
    asking = version("2", P, metrics={"accuracy": 0.9}, status=quiet.versions["iris-2"])
    plan = lifecycle.plan(model(**GATED), [serving(), asking], now=NOW)
    assert warnings(plan, "iris-2") == ["WorseThanProduction"]
    assert plan.production == "iris-1"


def test_a_request_for_production_that_is_worse_is_a_warning_at_once() -> None:
    plan = lifecycle.plan(model(**GATED), [serving(), version("2", P, effective=S, metrics={"accuracy": 0.9})],
                          now=NOW)  # fmt: skip
    assert warnings(plan, "iris-2") == ["WorseThanProduction"]


def test_a_development_version_whose_artifact_is_missing_still_gets_a_warning() -> None:
    plan = lifecycle.plan(model(), [version("2", D, artifact=MISSING)], now=NOW)
    assert warnings(plan, "iris-2") == ["ArtifactNotFound"]
